"""Never lose a word: refreshes, a cut network and a second tab during a run leave a transcript
equal to the server's event log rendered once — no gap, no doubled paragraph or tool block."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer
from tests.e2e.conftest import PageErrors, new_context, screenshot
from tests.e2e.helpers import (
    conversation_id,
    last_turn,
    open_new_chat,
    read_turn,
    rendered_once,
    run_id_of,
    send,
    turn_of,
)
from tests.e2e.netcut import CuttableProxy
from tests.server.helpers import TERMINAL, Api, tool_call

FIRST = "First I will look around the workspace, one careful step at a time, and tell you what I find. " * 3
SECOND = "The command printed six lines and finished cleanly, so everything is in order here. " * 6
COUNT = "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.4; done"


def _wait_events(api: Api, rid: str, predicate: Any, timeout: float = 20) -> list[dict[str, Any]]:
    """The log once it holds an event matching `predicate` (server-side progress, not the page's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api.http.get(f"/api/runs/{rid}/events", params={"after": 0, "limit": 10_000})
        events: list[dict[str, Any]] = r.json()["events"]
        if any(predicate(e) for e in events):
            return events
        assert not events or events[-1]["type"] not in TERMINAL, "the run ended first"
        time.sleep(0.05)
    raise AssertionError("the run did not get there in time")


def _assert_rendered_once(page: Page, api: Api, rid: str, user: str) -> None:
    turn = turn_of(page, rid)
    events = api.wait_terminal(rid)
    expect(turn).to_have_attribute("data-status", rendered_once(events, user)["status"])
    expect(turn).to_have_attribute("data-last-seq", str(events[-1]["seq"]))
    assert read_turn(turn) == rendered_once(events, user)
    assert page.get_by_test_id("turn").count() == len({t.get_attribute("data-run-id") for t in page.get_by_test_id("turn").all()})


def test_refresh_three_times_during_a_run(page: Page, llm: ScriptedLLM, api: Api) -> None:
    llm.script(
        [
            {"text": FIRST, "chunk_chars": 4, "delay_ms": 15, "tool_calls": [tool_call("run_command", {"command": COUNT})]},
            {"text": SECOND, "chunk_chars": 4, "delay_ms": 15},
        ],
        match="E2E-REFRESH",
    )
    user = "E2E-REFRESH: look around"
    turn = open_new_chat(page, user)
    rid = run_id_of(turn)
    # 1: while the first paragraph streams
    expect(turn.get_by_test_id("assistant-text").first).to_contain_text("First I will")
    page.reload()
    expect(turn_of(page, rid)).to_have_attribute("data-source", "events")
    # 2: while the command runs (its output is live)
    expect(turn_of(page, rid).get_by_test_id("tool-output")).to_contain_text("line 1")
    page.reload()
    expect(turn_of(page, rid).get_by_test_id("tool-block")).to_have_count(1)
    # 3: while the second paragraph streams
    expect(turn_of(page, rid).get_by_test_id("assistant-text").nth(1)).to_contain_text("The command printed")
    page.reload()
    _assert_rendered_once(page, api, rid, user)
    # the transcript says each paragraph exactly once
    text = page.get_by_test_id("transcript").inner_text()
    assert text.count(FIRST.strip()) == 1 and text.count(SECOND.strip()) == 1
    # and a fresh load (stored messages, no events) shows the same
    page.reload()
    expect(turn_of(page, rid)).to_have_attribute("data-source", "stored")
    assert read_turn(turn_of(page, rid)) == rendered_once(api.log(rid), user)


@pytest.fixture
def proxy(server: OnwardServer) -> Iterator[CuttableProxy]:
    p = CuttableProxy(server.port)
    yield p
    p.close()


@pytest.fixture
def proxied_page(browser: Browser, proxy: CuttableProxy, auth_state: Any, page_errors: PageErrors) -> Iterator[Page]:
    # the session cookie is for 127.0.0.1 (any port), so the signed-in state carries over
    ctx = new_context(browser, proxy.url, auth_state)
    yield page_errors.watch(ctx.new_page())
    ctx.close()


def test_network_cut_and_restored_mid_run(proxied_page: Page, proxy: CuttableProxy, llm: ScriptedLLM, api: Api) -> None:
    page = proxied_page
    long_text = "Every word of this answer must arrive exactly once, whatever the network does meanwhile. " * 10
    llm.script([{"text": long_text, "chunk_chars": 3, "delay_ms": 12}], match="E2E-NETCUT")
    user = "E2E-NETCUT: talk"
    turn = open_new_chat(page, user)
    rid = run_id_of(turn)
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    expect(turn.get_by_test_id("assistant-text")).to_contain_text("Every word")
    # cut: new requests are aborted by the browser, open connections are reset on the wire
    page.route("**/api/**", lambda route: route.abort("internetdisconnected"))
    proxy.cut()
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "reconnecting")
    seen = len(turn.get_by_test_id("assistant-text").inner_text())
    # the run goes on without the page: wait until the server is well past what the page has
    _wait_events(api, rid, lambda e: e["type"] == "message.delta" and e["seq"] > seen // 3 + 40)
    screenshot(page, "chat-reconnecting")
    assert len(turn.get_by_test_id("assistant-text").inner_text()) == seen
    # restore while the run still streams
    page.unroute("**/api/**")
    proxy.restore()
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live", timeout=20_000)
    _assert_rendered_once(page, api, rid, user)
    expect(turn.get_by_test_id("assistant-text")).to_have_text(long_text.strip())


def test_two_tabs_show_the_same_run(context: BrowserContext, page_errors: PageErrors, llm: ScriptedLLM, api: Api) -> None:
    llm.script(
        [
            {"text": "Tab-shared answer, streamed slowly. " * 8, "chunk_chars": 4, "delay_ms": 15,
             "tool_calls": [tool_call("run_command", {"command": "echo shared; sleep 0.5"})]},
            {"text": "Both tabs saw this.", "chunk_chars": 2, "delay_ms": 10},
        ],
        match="E2E-TABS",
    )
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo ready; sleep 60"})]}], match="E2E-TAB-STOP")
    a = page_errors.watch(context.new_page())
    first = open_new_chat(a, "E2E-TABS warm-up")
    expect(first).to_have_attribute("data-status", "completed")
    cid = conversation_id(a)
    b = page_errors.watch(context.new_page())
    b.goto(f"/c/{cid}")
    expect(b.get_by_test_id("turn")).to_have_count(1)
    # a run started in tab A appears in tab B at once, and both follow it live
    send(a, "E2E-TABS second")
    expect(a.get_by_test_id("turn")).to_have_count(2)
    rid = run_id_of(last_turn(a))
    expect(turn_of(b, rid).get_by_test_id("user-message")).to_have_text("E2E-TABS second")
    expect(turn_of(b, rid)).to_have_attribute("data-source", "events")
    badge = b.locator(f'[data-testid=conversation-item][data-id="{cid}"] [data-testid=live-badge]')
    expect(badge).to_be_visible()
    expect(b.get_by_test_id("stop")).to_be_visible()
    _assert_rendered_once(a, api, rid, "E2E-TABS second")
    _assert_rendered_once(b, api, rid, "E2E-TABS second")
    assert read_turn(a.get_by_test_id("turn").first) == read_turn(b.get_by_test_id("turn").first)
    # a run started elsewhere (another device: the API) is noticed by both; Stop in B ends it in A
    other = api.start(cid, "E2E-TAB-STOP from elsewhere")["id"]
    expect(turn_of(a, other).get_by_test_id("tool-output")).to_contain_text("ready")
    expect(turn_of(b, other).get_by_test_id("tool-output")).to_contain_text("ready")
    b.get_by_test_id("stop").click()
    expect(turn_of(a, other)).to_have_attribute("data-status", "cancelled")
    expect(turn_of(a, other).get_by_test_id("tool-block")).to_have_attribute("data-status", "cancelled")
    expect(badge).to_have_count(0)
    assert read_turn(turn_of(a, other)) == read_turn(turn_of(b, other))


def test_a_run_started_elsewhere_is_pushed_not_polled(page: Page, llm: ScriptedLLM, api: Api) -> None:
    """The activity feed: a run started on another device (here: the API) shows in the sidebar at
    once, its end too, and while the feed is live the page asks the server nothing on a timer."""
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo ready; sleep 60"})]}], match="E2E-FEED")
    checks: list[float] = []
    page.on("request", lambda r: checks.append(time.monotonic()) if "/api/runs?" in r.url else None)
    with page.expect_response(lambda r: r.url.endswith("/api/activity")) as feed:
        page.goto("/")
    assert feed.value.status == 200
    # the feed's first bytes make the page catch up once (active runs + recent runs)
    deadline = time.monotonic() + 10
    while len(checks) < 2:
        assert time.monotonic() < deadline, "no catch-up check after the feed opened"
        page.wait_for_timeout(50)
    live_since = time.monotonic()
    cid = api.conversation("E2E-FEED from another device")
    rid = api.start(cid, "E2E-FEED elsewhere")["id"]
    badge = page.locator(f'[data-testid=conversation-item][data-id="{cid}"] [data-testid=live-badge]')
    # well under the 4 s of the fallback check: only a push can be this quick
    expect(badge).to_be_visible(timeout=2000)
    api.cancel(rid)
    expect(badge).to_have_count(0, timeout=2000)
    # over a whole fallback interval (4 s), no timed check happened while the feed was live
    page.wait_for_timeout(max(0.0, live_since + 4.5 - time.monotonic()) * 1000)
    assert [t for t in checks if t > live_since] == []
