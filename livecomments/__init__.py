"""livecomments: live comments on live video, over Server-Sent Events."""

__version__ = "0.3.0"  # pyproject.toml says the same; CHANGELOG.md says what each version brought
