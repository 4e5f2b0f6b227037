"""`python -m livecomments.benchmarks.chaos [--quick] …` is `livecomments bench chaos …`."""

import sys

from livecomments.benchmarks.command import bench

bench.main(["chaos", *sys.argv[1:]], prog_name="livecomments bench")
