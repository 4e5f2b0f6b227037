"""The benchmarks behind `livecomments bench …` (livecomments/benchmarks/command.py is the command): in the package,
so they run from an installed copy with the bench extra. Reports go where common.out_dir says."""
