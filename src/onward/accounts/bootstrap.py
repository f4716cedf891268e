"""The first start: when no user has a password, `admin` gets one and a one-time login link.

The way Jupyter prints its token URL: the person who started the server is the one who reads its
output, so the link (and a random password) go to stdout once and nowhere else. A known password
can be given with ONWARD_ADMIN_PASSWORD instead (it is then not printed).
"""

from __future__ import annotations

import logging
import secrets

from onward.accounts.passwords import hash_password_async
from onward.accounts.service import AccountService
from onward.accounts.tokens import digest, new_secret
from onward.config import Settings
from onward.errors import Conflict

log = logging.getLogger(__name__)

ADMIN = "admin"


def base_url(settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


async def bootstrap_admin(accounts: AccountService, settings: Settings) -> str | None:
    """Make `admin` usable if nobody can log in; returns the message to print, or None."""
    store = accounts.store
    if await store.any_password():
        return None
    password = settings.admin_password or secrets.token_urlsafe(12)
    password_hash = await hash_password_async(password)
    found = await store.user_with_hash(ADMIN)
    if found is None:
        try:
            account = await store.create_user(ADMIN, password_hash, is_admin=True)
        except Conflict:  # another process bootstrapped the same database a moment ago
            return None
    else:
        account = await store.update_user(found[0].id, password_hash=password_hash, is_admin=True, disabled=False)
    link = new_secret()
    await store.create_login_token(account.id, digest(link), settings.login_link_ttl_h * 3600)
    await accounts.refresh_user_count()
    log.info("first start: the admin account is ready; the one-time login link was printed on stdout")
    lines = [f"Onward is ready: open {base_url(settings)}/?login_token={link}"]
    lines.append(f"  (the link works once, for {settings.login_link_ttl_h:g} hours)")
    if not settings.admin_password:
        lines.append(f"  or log in as {ADMIN} with the password {password}")
        lines.append(f"  change it with: onward user passwd {ADMIN}")
    return "\n".join(lines)
