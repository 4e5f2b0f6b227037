"""The README stands on its own and documents every option."""

from __future__ import annotations

from pathlib import Path

from livecomments.config_layers import options

ROOT = Path(__file__).parent.parent


def test_every_option_has_a_row_in_the_readme_configuration_table():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration"):]
    table = table[: table.index("\n## ", 1)]
    assert [name for name, *_ in options() if f"`{name}`" not in table] == []


def test_docs_point_nowhere_outside_the_repository():
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        assert "../shared" not in path.read_text(), path
