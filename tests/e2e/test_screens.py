"""The other screens: the conversation list (newest first, rename, delete, live badge), settings
(model, language, theme, API tokens), the workspace panel, login — and the screenshots of them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer
from tests.e2e.conftest import SERVER_SETTINGS, PageErrors, new_context, screenshot
from tests.e2e.helpers import open_new_chat, turn_of
from tests.server.helpers import Api, tool_call


@pytest.fixture(scope="module")
def server(llm: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnwardServer]:
    """This module's server also knows a second, named model (for the model choice in settings)."""
    home = tmp_path_factory.mktemp("home")
    (home / "onward.toml").write_text(
        f'[models.thinker]\nbase_url = "{llm.base_url}"\nmodel = "scripted-thinker"\napi_key = "test"\n'
    )
    with OnwardServer(home, llm.base_url, config_file=home / "onward.toml", **SERVER_SETTINGS) as srv:
        yield srv


TEST_SCRIPT = """#!/bin/sh
printf '\\033[1m============ test session starts ============\\033[0m\\n'
printf 'tests/test_words.py \\033[32m..\\033[31mF\\033[0m\\n\\n'
printf '\\033[31mFAILED\\033[0m tests/test_words.py::test_empty - assert 1 == 0\\n'
printf '\\033[31m1 failed\\033[0m, \\033[32m2 passed\\033[0m in 0.03s\\n'
exit 1
"""
FIX = (
    "The empty-file case fails: `str.split()` on an empty string gives `[]`, but the function "
    "starts counting at 1. Here is the fix:\n\n"
    "```python\ndef count_words(path: str) -> int:\n    with open(path) as f:\n"
    "        return len(f.read().split())\n```\n\nAfter the change all **3 tests pass**."
)


def test_screenshots_of_the_main_screens(browser: Browser, server: OnwardServer, auth_state: Any,
                                          page_errors: PageErrors, llm: ScriptedLLM, api: Api) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo building; sleep 60"})]}], match="long build")
    llm.script([{"text": "The logs show two restarts, both after the nightly backup."}], match="Summarize")
    llm.script(
        [
            {"reasoning": "The user reports a failing test. I should run the test suite first to see what fails.",
             "text": "Let me run the tests first.",
             "tool_calls": [tool_call("run_command", {"command": "sh run-tests.sh"})]},
            {"text": FIX},
        ],
        match="word count test",
    )
    r = api.http.post("/api/files/upload", params={"path": ""}, files={"file": ("run-tests.sh", TEST_SCRIPT)})
    assert r.status_code == 201, r.text
    for title, text in (("Summarize the server logs", "Summarize the logs"), ("Release build", "Start the long build")):
        cid = api.conversation(title)
        api.start(cid, text)
    ctx = new_context(browser, server.url, auth_state)
    page = page_errors.watch(ctx.new_page())
    turn = open_new_chat(page, "Why does the word count test fail? Please fix it.")
    expect(turn).to_have_attribute("data-status", "completed")
    turn.get_by_test_id("tool-block").locator("summary").click()
    expect(turn.get_by_test_id("tool-result").locator(".ansi-fg-red").first).to_be_visible()
    expect(page.get_by_test_id("live-badge")).to_have_count(1)
    page.get_by_test_id("composer-input").fill("Now add a test for files with only whitespace.")
    screenshot(page, "chat-light")
    page.get_by_test_id("theme-toggle").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    screenshot(page, "chat-dark")
    page.get_by_test_id("locale").select_option("zh-CN")
    expect(page.get_by_test_id("send")).to_have_text("发送")
    screenshot(page, "chat-zh")
    page.get_by_test_id("locale").select_option("en")
    page.get_by_test_id("theme-toggle").click()
    page.get_by_test_id("toggle-files").click()
    expect(page.get_by_test_id("workspace-panel")).to_be_visible()
    screenshot(page, "workspace")
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_test_id("settings")).to_be_visible()
    screenshot(page, "settings")
    ctx.close()
    login = new_context(browser, server.url)
    lp = page_errors.watch(login.new_page())
    lp.goto("/")
    expect(lp.get_by_role("button", name="Sign in")).to_be_visible()
    screenshot(lp, "login")
    login.close()
    for run in api.http.get("/api/runs", params={"active": "true"}).json()["runs"]:
        api.cancel(run["id"])


def test_conversation_list_newest_first_rename_delete_and_live_badge(page: Page, llm: ScriptedLLM, api: Api) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo ready; sleep 60"})]}], match="E2E-BADGE")
    older = api.conversation("E2E older")
    newer = api.conversation("E2E newer")
    page.goto("/")
    items = page.get_by_test_id("conversation-item")
    expect(items.filter(has_text="E2E newer")).to_be_visible()
    ids = [i.get_attribute("data-id") for i in items.all()]
    assert ids.index(newer) < ids.index(older)
    # a run makes its conversation the newest, with a live badge while it runs
    rid = api.start(older, "E2E-BADGE")["id"]
    first = items.first
    expect(first).to_have_attribute("data-id", older)
    expect(first.get_by_test_id("live-badge")).to_be_visible()
    api.cancel(rid)
    expect(first.get_by_test_id("live-badge")).to_be_hidden()
    # rename
    item = page.locator(f'[data-testid=conversation-item][data-id="{newer}"]')
    item.hover()
    item.get_by_test_id("rename").click()
    box = item.get_by_test_id("rename-input")
    expect(box).to_be_focused()
    box.fill("E2E renamed")
    box.press("Enter")
    expect(item).to_contain_text("E2E renamed")
    assert api.http.get(f"/api/conversations/{newer}").json()["title"] == "E2E renamed"
    # delete (asks first)
    item.hover()
    item.get_by_test_id("delete").click()
    item.get_by_test_id("delete-yes").click()
    expect(item).to_have_count(0)
    assert api.http.get(f"/api/conversations/{newer}").status_code == 404


def test_settings_model_language_theme_and_tokens(page: Page, llm: ScriptedLLM) -> None:
    page.goto("/settings")
    model = page.get_by_test_id("model-select")
    expect(model.locator("option")).to_have_text(["default (default)", "thinker"])
    expect(model).to_have_value("default")
    model.select_option("thinker")
    # language: switch, survive a reload
    language = page.locator("#settings-locale")
    language.select_option("zh-CN")
    expect(page.get_by_role("heading", name="设置")).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", name="设置")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    language.select_option("en")
    expect(page.get_by_role("heading", name="Settings")).to_be_visible()
    # theme
    page.get_by_role("radio", name="Dark").check()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    page.get_by_role("radio", name="Light").check()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    # API tokens: create (shown once), listed, delete
    tokens = page.get_by_test_id("tokens")
    tokens.get_by_label("Token name").fill("e2e-script")
    tokens.get_by_role("button", name="Create token").click()
    expect(tokens.get_by_test_id("token-value")).not_to_be_empty()
    expect(tokens.locator("li", has_text="e2e-script")).to_have_count(1)
    tokens.get_by_role("button", name="Delete token e2e-script").click()
    expect(tokens.locator("li", has_text="e2e-script")).to_have_count(0)
    # the chosen model is used for new runs
    llm.script([{"text": "model check"}], match="E2E-MODEL")
    turn = open_new_chat(page, "E2E-MODEL")
    expect(turn).to_have_attribute("data-status", "completed")
    models = [r["model"] for r in llm.requests if "E2E-MODEL" in str(r["messages"][-1].get("content"))]
    assert models == ["scripted-thinker"]
    page.goto("/settings")
    expect(page.get_by_test_id("model-select")).to_have_value("thinker")
    page.get_by_test_id("model-select").select_option("default")


def test_workspace_panel_upload_download_delete(page: Page, tmp_path: Path) -> None:
    page.goto("/")
    page.get_by_test_id("toggle-files").click()
    panel = page.get_by_test_id("workspace-panel")
    expect(panel).to_be_visible()
    if panel.get_by_test_id("files-unavailable").is_visible():
        return  # a server without file endpoints: the panel says so, nothing more to test
    local = tmp_path / "notes-e2e.txt"
    local.write_text("hello from the browser\n")
    panel.get_by_test_id("upload").set_input_files(str(local))
    link = panel.get_by_role("link", name="Download notes-e2e.txt")
    expect(link).to_be_visible()
    with page.expect_download() as download:
        link.click()
    assert Path(download.value.path()).read_text() == "hello from the browser\n"
    panel.get_by_role("button", name="Delete notes-e2e.txt").click()
    panel.get_by_role("button", name="Delete", exact=True).click()
    expect(link).to_have_count(0)


def test_login_first_run_link_wrong_password_and_logout(browser: Browser, server: OnwardServer,
                                                        page_errors: PageErrors) -> None:
    ctx = new_context(browser, server.url)
    page = page_errors.watch(ctx.new_page())
    page.goto("/")
    if page.get_by_test_id("composer").is_visible():
        ctx.close()
        return  # a server without accounts
    expect(page.get_by_label("Username")).to_be_focused()
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Sign-in failed")
    # the first-run link the server printed signs in once
    found = re.search(r"/\?login_token=([\w-]+)", server.log())
    assert found, "the server printed no first-run link"
    page.goto(f"/?login_token={found.group(1)}")
    expect(page.get_by_test_id("composer")).to_be_visible()
    assert "login_token" not in page.url
    page.goto("/settings")
    page.get_by_test_id("logout").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.goto(f"/?login_token={found.group(1)}")  # used up
    expect(page.get_by_role("alert")).to_contain_text("did not work")
    ctx.close()


def test_a_run_in_another_conversation_keeps_its_badge_while_you_chat(page: Page, llm: ScriptedLLM, api: Api) -> None:
    llm.script([{"tool_calls": [tool_call("run_command", {"command": "echo ready; sleep 60"})]}], match="E2E-BG")
    llm.script([{"text": "foreground answer"}], match="E2E-FG")
    background = open_new_chat(page, "E2E-BG background job")
    expect(background.get_by_test_id("tool-output")).to_contain_text("ready")
    rid = background.get_attribute("data-run-id")
    assert rid
    fg = open_new_chat(page, "E2E-FG quick question")
    expect(fg).to_have_attribute("data-status", "completed")
    items = page.get_by_test_id("conversation-item")
    bg_item, fg_item = items.filter(has_text="E2E-BG"), items.filter(has_text="E2E-FG")
    expect(bg_item.get_by_test_id("live-badge")).to_be_visible()
    expect(fg_item.get_by_test_id("live-badge")).to_have_count(0)
    bg_item.get_by_role("link").click()
    expect(turn_of(page, rid).get_by_test_id("tool-block")).to_have_attribute("data-status", "running")
    expect(page.get_by_test_id("send")).to_be_disabled()  # nothing written yet
    page.get_by_test_id("stop").click()
    expect(turn_of(page, rid)).to_have_attribute("data-status", "cancelled")
    expect(bg_item.get_by_test_id("live-badge")).to_have_count(0)
