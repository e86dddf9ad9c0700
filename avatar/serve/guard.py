"""Who may talk to the local server: loopback only, a random token, the page's own origin (pure functions)."""
from __future__ import annotations

import secrets
from urllib.parse import urlsplit

DEFAULT_PORT = 47810  # the local server's port unless the settings say otherwise (a free one when it is taken)
LOOPBACK_HOST = "127.0.0.1"  # the only address the server binds: nothing off this machine can reach it
LOOPBACK_NAMES = ("127.0.0.1", "localhost")  # what a Host header may name (anything else: DNS rebinding)
TOKEN_BYTES = 24  # secrets.token_urlsafe(24): 32 characters, 192 bits
TOKEN_HEADER = "X-Avatar-Token"


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_ok(expected: str, given: str | None) -> bool:
    """Constant-time comparison; an empty expected token matches nothing."""
    return bool(expected) and given is not None and secrets.compare_digest(expected.encode(), given.encode())


def given_token(query: dict, headers: dict) -> str | None:
    """The token a request carries: ?token=…, the X-Avatar-Token header, or Authorization: Bearer …."""
    if query.get("token"):
        return query["token"]
    if headers.get(TOKEN_HEADER):
        return headers[TOKEN_HEADER]
    auth = headers.get("Authorization", "")
    return auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else None


def host_ok(host: str | None, port: int) -> bool:
    """The Host header names this server on loopback (a page on another name reaching it through DNS rebinding
    does not)."""
    if not host:
        return False
    parts = urlsplit(f"//{host}")
    return parts.hostname in LOOPBACK_NAMES and parts.port == port


def own_origins(port: int) -> set[str]:
    return {f"http://{name}:{port}" for name in LOOPBACK_NAMES}


def page_origin_ok(origin: str | None, port: int) -> bool:
    """The browser source's WebSocket: only the page this server served (its own origin) may open it."""
    return origin in own_origins(port)


def program_origin_ok(origin: str | None, port: int) -> bool:
    """The input endpoint is for programs, which send no Origin; a web page (any other origin) may not push."""
    return origin is None or origin in own_origins(port)
