"""The dashboard in a real browser (issue 17): Debian's Chromium, headless, driven by Playwright.

One Ferrule (with an admin key and its own data folder) in front of the simulated upstream gets
a scripted load; the browser signs in, reads the overview and checks its figures against
``ferrule stats --json`` for the same period, sorts a table, watches the live view take a slow
request and see it finish, and runs axe-core on every page (no serious or critical findings).
No page logs a console error. Screenshots of every page are taken; with
``FERRULE_UPDATE_SCREENSHOTS=1`` they are written to docs/screenshots/ (the committed ones)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from servers import TEST_KEY, MockUpstream, Proxy, start_proxy

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
ADMIN = "admin-key-for-browser-0123"
ROOT = Path(__file__).resolve().parent.parent
AXE = Path(__file__).resolve().parent / "axe" / "axe.min.js"
SHOTS = ROOT / "docs" / "screenshots"
MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5-20251001")

sync_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():  # pragma: no cover - .ci/run installs it
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


@dataclass
class UI:
    proxy: Proxy
    data: Path
    shots: Path
    page: Any
    browser: Any
    problems: list[str] = field(default_factory=list)  # console errors, page errors

    def go(self, path: str) -> None:
        self.page.goto(self.proxy.url + path)
        self.page.wait_for_selector("body[data-ready='1']", timeout=15_000)

    def shot(self, name: str) -> None:
        # a key shown once is masked: even a throwaway one does not go into a picture
        mask = [self.page.locator("#new-key-value")]
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True, mask=mask)


def chat(p: Proxy, text: str, model: str = MODELS[0], **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    headers = {"authorization": f"Bearer {TEST_KEY}", "x-request-id": "ui-" + uuid.uuid4().hex}
    return httpx.post(p.v1 + "/chat/completions", json=body, headers=headers, timeout=60)


def scripted_load(p: Proxy, mock: MockUpstream) -> int:
    """A known mix: two models, prompt-cache reads, a response-cache hit, an upstream error.
    The number of requests sent."""
    sent = 0
    for i in range(5):
        marker = " [mock:cache]" if i % 2 else ""
        assert chat(p, f"sonnet {i} {uuid.uuid4().hex}{marker}").status_code == 200
        sent += 1
    for i in range(3):
        r = chat(p, f"haiku {i} {uuid.uuid4().hex}", model=MODELS[1])
        assert r.status_code == 200
        sent += 1
    same = f"cached answer {uuid.uuid4().hex}"
    first = chat(p, same, temperature=0)
    second = chat(p, same, temperature=0)
    assert first.status_code == second.status_code == 200
    assert second.headers.get("x-cache") == "HIT", second.headers
    sent += 2
    mock.script(["error=400"])
    assert chat(p, "refused " + uuid.uuid4().hex).status_code == 400
    sent += 1
    return sent


def wait_for_rows(p: Proxy, since: float, count: int) -> None:
    """Until the ledger holds ``count`` rows since ``since`` (the writer batches)."""
    deadline = time.monotonic() + 20
    seen = -1
    while time.monotonic() < deadline:
        seen = httpx.get(f"{p.url}/stats", params={"since": str(since)}).json()["totals"][
            "requests"
        ]
        if seen >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"ledger has {seen} of {count} rows")


@pytest.fixture(scope="module")
def ui(mock_server: MockUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    from conftest import NATIVE

    base = tmp_path_factory.mktemp("ui-browser")
    data = base / "data"
    env = {"FERRULE_ADMIN_KEY": ADMIN, "FERRULE_DATA_DIR": str(data)}
    backend = "rust" if NATIVE is not None else "python"
    shots = SHOTS if os.environ.get("FERRULE_UPDATE_SCREENSHOTS") == "1" else base / "shots"
    shots.mkdir(parents=True, exist_ok=True)
    with (
        start_proxy(backend, mock_server.url, str(base / "ferrule.log"), env=env) as p,
        sync_api.sync_playwright() as pw,
    ):
        mock_server.reset()
        t0 = time.time() - 1
        sent = scripted_load(p, mock_server)
        wait_for_rows(p, t0, sent)
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        state = watched(UI(p, data, shots, None, browser))
        try:
            yield state
        finally:
            browser.close()


def watched(state: UI) -> UI:
    """``state`` with a new page whose console errors and page errors it collects."""
    context = state.browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and state.problems.append(m.text))
    page.on("pageerror", lambda e: state.problems.append(f"page error: {e}"))
    state.page = page
    return state


def sign_in(ui: UI) -> None:
    ui.page.goto(ui.proxy.url + "/ui/login")
    ui.page.fill("#key", ADMIN)
    ui.page.click("button[type=submit]")
    ui.page.wait_for_selector("body[data-ready='1']")


@pytest.fixture
def clean(ui: UI) -> Iterator[UI]:
    """The test's pages logged no console error."""
    ui.problems.clear()
    yield ui
    assert ui.problems == [], ui.problems


def test_sign_in_and_overview_equals_stats(clean: UI) -> None:
    ui = clean
    page = ui.page
    page.goto(ui.proxy.url + "/ui")
    assert page.url.endswith("/ui/login")
    ui.shot("login")
    page.fill("#key", "not-the-admin-key-000")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text() == "That is not the admin key."
    # the browser logs the refused sign-in's 401 itself; the only console error allowed
    assert ui.problems == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ]
    ui.problems.clear()
    page.fill("#key", ADMIN)
    page.click("button[type=submit]")
    page.wait_for_selector("body[data-ready='1']")
    assert page.url.endswith("/ui")
    cookie = next(c for c in page.context.cookies() if c["name"] == "ferrule_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    page.click("button[data-period='1h']")
    page.wait_for_selector("button[data-period='1h'][aria-pressed='true']")
    page.wait_for_selector("#kpi-requests:not([data-value=''])")
    since = page.get_attribute("#period", "data-since")
    until = page.get_attribute("#period", "data-until")
    assert since and until
    stats = ["stats", "--json", "--since", since, "--until", until, "--data-dir", str(ui.data)]
    out = subprocess.run(
        [sys.executable, "-m", "ferrule.cli", *stats],
        capture_output=True,
        text=True,
        check=True,
    )
    totals = json.loads(out.stdout)["totals"]

    def shown(kpi: str) -> float:
        value = page.get_attribute(f"#kpi-{kpi}", "data-value")
        assert value not in (None, ""), kpi
        return float(value)

    assert totals["requests"] == 11
    assert shown("requests") == totals["requests"]
    assert shown("cost") == pytest.approx(totals["cost_usd"], abs=1e-9)
    assert shown("saved") == pytest.approx(totals["saved_total_usd"], abs=1e-9)
    billed = sum(
        totals[k]
        for k in (
            "input_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "cache_read_tokens",
            "output_tokens",
        )
    )
    assert billed > 0
    assert shown("tokens") == billed
    assert shown("error-rate") == pytest.approx(totals["errors"] / totals["requests"])
    assert totals["errors"] == 1
    assert shown("response-cache") == pytest.approx(
        totals["response_cache_hits"]
        / (totals["response_cache_hits"] + totals["response_cache_misses"])
    )
    assert totals["response_cache_hits"] == 1
    prompt = billed - totals["output_tokens"]
    assert totals["cache_read_tokens"] > 0
    assert shown("prompt-cache") == pytest.approx(totals["cache_read_tokens"] / prompt)
    assert shown("requests-per-s") == pytest.approx(totals["requests"] / 3600)
    # the charts and tables of the page are there and say something
    assert page.locator(".chart-holder svg rect").count() >= 3
    assert page.locator("#errors tbody tr").first.inner_text().startswith("invalid_request_error")
    assert "ms" in page.locator("#percentiles tbody").inner_text()
    ui.shot("overview")


def test_tables_sort(clean: UI) -> None:
    ui = clean
    ui.go("/ui/models?period=1h")
    names = ui.page.locator("#table-model tbody th")
    assert names.all_inner_texts() == [MODELS[0], MODELS[1]]  # most requests first
    ui.page.click("#table-model button[data-sort='requests']")  # now fewest first
    assert names.all_inner_texts() == [MODELS[1], MODELS[0]]
    assert ui.page.get_attribute(
        "#table-model th:has(button[data-sort='requests'])", "aria-sort"
    ) == ("ascending")
    ui.page.click("#table-model button[data-sort='name']")
    assert names.all_inner_texts() == sorted(MODELS)
    ui.shot("by-model")
    ui.go("/ui/by-key?period=1h")
    assert ui.page.locator("#table-key tbody th").all_inner_texts() == ["(none)"]
    ui.shot("by-key")
    ui.go("/ui/upstream-keys?period=1h")
    assert ui.page.locator("#table-upstream-key tbody tr").count() == 1
    ui.shot("by-upstream-key")


def test_live_view_updates(clean: UI) -> None:
    ui = clean
    ui.go("/ui/live")
    page = ui.page
    page.wait_for_selector("#live-recent tbody tr")  # this worker's earlier requests
    ident = "ui-live-" + uuid.uuid4().hex
    slow_body = {
        "model": MODELS[0],
        "stream": True,
        "messages": [{"role": "user", "content": "slow [mock:words=40] [mock:delay=60]"}],
    }
    headers = {"authorization": f"Bearer {TEST_KEY}", "x-request-id": ident}
    done: list[int] = []

    def slow() -> None:
        with httpx.stream(
            "POST", ui.proxy.v1 + "/chat/completions", json=slow_body, headers=headers, timeout=60
        ) as r:
            r.read()
            done.append(r.status_code)

    worker = threading.Thread(target=slow)
    worker.start()
    try:
        page.wait_for_selector("#live-inflight[data-value='1']", timeout=10_000)
        page.wait_for_selector("#live-flying tbody tr", timeout=5_000)
        ui.shot("live")
        page.wait_for_selector(f"#live-recent tr[data-request-id='{ident}']", timeout=15_000)
        page.wait_for_selector("#live-inflight[data-value='0']", timeout=5_000)
    finally:
        worker.join(30)
    assert done == [200]
    row = page.locator(f"#live-recent tr[data-request-id='{ident}']").inner_text()
    assert MODELS[0] in row and "complete" in row


def test_pages_pass_axe(clean: UI) -> None:
    ui = clean
    axe = AXE.read_text("utf-8")
    failures = {}
    pages = ["/ui?period=1h", "/ui/models", "/ui/by-key", "/ui/upstream-keys", "/ui/live"]
    pages.append("/ui/key/%28none%29")
    for path in pages:
        ui.go(path)
        ui.page.evaluate(axe)  # through the DevTools protocol: the page's CSP still holds
        found = ui.page.evaluate(
            "axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'best-practice']})"
            ".then(r => r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')"
            ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', ')))"
        )
        if found:
            failures[path] = found
    ui.page.goto(ui.proxy.url + "/ui/login")  # signed in: the form is still there
    ui.page.evaluate(axe)
    assert (
        ui.page.evaluate(
            "axe.run().then(r => r.violations.filter(v => ['serious','critical'].includes(v.impact)).length)"
        )
        == 0
    )
    assert failures == {}


# -- keys mode ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys_ui(
    ui: UI, mock_server: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UI]:
    """A second Ferrule, in keys mode (callers send virtual keys, the operator's key goes
    upstream), seen through a page of the same browser."""
    base = tmp_path_factory.mktemp("ui-keys")
    env = {
        "FERRULE_ADMIN_KEY": ADMIN,
        "FERRULE_DATA_DIR": str(base / "data"),
        "FERRULE_AUTH": "keys",
        "FERRULE_UPSTREAM_API_KEY": TEST_KEY,
    }
    with start_proxy("python", mock_server.url, str(base / "ferrule.log"), env=env) as p:
        state = watched(UI(p, base / "data", ui.shots, None, ui.browser))
        sign_in(state)
        yield state


def keyed_chat(p: Proxy, key: str) -> httpx.Response:
    body = {"model": MODELS[0], "messages": [{"role": "user", "content": "hi " + uuid.uuid4().hex}]}
    return httpx.post(
        p.v1 + "/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_keys_create_use_revoke(keys_ui: UI) -> None:
    ui = keys_ui
    ui.problems.clear()
    page = ui.page
    page.on("dialog", lambda d: d.accept())  # the confirm() before revoke and rotate
    ui.go("/ui/keys")
    assert page.locator("#nav-keys").is_visible()
    page.fill("#new-name", "alice")
    page.fill("#new-budget_usd", "5")
    page.select_option("#new-budget_period", "day")
    page.fill("#new-rpm", "600")
    page.click("#create-key button[type=submit]")
    key = page.locator("#new-key-value").inner_text()
    assert len(key) >= 20
    assert page.locator("#keys-table tr[data-key='alice'] .key-status").inner_text() == "active"
    # the key works, and its request is in its page, with the budget bar
    assert keyed_chat(ui.proxy, key).status_code == 200
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ui.go("/ui/key/alice")
        if (
            page.locator("#key-recent tbody tr td").first.inner_text()
            != "No requests with this key."
        ):
            break
        time.sleep(0.3)
    assert page.get_attribute("#kpi-key-requests", "data-value") == "1"
    assert page.locator("#budget-bar").count() == 1
    assert "remaining" in page.locator("#budget-remaining").inner_text()
    ui.shot("key")
    # change its limits
    ui.go("/ui/keys")
    page.select_option("#upd-name", "alice")
    page.fill("#upd-rpm", "1200")
    page.click("#update-key button[type=submit]")
    # (selectors, not wait_for_function: the page's CSP forbids the eval that would need)
    page.wait_for_selector("#keys-table tr[data-key='alice'] td:nth-child(4):text-is('1200')")
    # a second key, rotated: the new value is shown once
    page.fill("#new-name", "bob")
    page.click("#create-key button[type=submit]")
    first = page.locator("#new-key-value").inner_text()
    page.click("#keys-table tr[data-key='bob'] button[data-action='rotate']")
    page.wait_for_selector("#new-key:has-text('New key for bob')")
    assert page.locator("#new-key-value").inner_text() != first
    ui.shot("keys")
    # revoke alice: her key is refused from then on
    page.click("#keys-table tr[data-key='alice'] button[data-action='revoke']")
    page.wait_for_selector("#keys-table tr[data-key='alice'] .key-status:text-is('revoked')")
    refused = keyed_chat(ui.proxy, key)
    assert refused.status_code == 401, refused.text
    axe = AXE.read_text("utf-8")
    page.evaluate(axe)
    found = page.evaluate(
        "axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'best-practice']})"
        ".then(r => r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', ')))"
    )
    assert found == []
    assert ui.problems == [], ui.problems
