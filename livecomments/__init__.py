"""livecomments: live comments on live video, over Server-Sent Events."""

__version__ = "0.1.0"
