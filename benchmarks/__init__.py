"""Repo-only: the fault suite (`make chaos`, `python -m benchmarks.chaos`), which starts its services
with the test fixtures (tests/fixtures/); results/ holds the committed reports of full runs.
Every benchmark is `livecomments bench …` (livecomments/benchmarks/) and runs from an installed package."""
