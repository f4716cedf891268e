"""What the tests read from the page, and the same thing computed from the server's event log."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Locator, Page, expect

_ANY = re.compile(r".+")
_CHAT_URL = re.compile(r"/c/[^/]+$")

TERMINAL_STATUS = {
    "run.completed": "completed",
    "run.cancelled": "cancelled",
    "run.failed": "failed",
    "run.interrupted": "interrupted",
}

_READ_TURN = """(turn) => ({
  user: turn.querySelector('[data-testid=user-message]')?.innerText ?? null,
  assistant: [...turn.querySelectorAll('[data-testid=assistant-message] .markdown')].map(e => e.innerText.trim()),
  tools: [...turn.querySelectorAll('[data-testid=tool-block]')].map(e => [
    e.querySelector('.tool-name').textContent.trim(), e.dataset.status]),
  status: turn.dataset.status ?? null,
})"""


def rendered_once(events: list[dict[str, Any]], user: str) -> dict[str, Any]:
    """The run's log rendered once: every completed message with text, every tool call with its
    final status, the terminal status."""
    statuses = {e["data"]["call_id"]: e["data"]["status"] for e in events if e["type"] == "tool.completed"}
    return {
        "user": user,
        "assistant": [
            e["data"]["content"].strip()
            for e in events
            if e["type"] == "message.completed" and e["data"]["content"].strip()
        ],
        "tools": [
            [e["data"]["name"], statuses.get(e["data"]["call_id"])]
            for e in events
            if e["type"] == "tool.started"
        ],
        "status": TERMINAL_STATUS[events[-1]["type"]],
    }


def read_turn(turn: Locator) -> dict[str, Any]:
    value: dict[str, Any] = turn.evaluate(_READ_TURN)
    return value


def turn_of(page: Page, run_id: str) -> Locator:
    return page.locator(f'[data-testid=turn][data-run-id="{run_id}"]')


def last_turn(page: Page) -> Locator:
    return page.get_by_test_id("turn").last


def run_id_of(turn: Locator) -> str:
    expect(turn).to_have_attribute("data-run-id", _ANY)
    value = turn.get_attribute("data-run-id")
    assert value
    return value


def send(page: Page, text: str) -> None:
    box = page.get_by_test_id("composer-input")
    box.fill(text)
    box.press("Enter")


def open_new_chat(page: Page, text: str) -> Locator:
    """Start a conversation from the home screen with `text`; returns its turn (found by run id)."""
    page.goto("/")
    send(page, text)
    expect(page).to_have_url(_CHAT_URL)
    turn = last_turn(page)
    expect(turn.get_by_test_id("user-message")).to_have_text(text)
    return turn_of(page, run_id_of(turn))


def conversation_id(page: Page) -> str:
    return page.url.rstrip("/").rsplit("/", 1)[-1]


