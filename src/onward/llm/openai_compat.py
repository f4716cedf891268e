"""Any OpenAI-compatible chat-completions endpoint, over Onward's own small HTTP client.

Design decision: the retry policy is ours. A retry is safe only before the first chunk reaches the
engine (after that it would duplicate text the user has already seen), so a stream that breaks
after it started is a clear LLMError. The wire format is plain JSON both ways: requests are
serialized by orjson and chunks read as dicts, never as SDK models (building those cost ~0.6 ms
per chunk; sending through the SDK ~1 ms of CPU per request; see `llm/http.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from onward.config import ModelConfig, Settings
from onward.errors import LLMError
from onward.llm.base import (
    ReasoningChunk,
    StreamChunk,
    StreamEnd,
    TextChunk,
    ToolCallChunk,
)
from onward.llm.http import (
    ConnectFailed,
    ConnectionBroken,
    HttpClient,
    ReadTimeout,
    Response,
    StatusError,
    TransportError,
)
from onward.llm.sse import BlockSplitter, StreamError, decode, raise_reported_error

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
        max_idle_connections: int = 100,
    ) -> None:
        self.base_url = base_url
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_retries = max_retries
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self._include_usage = True  # switched off for servers that reject stream_options
        api_key = (api_key or "").strip()  # a key read from a file or secret often ends in a newline
        if any(c in api_key for c in "\r\n"):
            raise LLMError(f"the API key for {base_url} contains a line break; check the key or its variable")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = HttpClient(
            base_url, headers=headers, connect_timeout=connect_timeout_s, read_timeout=read_timeout_s,
            max_idle=max_idle_connections,
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
            # as many as may be in flight at once: after a burst of runs, the next burst connects
            # (and, to a remote endpoint, handshakes TLS) anew for none of them
            max_idle_connections=settings.max_active_runs,
        )

    async def aclose(self) -> None:
        """Close the kept-alive connections."""
        await self._http.aclose()

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, model: str
    ) -> AsyncGenerator[StreamChunk, None]:
        """See Provider.stream. An async generator: `contextlib.aclosing()` closes it promptly."""
        attempt = 0
        while True:
            attempt += 1
            turn = _Turn()
            try:
                response = await self._open(messages, tools, model)
                try:
                    splitter = BlockSplitter()
                    if _is_json(response):  # a server that ignored stream=true: the whole answer at once
                        for out in turn.read([_completion_as_chunk(await response.read(MAX_COMPLETION_BYTES))]):
                            yield out
                    async for pieces in response.chunks():
                        values, done = decode(splitter.feed(pieces[0] if len(pieces) == 1 else b"".join(pieces)))
                        for out in turn.read(values):
                            yield out
                        if done:
                            await _drain(response)  # so the connection can serve the next call
                            break
                    else:  # the body ended without [DONE]: a last event may lack its blank line
                        for out in turn.read(decode(splitter.end())[0]):
                            yield out
                finally:
                    response.close()
                turn.calls.check_complete()
                yield StreamEnd(finish_reason=turn.finish, usage=turn.usage)
                return
            except (TransportError, StatusError) as exc:
                if turn.delivered:
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
            except StreamError as exc:
                stage = "LLM stream broke after it started" if turn.delivered else "LLM endpoint reported an error"
                raise LLMError(f"{stage}: {exc}") from exc
            except LLMError:
                raise
            except Exception as exc:  # garbage from a server that is only roughly compatible
                stage = "LLM stream broke after it started" if turn.delivered else "unexpected reply from LLM endpoint"
                raise LLMError(f"{stage}: {exc!r}") from exc
            await asyncio.sleep(delay)

    async def _open(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], model: str) -> Response:
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
        if tools:  # strict servers reject an empty list
            body["tools"] = tools
        if self._include_usage:
            body["stream_options"] = {"include_usage": True}
        return await self._http.post("/chat/completions", orjson.dumps(body), accept="text/event-stream")

    def _drop_usage_option(self, exc: Exception) -> bool:
        """A server that rejects stream_options gets the request again without it (once)."""
        if not self._include_usage or not isinstance(exc, StatusError):
            return False
        if exc.status in (400, 422) and "stream_options" in _server_message(exc):
            logger.info("%s does not accept stream_options; usage will be missing", self.base_url)
            self._include_usage = False
            return True
        return False

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, ConnectFailed) and exc.timeout:
            return f"could not connect to {self.base_url} within {self.connect_timeout_s:g} s"
        if isinstance(exc, ReadTimeout):
            return f"the endpoint sent nothing for {self.read_timeout_s:g} s"
        if isinstance(exc, StatusError):
            return f"HTTP {exc.status}: {_server_message(exc)}"
        return f"connection error with {self.base_url}: {exc}"

    def _failure(self, exc: Exception, attempts: int) -> str:
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if isinstance(exc, StatusError):
            if _retryable(exc):
                return f"LLM endpoint returned {exc.status} after {tries}: {_server_message(exc)}"
            return f"LLM endpoint rejected the request ({exc.status}): {_server_message(exc)}"
        if isinstance(exc, ReadTimeout):
            return f"LLM endpoint sent nothing for {self.read_timeout_s:g} s ({tries})"
        return f"LLM call failed after {tries}: {self._describe(exc)}"

    def _delay(self, attempt: int, exc: Exception) -> float:
        """Exponential backoff with a little jitter; a Retry-After header wins, up to retry_max_s."""
        if isinstance(exc, StatusError):
            after = _retry_after(exc.headers)
            if after is not None:
                return min(after, self.retry_max_s)
        backoff = self.retry_base_s * 2.0 ** (attempt - 1)
        return min(backoff * (1 + random.random() * 0.1), self.retry_max_s)


MAX_COMPLETION_BYTES = 16 * 1024 * 1024  # a non-streamed answer, read whole


def _is_json(response: Response) -> bool:
    return "json" in response.headers.get("content-type", "").lower()


def _completion_as_chunk(body: bytes) -> dict[str, Any]:
    """A whole chat completion (`choices[].message`) as one stream chunk (`choices[].delta`), so
    the one reader handles both; tool calls get their position as `index`."""
    completion = orjson.loads(body)
    if not isinstance(completion, dict):
        raise ValueError(f"expected a chat completion object, got {type(completion).__name__}")
    raise_reported_error(completion)
    choices = []
    for choice in completion.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = dict(choice.get("message") or {})
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            delta["tool_calls"] = [{**c, "index": i} if isinstance(c, dict) else c for i, c in enumerate(calls)]
        choices.append({"index": choice.get("index", 0), "delta": delta, "finish_reason": choice.get("finish_reason")})
    return {"choices": choices, "usage": completion.get("usage")}


class _Turn:
    """One completion being read: chunks (plain dicts) in, normalized StreamChunks out."""

    def __init__(self) -> None:
        self.calls = ToolCallAccumulator()
        self.finish: str | None = None
        self.usage: dict[str, Any] = {}
        self.delivered = False  # a chunk reached the engine: from here on a failure is not retried

    def read(self, values: list[Any]) -> Iterator[StreamChunk]:
        for chunk in values:
            if not isinstance(chunk, dict):
                continue
            if isinstance(chunk.get("usage"), dict):
                self.usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                self.finish = choice.get("finish_reason") or self.finish
                for out in _convert(choice.get("delta"), self.calls):
                    self.delivered = True
                    yield out


async def _drain(response: Response) -> None:
    """Read what follows `[DONE]` (usually just the body's end) for a moment, then give up on it."""
    if response.complete:
        return
    with contextlib.suppress(TransportError, TimeoutError):
        async with asyncio.timeout(1):
            async for _ in response.chunks():
                pass


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


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, StatusError):
        return exc.status in _RETRYABLE_STATUS or exc.status >= 500
    return isinstance(exc, (ConnectFailed, ConnectionBroken, ReadTimeout))


def _server_message(exc: StatusError) -> str:
    """What the server said: `{"error": {"message": …}}`, `{"message": …}`, or the body's text."""
    if 300 <= exc.status < 400:
        where = exc.headers.get("location")
        return f"it redirects to {where}: use that address as base_url" if where else "a redirect"
    try:
        body = orjson.loads(exc.body)
    except orjson.JSONDecodeError:
        text = exc.body.decode("utf-8", "replace").strip()
        return text[:1000] if text else f"HTTP {exc.status}"
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str) and error:
        return error
    return orjson.dumps(body).decode()[:1000]


def _retry_after(headers: dict[str, str]) -> float | None:
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
