"""`livecomments lb-config`: a complete nginx or HAProxy config for the L7 balancer.

Streams (SSE and WebSocket) go to the realtime servers, hashed on the video id so a video's
viewers share one server (and that server needs one channel for them); posts, history and health
go to the writers; /internal/ (dispatcher pushes) is never reachable through the balancer.
The printed file runs as it is: `nginx -c FILE` (in the foreground) or `haproxy -f FILE`.
Policy `bounded` (consistent hashing with bounded loads, so a hot video's viewers spill over the
next servers instead of melting one) is HAProxy's `hash-balance-factor`; nginx has no equivalent.
`--tls-cert`/`--tls-key` make it HTTPS with HTTP/2. The configs themselves are ops/nginx_conf.py
and ops/haproxy_conf.py; what they share (the Balancer, logs, the PEM) is ops/balancer.py.

Both balancers append the client's address to X-Forwarded-For. The servers believe it only from
a proxy in their `trusted_proxies` (edge/clientaddr.py), so the command says, on stderr, which
address that is; without it every client behind the balancer is one client to the rate limits.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Sequence
from pathlib import Path

import click

from livecomments.ops.balancer import (
    BALANCE_FACTOR,
    DEFAULT_BODY_LIMIT,
    ERROR_LOG_LEVEL,
    ERROR_LOG_LEVELS,
    FORMATS,
    POLICIES,
    Balancer,
    default_workdir,
    is_file,
    prepare_log,
    write_haproxy_pem,
)
from livecomments.ops.haproxy_conf import haproxy_config
from livecomments.ops.nginx_conf import nginx_config

__all__ = ["BALANCE_FACTOR", "POLICIES", "Balancer", "haproxy_config", "lb_config", "nginx_config", "render",
           "trusted_proxies", "write_config"]


def _absolute(target: str | None) -> str | None:
    """nginx resolves a relative log path against its prefix, not where lb-config ran: make it absolute."""
    return os.path.abspath(target) if target is not None and is_file(target) else target


def _check_address(addr: str, what: str) -> str:
    """HOST:PORT as nginx and HAProxy take it; a URL would pass a naive split and break nginx later."""
    host, sep, port = addr.rpartition(":")
    if "/" in addr:
        raise click.ClickException(f"{what} {addr!r}: expected HOST:PORT, not a URL (e.g. 127.0.0.1:9001)")
    if not sep or not host or any(c.isspace() for c in host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.ClickException(f"{what} {addr!r}: expected HOST:PORT")
    return addr


def _check_tls(cert: str | None, key: str | None) -> tuple[str | None, str | None]:
    if (cert is None) != (key is None):
        raise click.ClickException("--tls-cert and --tls-key go together: give both, or neither for plain HTTP")
    for path, what in ((cert, "--tls-cert"), (key, "--tls-key")):
        if path is not None and not os.access(path, os.R_OK):
            raise click.ClickException(f"{what} {path}: no such readable file")
    return _absolute(cert), _absolute(key)


def _source_address(addr: str) -> str | None:
    """The address this host sends from to reach `addr`: what a balancer here is, to that server.
    A UDP socket's connect() only asks the routing table; no packet leaves."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(sockaddr)
            return str(ipaddress.ip_address(probe.getsockname()[0].split("%")[0]))
    except (OSError, ValueError):
        return None


def trusted_proxies(b: Balancer) -> list[str]:
    """The addresses the servers behind `b` see it connect from, as seen from this host (run
    lb-config on the balancer's host); the listen address when no route is known."""
    found = [_source_address(addr) for addr in [*b.backends, *b.writers]]
    addresses = sorted({a for a in found if a is not None})
    return addresses or [b.listen.rpartition(":")[0].strip("[]")]


def render(b: Balancer, fmt: str = "nginx") -> str:
    return nginx_config(b) if fmt == "nginx" else haproxy_config(b)


def _prepare_files(b: Balancer, fmt: str, *output: str | os.PathLike[str]) -> None:
    for log in [*b.log_files(fmt), *output]:
        prepare_log(log)
    if fmt == "haproxy" and b.tls:
        write_haproxy_pem(b)


def write_config(b: Balancer, fmt: str, path: str | os.PathLike[str], *output: str | os.PathLike[str]) -> None:
    """Write the config to `path`, create its log files LOG_MODE, with `output` (where the launcher
    sends the balancer's stdout and stderr: HAProxy's log when it logs to stdout), and HAProxy's PEM."""
    _prepare_files(b, fmt, *output)
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
@click.option("--tls-cert", default=None, help="HTTPS with HTTP/2: the certificate (chain) PEM; with --tls-key")
@click.option("--tls-key", default=None, help="the certificate's private key PEM (HAProxy: copied, 0600, into "
              "WORKDIR/livecomments-haproxy.pem; run again after a renewal)")
@click.option("--workdir", default=default_workdir, show_default="$XDG_STATE_HOME/livecomments",
              help="nginx's pid, logs and temp dirs; HAProxy's PEM (created 0700 if missing)")
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
              fmt: str, tls_cert: str | None, tls_key: str | None, workdir: str, worker_processes: str,
              max_body: int, access_log: str | None, error_log: str | None, error_log_level: str) -> None:
    """Print an nginx or HAProxy config that routes streams by video id.

    nginx's log files are created (mode 0640) here, as nginx would create them readable by all.
    The servers behind need `--trusted-proxies` with the address printed on stderr."""
    _check_address(listen, "--listen")
    for addr in backends:
        _check_address(addr, "--backend")
    for addr in writers:
        _check_address(addr, "--writer")
    tls_cert, tls_key = _check_tls(tls_cert, tls_key)
    if fmt == "nginx":
        access_log, error_log = _absolute(access_log), _absolute(error_log)
    balancer = Balancer(listen, backends, writers, policy, os.path.abspath(workdir), worker_processes, max_body,
                        balance_factor, access_log, error_log, error_log_level, tls_cert, tls_key)
    config = render(balancer, fmt)  # refuses what cannot work before any file is made
    try:
        if fmt == "nginx" or balancer.tls:
            os.makedirs(balancer.workdir, mode=0o700, exist_ok=True)
        _prepare_files(balancer, fmt)
    except OSError as e:
        raise click.ClickException(f"cannot create {e.filename}: {e.strerror}") from None
    click.echo(config, nl=False)
    click.echo(_trust_line(trusted_proxies(balancer)), err=True)


def _trust_line(addresses: Sequence[str]) -> str:
    return (f"lb-config: start the servers behind it with --trusted-proxies {','.join(addresses)} "
            "(its address toward them, seen from this host), or every client shares one rate-limit bucket")
