"""The activity feed's own rules, over a real SQLite store: bounded per feed, a run that ended is
never revived by an older notice, and nothing is read for a user without a feed."""

from __future__ import annotations

import pytest
from tests.worlds import World

from onward.activity import Activity
from onward.bus.base import Lagged
from onward.core.events import RunCompleted, RunStarted
from onward.core.runs import RunStatus


async def test_notices_are_the_run_as_it_stands_in_order(world: World) -> None:
    activity = Activity(world.store)
    feed = activity.watch(world.user)
    run = await world.store.create_run(world.user, world.conversation, "hi", None)
    await activity.changed(run.id, world.user)
    assert await world.journal.transition(run.id, 0, {RunStatus.QUEUED}, {"status": "running"}, RunStarted())
    await activity.changed(run.id, world.user)
    notices = await feed.get(timeout=1)
    assert [(n["id"], n["status"]) for n in notices] == [(run.id, "queued"), (run.id, "running")]
    assert notices[1]["last_seq"] == 1 and notices[1]["conversation_id"] == world.conversation
    assert await feed.get(timeout=0.01) == []  # nothing new: a heartbeat's worth of silence


async def test_an_ended_run_is_not_revived_by_a_late_notice(world: World) -> None:
    activity = Activity(world.store)
    feed = activity.watch(world.user)
    run = await world.store.create_run(world.user, world.conversation, "hi", None)
    assert await world.journal.transition(run.id, 0, {RunStatus.QUEUED}, {"status": "running"}, RunStarted())
    await world.journal.commit(run.id, RunCompleted(), change={"status": "completed"})
    await activity.changed(run.id, world.user)
    # a notice read before the end but delivered after it (possible with an async database)
    feed._push(run.evolve(status=RunStatus.RUNNING))
    assert [n["status"] for n in await feed.get(timeout=1)] == ["completed"]


async def test_a_feed_that_falls_behind_is_ended(world: World) -> None:
    activity = Activity(world.store, feed_limit=2)
    slow = activity.watch(world.user)
    run = await world.store.create_run(world.user, world.conversation, "hi", None)
    for _ in range(3):
        await activity.changed(run.id, world.user)
    with pytest.raises(Lagged):
        await slow.get(timeout=1)
    fresh = activity.watch(world.user)  # the client reconnects, reads the runs, and goes on
    await activity.changed(run.id, world.user)
    assert [n["status"] for n in await fresh.get(timeout=1)] == ["queued"]


async def test_nothing_is_read_for_a_user_without_a_feed(world: World, caplog: pytest.LogCaptureFixture) -> None:
    activity = Activity(world.store)
    feed = activity.watch("someone-else")
    await activity.changed("no-such-run", world.user)  # reading it would fail (and say so): not tried
    feed.close()
    await activity.changed("no-such-run", "someone-else")  # that feed is closed: not read either
    assert not [r for r in caplog.records if "activity feed" in r.getMessage()]
    feed = activity.watch(world.user)
    await activity.changed("no-such-run", world.user)  # with a feed it is read: fails, is logged, no notice
    assert [r for r in caplog.records if "activity feed" in r.getMessage()]
    assert await feed.get(timeout=0.01) == []
