"""The status page at the admin address's `/`: server-rendered HTML over the debug views.

Every section is built from the same documents `/debug/proxies`, `/debug/sources`,
`/debug/policies` and `/debug/snapshot` serve (the admin server's own functions), so the
page and `xdsctl` never disagree. It is complete without JavaScript; static/status.js only
re-fetches the page every two seconds and swaps the live sections in place. Every value is
escaped (`html.escape`, attributes quoted), and the CSP allows scripts from 'self' only, so a
service name carrying markup stays text. Settings and the environment are never rendered.
Clients that do not ask for HTML (curl, `xdsctl`) still get the plain-text route index.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib import resources
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from xds_server import events_report, types
from xds_server.admin import TYPE_ALIASES, AdminServer, render_snapshot
from xds_server.xdsctl import _state as source_state  # the word `xdsctl sources` prints

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
STATIC: Final = {  # name -> content type; read once, they are part of the package
    "status.js": "text/javascript",
    "status.css": "text/css",
}
_STATIC_BODIES: Final = {
    name: resources.files("xds_server").joinpath("static", name).read_bytes() for name in STATIC
}
BROWSE_TYPES: Final = [types.short_name(t) for t in types.PUSH_ORDER]
EVENTS_SHOWN: Final = 10  # the newest events; /debug/events has the whole history


def esc(value: object) -> str:
    """Any value as HTML text or a quoted attribute value (None shows as empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def _tag(name: str, content: str, cls: str | None = None) -> str:
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<{name}{attr}>{content}</{name}>"


def _state(word: str) -> str:
    """A state word as a badge; the CSS colours it by its class."""
    return f'<span class="state state-{esc(word.lower())}">{esc(word)}</span>'


def _table(headers: Sequence[str], rows: Iterable[str], empty: str) -> str:
    body = "".join(rows)
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(_tag("th", esc(h)) for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _clock(at: float | None) -> str:
    """A time of day; absolute, so a section that did not change renders the same."""
    return "" if at is None else time.strftime("%H:%M:%S UTC", time.gmtime(at))


def _link(text: str, **query: str) -> str:
    return f'<a href="/?{esc(urlencode(query))}">{esc(text)}</a>'


# -- sections (each a function of the debug documents) ----------------------------------


def proxies_section(proxies: list[dict[str, Any]]) -> str:
    rows = []
    for p in proxies:
        states = []
        errors = []
        for short, ts in p.get("types", {}).items():
            states.append(f"{esc(short)} {_state(ts.get('state', 'NOT_SENT'))}")
            if ts.get("state") == "NACKED":
                errors.append(
                    f'<div class="nack">{esc(short)} NACK of version '
                    f"{esc(ts.get('error_version'))}: {esc(ts.get('last_error'))}</div>"
                )
        group = _link(p.get("group", ""), group=p.get("group", ""))
        rows.append(
            "<tr>"
            + _tag("td", esc(p.get("node_id")))
            + _tag("td", esc(p.get("cluster")))
            + _tag("td", group)
            + _tag("td", esc(p.get("kind")))
            + _tag("td", esc(p.get("peer")))
            + _tag("td", esc(_clock(p.get("connected_since"))))
            + _tag("td", " ".join(states) + "".join(errors))
            + "</tr>"
        )
    headers = ("node", "cluster", "group", "stream", "peer", "connected at", "types")
    return _table(headers, rows, "no proxies connected")


def sources_section(sources: list[dict[str, Any]]) -> str:
    rows = []
    for s in sources:
        notes = []
        if s.get("error"):
            notes.append(f'<div class="error">{esc(s["error"])}</div>')
        if s.get("holding"):
            notes.append(
                f"<div>holding {esc(s.get('held_removals'))} removals: "
                f"{esc(s.get('hold_reason'))}</div>"
            )
        rejected = s.get("rejected") or []
        if rejected:
            items = "".join(_tag("li", esc(r)) for r in rejected)
            notes.append(f'<div>rejected:<ul class="rejected">{items}</ul></div>')
        # What the source wants known that is not an error (a CRD the cluster lacks, who
        # writes route status), as `xdsctl sources` prints it under the source.
        notes.extend(f'<div class="note">{esc(n)}</div>' for n in s.get("notes") or ())
        rows.append(
            "<tr>"
            + _tag("td", esc(s.get("name")))
            + _tag("td", esc(s.get("kind")))
            + _tag("td", _state(source_state(s)))
            + _tag("td", esc(s.get("services")))
            + _tag("td", "".join(notes))
            + "</tr>"
        )
    return _table(("source", "kind", "state", "services", "details"), rows, "no sources")


def policies_section(policies: list[dict[str, Any]]) -> str:
    rows = []
    for p in policies:
        name = "/".join(str(p[k]) for k in ("namespace", "name") if p.get(k))
        reasons = "".join(_tag("li", esc(r)) for r in p.get("reasons") or [])
        rows.append(
            "<tr>"
            + _tag("td", esc(p.get("kind")))
            + _tag("td", esc(name))
            + _tag("td", _state(str(p.get("state", "?"))))
            + _tag("td", esc(p.get("source", "")))
            + _tag("td", esc(", ".join(map(str, p.get("services") or []))))
            + _tag("td", esc(p.get("origin")))
            + _tag("td", f"<ul>{reasons}</ul>" if reasons else "")
            + "</tr>"
        )
    headers = ("kind", "name", "state", "source", "services", "origin", "reasons")
    return _table(headers, rows, "no policy objects")


def events_section(events: list[dict[str, Any]]) -> str:
    """The newest events first (the /debug/events documents): seen → pushed → ACKed by n
    of m proxies, convergence, NACKs with Envoy's error, the proxies still pending."""
    rows = []
    for e in reversed(events):
        p, c = e["proxies"], e["convergence"]
        notes = [
            f'<div class="nack">NACK by {esc(n["node"])} '
            f"({esc(types.short_name(n['type_url']))}): {esc(n['error'])}</div>"
            for n in e["nacks"]
        ]
        if e["pending"]:
            more = p["pending"] - len(e["pending"])
            extra = f" (+{more} more)" if more else ""
            notes.append(f"<div>pending: {esc(', '.join(e['pending']))}{esc(extra)}</div>")
        convergence = " / ".join(events_report.seconds(c[k]) for k in ("p50", "p99", "max"))
        rows.append(
            "<tr>"
            + _tag("td", esc(e["id"]))
            + _tag("td", esc(e["source"]))
            + _tag("td", esc(_clock(e["seen_at"])))
            + _tag("td", _state(str(e["state"])))
            + _tag("td", esc(f"{p['acked']} of {p['total']}"))
            + _tag("td", esc(events_report.seconds(e["pushed_after"])))
            + _tag("td", esc(convergence))
            + _tag("td", esc(e["summary"]) + "".join(notes))
            + "</tr>"
        )
    headers = ("id", "source", "seen at", "state", "ACKed", "pushed after",
               "convergence p50 / p99 / max", "changes")  # fmt: skip
    return _table(headers, rows, "no registry or policy changes yet")


def snapshot_section(
    groups: list[str],
    group: str,
    short: str,
    version: str,
    names: Iterable[str],
    chosen: dict[str, Any] | None,
    name: str | None,
) -> str:
    """Group and type links, the resource names of that type (version `version`), and the
    one named `name` as Envoy JSON: `chosen`, its entry in the /debug/snapshot document."""
    group_links = " ".join(
        f"<strong>{esc(g)}</strong>" if g == group else _link(g, group=g) for g in groups
    )
    type_links = " ".join(
        f"<strong>{esc(t)}</strong>" if t == short else _link(t, group=group, type=t)
        for t in BROWSE_TYPES
    )
    items = [
        _tag(
            "li",
            f"<strong>{esc(n)}</strong>"
            if n == name
            else _link(n, group=group, type=short, name=n),
        )
        for n in names
    ]
    listing = f'<ul class="names">{"".join(items)}</ul>' if items else '<p class="empty">none</p>'
    parts = [
        f"<p>groups: {group_links}</p>",
        f'<p>types: {type_links} <span class="version">version {esc(version)}</span></p>',
        f'<div class="browser"><div>{listing}</div>',
    ]
    if chosen is not None:
        body = json.dumps(chosen.get("resource"), indent=2)
        error = f'<p class="error">{esc(chosen["error"])}</p>' if chosen.get("error") else ""
        parts.append(f'<div>{error}<pre id="resource-json">{esc(body)}</pre></div>')
    elif name:
        parts.append(f'<div><p class="error">no {esc(short)} named {esc(name)}</p></div>')
    parts.append("</div>")
    return "".join(parts)


def page(sections: list[tuple[str, str, str]], now: float) -> str:
    """The whole document: (id, title, html) per section; each section is live."""
    body = "".join(
        f'<section id="{esc(sid)}" data-live><h2>{esc(title)}</h2>'
        f'<div class="content">{content}</div></section>'
        for sid, title, content in sections
    )
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>xds-server status</title>"
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/status.css">'
        '<script src="/static/status.js" defer></script></head><body>'
        f'<header><h1>xds-server</h1><p id="stamp" data-live>rendered {esc(stamp)}</p>'
        '<p id="refresh">static page: reload to refresh</p>'
        '<p class="api">JSON: <a href="/debug/proxies">proxies</a> '
        '<a href="/debug/sources">sources</a> <a href="/debug/policies">policies</a> '
        '<a href="/debug/snapshot">snapshot</a> <a href="/debug/events">events</a> '
        '<a href="/metrics">metrics</a></p></header>'
        f"{body}</body></html>"
    )


# -- the handlers --------------------------------------------------------------------------


def wants_html(request: web.Request) -> bool:
    """Browsers ask for text/html; curl and aiohttp send */* and keep the text index."""
    return "text/html" in request.headers.get("Accept", "")


class StatusPage:
    """The page's handlers over one admin server (admin.py imports this module lazily)."""

    def __init__(self, admin: AdminServer, text_index: Handler) -> None:
        self.admin = admin
        self.text_index = text_index

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not wants_html(request):
            return await self.text_index(request)
        admin, q = self.admin, request.query
        # Exactly the /debug/proxies document (states against the current snapshot).
        proxies = json.loads((await admin._proxies(request)).text or "[]")
        groups = sorted({admin.default_group, *admin.cache.groups()})
        group = q.get("group") or admin.default_group
        type_url = TYPE_ALIASES.get(q.get("type", "").strip().lower(), types.CLUSTER)
        short = types.short_name(type_url)
        recent = admin.events_doc(limit=EVENTS_SHOWN)["events"]
        sections = [
            ("proxies", "Connected proxies", proxies_section(proxies)),
            ("sources", "Registry sources", sources_section(admin.sources())),
            ("policies", "Policy objects", policies_section(admin.policies())),
            ("events", "Recent events", events_section(recent)),
        ]
        try:
            snap = await admin.snapshot_for(group)
        except ValueError as exc:
            browser = f'<p class="error">bad group {esc(group)}: {esc(exc)}</p>'
        else:
            ts = snap.get(type_url)
            name = q.get("name")
            chosen = None
            if name and name in ts.resources:
                # Only the chosen resource goes through protobuf -> JSON, off the loop.
                raw = await asyncio.to_thread(
                    render_snapshot, group, {short: ts.version}, [ts.resources[name]]
                )
                chosen = json.loads(raw)["resources"][0]
            browser = snapshot_section(groups, group, short, ts.version, ts.resources, chosen, name)
        sections.append(("snapshot", f"Snapshot: group {group}", browser))
        return web.Response(
            text=page(sections, time.time()),
            content_type="text/html",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"},
        )

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=_STATIC_BODIES[name], content_type=STATIC[name])


def install(app: web.Application, admin: AdminServer, text_index: Handler) -> None:
    """Route `/` (the page, or `text_index` for non-browsers) and its static files."""
    status_page = StatusPage(admin, text_index)
    app.router.add_get("/", status_page.handle)
    app.router.add_get("/static/{name}", status_page.static)
