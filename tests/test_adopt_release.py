"""Ready to adopt (issue 22): a license, a version that agrees everywhere with a changelog entry,
a README that says how to reach the command, and `make serve` that says where the demo is."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import tomllib
from pathlib import Path

import aiohttp

import livecomments
from tests.fixtures.processes import free_port

ROOT = Path(__file__).parent.parent


def test_the_license_is_apache_2_and_the_package_says_so() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert "[LICENSE](LICENSE)" in (ROOT / "README.md").read_text()


def test_one_version_everywhere_and_a_changelog_section_for_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == livecomments.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", livecomments.__version__)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    sections = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d\d-\d\d)$", changelog, re.MULTILINE)
    assert sections and sections[0][0] == livecomments.__version__  # the newest section is this version
    assert [v for v, _ in sections] == sorted((v for v, _ in sections), key=lambda v: tuple(map(int, v.split("."))),
                                              reverse=True)


def test_the_readme_starts_with_its_two_commands_then_says_how_to_run_livecomments() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[2:6]  # the two set-up commands, exactly two, first thing after the title
    assert block[0] == "```sh" and block[3] == "```", block
    assert block[1].startswith("make serve ") and block[2].startswith("make test "), block
    after = " ".join(lines[6:12])
    assert ".venv/bin/livecomments" in after and ". .venv/bin/activate" in after


async def test_make_serve_prints_the_demo_url_first(tmp_path: Path) -> None:
    port = free_port()
    venv = Path(sys.prefix)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LIVECOMMENTS_")},
           "LIVECOMMENTS_PORT": str(port), "LIVECOMMENTS_STORAGE": f"sqlite:///{tmp_path}/lc.db"}
    # -o: the venv counts as installed (the suite runs in it; pyproject.toml may be newer than its stamp).
    proc = await asyncio.create_subprocess_exec(
        "make", "-s", "--no-print-directory", f"VENV={venv}", "-o", f"{venv}/.run", "serve",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    assert proc.stdout is not None
    try:
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert first.startswith("livecomments demo: ") and f"http://127.0.0.1:{port}/ " in first, first
        listening = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert f"listening on http://127.0.0.1:{port}" in listening, listening
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as r:
            assert r.status == 200 and r.url.path == "/demo/"  # the printed URL is the demo
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # make and the server it started: the group this test made
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
