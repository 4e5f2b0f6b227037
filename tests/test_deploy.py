"""deploy/livecomments.service: systemd itself accepts it, with no warning about it, and it says
what production needs (a user of its own, a state directory, file descriptors, a stop timeout
longer than the server's own drain)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from livecomments.config import Config

UNIT = Path(__file__).parent.parent / "deploy" / "livecomments.service"
INSTALLED = "/opt/livecomments/venv/bin/livecomments"


def service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_systemd_analyze_verify_has_nothing_to_say_about_the_unit(tmp_path: Path) -> None:
    """verify checks that ExecStart's binary exists: the copy points it at this venv's livecomments."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed (apt-get install systemd)")
    executable = Path(sys.executable).parent / "livecomments"
    assert executable.exists(), executable
    text = UNIT.read_text()
    assert text.count(INSTALLED) == 1
    unit = tmp_path / "livecomments.service"
    unit.write_text(text.replace(INSTALLED, str(executable)))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    about_it = [line for line in (done.stdout + done.stderr).splitlines() if "livecomments" in line]
    assert done.returncode == 0 and about_it == [], done.stdout + done.stderr


def test_the_unit_runs_the_server_as_production_needs() -> None:
    unit = service()
    assert unit["ExecStart"] == f"{INSTALLED} serve --config /etc/livecomments/livecomments.toml"
    assert unit["User"] not in ("", "root") and unit["StateDirectory"] == "livecomments"
    assert int(unit["LimitNOFILE"]) >= 65536
    assert unit["Restart"] == "on-failure" and unit["KillSignal"] == "SIGTERM"
    assert float(unit["TimeoutStopSec"]) > 2 * Config().shutdown_timeout  # the drain ends before SIGKILL
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "CapabilityBoundingSet": ""}.items():
        assert unit[key] == value, key
