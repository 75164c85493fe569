"""Configuration: CLI flags > environment (``FERRULE_*``) > TOML file > defaults.

The resolved config is validated before anything binds a port. ``ferrule serve`` hands it to the
Granian workers as JSON in ``FERRULE_RESOLVED_CONFIG`` so every worker runs with exactly the
config the parent validated."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["Config", "ConfigError", "from_environment", "load", "resolved_from_env"]

RESOLVED_ENV = "FERRULE_RESOLVED_CONFIG"
ANTHROPIC_VERSIONS = ("2023-06-01", "2026-10-21")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting and why."""


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8766
    workers: int = 1
    upstream_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    # Seconds. connect: TCP+TLS to Anthropic; read: longest silence allowed between upstream
    # bytes (Anthropic pings streams every few seconds, so a long silence means a dead peer).
    connect_timeout: float = 10.0
    read_timeout: float = 600.0
    pool_size: int = 256
    max_body_bytes: int = 32 * 1024 * 1024
    log_level: str = "info"
    model_aliases: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))


# setting -> (environment variable, parser)
_INT = int
_FLOAT = float


def _str(v: str) -> str:
    return v


_ENV: dict[str, tuple[str, Any]] = {
    "host": ("FERRULE_HOST", _str),
    "port": ("FERRULE_PORT", _INT),
    "workers": ("FERRULE_WORKERS", _INT),
    "upstream_url": ("FERRULE_UPSTREAM_URL", _str),
    "anthropic_version": ("FERRULE_ANTHROPIC_VERSION", _str),
    "connect_timeout": ("FERRULE_CONNECT_TIMEOUT", _FLOAT),
    "read_timeout": ("FERRULE_READ_TIMEOUT", _FLOAT),
    "pool_size": ("FERRULE_POOL_SIZE", _INT),
    "max_body_bytes": ("FERRULE_MAX_BODY_BYTES", _INT),
    "log_level": ("FERRULE_LOG_LEVEL", _str),
}
_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Check a value from a TOML file or the command line against the field's type."""
    kind = _FIELDS[name].type
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {name} must be an integer, not {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {name} must be a number, not {value!r}")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {name} must be a string, not {value!r}")
        return value
    # model_aliases
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f"{source}: {name} must be a table of strings")
    return dict(value)


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    # Settings may sit at the top level or under [ferrule].
    table = data.get("ferrule", data)
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in _FIELDS:
            raise ConfigError(f"{path}: unknown setting {key!r}")
        out[name] = _coerce(name, value, str(path))
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (var, parse) in _ENV.items():
        raw = env.get(var)
        if raw is None and name == "port":
            # TokenPak's documented variable, honoured when Ferrule's own is unset.
            raw = env.get("TOKENPAK_PORT")
            var = "TOKENPAK_PORT"
        if raw is None or raw == "":
            continue
        try:
            out[name] = parse(raw.strip())
        except ValueError:
            raise ConfigError(f"{var}={raw!r} is not a valid {_FIELDS[name].type}") from None
    return out


def _validate(cfg: Config) -> Config:
    if not 0 < cfg.port < 65536:
        raise ConfigError(f"port must be between 1 and 65535, not {cfg.port}")
    if not 1 <= cfg.workers <= 256:
        raise ConfigError(f"workers must be between 1 and 256, not {cfg.workers}")
    url = urlsplit(cfg.upstream_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"upstream_url must be an http(s) URL, not {cfg.upstream_url!r}")
    if url.query or url.fragment:
        raise ConfigError("upstream_url must not carry a query or fragment")
    if cfg.anthropic_version not in ANTHROPIC_VERSIONS:
        raise ConfigError(
            f"anthropic_version must be one of {', '.join(ANTHROPIC_VERSIONS)}, "
            f"not {cfg.anthropic_version!r}"
        )
    for name in ("connect_timeout", "read_timeout"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name} must be positive")
    if cfg.pool_size < 1:
        raise ConfigError("pool_size must be at least 1")
    if cfg.max_body_bytes < 1024:
        raise ConfigError("max_body_bytes must be at least 1024")
    if cfg.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    return dataclasses.replace(cfg, log_level=cfg.log_level.lower())


def load(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_path: str | None = None,
) -> Config:
    """Resolve the config by precedence. ``cli`` holds only the flags the user gave."""
    env = os.environ if env is None else env
    path = config_path or env.get("FERRULE_CONFIG") or None
    merged: dict[str, Any] = {}
    if path:
        merged.update(_from_file(Path(path)))
    merged.update(_from_env(env))
    for name, value in (cli or {}).items():
        if value is not None:
            merged[name] = _coerce(name, value, "command line")
    return _validate(Config(**merged))


def resolved_from_env() -> Config | None:
    """The config a parent ``ferrule serve`` validated, inside a Granian worker."""
    raw = os.environ.get(RESOLVED_ENV)
    if not raw:
        return None
    return Config(**orjson.loads(raw))


def from_environment() -> Config:
    """The worker's config: the parent's resolved config, else resolve from the environment."""
    return resolved_from_env() or load()
