"""Accounts: users with argon2id passwords, cookie sessions with CSRF tokens, API tokens, login throttling.

Ownership is not checked here but by construction: every handler gets the caller's id from
`api.deps.current_user` and every query filters by it, so another user's ids are simply not found.
"""
