"""The `onward` command: serve the app, and chat with / follow / stop runs from a terminal.

The design decision: the terminal is just another reader of a run's log. `chat` and `attach`
follow the run's SSE stream (through `OnwardClient.stream`, which resumes across dropped
connections) and render it with `RunRenderer`; leaving the terminal never touches the run.
Ctrl-C is an input like any other: a signal handler only puts a marker on the follower's queue,
and one state machine decides — one press detaches (after a 2 s grace), a second press stops.

Exit codes: 0 the run completed, or you detached (the run goes on); 1 the run failed;
130 the run was cancelled or interrupted; 2 an error (server unreachable, not found, busy …).
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from onward.cli_users import register as register_account_commands
from onward.client import DEFAULT_URL, OnwardClient
from onward.errors import ConversationBusy, OnwardError
from onward.render import RunRenderer

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_STOPPED = 130
DETACH_WINDOW_S = 2.0
_SLICE_S = 0.1

_STATUS_EXIT = {
    "completed": EXIT_OK,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_STOPPED,
    "interrupted": EXIT_STOPPED,
}
_STATUS_STYLE = {
    "queued": "cyan",
    "running": "cyan",
    "cancelling": "yellow",
    "completed": "green",
    "cancelled": "yellow",
    "failed": "red",
    "interrupted": "yellow",
}

_CTRL_C_HELP = (
    "Ctrl-C once: prints a hint and, unless pressed again within 2 s, detaches — the run goes on "
    "and the command to re-attach is printed (exit 0). Ctrl-C twice within 2 s: stops the run and "
    "keeps rendering until it has ended (exit 130); a third Ctrl-C detaches at once. "
    "Exit codes: 0 completed or detached, 1 failed, 130 cancelled or interrupted, 2 error."
)

app = typer.Typer(
    name="onward",
    help="Onward: LLM agents doing real work in a workspace; every run is a durable job.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass(frozen=True, slots=True)
class _Options:
    url: str
    token: str | None


@app.callback()
def _global(
    ctx: typer.Context,
    url: Annotated[
        str,
        typer.Option("--url", envvar="ONWARD_URL", help="Base URL of the Onward server."),
    ] = DEFAULT_URL,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="ONWARD_TOKEN",
            help="API token, sent as a bearer token.",
            show_default=False,
        ),
    ] = None,
) -> None:
    ctx.obj = _Options(url=url, token=token)


# -- following a run ---------------------------------------------------------------------------


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_INTERRUPT = _Marker("interrupt")
_END = _Marker("end")


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException


class Follower:
    """Follows one run: renders its events and turns Ctrl-C presses into detach or stop.

    A background thread reads the stream into a `queue.SimpleQueue` (whose `put` is safe in a
    signal handler); the SIGINT handler and `interrupt()` put a marker on the same queue. `run()`
    is the state machine: *following* → (Ctrl-C) → *deciding* for `window` seconds → (Ctrl-C)
    → *stopping* (cancel sent, render until the end) → (Ctrl-C) → detached; or *deciding* →
    (quiet `window` seconds) → detached. Returns the exit code.
    """

    def __init__(
        self,
        client: OnwardClient,
        renderer: RunRenderer,
        run_id: str,
        after: int = 0,
        window: float = DETACH_WINDOW_S,
    ) -> None:
        self.client = client
        self.renderer = renderer
        self.run_id = run_id
        self.after = after
        self.window = window
        self.detached = False
        self.deciding = (
            threading.Event()
        )  # set while waiting for a second Ctrl-C (tests wait on it)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None

    def interrupt(self) -> None:
        """What one Ctrl-C does; safe from a signal handler and from any thread."""
        self._queue.put(_INTERRUPT)

    def run(self, handle_sigint: bool = True) -> int:
        self.renderer.last_seq = max(self.renderer.last_seq, self.after)
        self._reader = threading.Thread(
            target=self._read, name=f"follow-{self.run_id}", daemon=True
        )
        self._reader.start()
        previous: Any = None
        install = handle_sigint and threading.current_thread() is threading.main_thread()
        if install:
            previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            return self._loop()
        finally:
            self._stop.set()
            if install:
                signal.signal(signal.SIGINT, previous)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the reader thread to end (after the run ended, or once its stream yields)."""
        if self._reader is not None:
            self._reader.join(timeout)
            return not self._reader.is_alive()
        return True

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.interrupt()

    def _read(self) -> None:
        try:
            for event in self.client.stream(self.run_id, after=self.after, stop=self._stop):
                self._queue.put(event)
            self._queue.put(_END)
        except BaseException as exc:  # handed to the main thread, which decides
            self._queue.put(_Failure(exc))

    def _loop(self) -> int:
        state = "following"
        deadline: float | None = None
        while True:
            # Wait in short slices: a SIGINT landing just before a blocking wait begins would
            # otherwise have its Python handler run only when the whole wait is over.
            timeout = _SLICE_S
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - time.monotonic()))
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    return self._detach()
                continue
            if item is _INTERRUPT:
                if state == "following":
                    state, deadline = "deciding", time.monotonic() + self.window
                    self.renderer.note(
                        f"Press Ctrl-C again within {self.window:g} s to stop the run, or wait to detach.",
                        "yellow",
                    )
                    self.deciding.set()
                elif state == "deciding":
                    state, deadline = "stopping", None
                    self.deciding.clear()
                    self.client.cancel_run(self.run_id)
                    self.renderer.note("Stopping the run… (Ctrl-C again to detach)", "yellow")
                else:
                    return self._detach()
            elif isinstance(item, dict):
                self.renderer.handle(item)
                if self.renderer.finished:
                    return _STATUS_EXIT.get(self.renderer.status or "", EXIT_ERROR)
            elif item is _END:  # the run had ended before the stream had anything to give
                run = self.client.get_run(self.run_id)
                status = str(run.get("status"))
                self.renderer.finish(status, run.get("error"), run.get("usage"))
                return _STATUS_EXIT.get(status, EXIT_ERROR)
            elif isinstance(item, _Failure):
                raise item.error

    def _detach(self) -> int:
        self.detached = True
        self.deciding.clear()
        self.renderer.note(
            f"Detached; the run goes on. Re-attach: onward attach {self.run_id} "
            f"--after {self.renderer.last_seq}",
            "yellow",
        )
        return EXIT_OK


# -- commands ----------------------------------------------------------------------------------


def _client(ctx: typer.Context) -> OnwardClient:
    options: _Options = ctx.obj
    return OnwardClient(options.url, options.token)


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(
        f"error: {message}", style="red", markup=False, highlight=False, soft_wrap=True
    )
    return typer.Exit(EXIT_ERROR)


def _follow(client: OnwardClient, run_id: str, after: int) -> int:
    follower = Follower(client, RunRenderer(Console()), run_id, after=after)
    return follower.run()


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: ONWARD_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to bind (default: ONWARD_PORT or 8000).")
    ] = None,
) -> None:
    """Run the Onward server (API, web UI and the runs themselves) in this process."""
    from onward.config import Settings

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise _fail(f"invalid settings: {exc}") from None
    except OnwardError as exc:
        raise _fail(exc.message) from None

    from onward.server import serve as run_server

    try:
        run_server(settings)
    except OnwardError as exc:
        raise _fail(exc.message) from None


@app.command(
    help=f"Send MESSAGE to the agent and render the run live (Ctrl-C: detach; twice: stop).\n\n{_CTRL_C_HELP}"
)
def chat(
    ctx: typer.Context,
    message: Annotated[str, typer.Argument(help="What to ask the agent.", show_default=False)],
    conversation: Annotated[
        str | None,
        typer.Option(
            "-c",
            "--conversation",
            help="Continue this conversation (default: start a new one).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Named model to use (default: the server's).", show_default=False),
    ] = None,
    interrupt: Annotated[
        bool,
        typer.Option(
            "--interrupt", help="If the conversation has an active run, stop it and send anyway."
        ),
    ] = False,
) -> None:
    try:
        with _client(ctx) as client:
            renderer_console = Console()
            if conversation is None:
                created = client.create_conversation(title=_title(message))
                conversation = str(created["id"])
                renderer_console.print(
                    f"conversation {conversation}", style="dim", markup=False, highlight=False
                )
            try:
                run = client.start_run(
                    conversation,
                    message,
                    model=model,
                    if_busy="interrupt" if interrupt else "reject",
                )
            except ConversationBusy as exc:
                raise _fail(f"{exc.message} (use --interrupt to stop it and send anyway)") from None
            run_id = str(run["id"])
            renderer_console.print(f"run {run_id}", style="dim", markup=False, highlight=False)
            follower = Follower(client, RunRenderer(renderer_console), run_id)
            code = follower.run()
    except OnwardError as exc:
        raise _fail(exc.message) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_STOPPED) from None
    raise typer.Exit(code)


@app.command(
    help=f"Follow a run live from event --after N until it ends (Ctrl-C: detach; twice: stop).\n\n{_CTRL_C_HELP}"
)
def attach(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="The run's id.", show_default=False)],
    after: Annotated[
        int, typer.Option("--after", min=0, help="Start after this event seq (0: from the start).")
    ] = 0,
) -> None:
    try:
        with _client(ctx) as client:
            code = _follow(client, run, after)
    except OnwardError as exc:
        raise _fail(exc.message) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_STOPPED) from None
    raise typer.Exit(code)


@app.command()
def stop(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="The run's id.", show_default=False)],
) -> None:
    """Stop a run: prints `run RID: cancelling`, or `run RID: already <status>` if it had ended.

    Stopping is idempotent; the command exits 0 either way.
    """
    try:
        with _client(ctx) as client:
            result = client.cancel_run(run)
    except OnwardError as exc:
        raise _fail(exc.message) from None
    status = str(result.get("status", "unknown"))
    # The server answers the run as it now is, with `changed: false` if it was already over.
    already = result.get("changed") is False and status in _STATUS_EXIT
    line = f"run {run}: already {status}" if already else f"run {run}: {status}"
    Console().print(line, style=_STATUS_STYLE.get(status), markup=False, highlight=False)


@app.command()
def runs(
    ctx: typer.Context,
    active: Annotated[
        bool, typer.Option("--active", help="Only runs that have not ended.")
    ] = False,
) -> None:
    """List your runs, newest first: id, conversation, status, created, last event seq."""
    try:
        with _client(ctx) as client:
            items = client.list_runs(active=True if active else None)
    except OnwardError as exc:
        raise _fail(exc.message) from None
    table = Table(box=None, header_style="bold", pad_edge=False)
    _id_column(table, "id", items, "id")
    _id_column(table, "conversation", items, "conversation_id")
    table.add_column("status", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("last_seq", justify="right", no_wrap=True)
    for item in items:
        status = str(item.get("status", ""))
        table.add_row(
            str(item.get("id", "")),
            str(item.get("conversation_id", "")),
            Text(status, style=_STATUS_STYLE.get(status, "")),
            _when(item.get("created_at")),
            str(item.get("last_seq", "")),
        )
    _print_table(table, items, "no runs")


@app.command()
def conversations(ctx: typer.Context) -> None:
    """List your conversations, newest first: id, title, active run, created."""
    try:
        with _client(ctx) as client:
            items = client.list_conversations()
    except OnwardError as exc:
        raise _fail(exc.message) from None
    table = Table(box=None, header_style="bold", pad_edge=False)
    _id_column(table, "id", items, "id")
    table.add_column("title", overflow="fold")
    table.add_column("active run", no_wrap=True)
    table.add_column("created", no_wrap=True)
    for item in items:
        active = item.get("active_run")
        active_id = active.get("id") if isinstance(active, dict) else active
        table.add_row(
            str(item.get("id", "")),
            str(item.get("title") or ""),
            str(active_id or ""),
            _when(item.get("created_at")),
        )
    _print_table(table, items, "no conversations")


def _id_column(table: Table, header: str, items: list[dict[str, Any]], key: str) -> None:
    # Ids are copied into other commands: never shorten them.
    width = max([len(header), *(len(str(item.get(key, ""))) for item in items)])
    table.add_column(header, no_wrap=True, min_width=width)


def _print_table(table: Table, items: list[dict[str, Any]], empty: str) -> None:
    console = Console()
    if not items:
        console.print(empty, style="dim")
        return
    if not console.is_terminal:  # a pipe has no width: do not squeeze the table into 80 columns
        needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
        console = Console(width=max(console.width, needed))
    console.print(table)


def _title(message: str) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "chat"
    return first if len(first) <= 60 else first[:59] + "…"


def _when(value: Any) -> str:
    if not isinstance(value, str) or not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


register_account_commands(app)  # user, login, logout


def main() -> None:
    app()
