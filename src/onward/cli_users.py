"""`onward user …` (accounts, run on the server machine) and `onward login` / `onward logout`.

`user` commands open the server's database directly — the same Settings (ONWARD_HOME,
ONWARD_DATABASE_URL) as `onward serve` — so they work with the server stopped, and with no admin
able to log in. `login` is a client command: it creates an API token over the API and keeps it in
the user's config directory (see `onward.credentials`).
"""

from __future__ import annotations

import asyncio
import getpass
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from onward import credentials
from onward.accounts.values import Account, iso
from onward.client import DEFAULT_URL, OnwardClient
from onward.errors import OnwardError

if TYPE_CHECKING:  # the database stack is imported only by the commands that use it
    from onward.accounts.service import AccountService

T = TypeVar("T")
EXIT_ERROR = 2

user_app = typer.Typer(
    name="user",
    help="Manage accounts in the server's database (run on the server machine).",
    no_args_is_help=True,
    add_completion=False,
)

_PASSWORD_STDIN = typer.Option("--password-stdin", help="Read the password from the first line of stdin.")


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"error: {message}", style="red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_ERROR)


def _say(message: str, style: str | None = None) -> None:
    Console().print(message, style=style, markup=False, highlight=False, soft_wrap=True)


def _password(from_stdin: bool, confirm: bool = True) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise _fail("no password on stdin")
        return password
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Repeat the password: ") != password:
        raise _fail("the passwords differ")
    return password


def _with_accounts(work: Callable[[AccountService], Awaitable[T]]) -> T:
    """Run `work` against the server's database (migrated first, as `onward serve` would)."""
    from onward.accounts.service import AccountService
    from onward.config import Settings
    from onward.store.accounts import AccountStore
    from onward.store.sql import SqlStore

    async def main() -> T:
        settings = Settings()
        store = SqlStore(settings.db_url)
        try:
            await store.init()
            return await work(AccountService(settings, AccountStore(store)))
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except OnwardError as exc:
        raise _fail(exc.message) from None


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The new user's name (lower case).", show_default=False)],
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an administrator.")] = False,
    password_stdin: Annotated[bool, _PASSWORD_STDIN] = False,
) -> None:
    """Add a user with a password (asked for, or read with --password-stdin)."""
    password = _password(password_stdin)
    account = _with_accounts(lambda accounts: accounts.add_user(name, password, admin))
    _say(f"added user {account.name} ({account.id}){' as an administrator' if admin else ''}", "green")


@user_app.command("list")
def user_list() -> None:
    """List every user: name, id, admin, disabled, created."""
    accounts: list[Account] = _with_accounts(lambda a: a.store.list_users())
    table = Table(box=None, header_style="bold", pad_edge=False)
    for header in ("name", "id", "admin", "disabled", "created"):
        table.add_column(header, no_wrap=True)
    for a in accounts:
        table.add_row(a.name, a.id, "yes" if a.is_admin else "", "yes" if a.disabled else "", (iso(a.created_at) or "")[:19])
    Console(width=max(Console().width, 120)).print(table)


@user_app.command("passwd")
def user_passwd(
    name: Annotated[str, typer.Argument(help="The user's name.", show_default=False)],
    password_stdin: Annotated[bool, _PASSWORD_STDIN] = False,
) -> None:
    """Set a user's password; the user's sessions end (API tokens stay valid)."""
    password = _password(password_stdin)

    async def work(accounts: AccountService) -> Account:
        return await accounts.set_password((await accounts.find(name)).id, password)

    account = _with_accounts(work)
    _say(f"password of {account.name} changed; its sessions were ended", "green")


def _set_disabled(name: str, disabled: bool) -> Account:
    async def work(accounts: AccountService) -> Account:
        return await accounts.set_disabled((await accounts.find(name)).id, disabled)

    return _with_accounts(work)


@user_app.command("disable")
def user_disable(name: Annotated[str, typer.Argument(help="The user's name.", show_default=False)]) -> None:
    """Disable a user: it cannot log in, its sessions end and its API tokens stop working."""
    account = _set_disabled(name, True)
    _say(f"user {account.name} disabled", "yellow")


@user_app.command("enable")
def user_enable(name: Annotated[str, typer.Argument(help="The user's name.", show_default=False)]) -> None:
    """Enable a disabled user again (its old API tokens work again too)."""
    account = _set_disabled(name, False)
    _say(f"user {account.name} enabled", "green")


def _url(ctx: typer.Context) -> str:
    options: Any = ctx.obj
    return str(getattr(options, "url", None) or DEFAULT_URL)


def login(
    ctx: typer.Context,
    username: Annotated[
        str | None, typer.Option("--username", "-u", help="Who to log in as (asked for if absent).", show_default=False)
    ] = None,
    password_stdin: Annotated[bool, _PASSWORD_STDIN] = False,
) -> None:
    """Log in to the server at --url: creates an API token and stores it for later commands."""
    url = _url(ctx)
    if username is None:
        username = input("Username: ").strip()
    password = _password(password_stdin, confirm=False)
    name = f"onward login on {socket.gethostname()}"[:200]
    try:
        with OnwardClient(url, token="") as client:
            user, token = client.create_token_with_password(username, password, name)
    except OnwardError as exc:
        raise _fail(exc.message) from None
    path = credentials.save(url, str(token["token"]), str(token["id"]), str(user.get("name", username)))
    _say(f"logged in to {url} as {user.get('name', username)}; token stored in {path}", "green")


def logout(ctx: typer.Context) -> None:
    """Revoke the token `onward login` stored for --url, and forget it."""
    url = _url(ctx)
    entry = credentials.stored(url)
    if entry is None:
        _say(f"not logged in to {url}")
        return
    try:
        with OnwardClient(url, token=str(entry["token"])) as client:
            client.revoke_token(str(entry.get("token_id", "")))
    except OnwardError as exc:  # revoked already, or the server is away: forget it anyway
        _say(f"could not revoke the token on the server ({exc.message}); forgetting it here", "yellow")
    credentials.forget(url)
    _say(f"logged out of {url}", "green")


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
    app.command()(login)
    app.command()(logout)
