"""One scripted LLM and one real `onward serve` per module; tests keep apart by conversation and
by a unique marker in their message that selects their script."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from onward.testing.fake_llm import ScriptedLLM
from onward.testing.server import OnwardServer
from tests.server.helpers import Api

SERVER_SETTINGS = {
    "llm_read_timeout_s": 2,
    "llm_retry_base_s": 0.05,
    "llm_max_retries": 2,
    "shutdown_grace_s": 1,
    "sse_heartbeat_s": 0.3,
    "stream_auth_recheck_s": 0.3,
}


@pytest.fixture(scope="module")
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


@pytest.fixture(scope="module")
def server(llm: ScriptedLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnwardServer]:
    home: Path = tmp_path_factory.mktemp("home")
    srv = OnwardServer(home, llm.base_url, **SERVER_SETTINGS)
    with srv:
        yield srv


@pytest.fixture
def api(server: OnwardServer) -> Iterator[Api]:
    client = Api(server.url, server.auth_headers())
    yield client
    client.http.close()
