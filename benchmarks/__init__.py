"""Benchmarks: `python -m benchmarks strategies|write|history` (= `livecomments bench …`)."""
