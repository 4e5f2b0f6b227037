from livecomments.bench import bench

bench(prog_name="python -m benchmarks")
