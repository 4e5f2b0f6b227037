"""Repo-only tools: the fault suite (`python -m benchmarks.chaos`) and the attack probes
(`python -m benchmarks.attacks`); results/ holds the committed reports of full runs.
The benchmarks themselves are `livecomments bench …` (livecomments/benchmarks/)."""
