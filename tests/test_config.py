"""Config precedence (CLI > env > TOML > defaults) and clear errors before binding."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ferrule.config import Config, ConfigError, load


def test_defaults_bind_loopback_on_8766() -> None:
    cfg = load({}, env={})
    assert (cfg.host, cfg.port, cfg.workers) == ("127.0.0.1", 8766, 1)
    assert cfg.upstream_url == "https://api.anthropic.com"
    assert cfg.anthropic_version == "2023-06-01"


def test_tokenpak_port_honoured_only_when_ferrule_port_unset() -> None:
    assert load({}, env={"TOKENPAK_PORT": "9001"}).port == 9001
    assert load({}, env={"TOKENPAK_PORT": "9001", "FERRULE_PORT": "9002"}).port == 9002


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    f = tmp_path / "ferrule.toml"
    f.write_text(
        'port = 7000\nworkers = 3\nupstream_url = "http://127.0.0.1:1"\n[model_aliases]\nfast = "claude-haiku-4-5"\n'
    )
    cfg = load({}, env={}, config_path=str(f))
    assert (cfg.port, cfg.workers, dict(cfg.model_aliases)) == (
        7000,
        3,
        {"fast": "claude-haiku-4-5"},
    )
    cfg = load({}, env={"FERRULE_PORT": "7001", "FERRULE_CONFIG": str(f)})
    assert (cfg.port, cfg.workers) == (7001, 3)
    cfg = load({"port": 7002}, env={"FERRULE_PORT": "7001"}, config_path=str(f))
    assert cfg.port == 7002


@pytest.mark.parametrize(
    ("cli", "env", "message"),
    [
        ({"port": 0}, {}, "port must be between"),
        ({}, {"FERRULE_PORT": "eighty"}, "FERRULE_PORT=eighty: not an integer"),
        ({}, {"FERRULE_UPSTREAM_URL": "ftp://x"}, "upstream_url must be an http(s) URL"),
        ({}, {"FERRULE_ANTHROPIC_VERSION": "2020-01-01"}, "anthropic_version must be one of"),
        ({"workers": 0}, {}, "workers must be between"),
        ({}, {"FERRULE_LOG_LEVEL": "loud"}, "log_level must be one of"),
    ],
)
def test_invalid_values_are_named(
    cli: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(cli, env=env)


def test_bad_toml_and_unknown_keys(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("port = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load({}, env={}, config_path=str(f))
    f.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        load({}, env={}, config_path=str(f))
    with pytest.raises(ConfigError, match="does not exist"):
        load({}, env={}, config_path=str(tmp_path / "missing.toml"))


def test_round_trip_to_workers() -> None:
    cfg = load({"port": 9999}, env={})
    assert Config(**__import__("orjson").loads(cfg.to_json())) == cfg


def test_serve_refuses_invalid_config_before_binding(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ferrule.cli", "serve", "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "invalid configuration: --port 70000: port must be between 1 and 65535" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- errors name where the bad value came from ---------------------------------------------------


@pytest.mark.parametrize(
    ("cli", "env", "message"),
    [
        ({}, {"FERRULE_PORT": "abc"}, "FERRULE_PORT=abc: not an integer"),
        ({}, {"FERRULE_PORT": "0"}, "FERRULE_PORT=0: port must be between 1 and 65535, not 0"),
        ({}, {"TOKENPAK_PORT": "70000"}, "TOKENPAK_PORT=70000: port must be between"),
        ({"port": 70000}, {"FERRULE_PORT": "8000"}, "--port 70000: port must be between"),
        ({"workers": 0}, {}, "--workers 0: workers must be between"),
        ({}, {"FERRULE_LOG_LEVEL": "loud"}, "FERRULE_LOG_LEVEL=loud: log_level must be one of"),
        ({"log_level": "loud"}, {}, "--log-level loud: log_level must be one of"),
        ({"host": "0.0.0.0"}, {}, "--host 0.0.0.0: refusing to bind 0.0.0.0"),
        ({}, {"FERRULE_UPSTREAM_URL": "ftp://x"}, "FERRULE_UPSTREAM_URL=ftp://x: upstream_url"),
        ({}, {"FERRULE_HTTP": "3"}, "FERRULE_HTTP=3: http must be 1"),
    ],
)
def test_errors_name_the_variable_or_flag(
    cli: dict[str, object], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(cli, env=env)
    assert str(caught.value).startswith(message), str(caught.value)


def test_errors_name_the_config_file(tmp_path: Path) -> None:
    f = tmp_path / "ferrule.toml"
    f.write_text('log_level = "loud"\n')
    with pytest.raises(ConfigError) as caught:
        load({}, env={}, config_path=str(f))
    assert str(caught.value).startswith(f"{f}: log_level: log_level must be one of")
    # the environment overrides the file, and then the environment is named
    with pytest.raises(ConfigError) as caught:
        load({}, env={"FERRULE_LOG_LEVEL": "shout"}, config_path=str(f))
    assert str(caught.value).startswith("FERRULE_LOG_LEVEL=shout: log_level")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"FERRULE_REDIS_URL": "http://user:hunter2-secret@cache:6379"},
            "FERRULE_REDIS_URL=http://***@cache:6379: redis_url must be",
        ),
        (
            {"FERRULE_DATABASE_URL": "mysql://app:hunter2-secret@db/ledger"},
            "FERRULE_DATABASE_URL=mysql://***@db/ledger: database_url must be",
        ),
        (
            {"FERRULE_UPSTREAM_URL": "ftp://me:hunter2-secret@example.com"},
            "FERRULE_UPSTREAM_URL=ftp://***@example.com: upstream_url must be",
        ),
    ],
)
def test_errors_never_echo_a_secret_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load({}, env=env)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_access_log_setting(tmp_path: Path) -> None:
    assert load({}, env={}).access_log == "compact"
    for mode in ("json", "off", str(tmp_path / "access.log")):
        assert load({}, env={"FERRULE_ACCESS_LOG": mode}).access_log == mode
    with pytest.raises(ConfigError, match=r"FERRULE_ACCESS_LOG=/nonexistent/a\.log: access_log"):
        load({}, env={"FERRULE_ACCESS_LOG": "/nonexistent/a.log"})
