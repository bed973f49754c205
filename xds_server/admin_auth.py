"""Who may read the admin API: loopback by default, a bearer token otherwise.

The admin address stays on loopback unless the operator binds it elsewhere; then a token
(`--admin-token`, `--admin-token-file`) is required, sent as `Authorization: Bearer
<token>` (RFC 6750), for every path except the probes and the scrape (`OPEN_PATHS`): a
kubelet or Prometheus should not need the secret, and they show nothing of the config.
A token set on loopback is required too: the operator asked for it.

A browser cannot send that header on a page load, so the status page has a sign-in:
`POST /login` with the token (a form field) sets an HttpOnly, SameSite=Strict cookie
holding an HMAC of the token (never the token itself), accepted like the header. An
unauthenticated request for HTML gets the sign-in form with its 401.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Middleware

OPEN_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
REALM: Final = 'Bearer realm="xds-server"'
COOKIE: Final = "xds_admin_session"
LOGIN: Final = "/login"
_SIGN_IN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xds-server: sign in</title>
<link rel="icon" href="data:,"></head>
<body><h1>xds-server</h1><p>{message}</p>
<form method="post" action="/login">
<label>Admin token <input type="password" name="token" autocomplete="current-password"
autofocus></label> <button type="submit">Sign in</button></form></body></html>
"""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _loopback_ip(text: str) -> bool | None:
    """Whether an IP literal is loopback; None if `text` is not an IP literal."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # fe80::1%eth0 style scope ids
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback on every Python version
    return ip.is_loopback


def is_loopback(host: str | None) -> bool:
    """Whether listening on `host` is reachable from this machine only.

    None or "" (":port", every interface), 0.0.0.0 and :: are not; an IP is if it is
    in 127.0.0.0/8 or ::1; a hostname is if every address it resolves to is (that is
    what the listener binds to), and is not if it does not resolve (fail closed).
    """
    if not host:
        return False
    literal = _loopback_ip(host)
    if literal is not None:
        return literal
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]) for info in infos}
    return bool(addresses) and all(_loopback_ip(a) for a in addresses)


def valid_token(token: str) -> str | None:
    """Why `token` cannot be a bearer token (None if it can); never quotes the token."""
    if not token:
        return "must not be empty"
    if not all("!" <= c <= "~" for c in token):
        return "must be printable ASCII without spaces (it travels in an HTTP header)"
    return None


def _unauthorized(message: str, challenge: str) -> web.Response:
    return web.Response(
        status=401,
        text=message + "\n",
        headers={"WWW-Authenticate": challenge},
    )


def session_value(token: str) -> str:
    """What the sign-in cookie holds: an HMAC of the token, so the cookie is not the token."""
    return hmac.new(token.encode(), b"xds-server admin session", hashlib.sha256).hexdigest()


def _wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def _sign_in(message: str, challenge: str) -> web.Response:
    return web.Response(
        status=401,
        text=_SIGN_IN.format(message=message),  # constant text only: nothing to escape
        content_type="text/html",
        headers={"WWW-Authenticate": challenge},
    )


def middleware(token: str) -> Middleware:
    """An aiohttp middleware letting through `OPEN_PATHS` and requests carrying `token`
    (as a bearer token, or the sign-in cookie `POST /login` sets)."""
    expected = token.encode()
    session = session_value(token).encode()

    def matches(given: str, wanted: bytes) -> bool:
        # Constant time: the time to answer says nothing about how much of it matched.
        return hmac.compare_digest(given.strip().encode(errors="surrogateescape"), wanted)

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        if request.path == LOGIN and request.method == "POST":
            form = await request.post()
            given = form.get("token")
            if not isinstance(given, str) or not matches(given, expected):
                return _sign_in("Wrong token.", REALM + ', error="invalid_token"')
            signed_in = web.HTTPSeeOther("/")
            signed_in.set_cookie(COOKIE, session.decode(), httponly=True, samesite="Strict",
                                 path="/")  # fmt: skip
            return signed_in
        cookie = request.cookies.get(COOKIE)
        if cookie is not None and matches(cookie, session):
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            if _wants_html(request):
                return _sign_in("This admin page needs the admin token.", REALM)
            return _unauthorized(
                "401 Unauthorized: this admin API needs a bearer token"
                " (Authorization: Bearer <token>; xdsctl reads it from XDSCTL_TOKEN)",
                REALM,
            )
        if not matches(given, expected):
            return _unauthorized(
                "401 Unauthorized: wrong bearer token", REALM + ', error="invalid_token"'
            )
        return await handler(request)

    return require_token
