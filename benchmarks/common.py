"""The fault suite's (chaos/) view of the benchmark helpers, which live in the package
(livecomments/benchmarks/common.py) so that `livecomments bench` runs from an installed copy."""

from pathlib import Path

from livecomments.benchmarks.common import raise_nofile, rss_bytes

__all__ = ["RESULTS", "raise_nofile", "rss_bytes"]
RESULTS = Path(__file__).parent / "results"  # the committed reports of this checkout
