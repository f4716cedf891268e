"""The docs are part of the contract: every setting, event type, endpoint and CLI command appears."""

from __future__ import annotations

from pathlib import Path

import pytest

from onward.config import Settings
from onward.core.events import EVENT_TYPES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`ONWARD_{name.upper()}`" in (DOCS / "settings.md").read_text()


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_event_type_is_documented(event_type: str) -> None:
    assert f"`{event_type}`" in (DOCS / "events.md").read_text()


def test_every_endpoint_is_documented() -> None:
    from onward.app import create_app

    text = (DOCS / "api.md").read_text()
    app = create_app(Settings(home=ROOT / ".unused"))
    paths = {path for path in app.openapi()["paths"]}
    missing = [p for p in paths if f"`{p}" not in text]
    assert not missing, f"undocumented endpoints: {missing}"


def test_every_cli_command_is_documented() -> None:
    from typer.main import get_command

    from onward.cli import app

    text = (DOCS / "cli.md").read_text()
    commands = get_command(app).commands  # type: ignore[attr-defined]
    missing = [name for name in commands if f"onward {name}" not in text]
    assert not missing, f"undocumented commands: {missing}"


def test_the_committed_openapi_schema_is_current() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("openapi_script", ROOT / "scripts" / "openapi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (DOCS / "openapi.json").read_text()
    assert module.schema() == committed, "docs/openapi.json is stale: run `make openapi`"
