"""SSE vs WebSocket on one server: idle memory, CPU and latency per delivery, the post round trip.

Run with `livecomments bench transports` (run.py drives it; loadgen.py runs as a process).
"""
