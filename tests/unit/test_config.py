"""Settings: environment over onward.toml over defaults; named models; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from onward.config import Settings
from onward.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("ONWARD_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_toml_named_models_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "onward.toml").write_text(
        'port = 9001\nmax_steps = 7\ndefault_model = "local"\n'
        '[models.local]\nbase_url = "http://127.0.0.1:1/v1"\nmodel = "qwen"\napi_key_env = "MY_KEY"\n'
        '[models.big]\nbase_url = "http://127.0.0.1:2/v1"\nmodel = "big-one"\napi_key = "k"\n'
    )
    monkeypatch.setenv("ONWARD_PORT", "9002")
    monkeypatch.setenv("MY_KEY", "secret")
    s = Settings()
    assert s.port == 9002  # env wins over the file
    assert s.max_steps == 7  # the file wins over the default
    name, cfg = s.resolve_model(None)
    assert name == "local" and cfg.model == "qwen" and cfg.resolved_key() == "secret"
    assert s.resolve_model("big")[1].model == "big-one"
    assert s.model_names() == ["local", "big"]
    with pytest.raises(ConfigError, match="unknown model 'nope'; known: local, big"):
        s.resolve_model("nope")


def test_env_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONWARD_LLM_BASE_URL", "http://127.0.0.1:3/v1")
    monkeypatch.setenv("ONWARD_LLM_MODEL", "m")
    s = Settings()
    name, cfg = s.resolve_model(None)
    assert (name, cfg.model, cfg.base_url) == ("default", "m", "http://127.0.0.1:3/v1")
    assert s.model_names() == ["default"]


def test_no_model_configured_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="ONWARD_LLM_BASE_URL"):
        Settings().resolve_model(None)


def test_broken_toml_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "onward.toml").write_text("port = = 1\n")
    with pytest.raises(ConfigError, match=r"cannot read onward\.toml"):
        Settings()


def test_sqlite_under_home_by_default(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "h")
    assert s.db_url == f"sqlite:///{tmp_path / 'h' / 'onward.db'}"
