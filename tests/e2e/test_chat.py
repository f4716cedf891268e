"""The chat as a person uses it: an answer streams in, code is highlighted, reasoning folds away,
the keyboard works, and nothing the model or a command prints can run as markup."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from onward.testing.fake_llm import ScriptedLLM
from tests.e2e.conftest import screenshot
from tests.e2e.helpers import open_new_chat, read_turn, rendered_once, run_id_of
from tests.server.helpers import Api, tool_call

ANSWER = (
    "Here is the function you asked for, written step by step so you can follow along. "
    "It reads the file, counts the words and prints the total.\n\n"
    "```python\ndef count_words(path):\n    with open(path) as f:\n        return len(f.read().split())\n```\n\n"
    "Run it with any text file."
)
REASONING = "The user wants a word counter. " * 8


def test_send_and_watch_an_answer_stream(page: Page, llm: ScriptedLLM, api: Api) -> None:
    llm.script(
        [{"reasoning": REASONING, "text": ANSWER, "chunk_chars": 3, "delay_ms": 20}],
        match="E2E-STREAM",
    )
    turn = open_new_chat(page, "E2E-STREAM: write a word counter")
    reasoning = turn.get_by_test_id("reasoning")
    # reasoning is open while it streams …
    expect(reasoning).to_have_attribute("data-streaming", "true")
    expect(reasoning).to_have_attribute("open", "")
    message = turn.get_by_test_id("assistant-message")
    # … the answer streams: its first words are shown while it is still being written …
    page.wait_for_function(
        """() => { const m = document.querySelector('[data-testid=assistant-message]');
                   return m && m.dataset.streaming === 'true' && m.innerText.includes('Here is the function'); }"""
    )
    expect(page.get_by_test_id("stop")).to_be_visible()
    expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    screenshot(page, "chat-streaming")
    # … and settles: reasoning folded, code highlighted, the run completed
    expect(turn).to_have_attribute("data-status", "completed")
    expect(message).to_have_attribute("data-streaming", "false")
    expect(reasoning).not_to_have_attribute("open", "")
    code = message.locator("pre.code-block code.hljs.language-python")
    expect(code).to_contain_text("def count_words(path):")
    expect(code.locator(".hljs-keyword").first).to_have_text("def")
    expect(page.get_by_test_id("stop")).to_be_hidden()
    expect(page.get_by_test_id("send")).to_have_text("Send")
    events = api.log(run_id_of(turn))
    assert events[-1]["type"] == "run.completed"
    assert read_turn(turn)["assistant"] == [message.get_by_test_id("assistant-text").inner_text().strip()]
    reasoning.locator("summary").click()
    expect(reasoning.locator(".reasoning-text")).to_have_text(REASONING.strip())


PAYLOAD = '<script>window.__pwned="script"</script> <img src=x onerror="window.__pwned=\'img\'">'
COMMAND_PAYLOAD = (
    "printf '%s\\n' '<script>window.__pwned=1</script>' '<img src=x onerror=\"window.__pwned=2\">'; "
    "printf '\\033[31mred\\033[0m\\n'"
)


def test_script_and_img_payloads_render_as_text(page: Page, llm: ScriptedLLM, api: Api) -> None:
    llm.script(
        [
            {"text": f"Model says: {PAYLOAD} [link](javascript:window.__pwned='link')",
             "tool_calls": [tool_call("run_command", {"command": COMMAND_PAYLOAD})]},
            {"text": f"Again in a list:\n\n- {PAYLOAD}\n"},
        ],
        match="E2E-XSS",
    )
    turn = open_new_chat(page, f"E2E-XSS {PAYLOAD}")
    expect(turn).to_have_attribute("data-status", "completed")
    transcript = page.get_by_test_id("transcript")
    # the payloads are there, as text
    expect(turn.get_by_test_id("user-message")).to_contain_text(PAYLOAD)
    expect(turn.get_by_test_id("assistant-message").first).to_contain_text(PAYLOAD)
    expect(turn.get_by_test_id("assistant-message").nth(1)).to_contain_text(PAYLOAD)
    tool = turn.get_by_test_id("tool-block")
    expect(tool).to_have_attribute("data-status", "ok")
    tool.locator("summary").click()
    result = tool.get_by_test_id("tool-result")
    expect(result).to_contain_text("<script>window.__pwned=1</script>")
    expect(result).to_contain_text('<img src=x onerror="window.__pwned=2">')
    expect(result.locator("span.ansi-fg-red")).to_have_text("red")
    # … and nothing ran or became an element
    assert transcript.locator("script, img, iframe, [onerror]").count() == 0
    assert transcript.locator("a[href^='javascript']").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    # the conversation title (made from the message) is text too
    expect(page.get_by_test_id("conversation-list")).to_contain_text("<script>")
    assert page.get_by_test_id("conversation-list").locator("script, img").count() == 0
    # after a reload (stored messages instead of events) the same holds
    page.reload()
    expect(turn.get_by_test_id("assistant-message").first).to_contain_text(PAYLOAD)
    assert transcript.locator("script, img, iframe, [onerror]").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    seen, once = read_turn(turn), rendered_once(api.log(run_id_of(turn)), f"E2E-XSS {PAYLOAD}")
    assert (seen["user"], len(seen["assistant"]), seen["tools"], seen["status"]) == (
        once["user"], len(once["assistant"]), once["tools"], once["status"])


def test_keyboard_enter_sends_shift_enter_breaks_esc_stops(page: Page, llm: ScriptedLLM) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo ready; sleep 60"})]}], match="E2E-KEYS")
    page.goto("/")
    box = page.get_by_test_id("composer-input")
    expect(box).to_be_focused()
    box.type("E2E-KEYS line one")
    box.press("Shift+Enter")
    box.type("line two")
    expect(box).to_have_value("E2E-KEYS line one\nline two")
    box.press("Enter")
    turn = page.get_by_test_id("turn").last
    expect(turn.get_by_test_id("user-message")).to_have_text("E2E-KEYS line one\nline two")
    expect(turn.get_by_test_id("tool-block").get_by_test_id("tool-output")).to_contain_text("ready")
    composer = page.get_by_test_id("composer-input")
    expect(composer).to_be_focused()
    composer.press("Escape")
    expect(turn).to_have_attribute("data-status", "cancelled")
    expect(turn.get_by_test_id("tool-block")).to_have_attribute("data-status", "cancelled")
    expect(page.get_by_test_id("announcer")).to_have_text("The run was stopped.")
    # labels a screen reader announces
    expect(page.get_by_label("Message")).to_be_visible()
    expect(page.get_by_role("log", name="Conversation")).to_be_visible()
    expect(page.get_by_role("navigation", name="Conversations")).to_be_visible()
