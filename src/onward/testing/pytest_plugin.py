"""Pytest fixtures for Onward's test doubles; enable with `pytest_plugins = ["onward.testing.pytest_plugin"]`.

Each test gets its own started server (start takes milliseconds), so scripts and fault counters
never leak between tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from onward.testing.fake_llm import ScriptedLLM


@pytest.fixture
def scripted_llm() -> Iterator[ScriptedLLM]:
    """A started ScriptedLLM on a free port; stopped after the test."""
    with ScriptedLLM() as llm:
        yield llm
