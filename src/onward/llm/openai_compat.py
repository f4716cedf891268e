"""Any OpenAI-compatible chat-completions endpoint, through the `openai` SDK's async client.

Design decision: the SDK only transports; the retry policy is ours. A retry is safe only before
the first chunk reaches the engine (after that it would duplicate text the user has already seen),
so the SDK's own retries are off, and a stream that breaks after it started is a clear LLMError.
Chunks are read as plain JSON (`cast_to=object`): building the SDK's pydantic models costs about
0.6 ms per chunk, which capped a stream at ~3,000 deltas/s.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from openai import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AsyncOpenAI,
    DefaultAioHttpClient,
    Timeout,
)

from onward.config import ModelConfig, Settings
from onward.errors import LLMError
from onward.llm.base import (
    ReasoningChunk,
    StreamChunk,
    StreamEnd,
    TextChunk,
    ToolCallChunk,
)
from onward.llm.sse import FastStream

logger = logging.getLogger(__name__)

_RETRYABLE_STATUS = frozenset({408, 409, 429})  # plus every 5xx


@dataclass(slots=True)
class _PendingCall:
    """One tool call being assembled; `name` is None until the server has named it."""

    server_id: str | None = None
    name: str | None = None
    id: str = ""
    index: int = -1
    buffered: str = ""


class ToolCallAccumulator:
    """Turns tool-call deltas into ToolCallChunks that always carry the call's settled id and name.

    Deltas are keyed by `index`. id and function.name are taken once (some servers repeat them in
    every delta; they are never concatenated); only arguments are joined. A call with no id gets
    `call_<hex>`. Arguments that arrive before the name are held back until the name arrives.
    Output indexes count calls in the order they were named, so they are always 0, 1, 2, ...
    """

    def __init__(self) -> None:
        self._calls: dict[int, _PendingCall] = {}
        self._named = 0

    def feed(self, deltas: Iterable[Any]) -> Iterator[ToolCallChunk]:
        """ToolCallChunks for one chunk's `delta.tool_calls` (dicts in the wire format)."""
        for position, delta in enumerate(deltas):
            if not isinstance(delta, dict):
                continue
            key = delta.get("index")
            key = position if not isinstance(key, int) else key
            fn = delta.get("function")
            fn = fn if isinstance(fn, dict) else {}
            name = fn.get("name") or None
            args = fn.get("arguments") or ""
            server_id = delta.get("id") or None
            call = self._calls.get(key)
            if call is not None and call.server_id and server_id and server_id != call.server_id and name:
                # A new call reusing an index (seen from some Gemini-compatible servers).
                self._calls[-1 - len(self._calls)] = call
                call = None
            if call is None:
                call = self._calls[key] = _PendingCall()
            if call.server_id is None and server_id:
                call.server_id = str(server_id)
            if call.name is None:
                if name is None:
                    call.buffered += str(args)
                    continue
                call.name, call.index = str(name), self._named
                call.id = call.server_id or f"call_{uuid.uuid4().hex[:24]}"
                self._named += 1
                args, call.buffered = call.buffered + str(args), ""
                yield ToolCallChunk(index=call.index, id=call.id, name=call.name, arguments_delta=args)
            elif args:
                yield ToolCallChunk(index=call.index, id=call.id, name=call.name, arguments_delta=str(args))

    def check_complete(self) -> None:
        nameless = [key for key, call in self._calls.items() if call.name is None]
        if nameless:
            raise LLMError(f"the LLM sent tool call #{nameless[0]} without a function name")


class OpenAICompatProvider:
    """A Provider for OpenAI, DeepSeek, Qwen, Kimi, GLM, vLLM, Ollama, llama.cpp, LM Studio, ..."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 120.0,
        max_retries: int = 3,
        retry_base_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        self.base_url = base_url
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_retries = max_retries
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self._include_usage = True  # switched off for servers that reject stream_options
        timeout = Timeout(read_timeout_s, connect=connect_timeout_s)
        self._client = AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",  # local servers take no key; the SDK insists on one
            max_retries=0,
            timeout=timeout,
            # The SDK's aiohttp transport: its C HTTP parser costs a fraction of the pure-Python
            # one per streamed chunk, which is what limits many concurrent runs.
            http_client=DefaultAioHttpClient(timeout=timeout),
        )

    @classmethod
    def from_settings(cls, settings: Settings, model_cfg: ModelConfig) -> OpenAICompatProvider:
        return cls(
            model_cfg.base_url,
            model_cfg.resolved_key(),
            connect_timeout_s=settings.llm_connect_timeout_s,
            read_timeout_s=settings.llm_read_timeout_s,
            max_retries=settings.llm_max_retries,
            retry_base_s=settings.llm_retry_base_s,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.close()

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, model: str
    ) -> AsyncGenerator[StreamChunk, None]:
        """See Provider.stream. An async generator: `contextlib.aclosing()` closes it promptly."""
        attempt = 0
        while True:
            attempt += 1
            yielded = False
            try:
                response = await self._open(messages, tools, model)
                async with response:
                    calls = ToolCallAccumulator()
                    finish: str | None = None
                    usage: dict[str, Any] = {}
                    async for batch in response.batches():
                        for chunk in batch:
                            if not isinstance(chunk, dict):
                                continue
                            if isinstance(chunk.get("usage"), dict):
                                usage = chunk["usage"]
                            for choice in chunk.get("choices") or ():
                                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                                    continue
                                finish = choice.get("finish_reason") or finish
                                for out in _convert(choice.get("delta"), calls):
                                    yielded = True
                                    yield out
                calls.check_complete()
                yield StreamEnd(finish_reason=finish, usage=usage)
                return
            except APIError as exc:
                if yielded:
                    raise LLMError(f"LLM stream broke after it started: {self._describe(exc)}") from exc
                if self._drop_usage_option(exc):
                    attempt -= 1
                    continue
                if not _retryable(exc):
                    raise LLMError(self._failure(exc, attempt)) from exc
                if attempt > self.max_retries:
                    raise LLMError(self._failure(exc, attempt)) from exc
                delay = self._delay(attempt, exc)
                logger.warning(
                    "LLM call failed (%s); retry %d of %d in %.2f s",
                    self._describe(exc), attempt, self.max_retries, delay,
                    extra={"base_url": self.base_url, "model": model},
                )
            except LLMError:
                raise
            except Exception as exc:  # garbage from a server that is only roughly compatible
                stage = "LLM stream broke after it started" if yielded else "unexpected reply from LLM endpoint"
                raise LLMError(f"{stage}: {exc!r}") from exc
            await asyncio.sleep(delay)

    async def _open(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], model: str
    ) -> FastStream:
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
        if tools:  # strict servers reject an empty list
            body["tools"] = tools
        if self._include_usage:
            body["stream_options"] = {"include_usage": True}
        # The SDK's documented way to call an endpoint with an untyped result: same transport,
        # auth and error mapping as chat.completions.create, chunks as plain JSON.
        stream: FastStream = await self._client.post(
            "/chat/completions", body=body, cast_to=object, stream=True, stream_cls=FastStream
        )
        return stream

    def _drop_usage_option(self, exc: APIError) -> bool:
        """A server that rejects stream_options gets the request again without it (once)."""
        if not self._include_usage or not isinstance(exc, APIStatusError):
            return False
        if exc.status_code in (400, 422) and "stream_options" in _server_message(exc):
            logger.info("%s does not accept stream_options; usage will be missing", self.base_url)
            self._include_usage = False
            return True
        return False

    def _describe(self, exc: APIError) -> str:
        refused = _refusal(exc)
        if refused is not None:
            return f"connection error with {self.base_url}: {refused}"
        if isinstance(exc, APITimeoutError):
            if "Connect" in type(exc.__cause__).__name__:
                return f"could not connect to {self.base_url} within {self.connect_timeout_s:g} s"
            return f"the endpoint sent nothing for {self.read_timeout_s:g} s"
        if isinstance(exc, APIConnectionError):
            return f"connection error with {self.base_url}: {exc.__cause__ or exc.message}"
        if isinstance(exc, APIStatusError):
            return f"HTTP {exc.status_code}: {_server_message(exc)}"
        return _server_message(exc)

    def _failure(self, exc: APIError, attempts: int) -> str:
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if isinstance(exc, APIStatusError):
            if _retryable(exc):
                return f"LLM endpoint returned {exc.status_code} after {tries}: {_server_message(exc)}"
            return f"LLM endpoint rejected the request ({exc.status_code}): {_server_message(exc)}"
        if isinstance(exc, APITimeoutError) and "Connect" not in type(exc.__cause__).__name__ and _refusal(exc) is None:
            return f"LLM endpoint sent nothing for {self.read_timeout_s:g} s ({tries})"
        if isinstance(exc, APIConnectionError):
            return f"LLM call failed after {tries}: {self._describe(exc)}"
        return f"LLM endpoint reported an error: {self._describe(exc)}"

    def _delay(self, attempt: int, exc: APIError) -> float:
        """Exponential backoff with a little jitter; a Retry-After header wins, up to retry_max_s."""
        if isinstance(exc, APIStatusError):
            after = _retry_after(exc.response.headers)
            if after is not None:
                return min(after, self.retry_max_s)
        backoff = self.retry_base_s * 2.0 ** (attempt - 1)
        return min(backoff * (1 + random.random() * 0.1), self.retry_max_s)


def _convert(delta: Any, calls: ToolCallAccumulator) -> Iterator[StreamChunk]:
    if not isinstance(delta, dict):
        return
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        yield ReasoningChunk(reasoning)
    content = delta.get("content")
    if isinstance(content, str) and content:
        yield TextChunk(content)
    tool_calls = delta.get("tool_calls")
    if isinstance(tool_calls, list) and tool_calls:
        yield from calls.feed(tool_calls)


def _retryable(exc: APIError) -> bool:
    if isinstance(exc, APIStatusError):
        return exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500
    return isinstance(exc, APIConnectionError)  # includes timeouts


def _refusal(exc: BaseException) -> BaseException | None:
    """The refused/unreachable connection behind an error, if any. The aiohttp transport reports a
    refused connection as a connect *timeout*; a person needs to hear "refused", at once."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ConnectionRefusedError) or type(seen).__name__ == "ClientConnectorError":
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _server_message(exc: APIError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    if isinstance(body, str) and body:
        return body
    return exc.message


def _retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    try:
        return max(0.0, float(raw_ms) / 1000) if raw_ms else _retry_after_s(headers.get("retry-after"))
    except ValueError:
        return _retry_after_s(headers.get("retry-after"))


def _retry_after_s(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
