"""Identifiers: prefix, time-ordered stamp, random tail from the id alphabet."""

from __future__ import annotations

import re
import time

from onward.ids import new_id

ID = re.compile(r"^run_[0-9a-hjkmnp-tv-z]{22}$")


def test_ids_are_well_formed_distinct_and_time_ordered() -> None:
    first = [new_id("run") for _ in range(1000)]
    time.sleep(0.002)  # the stamp counts milliseconds: the next batch is a later millisecond
    later = new_id("run")
    assert all(ID.match(i) for i in [*first, later]), first[:3]
    assert len(set(first)) == len(first)
    assert max(first) < later
    tails = "".join(i[-12:] for i in first)
    assert set(tails) == set("0123456789abcdefghjkmnpqrstvwxyz")  # every symbol of the alphabet is used
