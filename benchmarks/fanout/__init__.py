"""Fan-out benchmark: one realtime process, one hot video, W viewers, rising comment rate.

Run with `python -m benchmarks.fanout`; see __main__.py for the flags and README-level notes.
"""
