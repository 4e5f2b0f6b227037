"""`livecomments lb-config`: a complete nginx or HAProxy config for the L7 balancer.

Streams go to the realtime servers, hashed on the video id so a video's viewers share one
server (and that server needs one channel for them); posts, history and health go to the
writers; /internal/ (dispatcher pushes) is never reachable through the balancer.
The printed file runs as it is: `nginx -c FILE` (in the foreground) or `haproxy -f FILE`.
Policy `bounded` (consistent hashing with bounded loads, so a hot video's viewers spill over the
next servers instead of melting one) is HAProxy's `hash-balance-factor`; nginx has no equivalent.

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
from pathlib import Path

import click

from livecomments.config import Config

POLICIES = ("hash", "round-robin", "bounded")
BALANCE_FACTOR = 1.25  # no server above 1.25 × the mean connections: HAProxy's hash-balance-factor 125
NGINX_HAS_NO_BOUNDED = (
    "nginx has no bounded-load hashing: use --format haproxy for --policy bounded (hash-balance-factor)"
)
FORMATS = ("nginx", "haproxy")
NOT_FOUND = '{"error":{"code":"not_found","message":"no such route"}}'
# Streams are idle between heartbeats (15 s) for as long as a viewer watches; a proxy timeout
# shorter than the heartbeat cuts them, a long one costs nothing.
STREAM_TIMEOUT = "1h"
# The servers' default body limit, derived from max_text/max_author: the largest valid comment passes.
DEFAULT_BODY_LIMIT = Config().body_limit
LOG_MODE = 0o640  # the balancer's user writes, its group (adm, say) reads, nobody else
# nginx writes the client's request line, query and so `?access_token=` included, into every error
# it logs about a request (upstream refused, timed out, worker_connections used up: levels error to
# alert), and no directive changes that: only emerg (start-up failures) is free of requests.
# What a request's failure was still shows in the access log (status, upstream, upstream status).
ERROR_LOG_LEVEL = "emerg"
ERROR_LOG_LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")
HAPROXY_LOG = "stdout"  # HAProxy writes no files: its log goes to a syslog address, stdout or stderr


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
    workdir: str = field(default_factory=default_workdir)  # pid, logs, temp dirs (nginx); must exist
    worker_processes: str = "auto"
    max_body: int = DEFAULT_BODY_LIMIT  # the servers' body limit: bigger bodies are refused at the edge
    balance_factor: float = BALANCE_FACTOR  # policy bounded only
    # nginx: files (default: in workdir). HAProxy: a log address (default stdout; /dev/log is syslog);
    # "off" logs no requests.
    access_log: str | None = None
    error_log: str | None = None  # nginx only; default: in workdir
    error_log_level: str = ERROR_LOG_LEVEL  # nginx only; below emerg, request lines (tokens) reach it

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
        return [log for log in (self.error_log_path(), self.access_log_target(fmt)) if _is_file(log)]


def _is_file(target: str) -> bool:
    """An nginx log target that is a file (not off, stderr or syslog:server=…)."""
    return target not in ("off", "stderr") and not target.startswith(("syslog:", "memory:"))


def _absolute(target: str | None) -> str | None:
    """nginx resolves a relative log path against its prefix, not where lb-config ran: make it absolute."""
    return os.path.abspath(target) if target is not None and _is_file(target) else target


def _check_address(addr: str, what: str) -> str:
    """HOST:PORT as nginx and HAProxy take it; a URL would pass a naive split and break nginx later."""
    host, sep, port = addr.rpartition(":")
    if "/" in addr:
        raise click.ClickException(f"{what} {addr!r}: expected HOST:PORT, not a URL (e.g. 127.0.0.1:9001)")
    if not sep or not host or any(c.isspace() for c in host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.ClickException(f"{what} {addr!r}: expected HOST:PORT")
    return addr


def nginx_config(b: Balancer) -> str:
    if b.policy == "bounded":
        raise click.ClickException(NGINX_HAS_NO_BOUNDED)
    wd = b.workdir.rstrip("/") or "/"
    access = b.access_log_target("nginx")
    access_log = "off" if access == "off" else f"{access} livecomments"
    # `hash … consistent` is ketama over the server names as written here: livecomments.ops.ring
    # reproduces it, so keep one `server` line per backend, each written as HOST:PORT.
    balance = "        hash $video_id consistent;\n" if b.policy == "hash" else ""
    realtime = "".join(f"        server {s};\n" for s in b.backends)
    writers = "".join(f"        server {s};\n" for s in b.writers)
    return f"""\
# Generated by `livecomments lb-config --format nginx`; run with: nginx -c THIS_FILE
daemon off;  # foreground: Ctrl-C (or SIGTERM/SIGQUIT) stops it; drop this line to daemonize
worker_processes {b.worker_processes};
worker_rlimit_nofile 65536;  # raised when started as root; otherwise the shell's limit applies
pid {wd}/livecomments-nginx.pid;
# Below emerg, nginx prints request lines here, ?access_token= included: see `lb-config --help`.
error_log {b.error_log_path()} {b.error_log_level};

events {{
    worker_connections 16384;  # each viewer holds one client and one upstream connection
}}

http {{
    # The path without the query: `?access_token=` (EventSource's bearer token) never reaches the log.
    log_format livecomments '$remote_addr [$time_local] "$request_method $uri $server_protocol" '
                            '$status $body_bytes_sent upstream=$upstream_addr '
                            'upstream_status=$upstream_status rt=$request_time';
    access_log {access_log};
    client_body_temp_path {wd}/livecomments-nginx-client-body;
    proxy_temp_path {wd}/livecomments-nginx-proxy;
    fastcgi_temp_path {wd}/livecomments-nginx-fastcgi;
    uwsgi_temp_path {wd}/livecomments-nginx-uwsgi;
    scgi_temp_path {wd}/livecomments-nginx-scgi;
    server_tokens off;
    gzip off;

    upstream livecomments_realtime {{
{balance}{realtime}        keepalive 32;
    }}

    upstream livecomments_writer {{
{writers}        keepalive 32;
    }}

    server {{
        listen {b.listen};
        # Bodies stay in memory and responses are streamed, never spooled to disk, so the
        # worker user needs no write access anywhere.
        client_max_body_size {b.max_body};
        client_body_buffer_size {b.max_body};
        proxy_max_temp_file_size 0;
        proxy_http_version 1.1;  # keepalive upstreams, chunked SSE
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        default_type application/json;

        # The SSE stream: the id captured here is the hash key. The server validates it.
        location ~ ^/v1/videos/(?<video_id>[^/]+)/stream$ {{
            proxy_pass http://livecomments_realtime;
            proxy_buffering off;  # each comment goes out as soon as it arrives
            proxy_cache off;
            proxy_read_timeout {STREAM_TIMEOUT};
            proxy_send_timeout {STREAM_TIMEOUT};
            gzip off;
        }}

        location /v1/ {{
            proxy_pass http://livecomments_writer;
        }}

        location = /healthz {{
            proxy_pass http://livecomments_writer;
        }}

        location = /readyz {{
            proxy_pass http://livecomments_writer;
        }}

        # The demo page (served by writers) and / which redirects to it.
        location = / {{
            proxy_pass http://livecomments_writer;
        }}

        location /demo {{
            proxy_pass http://livecomments_writer;
        }}

        # Dispatcher pushes and per-process metrics are for the cluster's own network.
        location ^~ /internal/ {{
            return 404 '{NOT_FOUND}';
        }}

        location / {{
            return 404 '{NOT_FOUND}';
        }}
    }}
}}
"""


def haproxy_config(b: Balancer) -> str:
    # field(4,/) of /v1/videos/ID/stream is ID; `balance hash` needs HAProxy >= 2.6.
    balance = "hash path,field(4,/)\n    hash-type consistent" if b.policy != "round-robin" else "roundrobin"
    if b.policy == "bounded":
        # A server takes a new stream only while below factor × the mean of the backend's open
        # connections (in percent, above 100); else the video walks on along the ring.
        balance += f"\n    hash-balance-factor {round(b.balance_factor * 100)}"
    realtime = "".join(f"    server rt{i} {s} check\n" for i, s in enumerate(b.backends, 1))
    writers = "".join(f"    server w{i} {s} check\n" for i, s in enumerate(b.writers, 1))
    target = b.access_log_target("haproxy")
    raw = " format raw" if target in ("stdout", "stderr") or target.startswith("fd@") else ""  # no syslog header
    log = "" if target == "off" else f"    log {target}{raw} local0 info\n"
    return f"""\
# Generated by `livecomments lb-config --format haproxy`; run with: haproxy -f THIS_FILE
global
    # no maxconn: HAProxy derives it from the open-file limit, which a fixed one could exceed
{log}
defaults
    mode http
    log global
    # %HPO is the path without the query: `?access_token=` (EventSource's bearer token) is never logged.
    log-format "%ci [%tr] \\"%HM %HPO %HV\\" %ST %B upstream=%b/%s rt=%Ta"
    option logasap  # a line when the answer starts: a stream's would come only when it ends, hours later
    option forwardfor
    timeout connect 5s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout client {STREAM_TIMEOUT}
    timeout server 60s
    timeout tunnel {STREAM_TIMEOUT}

frontend livecomments
    bind {b.listen}
    acl stream path_reg ^/v1/videos/[^/]+/stream$
    acl api path_beg /v1/
    acl health path /healthz /readyz
    acl demo path / /demo
    acl demo path_beg /demo/
    http-request return status 404 content-type application/json string '{NOT_FOUND}' if !stream !api !health !demo
    use_backend livecomments_realtime if stream
    default_backend livecomments_writer

backend livecomments_realtime
    balance {balance}
    timeout server {STREAM_TIMEOUT}  # a stream is idle between heartbeats
    # Send each frame at once: without it HAProxy 2.6 held every stream's first frame ~200 ms
    # (MSG_MORE meeting the client's delayed ACK).
    option http-no-delay
    option httpchk GET /readyz  # a server that cannot receive comments gets no viewers
{realtime}
backend livecomments_writer
    balance roundrobin
    option httpchk GET /readyz
{writers}"""


def render(b: Balancer, fmt: str = "nginx") -> str:
    return nginx_config(b) if fmt == "nginx" else haproxy_config(b)


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


def write_config(b: Balancer, fmt: str, path: str | os.PathLike[str], *output: str | os.PathLike[str]) -> None:
    """Write the config to `path` and create its log files LOG_MODE, with `output` (where the
    launcher sends the balancer's stdout and stderr: HAProxy's log when it logs to stdout)."""
    for log in [*b.log_files(fmt), *output]:
        prepare_log(log)
    Path(path).write_text(render(b, fmt))


@click.command("lb-config")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to listen on")
@click.option("--backend", "backends", multiple=True, required=True, help="realtime HOST:PORT (repeat)")
@click.option("--writer", "writers", multiple=True, required=True, help="writer HOST:PORT (repeat)")
@click.option("--policy", type=click.Choice(POLICIES), default="hash", show_default=True,
              help="streams: consistent hash of the video id, round-robin, or bounded (hash with bounded loads, "
              "HAProxy only)")
@click.option("--balance-factor", type=click.FloatRange(min=1.0, min_open=True), default=BALANCE_FACTOR,
              show_default=True, help="bounded: no server above this × the mean connections")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="nginx", show_default=True)
@click.option("--workdir", default=default_workdir, show_default="$XDG_STATE_HOME/livecomments",
              help="nginx's pid, logs and temp dirs (created 0700 if missing)")
@click.option("--access-log", default=None,
              help="nginx: the access log file [default: WORKDIR/livecomments-nginx-access.log]; HAProxy: "
              "where it logs (stdout [default], /dev/log for syslog, HOST:PORT); 'off': no access log. "
              "Paths only, never the query (?access_token=)")
@click.option("--error-log", default=None, help="nginx's error log [default: WORKDIR/livecomments-nginx-error.log]")
@click.option("--error-log-level", type=click.Choice(ERROR_LOG_LEVELS), default=ERROR_LOG_LEVEL, show_default=True,
              help="nginx: below emerg, request errors print the client's request line, ?access_token= included")
@click.option("--worker-processes", default="auto", show_default=True, help="nginx worker_processes")
@click.option("--max-body", type=int, default=DEFAULT_BODY_LIMIT, show_default=True,
              help="largest request body in bytes (the servers' body limit)")
def lb_config(listen: str, backends: tuple[str, ...], writers: tuple[str, ...], policy: str, balance_factor: float,
              fmt: str, workdir: str, worker_processes: str, max_body: int, access_log: str | None,
              error_log: str | None, error_log_level: str) -> None:
    """Print an nginx or HAProxy config that routes streams by video id.

    nginx's log files are created (mode 0640) here, as nginx would create them readable by all."""
    _check_address(listen, "--listen")
    for addr in backends:
        _check_address(addr, "--backend")
    for addr in writers:
        _check_address(addr, "--writer")
    if fmt == "nginx":
        access_log, error_log = _absolute(access_log), _absolute(error_log)
    balancer = Balancer(listen, backends, writers, policy, os.path.abspath(workdir), worker_processes, max_body,
                        balance_factor, access_log, error_log, error_log_level)
    config = render(balancer, fmt)  # refuses what cannot work before any file is made
    try:
        if fmt == "nginx":
            os.makedirs(balancer.workdir, mode=0o700, exist_ok=True)
        for log in balancer.log_files(fmt):
            prepare_log(log)
    except OSError as e:
        raise click.ClickException(f"cannot create {e.filename}: {e.strerror}") from None
    click.echo(config, nl=False)
