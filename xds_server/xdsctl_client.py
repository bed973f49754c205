"""`xdsctl`'s client for the admin HTTP API (stdlib only, so xdsctl starts fast): GET a
path, answer the JSON; a refused token, an error answer or an unreachable server ends
xdsctl with one line saying why (exit 2)."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, NoReturn

import click

DEFAULT_SERVER = "http://127.0.0.1:19000"
ERROR_WIDTH = 160


def fail(message: str) -> NoReturn:
    """Print ``xdsctl: message`` on stderr and exit 2."""
    click.echo(f"xdsctl: {message}", err=True)
    sys.exit(2)


def one_line(text: str, width: int = ERROR_WIDTH) -> str:
    """`text` on one line, cut to `width` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 3] + "..."


class Client:
    """GET JSON from the admin API; any failure ends xdsctl with one line saying why."""

    def __init__(self, server: str, timeout: float, token: str | None = None) -> None:
        server = server.strip().rstrip("/")
        if "://" not in server:
            server = "http://" + server
        self.server = server
        self.timeout = timeout
        self.token = token.strip() if token else None

    def get(self, path: str, **params: str | None) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.server}{path}" + (f"?{query}" if query else "")
        request = urllib.request.Request(url)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                fail(self._unauthorized())
            fail(http_error(exc))
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = reason.strerror or str(reason) if isinstance(reason, OSError) else str(reason)
            fail(f"cannot reach xds-server at {self.server}: {text}")
        except (OSError, ValueError) as exc:  # timeouts mid-read, reset, malformed URL
            text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            fail(f"cannot reach xds-server at {self.server}: {text}")
        try:
            return json.loads(body)
        except ValueError:
            fail(f"unexpected (non-JSON) answer from {url}")

    def _unauthorized(self) -> str:
        if not self.token:
            return (
                f"{self.server} requires a bearer token (HTTP 401): set XDSCTL_TOKEN"
                " (or --token) to the server's --admin-token"
            )
        return (
            f"{self.server} rejected the token (HTTP 401): XDSCTL_TOKEN (or --token) must"
            " equal the server's --admin-token"
        )


def http_error(exc: urllib.error.HTTPError) -> str:
    """What an error answer says: the JSON `error` (our `where: what: why`) or its body."""
    try:
        body = exc.read().decode(errors="replace")
    except OSError:
        body = ""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and "error" in doc:
            return one_line(doc["error"], 500)
    except ValueError:
        pass
    return one_line(body, 500) or f"HTTP {exc.code} {exc.reason}"
