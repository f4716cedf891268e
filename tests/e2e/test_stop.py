"""Stop from the page: it reacts at once, settles on the terminal event, the tool block says
cancelled (and why, when opened), and the conversation goes on."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from onward.testing.fake_llm import ScriptedLLM
from tests.e2e.conftest import screenshot
from tests.e2e.helpers import open_new_chat, read_turn, rendered_once, run_id_of, send
from tests.server.helpers import Api, tool_call

SLEEP = "echo ready; sleep 60"


def test_stop_during_a_command_then_the_next_message_works(page: Page, llm: ScriptedLLM, api: Api) -> None:
    llm.script(
        [{"text": "Starting a long command.", "tool_calls": [tool_call("run_command", {"command": SLEEP})]}],
        match="E2E-STOP",
    )
    llm.script([{"text": "Still here, and the history is valid."}], match="E2E-AFTER")
    turn = open_new_chat(page, "E2E-STOP: run something long")
    tool = turn.get_by_test_id("tool-block")
    expect(tool).to_have_attribute("data-status", "running")
    expect(tool).to_have_attribute("open", "")
    expect(tool.get_by_test_id("tool-output")).to_contain_text("ready")
    expect(tool.get_by_test_id("tool-call")).to_have_text(f"$ {SLEEP}")
    screenshot(page, "chat-tool-running")
    stop = page.get_by_test_id("stop")
    stop.click()
    # at once: the button says it is stopping (or the run is already over)
    expect(page.get_by_text("Stopping…").or_(turn.get_by_test_id("notice"))).to_be_visible()
    expect(turn).to_have_attribute("data-status", "cancelled")
    expect(tool).to_have_attribute("data-status", "cancelled")
    expect(tool.get_by_test_id("tool-status")).to_have_text("cancelled")
    expect(turn.get_by_test_id("notice")).to_have_text("Stopped.")
    expect(stop).to_be_hidden()
    # folded once done; opened, it shows the output so far and the cancellation text
    expect(tool).not_to_have_attribute("open", "")
    tool.locator("summary").click()
    expect(tool.get_by_test_id("tool-output")).to_contain_text("ready")
    expect(tool.get_by_test_id("tool-result")).to_contain_text("Cancelled by the user before it finished")
    rid = run_id_of(turn)
    assert read_turn(turn) == rendered_once(api.log(rid), "E2E-STOP: run something long")
    # the next message works (the strict scripted LLM accepts the repaired history)
    rejections = len(llm.rejections)
    send(page, "E2E-AFTER: are you there?")
    after = page.get_by_test_id("turn").nth(1)
    expect(after).to_have_attribute("data-status", "completed")
    expect(after.get_by_test_id("assistant-text")).to_have_text("Still here, and the history is valid.")
    assert len(llm.rejections) == rejections


def test_stop_and_send_replaces_the_running_run(page: Page, llm: ScriptedLLM, api: Api) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": SLEEP})]}], match="E2E-BUSY")
    llm.script([{"text": "Switched to the new request."}], match="E2E-INSTEAD")
    first = open_new_chat(page, "E2E-BUSY: start something")
    expect(first.get_by_test_id("tool-output")).to_contain_text("ready")
    box = page.get_by_test_id("composer-input")
    box.fill("E2E-INSTEAD: do this instead")
    expect(page.get_by_test_id("send")).to_have_text("Stop and send")
    box.press("Enter")
    second = page.get_by_test_id("turn").nth(1)
    expect(second.get_by_test_id("user-message")).to_have_text("E2E-INSTEAD: do this instead")
    expect(first).to_have_attribute("data-status", "cancelled")
    expect(first.get_by_test_id("tool-block")).to_have_attribute("data-status", "cancelled")
    expect(second).to_have_attribute("data-status", "completed")
    expect(second.get_by_test_id("assistant-text")).to_have_text("Switched to the new request.")
    # the turns stay in order, each with its own run, after a reload too
    page.reload()
    expect(page.get_by_test_id("turn")).to_have_count(2)
    for turn, text in ((first, "E2E-BUSY: start something"), (second, "E2E-INSTEAD: do this instead")):
        assert read_turn(turn) == rendered_once(api.log(run_id_of(turn)), text)
