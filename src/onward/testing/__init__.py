"""Test doubles that ship with Onward: a scripted OpenAI-compatible LLM server and its fixture.

They are real parts (HTTP, SSE, strict validation), so tests and benchmarks exercise the same code
paths a real deployment does; nothing here mocks the SDK. Names load lazily, so that
`python -m onward.testing.fake_llm` does not import its own module twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onward.testing.fake_llm import InvalidRequest, ScriptedLLM, Turn, check_request

__all__ = ["InvalidRequest", "ScriptedLLM", "Turn", "check_request"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from onward.testing import fake_llm

        return getattr(fake_llm, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
