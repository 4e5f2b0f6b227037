"""Config: every option with its default and help, and what the options must satisfy together
(validate). How the layers (defaults < file < LIVECOMMENTS_* environment < flags) are merged:
livecomments/config_layers.py."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from livecomments import backends

ROLES = ("both", "writer", "realtime")
STRATEGIES = ("broadcast", "partitioned", "dispatcher")  # built by backends.open_strategy
ENV_PREFIX = "LIVECOMMENTS_"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
BATCH_MODES = ("paced", "fixed", "adaptive")  # core/fanout.py MODES
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")
_QUERY_SECRET = re.compile(r"((?:password|secret|token)=)[^&]*", re.IGNORECASE)


# Options that must be > 0, and those that must be >= 0 (with what 0 means, where it means something).
POSITIVE = ("max_text", "max_author", "page_limit", "viewer_buffer", "backlog_limit", "batch_hot", "header_timeout",
            "body_timeout", "keepalive_timeout", "send_timeout", "max_streams", "ping_interval", "repair_interval",
            "viewers_interval", "registry_ttl", "max_pending_posts", "retention_interval", "auth_jwks_cooldown")
NON_NEGATIVE = {"partitions": "one channel per video", "max_body": "derived", "max_connections": "no cap",
                "max_connections_per_address": "no cap", "max_streams_per_address": "no cap", "batch_ms": "immediate",
                "retention_comments": "keep all", "retention_days": "keep all", "rate_limit_per_s": "no limit",
                "rate_limit_burst": "no limit", "auth_jwt_leeway": "none"}


def opt(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


class ConfigError(ValueError):
    """A configuration that cannot work; the message is one line for the user."""


def mask_url(url: str) -> str:
    """The URL with its password (user:PASSWORD@host, ?password=…) hidden, for logs and messages."""
    return _QUERY_SECRET.sub(r"\1********", _URL_PASSWORD.sub(r"\1********@", url))


def masked(name: str, value: str) -> str:
    """An option's value as it may be printed: secrets hidden (printed configs end up in tickets)."""
    if name.endswith("_secret") or "password" in name:
        return "********" if value else ""
    return mask_url(value)


def _require_driver(what: str, url: str) -> None:
    extra = backends.missing_driver(url)
    if extra:
        scheme = url.split("://", 1)[0]
        raise ConfigError(f"{what} {scheme}:// needs the {extra} extra: pip install 'livecomments[{extra}]'")


@dataclass(frozen=True)
class Config:
    role: str = opt("both", "which half of the API this process serves")
    strategy: str = opt("broadcast", "how comments reach realtime processes")
    broker: str = opt("memory://", backends.forms("broker"))
    registry: str = opt("", "dispatcher registry: " + backends.forms("registry"))
    storage: str = opt("sqlite:///livecomments.db", backends.forms("storage"))
    host: str = opt("127.0.0.1", "address to listen on")
    port: int = opt(8080, "port to listen on (0 picks a free one)")
    workers: int = opt(1, "processes sharing the port (SO_REUSEPORT), each its own hub; > 1 needs a shared broker or registry")
    server_id: str = opt("", "name in X-Served-By (default host:port)")
    advertise_url: str = opt("", "URL other processes reach this one at (dispatcher pushes)")
    internal_port: int = opt(0, "port for /internal/v1/deliver (0 = a free one, or the public port if advertise_url is given)")
    registry_ttl: float = opt(3.0, "dispatcher: seconds a crashed server stays registered")
    cluster_secret: str = opt("", "shared secret signing what processes send each other")
    cursor_secret: str = opt("", "key that signs history cursors (empty: a random one kept in the database)")
    partitions: int = opt(64, "partitioned strategy: channels (0 = one per video)")
    max_text: int = opt(2000, "max comment length in characters")
    max_author: int = opt(64, "max author length in characters")
    max_body: int = opt(0, "max request body in bytes (0 = derived from max_text and max_author)")
    expose_errors: bool = opt(False, "put internal details (broker/registry errors) in public replies, not only in the log")
    header_timeout: float = opt(10.0, "seconds a client has to send a request's headers (from connect, or its first byte)")
    body_timeout: float = opt(30.0, "seconds a client has to send a request's body once its headers arrived")
    keepalive_timeout: float = opt(75.0, "seconds an idle keep-alive connection stays open")
    max_connections: int = opt(4096, "connections handled at once per process, live streams not counted (0 = no cap)")
    max_connections_per_address: int = opt(256, "of those, from one client address (0 = no cap)")
    page_limit: int = opt(200, "max comments per history page")
    ping_interval: float = opt(15.0, "seconds between SSE heartbeats (keep < proxy idle timeout)")
    retry_ms: int = opt(2000, "SSE retry: sent to EventSource clients")
    viewer_buffer: int = opt(1 << 20, "bytes queued to one viewer before it is cut as slow")
    send_timeout: float = opt(10.0, "seconds a stream's catch-up write may wait for a stalled viewer before it is cut as slow")
    max_streams: int = opt(10_000, "open SSE streams per process (lowered to fit the open files limit)")
    max_streams_per_address: int = opt(100, "open SSE streams per client address; loopback not capped (0 = no cap)")
    backlog_limit: int = opt(1000, "comments read from storage per resume/repair query")
    unwatch_linger: float = opt(1.0, "seconds a video stays watched after its last viewer leaves")
    repair_interval: float = opt(2.0, "seconds between head checks: a comment the broker lost reaches viewers within it")
    viewers_interval: float = opt(2.0, "seconds between viewer count updates (event: viewers) and shares of local counts")
    batch_mode: str = opt("paced", "fan-out: paced (a comment waits only while the loop is busy writing that video), "
                                   "fixed (every comment waits a window) or adaptive (fixed windows for hot videos only)")
    batch_ms: float = opt(20.0, "fan-out: the longest a comment waits (paced), the window (fixed, adaptive); "
                                "0 = one write per comment")
    batch_hot: int = opt(10_000, "adaptive batching: deliveries/s (viewers x comments/s) that make a video hot")
    group_commit: bool = opt(True, "group concurrent posts into one transaction")
    max_pending_posts: int = opt(4096, "posts waiting for a storage commit before new ones get 503 overloaded")
    retention_comments: int = opt(0, "comments kept per video, the newest (0 = keep all)")
    retention_days: float = opt(0.0, "days a comment is kept (0 = forever)")
    retention_interval: float = opt(60.0, "seconds between retention passes (each deletes in small batches)")
    shutdown_timeout: float = opt(5.0, "seconds to finish in-flight requests on SIGTERM")
    auth_jwt_secret: str = opt("", "HS256 key (>= 32 bytes) that signs bearer tokens; empty with no public key: open posting")
    auth_jwt_previous_secret: str = opt("", "the HS256 key before auth_jwt_secret, accepted while its tokens live (rollover)")
    auth_jwt_public_key: str = opt("", "PEM public key(s), or a path to them, verifying RS256/ES256/EdDSA bearer tokens; "
                                       "several PEM blocks: each verifies (rollover)")
    auth_jwks_url: str = opt("", "URL of a JWKS: keys chosen by each token's kid, refreshed when a kid is unknown")
    auth_jwks_cooldown: float = opt(10.0, "least seconds between JWKS fetches that unknown kids cause (bounds a flood)")
    auth_jwt_audience: str = opt("", "required `aud` of bearer tokens (empty: not checked)")
    auth_jwt_issuer: str = opt("", "required `iss` of bearer tokens (empty: not checked)")
    auth_jwt_leeway: float = opt(30.0, "seconds of clock skew forgiven in bearer tokens' exp, nbf and iat")
    auth_streams: bool = opt(False, "streams, history and video info need a bearer token too (or ?access_token=)")
    open_posting: bool = opt(False, "allow posting without tokens on a non-loopback address")
    rate_limit_per_s: float = opt(1.0, "posts per second each user (or anonymous client address) sustains (0 = no limit)")
    rate_limit_burst: int = opt(5, "posts a user may send at once before rate_limit_per_s applies (0 = no limit)")
    rate_limit_redis: str = opt("", "redis://… sharing rate limits between writers (default: the broker when redis://)")
    rate_limit_fail_open: bool = opt(True, "when the rate-limit Redis is down, accept posts (else refuse them with 503)")
    trusted_proxies: tuple[str, ...] = opt((), "addresses/networks whose X-Forwarded-For is believed (comma-separated)")
    ipv6_prefix: int = opt(64, "IPv6 clients are rate-limited and capped per network of this many bits (128 = per address)")
    cors_origins: tuple[str, ...] = opt((), "origins allowed to post and stream from a browser (comma-separated; * = any)")
    log_level: str = opt("info", "debug, info, warning or error")
    log_format: str = opt("text", "text (one line per event) or json (one object per line)")
    access_log: bool = opt(False, "log one line per request: method, path, status, duration, server id")

    @property
    def serves_writer(self) -> bool:
        return self.role in ("both", "writer")

    @property
    def serves_realtime(self) -> bool:
        return self.role in ("both", "realtime")

    @property
    def broker_is_memory(self) -> bool:
        return self.broker.startswith("memory://")

    @property
    def derived_body_limit(self) -> int:
        """Bytes of the largest valid comment body: every character of text and author sent
        JSON-escaped as a surrogate pair (an emoji as \\ud83d\\ude00: 12 bytes), plus room for
        the keys and whitespace. A valid comment never gets 413."""
        return 12 * (self.max_text + self.max_author) + 1024

    @property
    def body_limit(self) -> int:
        """The request body limit in force: max_body, or the derived one when max_body is 0."""
        return self.max_body or self.derived_body_limit

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def validate(self) -> Config:
        if self.role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if backends.find("broker", self.broker) is None:
            raise ConfigError(f"broker {mask_url(self.broker)!r}: use {backends.forms('broker')}")
        if backends.find("storage", self.storage) is None:
            raise ConfigError(f"storage {mask_url(self.storage)!r}: use {backends.forms('storage')}")
        if self.storage.startswith("sqlite://") and not self.storage.startswith("sqlite:///"):
            path = self.storage.removeprefix("sqlite://")  # sqlite://x.db would be a folder 'sqlite:'
            raise ConfigError(f"storage {self.storage!r}: a SQLite URL has three slashes: sqlite:///{path} "
                              f"(relative) or sqlite:////{path.lstrip('/')} (absolute)")
        if self.storage in ("sqlite:///", "sqlite:////"):
            raise ConfigError(f"storage {self.storage!r} names no file: use sqlite:///PATH")
        if self.registry and backends.find("registry", self.registry) is None:
            raise ConfigError(f"registry {mask_url(self.registry)!r}: use {backends.forms('registry')}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}")
        if self.batch_mode not in BATCH_MODES:
            raise ConfigError(f"batch_mode must be one of {', '.join(BATCH_MODES)}, not {self.batch_mode!r}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}")
        if self.strategy == "dispatcher":
            if not self.registry:
                raise ConfigError("the dispatcher strategy needs a registry: --registry memory://, redis://… or etcd://…")
            if self.registry.startswith("memory://") and self.role != "both":
                raise ConfigError(
                    f"role {self.role} cannot share an in-memory registry with other processes: "
                    "use --registry redis://… or etcd://…"
                )
            if self.role != "both" and not self.cluster_secret:
                raise ConfigError("the dispatcher across processes needs --cluster-secret to sign pushes")
            if not self.cluster_secret and not self.registry.startswith("memory://"):
                # Other processes find this one in a shared registry and push to it: unsigned, every push is refused.
                raise ConfigError(f"a shared registry ({self.registry.split('://', 1)[0]}://) means pushes between "
                                  "processes: give every process the same --cluster-secret")
        elif self.role != "both" and self.broker_is_memory:
            raise ConfigError(f"role {self.role} cannot reach other processes over the in-memory broker: use --broker redis://HOST:PORT/DB")
        self._validate_workers()
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range")
        for name in POSITIVE:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        for name, zero_means in NON_NEGATIVE.items():
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0" + (f" (0 = {zero_means})" if zero_means else ""))
        if 0 < self.max_body < self.derived_body_limit:
            raise ConfigError(f"max_body {self.max_body} is below the largest valid comment ({self.derived_body_limit} bytes): "
                              "use 0 to derive it")
        # the storage and broker first: a missing driver is blamed on what the user asked for by name
        _require_driver("storage", self.storage)
        _require_driver(*(("registry", self.registry) if self.strategy == "dispatcher" else ("broker", self.broker)))
        self._validate_identity()
        return self

    def _validate_workers(self) -> None:
        """Workers are separate processes: what they share must live outside them (see workers.py)."""
        if not 1 <= self.workers <= 256:
            raise ConfigError(f"workers must be between 1 and 256, not {self.workers}")
        if self.workers == 1:
            return
        if self.strategy == "dispatcher" and self.registry.startswith("memory://"):
            raise ConfigError(f"{self.workers} workers cannot share an in-memory registry: use --registry redis://… or etcd://…")
        if self.strategy != "dispatcher" and self.broker_is_memory:
            raise ConfigError(f"{self.workers} workers cannot share the in-memory broker: use --broker redis://HOST:PORT/DB")
        if self.advertise_url or self.internal_port:
            raise ConfigError("with workers, leave advertise_url and internal_port unset: each worker takes a free "
                              "port for pushes and advertises it")

    def _validate_identity(self) -> None:
        """Tokens, rate limits, trusted proxies and CORS (see auth.py, ratelimit.py, clientaddr.py, cors.py)."""
        from livecomments.addresses import parse_networks
        from livecomments.tokens import TokenKeyError, load_keys

        try:
            load_keys(self.auth_jwt_secret, self.auth_jwt_public_key, self.auth_jwt_previous_secret)
        except TokenKeyError as e:
            raise ConfigError(str(e)) from None
        if self.auth_jwks_url and not self.auth_jwks_url.startswith(("http://", "https://")):
            raise ConfigError(f"auth_jwks_url {self.auth_jwks_url!r}: use https://HOST/PATH (the login server's JWKS)")
        authenticated = bool(self.auth_jwt_secret or self.auth_jwt_public_key or self.auth_jwks_url)
        if self.auth_streams and not authenticated:
            raise ConfigError("auth_streams needs a token key: --auth-jwt-secret, --auth-jwt-public-key or --auth-jwks-url")
        if self.serves_writer and not authenticated and not self.open_posting and not _is_loopback(self.host):
            raise ConfigError(f"anyone could post as anyone on {self.host}: set --auth-jwt-secret or "
                              "--auth-jwt-public-key, or pass --open-posting")
        if self.rate_limit_redis and not self.rate_limit_redis.startswith(("redis://", "rediss://")):
            raise ConfigError(f"rate_limit_redis {mask_url(self.rate_limit_redis)!r}: use redis://HOST:PORT/DB")
        if self.rate_limits_on and self.rate_limit_url:
            _require_driver("rate limits on", self.rate_limit_url)
        if not 1 <= self.ipv6_prefix <= 128:
            raise ConfigError(f"ipv6_prefix must be between 1 and 128, not {self.ipv6_prefix}")
        try:
            parse_networks(self.trusted_proxies)
        except ValueError as e:
            raise ConfigError(f"trusted_proxies: {e}") from None
        for origin in self.cors_origins:
            if origin != "*" and (not origin.startswith(("http://", "https://")) or origin.count("/") != 2):
                raise ConfigError(f"cors_origins: {origin!r} is not an origin like https://example.com[:port]")

    @property
    def rate_limits_on(self) -> bool:
        """Whether this process limits posts: it takes them, and neither knob is 0."""
        return self.serves_writer and bool(self.rate_limit_per_s and self.rate_limit_burst)

    @property
    def rate_limit_url(self) -> str:
        """Where rate limits are shared: rate_limit_redis, else a redis:// broker, else "" (in-process)."""
        if self.rate_limit_redis:
            return self.rate_limit_redis
        return self.broker if self.broker.startswith(("redis://", "rediss://")) else ""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
