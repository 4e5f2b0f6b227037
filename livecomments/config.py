"""Config: defaults < file (TOML) < LIVECOMMENTS_* environment < command-line flags."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any

ROLES = ("both", "writer", "realtime")
STRATEGIES = ("broadcast", "partitioned", "dispatcher")
ENV_PREFIX = "LIVECOMMENTS_"


def opt(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


class ConfigError(ValueError):
    """A configuration that cannot work; the message is one line for the user."""


@dataclass(frozen=True)
class Config:
    role: str = opt("both", "which half of the API this process serves")
    strategy: str = opt("broadcast", "how comments reach realtime processes")
    broker: str = opt("memory://", "memory://, redis://HOST:PORT/DB or redis+cluster://HOST:PORT")
    registry: str = opt("", "dispatcher registry: memory://, redis://… or etcd://HOST:PORT")
    storage: str = opt("sqlite:///livecomments.db", "sqlite:///PATH or postgresql://…")
    host: str = opt("127.0.0.1", "address to listen on")
    port: int = opt(8080, "port to listen on (0 picks a free one)")
    server_id: str = opt("", "name in X-Served-By (default host:port)")
    advertise_url: str = opt("", "URL other processes reach this one at (dispatcher pushes)")
    internal_port: int = opt(0, "separate port for /internal/v1/deliver (0 = the public port)")
    registry_ttl: float = opt(3.0, "dispatcher: seconds a crashed server stays registered")
    cluster_secret: str = opt("", "shared secret signing what processes send each other")
    cursor_secret: str = opt("livecomments-cursor", "key that signs history cursors (same on every writer)")
    partitions: int = opt(64, "partitioned strategy: channels (0 = one per video)")
    max_text: int = opt(2000, "max comment length in characters")
    max_author: int = opt(64, "max author length in characters")
    max_body: int = opt(16384, "max request body in bytes")
    page_limit: int = opt(200, "max comments per history page")
    ping_interval: float = opt(15.0, "seconds between SSE heartbeats (keep < proxy idle timeout)")
    retry_ms: int = opt(2000, "SSE retry: sent to EventSource clients")
    viewer_buffer: int = opt(1 << 20, "bytes queued to one viewer before it is cut as slow")
    backlog_limit: int = opt(1000, "comments read from storage per resume/repair query")
    unwatch_linger: float = opt(1.0, "seconds a video stays watched after its last viewer leaves")
    batch_ms: float = opt(20.0, "fan-out: coalesce a video's comments per window of this many ms (0 = immediate)")
    batch_adaptive: bool = opt(True, "fan-out: hold comments only on hot videos (viewers x comments/s >= batch_hot)")
    batch_hot: int = opt(10_000, "adaptive batching: deliveries/s (viewers x comments/s) that make a video hot")
    group_commit: bool = opt(True, "group concurrent posts into one transaction")
    shutdown_timeout: float = opt(5.0, "seconds to finish in-flight requests on SIGTERM")
    log_level: str = opt("info", "debug, info, warning or error")

    @property
    def serves_writer(self) -> bool:
        return self.role in ("both", "writer")

    @property
    def serves_realtime(self) -> bool:
        return self.role in ("both", "realtime")

    @property
    def broker_is_memory(self) -> bool:
        return self.broker.startswith("memory://")

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    def validate(self) -> Config:
        if self.role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if not self.broker.startswith(("memory://", "redis://", "rediss://", "redis+cluster://")):
            raise ConfigError(f"broker {self.broker!r}: use memory://, redis://HOST:PORT/DB or redis+cluster://HOST:PORT")
        if not self.storage.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ConfigError(f"storage {self.storage!r}: use sqlite:///PATH or postgresql://…")
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
        elif self.role != "both" and self.broker_is_memory:
            raise ConfigError(f"role {self.role} cannot reach other processes over the in-memory broker: use --broker redis://HOST:PORT/DB")
        if self.partitions < 0:
            raise ConfigError("partitions must be >= 0")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range")
        for name in ("max_text", "max_author", "max_body", "page_limit", "viewer_buffer", "backlog_limit", "batch_hot"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0")
        if self.ping_interval <= 0:
            raise ConfigError("ping_interval must be > 0")
        if self.registry_ttl <= 0:
            raise ConfigError("registry_ttl must be > 0")
        if self.batch_ms < 0:
            raise ConfigError("batch_ms must be >= 0")
        return self


def _coerce(name: str, raw: Any, typ: type) -> Any:
    try:
        if typ is bool and isinstance(raw, str):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if typ is float and isinstance(raw, int | float | str) and not isinstance(raw, bool):
            return float(raw)
        if typ is int and isinstance(raw, int | str) and not isinstance(raw, bool):
            return int(raw)
        if typ is str and isinstance(raw, str):
            return raw
        if isinstance(raw, typ):
            return raw
    except ValueError:
        pass
    raise ConfigError(f"{name}: {raw!r} is not a valid {typ.__name__}")


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def load(
    file: str | None = None,
    environ: dict[str, str] | None = None,
    flags: dict[str, Any] | None = None,
) -> Config:
    """Merge the layers; unknown keys in the file are an error, not silently ignored."""
    environ = dict(os.environ) if environ is None else environ
    file = file or environ.get(ENV_PREFIX + "CONFIG") or None
    types = {f.name: _TYPES[str(f.type)] for f in fields(Config)}
    values: dict[str, Any] = {}
    if file:
        try:
            with open(file, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as e:
            raise ConfigError(f"cannot read config file {file}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {file}: {e}") from None
        for key, raw in data.items():
            name = key.replace("-", "_")
            if name not in types:
                raise ConfigError(f"config file {file}: unknown option {key!r}")
            values[name] = _coerce(key, raw, types[name])
    for name, typ in types.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _coerce(ENV_PREFIX + name.upper(), raw, typ)
    for name, raw in (flags or {}).items():
        if raw is not None:
            values[name] = _coerce("--" + name.replace("_", "-"), raw, types[name])
    return Config(**values).validate()


def options() -> list[tuple[str, type, Any, str]]:
    """(name, type, default, help) for every option: the CLI builds its flags from this."""
    return [(f.name, _TYPES[str(f.type)], f.default, f.metadata["help"]) for f in fields(Config)]
