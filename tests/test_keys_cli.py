"""``ferrule keys``: a round trip through create, list, show, update, rotate and revoke. The key
is printed once (alone on stdout, or as ``key`` with ``--json``) and never again; errors are
one clear line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ferrule.cli import main
from ferrule.keys.ops import open_key_store
from ferrule.keys.store import digest_of


def _keys(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> tuple[int, str, str]:
    code = main(["keys", *args, "--data-dir", str(data)])
    out, err = capsys.readouterr()
    return code, out, err


def test_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shown: list[str] = []
    code, out, err = _keys(
        capsys,
        tmp_path,
        "create",
        "--name",
        "agent-7",
        "--budget",
        "5",
        "--budget-period",
        "month",
        "--rpm",
        "60",
        "--tpm",
        "10000",
        "--max-parallel",
        "4",
        "--models",
        "claude-haiku-*,claude-sonnet-4-6",
        "--expires",
        "30d",
    )
    assert code == 0, err
    key = out.strip()
    assert key.startswith("fk-") and "\n" not in key and "only time" in err
    shown.append(key)
    code, out, _ = _keys(capsys, tmp_path, "create", "--name", "Bot.2", "--json")
    created = orjson.loads(out)
    assert code == 0 and created["name"] == "Bot.2" and created["key"].startswith("fk-")
    shown.append(created["key"])

    code, out, _ = _keys(capsys, tmp_path, "list", "--json")
    listed = {k["name"]: k for k in orjson.loads(out)["data"]}
    assert code == 0 and set(listed) == {"agent-7", "Bot.2"}
    a7 = listed["agent-7"]
    assert a7["budget_usd"] == 5.0 and a7["budget_period"] == "month" and a7["rpm"] == 60
    assert a7["tpm"] == 10000 and a7["max_parallel"] == 4
    assert a7["models"] == ["claude-haiku-*", "claude-sonnet-4-6"]
    assert a7["expires_at"] - a7["created_at"] == pytest.approx(30 * 86400, abs=5)
    assert a7["digest_prefix"] == digest_of(key)[:12]
    code, table, _ = _keys(capsys, tmp_path, "list")
    assert code == 0 and "agent-7" in table and "$5/month" in table

    code, out, _ = _keys(capsys, tmp_path, "update", "agent-7", "--rpm", "none", "--tpm", "20")
    assert code == 0
    code, out, _ = _keys(capsys, tmp_path, "show", "agent-7", "--json")
    one = orjson.loads(out)
    assert one["rpm"] is None and one["tpm"] == 20 and one["status"] == "active"

    code, out, err = _keys(capsys, tmp_path, "rotate", "agent-7", "--grace", "1h")
    new = out.strip()
    assert code == 0 and new.startswith("fk-") and new != key and "previous key" in err
    shown.append(new)
    store = open_key_store(tmp_path)
    old_entry = store.lookup(digest_of(key))
    assert old_entry is not None and old_entry[1] is not None  # in its grace period
    assert store.lookup(digest_of(new)) is not None
    store.close()

    code, out, _ = _keys(capsys, tmp_path, "revoke", "agent-7")
    assert code == 0 and "revoked" in out
    store = open_key_store(tmp_path)
    assert store.lookup(digest_of(key)) is None and store.lookup(digest_of(new)) is None
    store.close()

    # no command but create/rotate ever prints a key, and no file holds one
    for args in (("list",), ("list", "--json"), ("show", "agent-7"), ("show", "Bot.2")):
        _, out, err = _keys(capsys, tmp_path, *args)
        assert not any(k in out + err for k in shown)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert not any(k.encode() in raw for k in shown)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("create", "--name", "bad name"), 2, "key name"),
        (("create", "--name", "x", "--rpm", "lots"), 2, "--rpm"),
        (("create", "--name", "x", "--budget", "-3"), 2, "--budget"),
        (("create", "--name", "x", "--expires", "tomorrow"), 2, "duration"),
        (("show", "nobody"), 1, "no key named"),
        (("revoke", "nobody"), 1, "no key named"),
        (("rotate", "nobody"), 1, "no key named"),
        (("update", "nobody", "--rpm", "5"), 1, "no key named"),
        (("update", "dup"), 2, "nothing to change"),
        (("create", "--name", "dup"), 1, "exists"),
    ],
)
def test_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], code: int, says: str
) -> None:
    assert _keys(capsys, tmp_path, "create", "--name", "dup")[0] == 0
    got, out, err = _keys(capsys, tmp_path, *args)
    assert got == code and says in err and "Traceback" not in err
    assert out == ""
