"""Bounding tool output for history: keep the head and the tail, say how much was dropped between.

The start of output usually says what ran and the end says how it finished, so the middle is what
goes. `HeadTail` gives the same result as `truncate_middle` while holding at most twice the limit in
memory, so an endless `yes` costs nothing but time.
"""

from __future__ import annotations


def truncation_marker(omitted: int) -> str:
    return f"\n[... {omitted} characters truncated ...]\n"


def _split(total: int, limit: int) -> tuple[int, int]:
    """How many head and tail characters of a `total`-long text fit in `limit` with the marker."""
    budget = limit - len(truncation_marker(total))
    if budget <= 0:
        return 0, 0
    head = budget // 2
    return head, budget - head


def truncate_middle(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else its head and tail around a truncation marker.

    The result is never longer than `limit` (unless `limit` is too small for the marker itself, in
    which case the plain head is returned).
    """
    if len(text) <= limit:
        return text
    head, tail = _split(len(text), limit)
    if head == 0 and tail == 0:
        return text[: max(limit, 0)]
    return text[:head] + truncation_marker(len(text) - head - tail) + text[len(text) - tail :]


class HeadTail:
    """Accumulates text, keeping only what `truncate_middle(all_text, limit)` would keep."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 0)
        self.total = 0
        self._head: list[str] = []
        self._head_len = 0
        self._tail = ""

    def append(self, text: str) -> None:
        if not text:
            return
        self.total += len(text)
        room = self.limit - self._head_len
        if room > 0:
            self._head.append(text[:room])
            self._head_len += min(room, len(text))
        # The tail is a rolling window; trimming on every append keeps it at most 2 * limit long.
        self._tail = (self._tail + text)[-self.limit :] if self.limit else ""

    def text(self) -> str:
        head = "".join(self._head)
        if self.total <= self.limit:
            return head
        head_n, tail_n = _split(self.total, self.limit)
        if head_n == 0 and tail_n == 0:
            return head[: self.limit]
        tail = self._tail[len(self._tail) - tail_n :]
        return head[:head_n] + truncation_marker(self.total - head_n - tail_n) + tail
