"""The repo-only tools' (chaos/, attacks.py) view of the benchmark helpers, which live in the package
(livecomments/benchmarks/common.py) so that `livecomments bench` runs from an installed copy."""

from pathlib import Path

from livecomments.benchmarks.common import Process, free_port, raise_nofile, rss_bytes

__all__ = ["RESULTS", "Process", "free_port", "raise_nofile", "rss_bytes"]
RESULTS = Path(__file__).parent / "results"  # the committed reports of this checkout
