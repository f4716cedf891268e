"""What the API and the CLI do with accounts: log in and out, resolve a session or token to a user,
manage API tokens and users. One place decides what a failed login says: always the same thing.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from onward.accounts.passwords import check_policy, hash_password_async, verify_password_async
from onward.accounts.throttle import LoginThrottle
from onward.accounts.tokens import TOKEN_PREFIX, digest, new_secret
from onward.accounts.values import Account, SessionRecord, TokenRecord
from onward.config import Settings
from onward.errors import AccountDisabled, BadRequest, InvalidCredentials, NotFound
from onward.store.accounts import AccountStore

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# last_seen_at / last_used_at are refreshed at most this often, so reads do not become writes.
TOUCH_EVERY_S = 60.0


def normalize_name(name: str) -> str:
    """User names are lower case: letters, digits, '_', '.', '-', starting with a letter or digit."""
    clean = name.strip().lower()
    if not NAME_RE.match(clean):
        raise BadRequest(
            f"invalid user name {name!r}: use 1-64 lower-case letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return clean


class AccountService:
    def __init__(self, settings: Settings, store: AccountStore) -> None:
        self.settings = settings
        self.store = store
        self.throttle = LoginThrottle(settings)
        # Told the number of enabled users whenever it may have changed (the sandbox decides by it).
        self.on_user_count: Callable[[int], None] | None = None

    # logging in ------------------------------------------------------------------------------

    async def login(self, username: str, password: str, ip: str) -> tuple[Account, str, str]:
        """Check the password and open a session: (account, session id, CSRF token).

        Unknown user and wrong password take the same time and raise the same InvalidCredentials.
        """
        self.throttle.attempt(ip, username)
        found = await self.store.user_with_hash(username.strip().lower())
        account, password_hash = found if found else (None, None)
        ok = await verify_password_async(password_hash, password)
        if not ok or account is None:
            log.info("failed login as %r from %s", username[:64], ip, extra={"user": username[:64], "ip": ip})
            raise InvalidCredentials()
        if account.disabled:
            raise AccountDisabled()
        self.throttle.succeeded(ip, username)
        session_id, csrf = await self._open_session(account)
        log.info("login: %s from %s", account.name, ip, extra={"user": account.name, "ip": ip})
        return account, session_id, csrf

    async def login_with_link(self, login_token: str, ip: str) -> tuple[Account, str, str]:
        """Open a session from a one-time login link; the link is used up."""
        self.throttle.attempt(ip, None)
        user_id = await self.store.consume_login_token(digest(login_token))
        if user_id is None:
            raise InvalidCredentials("this login link is invalid, expired or already used; log in with a password")
        account = await self.store.get_user(user_id)
        if account.disabled:
            raise AccountDisabled()
        self.throttle.succeeded(ip, None)
        session_id, csrf = await self._open_session(account)
        log.info("login with a one-time link: %s from %s", account.name, ip, extra={"user": account.name, "ip": ip})
        return account, session_id, csrf

    async def _open_session(self, account: Account) -> tuple[str, str]:
        session_id, csrf = new_secret(), new_secret()
        await self.store.create_session(account.id, digest(session_id), csrf, self.settings.session_ttl_h * 3600)
        return session_id, csrf

    async def logout(self, session_id_hash: str) -> None:
        await self.store.delete_session(session_id_hash)

    # resolving callers -----------------------------------------------------------------------

    async def by_session(self, session_id: str) -> SessionRecord | None:
        record = await self.store.session(digest(session_id))
        if record is not None and time.time() - record.last_seen_at > TOUCH_EVERY_S:
            await self.store.touch_session(record.id_hash)
        return record

    async def by_token(self, token: str) -> Account | None:
        found = await self.store.token(digest(token))
        if found is None:
            return None
        account, token_id, last_used = found
        if last_used is None or time.time() - last_used > TOUCH_EVERY_S:
            await self.store.touch_token(token_id)
        return account

    # API tokens ------------------------------------------------------------------------------

    async def create_token(self, user_id: str, name: str) -> tuple[TokenRecord, str]:
        """A new token: its record and the token itself, which is never shown again."""
        token = new_secret(TOKEN_PREFIX)
        record = await self.store.create_token(user_id, name, digest(token))
        return record, token

    async def revoke_token(self, user_id: str, token_id: str) -> None:
        if not await self.store.delete_token(user_id, token_id):
            raise NotFound(f"no token {token_id!r}")

    # users -----------------------------------------------------------------------------------

    async def add_user(self, name: str, password: str | None, is_admin: bool = False) -> Account:
        name = normalize_name(name)
        password_hash = None
        if password is not None:
            check_policy(password)
            password_hash = await hash_password_async(password)
        account = await self.store.create_user(name, password_hash, is_admin)
        log.info("user %s added%s", name, " (admin)" if is_admin else "", extra={"user": name, "is_admin": is_admin})
        await self.refresh_user_count()
        return account

    async def find(self, name: str) -> Account:
        found = await self.store.user_with_hash(name.strip().lower())
        if found is None:
            raise NotFound(f"no user {name!r}")
        return found[0]

    async def set_password(self, user_id: str, password: str) -> Account:
        """A new password ends every session of the user (tokens stay until revoked)."""
        check_policy(password)
        account = await self.store.update_user(user_id, password_hash=await hash_password_async(password))
        await self.store.delete_user_sessions(user_id)
        return account

    async def set_disabled(self, user_id: str, disabled: bool) -> Account:
        """A disabled user's sessions end at once and its tokens stop working (they are kept)."""
        account = await self.store.update_user(user_id, disabled=disabled)
        if disabled:
            await self.store.delete_user_sessions(user_id)
        log.info("user %s %s", account.name, "disabled" if disabled else "enabled", extra={"user": account.name})
        await self.refresh_user_count()
        return account

    async def set_admin(self, user_id: str, is_admin: bool) -> Account:
        return await self.store.update_user(user_id, is_admin=is_admin)

    async def refresh_user_count(self) -> int:
        count = await self.store.count_enabled_users()
        if self.on_user_count is not None:
            self.on_user_count(count)
        return count
