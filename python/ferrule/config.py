"""Configuration: CLI flags > environment (``FERRULE_*``) > TOML file > defaults.

The resolved config is validated before anything binds a port. ``ferrule serve`` hands it to the
Granian workers as JSON in ``FERRULE_RESOLVED_CONFIG`` so every worker runs with exactly the
config the parent validated."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import ipaddress
import os
import sys
from collections.abc import Mapping, Sequence
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
ACCESS_LOG_MODES = ("compact", "json", "off")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting and why, and where the
    bad value came from (``FERRULE_PORT=abc``, ``--port 0``, ``ferrule.toml: port``)."""


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 8766
    workers: int = 1
    upstream_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    # Seconds. connect: TCP+TLS to Anthropic; first_byte: until the response headers arrive;
    # read (idle): longest silence allowed between upstream bytes (Anthropic pings streams every
    # few seconds, so a long silence means a dead peer); stream_deadline: a whole stream, long
    # enough for a legitimate 128K-token answer (~60 min at 35 tokens/s).
    connect_timeout: float = 10.0
    first_byte_timeout: float = 120.0
    read_timeout: float = 300.0
    stream_deadline: float = 5400.0
    body_timeout: float = 60.0
    # On SIGTERM: stop accepting, let in-flight requests finish for up to this long, then exit.
    shutdown_timeout: float = 30.0
    pool_size: int = 1024  # as large as max_concurrent: an accepted request never waits for one
    # The HTTP client to Anthropic: native (hyper + rustls in the extension, ferrule.upstream_
    # native), aiohttp, or auto (native with the native backend, else aiohttp).
    upstream_engine: str = "auto"
    pool_timeout: float = 30.0
    max_body_bytes: int = 32 * 1024 * 1024
    # Bodies of at least large_body_bytes are parsed and prepared in a thread, in bounded steps;
    # a worker holds at most large_body_budget bytes of them at once, the others wait up to
    # body_timeout (ferrule.largebody; docs/reliability.md C12).
    large_body_bytes: int = 256 * 1024
    large_body_budget: int = 64 * 1024 * 1024
    max_event_bytes: int = 8 * 1024 * 1024
    # A non-streamed upstream answer is read whole before it is answered: bounded like a body.
    max_response_bytes: int = 32 * 1024 * 1024
    max_concurrent: int = 1024
    # retries before the first byte reaches the client (see ferrule.resilience)
    max_attempts: int = 3
    retry_base: float = 0.5
    retry_cap: float = 8.0
    retry_after_cap: float = 60.0
    retry_budget_percent: float = 20.0
    breaker_threshold: int = 5
    # seconds the breaker stays open: also the retry-after its fast 503s carry, so it is short
    # (an SDK honouring a 30 s retry-after stalls for half a minute on a brief outage)
    breaker_cooldown: float = 5.0
    # Callers must present this key (x-ferrule-access-key, or as the Bearer token when
    # upstream_api_key is set) when set; required to bind a non-loopback address. Only its
    # SHA-256 is kept after loading.
    access_key_sha256: str = ""
    # The operator's Anthropic key, used when callers authenticate with the access key.
    upstream_api_key: str = ""
    # Several operator keys ([[upstream_keys]] in the file; ferrule.upstream_pool): name,
    # key_env, weight, models, and the key read from key_env at load.
    upstream_keys: Sequence[Mapping[str, Any]] = field(default_factory=list)
    # What keeps requests on one pool member: "prefix" (the bytes up to the first prompt-cache
    # breakpoint: an agent's shared system prompt when it is cacheable) or "conversation".
    upstream_affinity: str = "prefix"
    # Comma lists. allowed_hosts: Host names besides the loopback ones accepted on the proxied
    # routes when Ferrule holds upstream_api_key on a loopback bind (or whenever it is set; "*":
    # any). allowed_origins: browser origins let through ("*": any); by default none.
    allowed_hosts: str = ""
    allowed_origins: str = ""
    log_level: str = "info"
    # The per-request access log: compact (one short line on stderr), json (one JSON object per
    # line on stderr), off, or a file path (JSON lines appended to it).
    access_log: str = "compact"
    model_aliases: Mapping[str, str] = field(default_factory=dict)
    # Where the ledger (and the SQLite response cache) live; "" = ~/.local/share/ferrule.
    data_dir: str = ""
    # Response cache: auto (memory with one worker, SQLite shared by several, Redis when
    # redis_url is set), memory, sqlite, redis or off.
    response_cache: str = "auto"
    response_cache_ttl: float = 3600.0
    response_cache_max_bytes: int = 256 * 1024 * 1024
    redis_url: str = ""
    # Virtual keys' limits and budgets (ferrule.quota, docs/limits.md) when their store (Redis,
    # or the ledger's SQLite file) cannot answer: limits fail open (served unlimited, with a
    # warning and ferrule_quota_store_errors_total), budgets fail closed (503); "open"/"closed".
    limits_on_redis_error: str = "open"
    budgets_on_redis_error: str = "closed"
    # How much of a per-minute limit may be used at once (GCRA burst), as a fraction; at least
    # one request/token. Any 60 s window admits at most limit * (1 + limits_burst).
    limits_burst: float = 0.01
    # postgresql:// URL: the ledger (and keys) in a database shared by replicas; "" = SQLite in
    # data_dir. Rows go to a local spool in data_dir while it is unreachable.
    database_url: str = ""
    # Anthropic prompt-cache breakpoints placed by Ferrule, and their TTL (5m or 1h).
    prompt_cache: bool = True
    prompt_cache_ttl: str = "5m"
    # off | lossless | aggressive; a request may choose with x-ferrule-compression.
    compression: str = "lossless"
    metrics_tenant_label: bool = False
    # Prometheus request/token/cost series labelled by virtual key name (keys mode; cardinality).
    metrics_key_label: bool = False
    # passthrough: callers send their Anthropic key (or the access key); keys: callers send a
    # virtual key (ferrule keys, docs/keys.md) and upstream_api_key goes upstream.
    auth: str = "passthrough"
    # /metrics without the access key even when one is configured (a scraper on a private net).
    metrics_public: bool = False
    # The client side (docs/reliability.md, "Connection and protocol limits"): HTTP/1.1 only
    # unless http is "2" or "auto" (h2c); connections per worker (idle keep-alive ones count);
    # seconds to receive a request's headers, also the keep-alive idle timeout; listen backlog.
    http: str = "1"
    max_connections: int = 8192
    # Thinking blocks of tool turns kept for OpenAI clients (ferrule.thinking): how long, and
    # the secrets that seal them at rest and in Responses items (comma list, the first seals;
    # "" = one generated into data_dir/secret.key).
    thinking_ttl: float = 86400.0
    # How long stored Responses (store: true) are kept for previous_response_id and GET.
    responses_ttl: float = 7 * 86400.0
    secret_key: str = ""
    # A request field the model refuses: dropped with x-ferrule-warning, or a 400 when strict.
    strict_params: bool = False
    header_read_timeout: float = 30.0
    backlog: int = 1024
    # The admin key (FERRULE_ADMIN_KEY, admin_key in the file): signs in to /ui. Only its
    # SHA-256 is kept. ui_session_ttl: seconds a /ui sign-in lasts.
    admin_key_sha256: str = ""
    ui_session_ttl: float = 12 * 3600.0

    def __repr__(self) -> str:  # never print the operator's key or the secret
        return f"Config(host={self.host!r}, port={self.port}, upstream_url={self.upstream_url!r})"

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))


# setting -> (environment variable, parser)
_INT = int
_FLOAT = float


def _str(v: str) -> str:
    return v


def _bool(v: str) -> bool:
    low = v.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(v)


_ENV: dict[str, tuple[str, Any]] = {
    "host": ("FERRULE_HOST", _str),
    "port": ("FERRULE_PORT", _INT),
    "workers": ("FERRULE_WORKERS", _INT),
    "upstream_url": ("FERRULE_UPSTREAM_URL", _str),
    "anthropic_version": ("FERRULE_ANTHROPIC_VERSION", _str),
    "connect_timeout": ("FERRULE_CONNECT_TIMEOUT", _FLOAT),
    "first_byte_timeout": ("FERRULE_FIRST_BYTE_TIMEOUT", _FLOAT),
    "read_timeout": ("FERRULE_READ_TIMEOUT", _FLOAT),
    "stream_deadline": ("FERRULE_STREAM_DEADLINE", _FLOAT),
    "body_timeout": ("FERRULE_BODY_TIMEOUT", _FLOAT),
    "shutdown_timeout": ("FERRULE_SHUTDOWN_TIMEOUT", _FLOAT),
    "pool_size": ("FERRULE_POOL_SIZE", _INT),
    "upstream_engine": ("FERRULE_UPSTREAM_ENGINE", _str),
    "pool_timeout": ("FERRULE_POOL_TIMEOUT", _FLOAT),
    "max_body_bytes": ("FERRULE_MAX_BODY_BYTES", _INT),
    "large_body_bytes": ("FERRULE_LARGE_BODY_BYTES", _INT),
    "large_body_budget": ("FERRULE_LARGE_BODY_BUDGET", _INT),
    "max_event_bytes": ("FERRULE_MAX_EVENT_BYTES", _INT),
    "max_response_bytes": ("FERRULE_MAX_RESPONSE_BYTES", _INT),
    "max_concurrent": ("FERRULE_MAX_CONCURRENT", _INT),
    "max_attempts": ("FERRULE_MAX_ATTEMPTS", _INT),
    "retry_base": ("FERRULE_RETRY_BASE", _FLOAT),
    "retry_cap": ("FERRULE_RETRY_CAP", _FLOAT),
    "retry_after_cap": ("FERRULE_RETRY_AFTER_CAP", _FLOAT),
    "retry_budget_percent": ("FERRULE_RETRY_BUDGET_PERCENT", _FLOAT),
    "breaker_threshold": ("FERRULE_BREAKER_THRESHOLD", _INT),
    "breaker_cooldown": ("FERRULE_BREAKER_COOLDOWN", _FLOAT),
    "upstream_api_key": ("FERRULE_UPSTREAM_API_KEY", _str),
    "upstream_affinity": ("FERRULE_UPSTREAM_AFFINITY", _str),
    "allowed_hosts": ("FERRULE_ALLOWED_HOSTS", _str),
    "allowed_origins": ("FERRULE_ALLOWED_ORIGINS", _str),
    "log_level": ("FERRULE_LOG_LEVEL", _str),
    "access_log": ("FERRULE_ACCESS_LOG", _str),
    "data_dir": ("FERRULE_DATA_DIR", _str),
    "response_cache": ("FERRULE_RESPONSE_CACHE", _str),
    "response_cache_ttl": ("FERRULE_RESPONSE_CACHE_TTL", _FLOAT),
    "response_cache_max_bytes": ("FERRULE_RESPONSE_CACHE_MAX_BYTES", _INT),
    "redis_url": ("FERRULE_REDIS_URL", _str),
    "limits_on_redis_error": ("FERRULE_LIMITS_ON_REDIS_ERROR", _str),
    "budgets_on_redis_error": ("FERRULE_BUDGETS_ON_REDIS_ERROR", _str),
    "limits_burst": ("FERRULE_LIMITS_BURST", _FLOAT),
    "database_url": ("FERRULE_DATABASE_URL", _str),
    "prompt_cache": ("FERRULE_PROMPT_CACHE", _bool),
    "prompt_cache_ttl": ("FERRULE_PROMPT_CACHE_TTL", _str),
    "compression": ("FERRULE_COMPRESSION", _str),
    "metrics_tenant_label": ("FERRULE_METRICS_TENANT_LABEL", _bool),
    "metrics_key_label": ("FERRULE_METRICS_KEY_LABEL", _bool),
    "auth": ("FERRULE_AUTH", _str),
    "metrics_public": ("FERRULE_METRICS_PUBLIC", _bool),
    "http": ("FERRULE_HTTP", _str),
    "max_connections": ("FERRULE_MAX_CONNECTIONS", _INT),
    "header_read_timeout": ("FERRULE_HEADER_READ_TIMEOUT", _FLOAT),
    "backlog": ("FERRULE_BACKLOG", _INT),
    "thinking_ttl": ("FERRULE_THINKING_TTL", _FLOAT),
    "responses_ttl": ("FERRULE_RESPONSES_TTL", _FLOAT),
    "secret_key": ("FERRULE_SECRET_KEY", _str),
    "strict_params": ("FERRULE_STRICT_PARAMS", _bool),
    "ui_session_ttl": ("FERRULE_UI_SESSION_TTL", _FLOAT),
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
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {name} must be true or false, not {value!r}")
        return value
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


def _take_access_key(values: dict[str, Any], raw: Any, source: str) -> None:
    if not isinstance(raw, str) or len(raw) < 16:
        raise ConfigError(f"{source}: the access key must be a string of at least 16 characters")
    values["access_key_sha256"] = hashlib.sha256(raw.encode()).hexdigest()


def _take_admin_key(values: dict[str, Any], raw: Any, source: str) -> None:
    if not isinstance(raw, str) or len(raw) < 16:
        raise ConfigError(f"{source}: the admin key must be a string of at least 16 characters")
    values["admin_key_sha256"] = hashlib.sha256(raw.encode()).hexdigest()


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
    if table is not data and "upstream_keys" in data:  # [[upstream_keys]] beside [ferrule]
        table = {**table, "upstream_keys": data["upstream_keys"]}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name == "upstream_keys":
            from .upstream_pool import parse_members  # (it imports this module)

            out[name] = parse_members(value, str(path))
            continue
        if name == "access_key":
            _take_access_key(out, value, str(path))
            continue
        if name == "admin_key":
            _take_admin_key(out, value, str(path))
            continue
        if name not in _FIELDS or name in ("access_key_sha256", "admin_key_sha256"):
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
            raise ConfigError(f"{var}={raw}: not {_KIND_NAMES[str(_FIELDS[name].type)]}") from None
    if env.get("FERRULE_ACCESS_KEY"):
        _take_access_key(out, env["FERRULE_ACCESS_KEY"], "FERRULE_ACCESS_KEY")
    if env.get("FERRULE_ADMIN_KEY"):
        _take_admin_key(out, env["FERRULE_ADMIN_KEY"], "FERRULE_ADMIN_KEY")
    return out


def _validate(cfg: Config) -> Config:
    if not 0 < cfg.port < 65536:
        raise ConfigError(f"port must be between 1 and 65535, not {cfg.port}")
    if not 1 <= cfg.workers <= 256:
        raise ConfigError(f"workers must be between 1 and 256, not {cfg.workers}")
    url = urlsplit(cfg.upstream_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(
            f"upstream_url must be an http(s) URL, not {_shown('upstream_url', cfg.upstream_url)!r}"
        )
    if url.query or url.fragment:
        raise ConfigError("upstream_url must not carry a query or fragment")
    if cfg.anthropic_version not in ANTHROPIC_VERSIONS:
        raise ConfigError(
            f"anthropic_version must be one of {', '.join(ANTHROPIC_VERSIONS)}, "
            f"not {cfg.anthropic_version!r}"
        )
    for name in (
        "connect_timeout",
        "first_byte_timeout",
        "read_timeout",
        "stream_deadline",
        "body_timeout",
        "pool_timeout",
        "shutdown_timeout",
        "breaker_cooldown",
    ):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name} must be positive")
    if cfg.max_attempts < 1 or cfg.max_concurrent < 1 or cfg.max_event_bytes < 1024:
        raise ConfigError("max_attempts, max_concurrent must be >= 1 and max_event_bytes >= 1024")
    if not _is_loopback(cfg.host) and not cfg.access_key_sha256:
        raise ConfigError(
            f"refusing to bind {cfg.host}: a non-loopback address needs an access key "
            "(FERRULE_ACCESS_KEY or access_key in the config file), so only your clients can use "
            "the proxy"
        )
    host = url.hostname or ""
    if host.startswith("169.254.") or host in ("metadata.google.internal", "fd00:ec2::254"):
        raise ConfigError(f"upstream_url points at a link-local/metadata address ({host})")
    if cfg.pool_size < 1:
        raise ConfigError("pool_size must be at least 1")
    if cfg.max_body_bytes < 1024:
        raise ConfigError("max_body_bytes must be at least 1024")
    if not 1024 <= cfg.large_body_bytes <= cfg.large_body_budget:
        raise ConfigError("large_body_bytes must be at least 1024 and at most large_body_budget")
    if cfg.max_response_bytes < 1024:
        raise ConfigError("max_response_bytes must be at least 1024")
    if cfg.response_cache not in ("auto", "memory", "sqlite", "redis", "off"):
        raise ConfigError("response_cache must be auto, memory, sqlite, redis or off")
    if cfg.response_cache == "redis" and not cfg.redis_url:
        raise ConfigError("response_cache = redis needs redis_url (FERRULE_REDIS_URL)")
    if cfg.redis_url and urlsplit(cfg.redis_url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("redis_url must be a redis://, rediss:// or unix:// URL")
    if cfg.database_url and urlsplit(cfg.database_url).scheme not in ("postgresql", "postgres"):
        raise ConfigError("database_url must be a postgresql:// URL")
    if cfg.database_url and importlib.util.find_spec("psycopg") is None:
        raise ConfigError("database_url needs psycopg: pip install 'ferrule[postgres]'")
    for name in ("limits_on_redis_error", "budgets_on_redis_error"):
        if getattr(cfg, name) not in ("open", "closed"):
            raise ConfigError(f"{name} must be open or closed, not {getattr(cfg, name)!r}")
    if not 0 < cfg.limits_burst <= 1:
        raise ConfigError("limits_burst must be above 0 and at most 1 (a fraction of the limit)")
    if cfg.upstream_affinity not in ("prefix", "conversation"):
        raise ConfigError("upstream_affinity must be prefix or conversation")
    if cfg.prompt_cache_ttl not in ("5m", "1h"):
        raise ConfigError("prompt_cache_ttl must be 5m or 1h")
    if cfg.upstream_engine not in ("auto", "native", "aiohttp"):
        raise ConfigError("upstream_engine must be auto, native or aiohttp")
    if cfg.compression not in ("off", "lossless", "aggressive"):
        raise ConfigError("compression must be off, lossless or aggressive")
    if cfg.host != "localhost" and not _is_ip(cfg.host):
        raise ConfigError(f"host must be an IP address (or localhost), not {cfg.host!r}")
    if cfg.http not in ("1", "2", "auto"):
        raise ConfigError(f"http must be 1 (HTTP/1.1), 2 (HTTP/2) or auto, not {cfg.http!r}")
    if cfg.max_connections < 1:
        raise ConfigError("max_connections must be at least 1")
    if not 0.1 <= cfg.header_read_timeout <= 3600:
        raise ConfigError("header_read_timeout must be between 0.1 and 3600 seconds")
    if not 128 <= cfg.backlog <= 65535:
        raise ConfigError("backlog must be between 128 and 65535")
    if cfg.auth not in ("passthrough", "keys"):
        raise ConfigError(f"auth must be passthrough or keys, not {cfg.auth!r}")
    if cfg.admin_key_sha256 and cfg.admin_key_sha256 == cfg.access_key_sha256:
        raise ConfigError("the admin key must not be the access key: it opens /admin/keys")
    if cfg.auth == "keys" and not cfg.upstream_api_key:
        raise ConfigError(
            "auth = keys needs the operator's Anthropic key (FERRULE_UPSTREAM_API_KEY): callers "
            "present virtual keys, which never go upstream"
        )
    if not 1 <= cfg.ui_session_ttl <= 30 * 86400:
        raise ConfigError("ui_session_ttl must be between 1 second and 30 days")
    if cfg.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    if cfg.access_log not in ACCESS_LOG_MODES:
        folder = Path(cfg.access_log).expanduser().parent
        if not cfg.access_log.strip() or not folder.is_dir():
            raise ConfigError(
                f"access_log must be {', '.join(ACCESS_LOG_MODES)} or a file in an existing "
                f"folder, not {cfg.access_log!r}"
            )
    return dataclasses.replace(cfg, log_level=cfg.log_level.lower())


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_path: str | None = None,
) -> Config:
    """Resolve the config by precedence. ``cli`` holds only the flags the user gave."""
    env = os.environ if env is None else env
    path = config_path or env.get("FERRULE_CONFIG") or None
    merged: dict[str, Any] = {}
    where: dict[str, str] = {}  # setting -> where its value came from, for error messages
    if path:
        found = _from_file(Path(path))
        merged.update(found)
        where.update((name, f"{path}: {name}") for name in found)
    found = _from_env(env)
    merged.update(found)
    where.update((name, _env_source(name, env)) for name in found)
    for name, value in (cli or {}).items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if name == "access_key":
            _take_access_key(merged, value, flag)
        else:
            merged[name] = _coerce(name, value, flag)
        shown = _shown(name, str(value))
        where[name] = flag if shown is None else f"{flag} {shown}"
    if merged.get("upstream_keys"):
        from .upstream_pool import resolve_keys

        resolve_keys(merged, env)
    try:
        return _validate(Config(**merged))
    except ConfigError as exc:
        source = where.get(_setting_of(str(exc)), "")
        if source:
            raise ConfigError(f"{source}: {exc}") from None
        raise


_KIND_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text"}


def _shown(name: str, value: str) -> str | None:
    """A setting's value as an error message may echo it: never a key or a secret (None), and
    a URL without its user and password (a redis_url or database_url may carry them)."""
    if name.endswith(("_key", "_keys", "_sha256")) or "secret" in name or "password" in name:
        return None
    if name.endswith("_url"):
        try:
            parts = urlsplit(value)
            has_user = parts.username is not None or parts.password is not None
        except ValueError:  # not even a URL: it may still hold a password, so not shown
            return None
        if has_user:
            return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()
    return value


def _env_source(name: str, env: Mapping[str, str]) -> str:
    if name.endswith("_sha256"):  # access_key_sha256 <- FERRULE_ACCESS_KEY, ...
        return "FERRULE_" + name.removesuffix("_sha256").upper()
    var = _ENV[name][0] if name in _ENV else "FERRULE_" + name.upper()
    if name == "port" and env.get(var) in (None, ""):
        var = "TOKENPAK_PORT"
    shown = _shown(name, env.get(var, "").strip())
    return var if shown is None else f"{var}={shown}"


def _setting_of(message: str) -> str:
    """The setting a validation message is about: its first word (every message of
    ``_validate`` starts with the setting's name, or says it refuses to bind the host)."""
    if message.startswith("refusing to bind"):
        return "host"
    return message.split(" ", 1)[0].rstrip(",")


def resolved_from_env() -> Config | None:
    """The config a parent ``ferrule serve`` validated, inside a Granian worker."""
    raw = os.environ.get(RESOLVED_ENV)
    if not raw:
        return None
    return Config(**orjson.loads(raw))


def from_environment() -> Config:
    """The worker's config: the parent's resolved config, else resolve from the environment."""
    return resolved_from_env() or load()
