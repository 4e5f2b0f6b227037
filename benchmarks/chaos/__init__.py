"""The fault suite: real processes, real redis-server/etcd/PostgreSQL, scripted faults, a checker.

    python -m benchmarks.chaos [--quick] [--only broadcast,dispatcher]   (or: make chaos)
"""
