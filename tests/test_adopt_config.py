"""Config (issue 22), through the real `livecomments` command: values of the wrong kind are refused
in one line that says what is expected, --print-config prints TOML that loads back, an unknown
LIVECOMMENTS_* variable is named, and no file is read unless one is given."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from livecomments.config import ConfigError
from livecomments.config_layers import load

ROOT = Path(__file__).parent.parent
SCRIPT = Path(sys.executable).parent / "livecomments"  # the console script pip installed
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "livecomments"]


def env(**extra: str) -> dict[str, str]:
    """The environment less every LIVECOMMENTS_* variable, plus `extra`."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("LIVECOMMENTS_")}, **extra}


def run(*args: str, cwd: Path, environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30, cwd=cwd,
                          env=env() if environ is None else environ)


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """A refusal: exit != 0, no traceback, stderr one `Error:` line."""
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(("toml", "expected"), [
    ("max_text = false", "max_text: false is not an integer"),
    ("ping_interval = true", "ping_interval: true is not a number"),
    ("ping_interval = nan", "ping_interval: nan is not a finite number"),
    ("rate_limit_per_s = inf", "rate_limit_per_s: inf is not a finite number"),
    ("port = 80.5", "port: 80.5 is not an integer"),
    ("access_log = 1", "access_log: 1 is not true or false"),
    ("host = 1", "host: 1 is not a string"),
    ('cors_origins = [5, "https://a.example"]', "cors_origins: [5, 'https://a.example'] is not a list of origins"),
    ("trusted_proxies = 10", "trusted_proxies: 10 is not a list of addresses or networks"),
])
def test_a_file_value_of_the_wrong_kind_is_refused_saying_what_is_expected(tmp_path: Path, toml: str,
                                                                            expected: str) -> None:
    (tmp_path / "lc.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError) as refused:
        load(str(tmp_path / "lc.toml"), environ={})
    assert expected in str(refused.value) and "tuple" not in str(refused.value)


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("PORT", "true", "LIVECOMMENTS_PORT: 'true' is not an integer"),
    ("PING_INTERVAL", "nan", "LIVECOMMENTS_PING_INTERVAL: 'nan' is not a finite number"),
    ("ACCESS_LOG", "maybe", "LIVECOMMENTS_ACCESS_LOG: 'maybe' is not true or false"),
])
def test_an_environment_value_of_the_wrong_kind_is_refused(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load(None, environ={"LIVECOMMENTS_" + name: value})


@pytest.mark.parametrize(("toml", "expected"), [
    ("port = true", "port: true is not an integer"),  # it listened on port 1, and --print-config wrote `port = True`
    ("cors_origins = 5", "cors_origins: 5 is not a list of origins (a list in the file"),  # it said "not a valid tuple"
])
def test_the_command_refuses_them_in_one_line(tmp_path: Path, toml: str, expected: str) -> None:
    (tmp_path / "lc.toml").write_text(toml + "\n")
    err = refusal(run("serve", "--config", "lc.toml", "--print-config", cwd=tmp_path))
    assert expected in err, err


def test_print_config_is_toml_that_loads_back_as_the_same_config(tmp_path: Path) -> None:
    (tmp_path / "lc.toml").write_text('port = 9123\nping_interval = 7\naccess_log = true\ncors_origins = ["https://a.example"]\n'
                                      'trusted_proxies = ["10.0.0.0/8"]\nretention_days = 1.5\n')
    printed = run("serve", "--config", "lc.toml", "--print-config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    parsed = tomllib.loads(printed.stdout)
    assert parsed["port"] == 9123 and parsed["access_log"] is True and parsed["ping_interval"] == 7.0
    (tmp_path / "printed.toml").write_text(printed.stdout)
    assert load(str(tmp_path / "printed.toml"), environ={}) == load(str(tmp_path / "lc.toml"), environ={})


def test_an_unknown_livecomments_variable_is_named_in_one_warning_and_ignored(tmp_path: Path) -> None:
    # Warned, not refused: the environment is shared with other programs (a Kubernetes Service named
    # livecomments sets LIVECOMMENTS_SERVICE_HOST in every pod), while the file is ours alone.
    result = run("serve", "--print-config", cwd=tmp_path,
                 environ=env(LIVECOMMENTS_RATE_LIMIT="3", LIVECOMMENTS_SERVICE_HOST="10.0.0.1",
                             LIVECOMMENTS_CONFIG="", LIVECOMMENTS_MAX_TEXT="100"))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    rate = next(line for line in lines if "LIVECOMMENTS_RATE_LIMIT " in line)
    assert "not an option" in rate and "LIVECOMMENTS_RATE_LIMIT_PER_S" in rate  # the near miss is named
    assert any("LIVECOMMENTS_SERVICE_HOST" in line for line in lines)
    assert "LIVECOMMENTS_CONFIG" not in result.stderr and "LIVECOMMENTS_MAX_TEXT" not in result.stderr
    assert "max_text = 100" in result.stdout.splitlines()
    # An unknown key in the file is still refused.
    (tmp_path / "lc.toml").write_text("rate_limit = 3\n")
    assert "unknown option 'rate_limit'" in refusal(run("serve", "--config", "lc.toml", "--print-config", cwd=tmp_path))


def test_a_bare_serve_reads_no_file_and_the_readme_and_help_say_so(tmp_path: Path) -> None:
    # config/livecomments.toml is a commented copy of the defaults that `make serve` passes with --config;
    # a bare `livecomments serve` reads no file, even one by that name in the current folder.
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "livecomments.toml").write_text("port = 9123\n")
    bare = run("serve", "--print-config", cwd=tmp_path)
    assert bare.returncode == 0 and "port = 8080" in bare.stdout.splitlines(), bare.stderr
    given = run("serve", "--print-config", cwd=tmp_path, environ=env(LIVECOMMENTS_CONFIG="config/livecomments.toml"))
    assert "port = 9123" in given.stdout.splitlines(), given.stderr
    readme = (ROOT / "README.md").read_text()
    assert "is the\ndefault file" not in readme and "is the default file" not in readme
    section = readme[readme.index("## Configuration"):]
    assert "a bare `livecomments serve` reads no file" in " ".join(section.split()).lower()
    help_text = " ".join(run("--help", cwd=tmp_path).stdout.split())
    assert "(--config or LIVECOMMENTS_CONFIG)" in help_text
