"""The provider's SSE body parser, fed the awkward chunkings real servers produce."""

from __future__ import annotations

import pytest

from onward.llm.sse import BlockSplitter, parse_block

BODY = (
    b": keep-alive\n\n"
    b'data: {"a":1}\n\n'
    b"event: error\ndata: line one\ndata: line two\n\n"
    b"id: 7\ndata:no-space\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [(b"", b'{"a":1}'), (b"error", b"line one\nline two"), (b"", b"no-space"), (b"", b"[DONE]")]


async def _parse(chunks: list[bytes]) -> list[tuple[bytes, bytes]]:
    """(event, data) of every SSE event, as FastStream.batches() cuts and reads them."""
    splitter = BlockSplitter()
    blocks = [b for chunk in chunks for b in splitter.feed(chunk)] + splitter.end()
    return [parsed for parsed in map(parse_block, blocks) if parsed is not None]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
async def test_any_chunking_gives_the_same_events(size: int) -> None:
    chunks = [BODY[i : i + size] for i in range(0, len(BODY), size)]
    assert await _parse(chunks) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
async def test_crlf_line_endings_even_split_between_chunks(size: int) -> None:
    body = BODY.replace(b"\n", b"\r\n")
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    assert await _parse(chunks) == EXPECTED


async def test_a_last_event_without_its_blank_line_is_kept() -> None:
    assert await _parse([b'data: {"x":2}']) == [(b"", b'{"x":2}')]
