"""``ferrule stats`` on a ledger we fill: the table, --json, --csv, periods, no ledger."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from ferrule import stats_cli
from ferrule.ledger import LedgerWriter, RequestRecord, ledger_path

DAY1 = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.timezone.utc).timestamp()
DAY2 = DAY1 + 86400
DAY3 = DAY1 + 2 * 86400


def rec(i: int, ts: float, model: str, **kw: Any) -> RequestRecord:
    return RequestRecord(request_id=f"r{i}", route="/v1/chat/completions", model=model, ts=ts, **kw)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    w = LedgerWriter(ledger_path(tmp_path), flush_interval=0.01)
    records = [
        # day 1, sonnet: 2 requests, each 1000*3 + 10000*0.3 + 500*15 = 13500 micro-USD
        rec(1, DAY1, "claude-sonnet-4-6", input_tokens=1000, cache_read_tokens=10000, output_tokens=500),
        rec(2, DAY1 + 60, "claude-sonnet-4-6", input_tokens=1000, cache_read_tokens=10000, output_tokens=500),
        # day 1, opus with a 1h write: 100*5 + 4000*10 + 200*25 = 45500; premium 4000*5 = 20000
        rec(3, DAY1 + 120, "claude-opus-4-6", input_tokens=100, cache_write_1h_tokens=4000, output_tokens=200),
        # day 2, a response-cache hit on sonnet: saved 1000*3 + 500*15 = 10500
        rec(4, DAY2, "claude-sonnet-4-6", input_tokens=1000, output_tokens=500, cache_status="hit"),
        # day 2, compression on haiku: 300*1 + 100*5 = 800; saved 2000*1 = 2000
        rec(5, DAY2 + 5, "claude-haiku-4-5", input_tokens=300, output_tokens=100, compression_removed_tokens=2000),
        # day 2, an unpriced model
        rec(6, DAY2 + 10, "someone-elses-model", input_tokens=50, output_tokens=5),
        # day 3, outside the period the tests ask for
        rec(7, DAY3, "claude-sonnet-4-6", input_tokens=9_999_999),
    ]  # fmt: skip
    for r in records:
        w.submit(r)
    w.close()
    return tmp_path


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    stats_cli.add_arguments(parser)
    return stats_cli.run(parser.parse_args(list(argv)))


PERIOD = ("--since", "2026-11-25", "--until", "2026-11-26")  # two whole days (until: inclusive)


def test_json(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--data-dir", str(data_dir), "--json", *PERIOD) == 0
    data = orjson.loads(capsys.readouterr().out)
    assert data["since"] == "2026-11-25T00:00:00Z" and data["until"] == "2026-11-27T00:00:00Z"
    t = data["totals"]
    assert t["requests"] == 6
    assert t["input_tokens"] == 1000 + 1000 + 100 + 300 + 50  # the hit's tokens are not billed
    assert t["cache_read_tokens"] == 20000 and t["cache_write_1h_tokens"] == 4000
    assert t["output_tokens"] == 500 + 500 + 200 + 100 + 5
    assert t["cost_usd"] == 0.0733  # 13500*2 + 45500 + 800 micro-USD
    assert t["unpriced_requests"] == 1
    assert t["saved_caching_usd"] == 0.054  # 20000 * 2.7
    assert t["cache_write_premium_usd"] == 0.02
    assert t["saved_compression_usd"] == 0.002
    assert t["saved_response_cache_usd"] == 0.0105
    assert t["saved_total_usd"] == 0.0465  # 0.054 - 0.02 + 0.002 + 0.0105
    assert t["response_cache_hits"] == 1
    by_model = {r["model"]: r for r in data["by_model"]}
    assert by_model["claude-sonnet-4-6"]["requests"] == 3
    assert by_model["claude-sonnet-4-6"]["cost_usd"] == 0.027
    assert by_model["someone-elses-model"]["cost_usd"] is None
    assert [(d["day"], d["requests"]) for d in data["by_day"]] == [
        ("2026-11-25", 3),
        ("2026-11-26", 3),
    ]
    # GET /stats returns the same document
    same = stats_cli.stats_json(ledger_path(data_dir), DAY1 - 9 * 3600, DAY3 - 9 * 3600)
    assert same == data


def test_table(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--data-dir", str(data_dir), *PERIOD) == 0
    out = capsys.readouterr().out
    assert "Ferrule by model" in out and "Ferrule by day" in out
    for model in (
        "claude-sonnet-4-6",
        "claude-opus-4-6",
        "claude-haiku-4-5",
        "someone-elses-model",
    ):
        assert model in out
    assert "2026-11-25" in out and "2026-11-26" in out and "2026-11-27" not in out.split("UTC")[-1]
    sonnet = next(line for line in out.splitlines() if "claude-sonnet-4-6" in line)
    cells = [c.strip() for c in sonnet.split("│")[1:-1]]
    # model, reqs, input, c.write, c.read, output, cost, caching, compress, resp.cache, total, hits
    assert cells[:8] == [
        "claude-sonnet-4-6",
        "3",
        "2.0k",
        "0",
        "20.0k",
        "1.0k",
        "$0.0270",
        "$0.0540",
    ]
    assert cells[9:12] == ["$0.0105", "$0.0645", "1"]
    unpriced = next(line for line in out.splitlines() if "someone-elses-model" in line)
    assert "unpriced" in unpriced
    total = next(line for line in out.splitlines() if "total" in line and "$" in line)
    assert "$0.0733 †" in total  # the dagger: some requests had no price
    assert "without a price" in out


def test_csv(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out.csv"
    assert run("--data-dir", str(data_dir), "--csv", str(target), *PERIOD) == 0
    rows = list(csv.DictReader(target.open()))
    assert [(r["day"], r["model"]) for r in rows] == [
        ("2026-11-25", "claude-opus-4-6"),
        ("2026-11-25", "claude-sonnet-4-6"),
        ("2026-11-26", "claude-haiku-4-5"),
        ("2026-11-26", "claude-sonnet-4-6"),
        ("2026-11-26", "someone-elses-model"),
    ]
    assert list(rows[0]) == list(stats_cli.CSV_FIELDS)
    opus = rows[0]
    assert (opus["cost_usd"], opus["cache_write_premium_usd"], opus["cache_write_1h_tokens"]) == (
        "0.0455",
        "0.02",
        "4000",
    )
    assert rows[4]["cost_usd"] == ""  # unpriced: empty, not 0
    assert "wrote 5 rows" in capsys.readouterr().err
    # to stdout
    assert run("--data-dir", str(data_dir), "--csv", "-", *PERIOD) == 0
    again = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert again == rows


def test_relative_period_and_other_tables(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the fixed dates are in the past; a relative window that reaches them, grouped by route
    assert run("--data-dir", str(data_dir), "--since", "100000w", "--by", "route", "--json") == 0
    data = orjson.loads(capsys.readouterr().out)
    assert data["totals"]["requests"] == 7
    assert [r["route"] for r in data["by_route"]] == ["/v1/chat/completions"]
    assert "by_model" not in data


def test_no_ledger_yet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--data-dir", str(tmp_path / "empty"), "--json") == 0
    captured = capsys.readouterr()
    assert "no ledger" in captured.err
    data = orjson.loads(captured.out)
    assert data["totals"]["requests"] == 0 and data["by_model"] == [] and data["by_day"] == []
    assert not (tmp_path / "empty").exists()  # stats never creates anything
    assert run("--data-dir", str(tmp_path / "empty")) == 0
    assert "No requests recorded" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [("--since", "last tuesday"), ("--until", "2026-02-30"), ("--by", "colour")],
)
def test_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    assert run("--data-dir", str(tmp_path), *argv) == 2
    assert "ferrule stats:" in capsys.readouterr().err


def test_data_dir_from_environment(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FERRULE_DATA_DIR", str(data_dir))
    monkeypatch.delenv("FERRULE_CONFIG", raising=False)
    assert run("--json", "--since", "100000w") == 0
    assert orjson.loads(capsys.readouterr().out)["totals"]["requests"] == 7


def test_corrupt_ledger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger_path(tmp_path).write_bytes(b"not a database at all" * 200)
    assert run("--data-dir", str(tmp_path)) == 1
    assert "cannot read the ledger" in capsys.readouterr().err


def test_stats_from_query(data_dir: Path) -> None:
    data = stats_cli.stats_from_query(ledger_path(data_dir), "100000w", None, "model")
    assert data["totals"]["requests"] == 7 and "by_day" not in data
    with pytest.raises(ValueError, match="is not a time"):
        stats_cli.stats_from_query(ledger_path(data_dir), "soon")
    with pytest.raises(ValueError, match="unknown grouping"):
        stats_cli.stats_from_query(ledger_path(data_dir), by="model,colour")


# -- an 80-column terminal and --plot -----------------------------------------------------------


def _assert_no_wrapped_rows(out: str, width: int, keys: list[str]) -> None:
    lines = out.splitlines()
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    for key in keys:  # each row on one line: its key and its numbers together
        (row,) = [line for line in lines if key in line and "│" in line]
        assert row.count("│") >= 4 and ("$" in row or "unpriced" in row), row
    # in each table every bordered line is a whole row: as many column separators as the others
    for table in out.split("Ferrule by ")[1:]:
        bordered = [line for line in table.splitlines() if line.startswith("│")]
        assert len(bordered) >= 2 and len({line.count("│") for line in bordered}) == 1, table


def test_table_fits_80_columns(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert run("--data-dir", str(data_dir), *PERIOD) == 0
    out = capsys.readouterr().out
    models = ["claude-sonnet-4-6", "claude-opus-4-6", "claude-haiku-4-5", "someone-elses-model"]
    _assert_no_wrapped_rows(out, 80, [*models, "2026-11-25", "2026-11-26"])
    sonnet = next(line for line in out.splitlines() if "claude-sonnet-4-6" in line)
    cells = [c.strip() for c in sonnet.split("│")[1:-1]]
    # the essentials stay: name, requests, output tokens, cost, total saved, errors
    assert cells[:2] == ["claude-sonnet-4-6", "3"]
    assert "1.0k" in cells and "$0.0270" in cells and "$0.0645" in cells
    assert "Narrow terminal (80 columns): left out compress" in out
    # the same data 200 wide (a pipe): every column, nothing left out
    assert "Narrow terminal" not in stats_cli.render_text(
        stats_cli.stats_json(ledger_path(data_dir), DAY1 - 9 * 3600, DAY3 - 9 * 3600),
        ["model", "day"],
        width=200,
    )


def _bars(out: str) -> dict[tuple[str, str], tuple[float, str]]:
    """(day, spend|saved) -> (bar length in cells, the value printed after it)."""
    eighths = {c: i / 8 for i, c in enumerate(" ▏▎▍▌▋▊▉")}
    found, day = {}, ""
    for line in out.splitlines():
        if line[:10].strip() and line[11:17] not in ("spend ", "saved "):
            continue
        day = line[:10].strip() or day
        label, body = line[11:16], line[17:]
        fill = body.count("█") + sum(eighths.get(c, 0) for c in body if c != " ")
        found[(day, label)] = (fill, body.replace("†", "").split()[-1])
    return found


def test_plot_spend_and_savings_per_day(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert run("--data-dir", str(data_dir), "--plot", *PERIOD) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert out.startswith("Spend and savings per day, 2026-11-25T00:00:00Z to")
    bars = _bars(out)
    assert sorted(bars) == [
        ("2026-11-25", "saved"),
        ("2026-11-25", "spend"),
        ("2026-11-26", "saved"),
        ("2026-11-26", "spend"),
    ]
    spend1, cost1 = bars[("2026-11-25", "spend")]
    saved1, net1 = bars[("2026-11-25", "saved")]
    spend2, cost2 = bars[("2026-11-26", "spend")]
    saved2, net2 = bars[("2026-11-26", "saved")]
    # day 1: 13500*2 + 45500 micro-USD; saved 0.054 - 0.02 (net of the cache-write premium)
    # day 2: 800 micro-USD (+ an unpriced request, flagged); saved 0.0105 + 0.002
    assert (cost1, net1, cost2, net2) == ("$0.0725", "$0.0340", "$0.0008", "$0.0125")
    # one scale: the biggest value fills the bar, the others in proportion (to half a cell)
    assert spend1 == max(spend1, saved1, spend2, saved2) and spend1 >= 50
    for fill, value in ((saved1, 0.034), (saved2, 0.0125), (spend2, 0.0008)):
        assert abs(fill - spend1 * value / 0.0725) <= 0.5, (fill, value)
    assert spend2 > 0  # tiny but visible
    assert "2026-11-26 spend" in out and "† 1 request(s)" in out
    assert "total: spent $0.0733, saved $0.0465" in out


def test_plot_fills_days_without_requests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = LedgerWriter(ledger_path(tmp_path), flush_interval=0.01)
    w.submit(rec(1, DAY1, "claude-sonnet-4-6", input_tokens=1000))
    w.submit(rec(2, DAY3, "claude-sonnet-4-6", input_tokens=2000))
    w.close()
    assert (
        run("--data-dir", str(tmp_path), "--plot", "--since", "2026-11-25", "--until", "2026-11-27")
        == 0
    )
    out = capsys.readouterr().out
    days = [line.split()[0] for line in out.splitlines() if line[:4] == "2026"]
    assert days == ["2026-11-25", "2026-11-26", "2026-11-27"]
    assert "2026-11-26 spend" in out and "$0 " not in out.split("2026-11-26")[0]


def test_plot_without_requests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--data-dir", str(tmp_path / "empty"), "--plot") == 0
    assert "No requests recorded" in capsys.readouterr().out
