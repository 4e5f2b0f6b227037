"""The fault suite: real processes, real redis-server/etcd/PostgreSQL, scripted faults, a checker.

    livecomments bench chaos [--quick] [--only broadcast,dispatcher] [--out DIR]   (or: make chaos)
    python -m livecomments.benchmarks.chaos …                                      (the same command)
"""
