"""The bench reads events without parsing their JSON: those readers agree with the one serializer."""

from __future__ import annotations

from bench.client import delta_chars, event_ts

from onward.core.events import MessageDelta, encode


def test_the_bench_reads_a_joined_deltas_characters_and_ts_from_the_event_as_served() -> None:
    event = encode("run_1", 7, MessageDelta(message_id="msg_1", text="x" * 37), 1790000000.123456)
    data = event.json.encode()
    assert delta_chars(data) == 37 == len(event.data["text"])
    assert event_ts(data) == event.ts == 1790000000.123456
