"""What `livecomments lb-config` knows about one L7 balancer: the `Balancer` both config
generators (ops/nginx_conf.py, ops/haproxy_conf.py) read, and the files it writes besides the
config: log files created 0640, and HAProxy's certificate-and-key PEM.

Logs carry no credential: `?access_token=` (how EventSource sends a token) rides in the query, so
both balancers log the path without the query, and nginx's error log, which always prints the
client's whole request line, keeps only what a request cannot be part of (see ERROR_LOG_LEVEL).
The log files are created 0640 before the balancer starts: nginx keeps the mode of a file that
exists, and creates a missing one 0644 (under the usual umask), readable by every local user.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from livecomments.config import Config

POLICIES = ("hash", "round-robin", "bounded")
BALANCE_FACTOR = 1.25  # no server above 1.25 × the mean connections: HAProxy's hash-balance-factor 125
FORMATS = ("nginx", "haproxy")
NOT_FOUND = '{"error":{"code":"not_found","message":"no such route"}}'
# Streams (SSE and WebSocket) are idle between heartbeats (15 s) for as long as a viewer watches;
# a proxy timeout shorter than the heartbeat cuts them, a long one costs nothing.
STREAM_TIMEOUT = "1h"
# The servers' default body limit, derived from max_text/max_author: the largest valid comment passes.
DEFAULT_BODY_LIMIT = Config().body_limit
LOG_MODE = 0o640  # the balancer's user writes, its group (adm, say) reads, nobody else
KEY_MODE = 0o600  # HAProxy's PEM holds the private key: its user alone reads it
# nginx writes the client's request line, query and so `?access_token=` included, into every error
# it logs about a request (upstream refused, timed out, worker_connections used up: levels error to
# alert), and no directive changes that: only emerg (start-up failures) is free of requests.
# What a request's failure was still shows in the access log (status, upstream, upstream status).
ERROR_LOG_LEVEL = "emerg"
ERROR_LOG_LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")
HAPROXY_LOG = "stdout"  # HAProxy writes no files: its log goes to a syslog address, stdout or stderr
HAPROXY_PEM = "livecomments-haproxy.pem"


def default_workdir() -> str:
    """A directory of the user's own ($XDG_STATE_HOME/livecomments), not a fixed path in the shared /tmp."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "livecomments")


@dataclass(frozen=True)
class Balancer:
    listen: str  # HOST:PORT
    backends: Sequence[str]  # realtime servers, HOST:PORT
    writers: Sequence[str]  # writers, HOST:PORT
    policy: str = "hash"
    workdir: str = field(default_factory=default_workdir)  # pid, logs, temp dirs (nginx), PEM (HAProxy)
    worker_processes: str = "auto"
    max_body: int = DEFAULT_BODY_LIMIT  # the servers' body limit: bigger bodies are refused at the edge
    balance_factor: float = BALANCE_FACTOR  # policy bounded only
    # nginx: files (default: in workdir). HAProxy: a log address (default stdout; /dev/log is syslog);
    # "off" logs no requests.
    access_log: str | None = None
    error_log: str | None = None  # nginx only; default: in workdir
    error_log_level: str = ERROR_LOG_LEVEL  # nginx only; below emerg, request lines (tokens) reach it
    # TLS (both or neither; absolute paths): HTTPS with HTTP/2 offered by ALPN. Browsers open at most
    # six HTTP/1.1 connections per origin, so a seventh tab's SSE stream waits; over HTTP/2 every
    # stream of the origin shares one connection.
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def haproxy_pem(self) -> str:
        """HAProxy's `crt`: certificate and key in one file (its own format), made in the workdir."""
        return os.path.join(self.workdir, HAPROXY_PEM)

    def access_log_target(self, fmt: str) -> str:
        if self.access_log is not None:
            return self.access_log
        if fmt == "haproxy":
            return HAPROXY_LOG
        return os.path.join(self.workdir, "livecomments-nginx-access.log")

    def error_log_path(self) -> str:
        return self.error_log or os.path.join(self.workdir, "livecomments-nginx-error.log")

    def log_files(self, fmt: str) -> list[str]:
        """The files the balancer writes its logs to (nginx; HAProxy writes none of its own)."""
        if fmt != "nginx":
            return []
        return [log for log in (self.error_log_path(), self.access_log_target(fmt)) if is_file(log)]


def is_file(target: str) -> bool:
    """An nginx log target that is a file (not off, stderr or syslog:server=…)."""
    return target not in ("off", "stderr") and not target.startswith(("syslog:", "memory:"))


def prepare_log(path: str | os.PathLike[str]) -> None:
    """Create the log file LOG_MODE (or take group write and every other bit off an existing one),
    so the balancer appends to a file only its user and group can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, LOG_MODE)
    try:
        mode = os.fstat(fd).st_mode & 0o777
        if mode & ~LOG_MODE:
            os.fchmod(fd, mode & LOG_MODE)
    finally:
        os.close(fd)


def write_haproxy_pem(b: Balancer) -> None:
    """HAProxy 2.6 takes `crt FILE` with the key in FILE or in FILE.key beside it; it has no way to
    name a key elsewhere. So the certificate and the key are copied into one PEM, KEY_MODE, in
    the workdir. Run lb-config again when the certificate is renewed (a certbot deploy hook)."""
    assert b.tls_cert is not None and b.tls_key is not None
    with open(b.tls_cert, "rb") as cert, open(b.tls_key, "rb") as key:
        pem = cert.read().rstrip(b"\n") + b"\n" + key.read()
    path = b.haproxy_pem()
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_MODE), "wb") as out:
        os.fchmod(out.fileno(), KEY_MODE)  # an older file of wider mode is narrowed, not trusted
        out.write(pem)
