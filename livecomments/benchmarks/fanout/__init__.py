"""Fan-out benchmark: one realtime process, one hot video, W viewers, rising comment rate.

Run with `livecomments bench fanout` (run.py drives it; loadgen.py and floor.py run as processes).
"""
