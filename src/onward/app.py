"""create_app(settings) → the ASGI application, with every part of embedded mode wired together.

The lifespan owns the order: open the store, recover runs a dead process left active, start the
journal, choose the command sandbox, make sure someone can log in; on shutdown, interrupt what still
runs (after a grace period), flush, close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from onward import __version__
from onward.accounts.bootstrap import base_url, bootstrap_admin
from onward.accounts.passwords import warm_up
from onward.accounts.service import AccountService
from onward.activity import Activity
from onward.api import activity as activity_api
from onward.api import admin, auth, conversations, fastlane, files, meta, runs, tokens, ws
from onward.api.deps import Services
from onward.api.errors import BodyLimit, install_error_handlers
from onward.bus.memory import MemoryBus
from onward.config import Settings
from onward.engine.loop import Engine
from onward.errors import NotFound
from onward.journal import Journal
from onward.limits import RunLimits
from onward.llm.pool import ProviderPool
from onward.runner.local import LocalRunner
from onward.runs import RunService
from onward.store.accounts import AccountStore
from onward.store.sql import SqlStore
from onward.tools.registry import default_registry
from onward.tools.sandbox import choose_sandbox
from onward.workspaces import Workspaces

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"


def mount_web(app: FastAPI) -> None:
    """The built web UI: files under web/, and index.html for every other non-API path."""
    assets = WEB_DIR / "assets"
    if assets.is_dir():
        app.mount("/assets", StaticFiles(directory=assets), name="assets")

    @app.get("/{path:path}", include_in_schema=False, response_model=None)
    async def web(path: str) -> FileResponse | HTMLResponse:
        if path.startswith("api/"):
            raise NotFound(f"no endpoint /{path}")
        candidate = (WEB_DIR / path).resolve()
        if path and candidate.is_file() and candidate.is_relative_to(WEB_DIR.resolve()):
            return FileResponse(candidate)
        page = WEB_DIR / "index.html"
        if page.is_file():
            return FileResponse(page, headers={"Cache-Control": "no-cache"})
        return HTMLResponse(
            "<!doctype html><title>Onward</title><h1>Onward</h1>"
            "<p>The API is at <a href='/docs'>/docs</a>. The web UI is not built yet.</p>"
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        settings.workspaces_dir.mkdir(exist_ok=True, mode=0o700)  # other host users: keep out
        store = SqlStore(settings.db_url)
        await store.init()
        bus = MemoryBus(settings.subscriber_queue_events, settings.replay_tail_events)
        journal = Journal(
            store, bus, flush_interval=settings.flush_interval_ms / 1000, text_limit=settings.event_text_limit
        )
        account_store = AccountStore(store)
        accounts = AccountService(settings, account_store)
        sandbox = choose_sandbox(settings)
        accounts.on_user_count = sandbox.set_user_count
        await accounts.refresh_user_count()
        if sandbox.warning:
            log.warning(sandbox.warning)
        providers = ProviderPool(settings)
        engine = Engine(settings, store, journal, default_registry(), providers, sandbox)
        activity = Activity(store, settings.subscriber_queue_events)
        runner = LocalRunner(settings, engine, journal, activity)
        service = RunService(settings, store, journal, runner, activity)
        recovered = await service.recover()
        if recovered:
            log.warning("recovered %d runs left active by a previous process", len(recovered))
        await account_store.purge_expired()
        warming = asyncio.create_task(warm_up())  # in the background: nobody logs in before we listen
        first_start = await bootstrap_admin(accounts, settings)
        print(first_start or f"Log in at {base_url(settings)}/ (reset a password: onward user passwd NAME)", flush=True)
        app.state.services = Services(
            settings, store, bus, service, accounts, account_store,
            RunLimits(settings, account_store), Workspaces(settings), sandbox, activity,
        )
        app.state.runner = runner
        app.state.activity = activity
        try:
            yield
        finally:
            warming.cancel()
            await runner.shutdown(settings.shutdown_grace_s)
            sandbox.close()
            await journal.close()
            await providers.aclose()
            await bus.close()
            await store.close()

    app = FastAPI(
        title="Onward",
        version=__version__,
        description="Durable LLM agent runs with an exact, resumable event stream.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # The two requests every run makes (start, stream) take the lane ahead of everything else;
    # routers are matched in order, the runs router first for what the lane hands over.
    app.router.routes[0:0] = fastlane.routes(runs.router)
    app.include_router(runs.router)
    app.include_router(meta.router)
    app.include_router(auth.router)
    app.include_router(tokens.router)
    app.include_router(conversations.router)
    app.include_router(activity_api.router)
    app.include_router(ws.router)
    app.include_router(files.router)
    app.include_router(admin.router)
    # multipart framing adds a little to the file itself
    upload = (settings.max_upload_bytes + 64 * 1024, "max_upload_bytes")
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, paths={"/api/files/upload": upload})

    mount_web(app)
    return app
