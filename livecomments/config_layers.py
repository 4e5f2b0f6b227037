"""How a Config is built from its layers: defaults < file (TOML) < LIVECOMMENTS_* environment <
command-line flags, each value checked as the operator wrote it (livecomments/config.py holds the
options and what they must satisfy together)."""

from __future__ import annotations

import difflib
import logging
import math
import os
import tomllib
from collections.abc import Iterable
from dataclasses import fields
from typing import Any

from livecomments.config import ENV_PREFIX, Config, ConfigError

log = logging.getLogger(__name__)


# What a value of each type must be, as an operator reads it in a refusal.
EXPECTED = {str: "a string", int: "an integer", float: "a number", bool: "true or false", tuple: "a list of strings"}
EXPECTED_LISTS = {"cors_origins": "a list of origins", "trusted_proxies": "a list of addresses or networks"}


def _coerce(label: str, option: str, raw: Any, typ: type) -> Any:
    """`raw` (from the file, the environment or a flag: `label` names where) as option's type."""
    value = _convert(raw, typ)
    if value is None:
        expected = EXPECTED_LISTS.get(option, EXPECTED[typ]) if typ is tuple else EXPECTED[typ]
        hint = " (a list in the file, comma-separated in flags and the environment)" if typ is tuple else ""
        raise ConfigError(f"{label}: {_shown(raw)} is not {expected}{hint}")
    if typ is float and not math.isfinite(value):  # nan passes every > 0 check; inf makes timers absurd
        raise ConfigError(f"{label}: {_shown(raw)} is not a finite number")
    return value


def _convert(raw: Any, typ: type) -> Any:
    """`raw` as `typ`, or None when it is not one. A TOML true is no number (bool is an int in Python)."""
    if typ is tuple and isinstance(raw, str):  # flags and environment: comma-separated
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if typ is tuple and isinstance(raw, list) and all(isinstance(item, str) for item in raw):  # a TOML array
        return tuple(raw)
    if typ is bool and isinstance(raw, str):
        return {"1": True, "true": True, "yes": True, "on": True,
                "0": False, "false": False, "no": False, "off": False}.get(raw.lower())
    if typ is bool and isinstance(raw, bool):
        return raw
    if typ is str and isinstance(raw, str):
        return raw
    if typ in (int, float) and isinstance(raw, int | float | str) and not isinstance(raw, bool):
        if typ is int and isinstance(raw, float):
            return None  # 80.5 is no port, and 80.0 is a float written for an integer option
        try:
            return typ(raw)
        except ValueError:
            return None
    return None


def _shown(raw: Any) -> str:
    """A value as the operator wrote it: TOML's true/false, a string quoted, anything else as is."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return repr(raw)


def _unknown_variables(environ: dict[str, str], names: Iterable[str]) -> list[str]:
    """One warning line per LIVECOMMENTS_* variable that is no option (nor LIVECOMMENTS_CONFIG)."""
    known = {ENV_PREFIX + name.upper() for name in names} | {ENV_PREFIX + "CONFIG"}
    lines = []
    for variable in sorted(v for v in environ if v.startswith(ENV_PREFIX) and v not in known):
        near = ([name for name in sorted(known) if name.startswith(variable + "_")]  # the start of a name
                or difflib.get_close_matches(variable, sorted(known), n=1, cutoff=0.8))  # a typo
        lines.append(f"{variable} is not an option, ignored" + (f" (did you mean {' or '.join(near)}?)" if near else "")
                     + ": `livecomments serve --help` lists the options")
    return lines


_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "tuple[str, ...]": tuple}


def load(
    file: str | None = None,
    environ: dict[str, str] | None = None,
    flags: dict[str, Any] | None = None,
) -> Config:
    """Merge the layers; unknown keys in the file are an error, not silently ignored, and unknown
    LIVECOMMENTS_* variables are each named in a warning."""
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
            values[name] = _coerce(key, name, raw, types[name])
    for name, typ in types.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _coerce(ENV_PREFIX + name.upper(), name, raw, typ)
    # Named, not refused: the environment is shared with other programs (a Kubernetes Service named
    # livecomments puts LIVECOMMENTS_SERVICE_HOST in every pod), where the file is ours alone.
    for line in _unknown_variables(environ, types):
        log.warning("%s", line)
    for name, raw in (flags or {}).items():
        if raw is not None:
            values[name] = _coerce("--" + name.replace("_", "-"), name, raw, types[name])
    return Config(**values).validate()


def options() -> list[tuple[str, type, Any, str]]:
    """(name, type, default, help) for every option: the CLI builds its flags from this."""
    return [(f.name, _TYPES[str(f.type)], f.default, f.metadata["help"]) for f in fields(Config)]
