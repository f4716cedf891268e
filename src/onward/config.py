"""One Settings object, read from ONWARD_* environment variables and an optional onward.toml.

Precedence: explicit keyword arguments > environment > onward.toml > defaults. Named models live in
the toml file (`[models.NAME]`); the default model comes from ONWARD_LLM_* variables.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from onward.errors import ConfigError


def default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "onward"


class ModelConfig(BaseModel):
    """One LLM endpoint, as named in onward.toml's `[models.NAME]` tables."""

    base_url: str
    model: str
    api_key: str | None = None
    api_key_env: str | None = None
    reasoning: bool = False

    def resolved_key(self) -> str:
        if self.api_key:
            return self.api_key
        if self.api_key_env:
            return os.environ.get(self.api_key_env, "")
        return ""


class Settings(BaseSettings):
    """Every setting of Onward. Each field is documented in docs/settings.md (a test checks it)."""

    model_config = SettingsConfigDict(env_prefix="ONWARD_", extra="ignore")

    home: Path = Field(default_factory=default_home, description="Data directory: database, workspaces.")
    database_url: str | None = Field(None, description="SQLAlchemy URL (postgresql+asyncpg://… for Postgres); default SQLite in home.")
    host: str = Field("127.0.0.1", description="Address `onward serve` binds to.")
    port: int = Field(8000, description="Port `onward serve` binds to.")
    config_file: Path | None = Field(None, description="Path of onward.toml (default: ./onward.toml, then home).")

    llm_base_url: str | None = Field(None, description="OpenAI-compatible endpoint of the default model.")
    llm_api_key: str | None = Field(None, description="API key of the default model.")
    llm_model: str | None = Field(None, description="Model name of the default model.")
    models: dict[str, ModelConfig] = Field(default_factory=dict, description="Named models (onward.toml).")
    default_model: str | None = Field(None, description="Name of the model used when a run names none.")

    llm_connect_timeout_s: float = Field(10.0, description="Connect timeout for the LLM endpoint.")
    llm_read_timeout_s: float = Field(120.0, description="Longest silence from a streaming LLM before the call fails.")
    llm_max_retries: int = Field(3, description="Retries for 429/5xx/connect errors before the first token.")
    llm_retry_base_s: float = Field(0.5, description="First retry delay; doubles each retry (capped by Retry-After).")

    max_active_runs: int = Field(
        1000,
        description="Runs this process executes at once; more wait as `queued`. Also the most idle "
        "connections kept open to each LLM endpoint, so a burst of runs after another connects anew for none.",
    )
    max_steps: int = Field(50, description="Most LLM calls in one run.")
    run_timeout_s: float = Field(3600.0, description="Longest a run may take before it fails.")
    shutdown_grace_s: float = Field(10.0, description="On SIGTERM, how long running runs may go on before they are interrupted.")
    system_prompt: str = Field(
        "You are Onward, an agent working in a workspace directory. Use the tools to inspect and "
        "change files and run commands. Paths are relative to the workspace.",
        description="System message put before every conversation.",
    )

    command_timeout_s: float = Field(120.0, description="Default timeout of run_command.")
    command_max_timeout_s: float = Field(3600.0, description="Largest timeout_s a model may ask of run_command.")
    tool_output_limit: int = Field(16_000, description="Characters of a tool's output kept in history (head and tail, with a marker).")
    tool_stream_limit: int = Field(2_000_000, description="Characters of a command's output streamed as events before streaming stops.")
    file_read_limit: int = Field(200_000, description="Characters read_file returns at most.")
    event_text_limit: int = Field(
        8_192, description="Most characters of text in one event; longer output is split, and joined deltas stop there."
    )

    max_input_chars: int = Field(100_000, description="Longest user message accepted.")
    max_body_bytes: int = Field(1_048_576, description="Largest request body accepted (uploads excepted).")
    subscriber_queue_events: int = Field(
        10_000, description="Events buffered per live reader before it falls back to replay (notices, per activity feed)."
    )
    replay_tail_events: int = Field(
        512, ge=0, description="Latest events of each active run kept in memory for readers that reconnect (~0.3 KB each)."
    )
    flush_interval_ms: float = Field(20.0, description="Longest a streaming delta waits before it is committed.")
    sse_heartbeat_s: float = Field(15.0, description="Interval of SSE comment heartbeats.")
    stream_auth_recheck_s: float = Field(
        15.0,
        gt=0,
        description="How often an open SSE or WebSocket stream checks its caller's token or session "
        "again; a revoked token, ended session or disabled user ends the stream within this time.",
    )
    longpoll_max_wait_s: float = Field(30.0, description="Longest `wait` a long-poll may ask for.")

    # accounts and sessions (docs/security.md)
    admin_password: str | None = Field(
        None,
        description="Password of the first admin, used only when the database has no user with a password "
        "(bootstrapping, tests); otherwise a random one is printed once.",
    )
    public_url: str | None = Field(None, description="Base URL printed in the first-run login link (default http://HOST:PORT).")
    cookie_secure: bool = Field(False, description="Mark the session cookie Secure (set it when Onward is served over https).")
    session_ttl_h: float = Field(336.0, description="Hours a login session lasts.")
    login_link_ttl_h: float = Field(24.0, description="Hours the first-run one-time login link stays valid (it also expires on first use).")
    login_max_failures: int = Field(5, description="Failed logins for one username before each further attempt must wait (backoff).")
    login_ip_max_failures: int = Field(20, description="Failed logins from one IP address before each further attempt must wait (backoff).")
    login_backoff_base_s: float = Field(2.0, description="First wait after the failure limit; doubles with every further failure.")
    login_backoff_max_s: float = Field(900.0, description="Longest wait the login backoff imposes.")
    login_failure_window_s: float = Field(900.0, description="Failed logins are forgotten after this long without a new one.")

    # per-user limits
    user_max_active_runs: int = Field(20, description="Runs one user may have active at once; more are refused with 429.")
    user_max_runs_per_window: int = Field(300, description="Runs one user may start per `user_runs_window_s`; more are refused with 429.")
    user_runs_window_s: float = Field(3600.0, description="The window of `user_max_runs_per_window`, in seconds.")
    limits_exempt_admins: bool = Field(True, description="Whether administrators are exempt from the per-user run limits.")

    # workspaces and files
    max_upload_bytes: int = Field(50 * 1024 * 1024, description="Largest file accepted by POST /api/files/upload.")
    files_list_limit: int = Field(10_000, description="Most entries GET /api/files returns for one directory.")

    # the command sandbox (docs/security.md)
    multi_user: bool = Field(False, description="Treat the server as multi-user even with one enabled user (commands then need the sandbox).")
    sandbox: Literal["auto", "bwrap", "none"] = Field(
        "auto",
        description="auto: bubblewrap when it works, else unsandboxed in single-user mode; bwrap: refuse to start "
        "without it; none: never sandbox (commands are refused in multi-user mode).",
    )
    bwrap_path: str = Field("bwrap", description="The bubblewrap executable.")
    sandbox_network: bool = Field(False, description="Give sandboxed commands the host's network (off: loopback only, of their own).")
    sandbox_cpu_s: int = Field(900, description="CPU seconds one sandboxed process may use (RLIMIT_CPU).")
    sandbox_memory_mb: int = Field(2048, description="Memory of one command: the whole sandbox with a memory cgroup, else each process's address space.")
    sandbox_max_processes: int = Field(256, description="Processes one command may run at once (pids cgroup, else RLIMIT_NPROC).")
    sandbox_cgroups: bool = Field(True, description="Confine commands in per-command cgroups when this process may create them.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'onward.db'}"

    @property
    def workspaces_dir(self) -> Path:
        return self.home / "workspaces"

    def model_names(self) -> list[str]:
        names = list(self.models)
        if self.llm_base_url and "default" not in self.models:
            names.insert(0, "default")
        return names

    def resolve_model(self, name: str | None) -> tuple[str, ModelConfig]:
        """The model a run uses: by name, else the default. Raises ConfigError with what to set."""
        name = name or self.default_model
        if name and name in self.models:
            return name, self.models[name]
        if name and name != "default":
            raise ConfigError(f"unknown model {name!r}; known: {', '.join(self.model_names()) or 'none'}")
        if self.llm_base_url and self.llm_model:
            return "default", ModelConfig(base_url=self.llm_base_url, model=self.llm_model, api_key=self.llm_api_key)
        if self.models:
            first = next(iter(self.models))
            return first, self.models[first]
        raise ConfigError(
            "no LLM configured: set ONWARD_LLM_BASE_URL, ONWARD_LLM_MODEL and ONWARD_LLM_API_KEY, "
            "or add a [models.NAME] table to onward.toml"
        )


class _TomlSource(PydanticBaseSettingsSource):
    """Reads onward.toml: ONWARD_CONFIG_FILE, else ./onward.toml, else $ONWARD_HOME/onward.toml."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = self._path()
        if path is None:
            return {}
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        return data

    def _path(self) -> Path | None:
        explicit = os.environ.get("ONWARD_CONFIG_FILE")
        if explicit:
            return Path(explicit)
        local = Path("onward.toml")
        if local.is_file():
            return local
        home = Path(os.environ.get("ONWARD_HOME") or default_home()) / "onward.toml"
        return home if home.is_file() else None
