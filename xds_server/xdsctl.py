"""`xdsctl`: the operator's view of a running xds-server, through its admin HTTP API.

Kept light (stdlib HTTP, no protobuf imports) so it starts fast.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import click

from xds_server.xdsctl_client import DEFAULT_SERVER, Client, one_line

TYPES = ("clusters", "endpoints", "listeners", "routes")
TYPE_COLUMNS = (("CDS", "clusters"), ("EDS", "endpoints"), ("LDS", "listeners"), ("RDS", "routes"))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    lines = []
    for row in (headers, *rows):
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _echo_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[Sequence[str]]
) -> None:
    """A table with each row's notes (`notes[i]`, already indented) under row i."""
    lines = table(headers, rows).split("\n")
    click.echo(lines[0])
    for line, below in zip(lines[1:], notes, strict=True):
        click.echo(line)
        for note in below:
            click.echo(note)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple | dict | set):
        return str(len(value))
    return one_line(str(value), 60) or "-"


def _dump(doc: Any, output: str) -> None:
    if output == "yaml":
        import yaml

        click.echo(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False), nl=False)
    else:
        click.echo(json.dumps(doc, indent=2))


def _fetch(client: Client, path: str, output: str, empty: str = "", **params: str | None) -> Any:
    """GET `path`. For -o json/yaml print the answer whole and return None; for a table
    return it, except that an empty answer prints `empty` (if given) and returns None."""
    doc = client.get(path, **params)
    if output != "table":
        _dump(doc, output)
        return None
    if not doc and empty:
        click.echo(empty)
        return None
    return doc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--server",
    envvar="XDSCTL_SERVER",
    default=DEFAULT_SERVER,
    show_default=True,
    show_envvar=True,
    help="Admin URL of the xds-server.",
)
@click.option(
    "--token",
    envvar="XDSCTL_TOKEN",
    show_envvar=True,
    help="Bearer token for an admin API started with --admin-token (prefer the variable:"
    " a flag shows in the process list).",
)
@click.option("--timeout", type=float, default=5.0, show_default=True, help="HTTP timeout (s).")
@click.pass_context
def main(ctx: click.Context, server: str, token: str | None, timeout: float) -> None:
    """Inspect a running xds-server: snapshots, connected proxies, sources, policies."""
    ctx.obj = Client(server, timeout, token)


def _command(*outputs: str) -> Callable[[Callable[..., None]], click.Command]:
    """A subcommand taking the client and an `-o/--output` among `outputs`."""
    output = click.option(
        "-o", "--output", type=click.Choice(outputs), default="table", show_default=True
    )

    def wrap(fn: Callable[..., None]) -> click.Command:
        return main.command()(output(click.pass_obj(fn)))

    return wrap


@_command("table", "json", "yaml")
@click.option("--node", help="Node id of a connected proxy: show its group's snapshot.")
@click.option("--group", help="Proxy group key (default: the server's default group).")
@click.option("--type", "type_", type=click.Choice(TYPES), help="Only this resource type.")
def snapshot(
    client: Client, node: str | None, group: str | None, type_: str | None, output: str
) -> None:
    """What the server would send a proxy (group) now."""
    if node is not None and group is not None:
        raise click.UsageError("--node and --group are mutually exclusive")
    doc = _fetch(client, "/debug/snapshot", output, node=node, group=group, type=type_)
    if doc is None:
        return
    versions = " ".join(f"{t}={v[:12]}" for t, v in doc.get("versions", {}).items())
    click.echo(f"GROUP {doc.get('group', '')}  {versions}".rstrip())
    resources = doc.get("resources", [])
    if not resources:
        click.echo("no resources")
        return
    rows = [(r["type"], r["name"], str(r["version"])[:12]) for r in resources]
    click.echo(table(("TYPE", "NAME", "VERSION"), rows))


@_command("table", "json")
def proxies(client: Client, output: str) -> None:
    """Connected proxies and whether each resource type is in sync."""
    doc = _fetch(client, "/debug/proxies", output, "no proxies connected")
    if doc is None:
        return
    headers = ("NODE", "CLUSTER", "GROUP", "STREAM", "PEER", *(c for c, _ in TYPE_COLUMNS))
    rows: list[tuple[str, ...]] = []
    notes: list[list[str]] = []  # per row, the NACK lines under it
    for p in doc:
        tstates = p.get("types", {})
        states, nacks = [], []
        for column, short in TYPE_COLUMNS:
            ts = tstates.get(short)
            state = ts.get("state", "NOT_SENT") if ts else "NOT_SENT"
            states.append(state)
            if state == "NACKED":
                version = str(ts.get("error_version") or "")[:12]
                what = f"{column} NACKED {version}".rstrip()
                error = one_line(ts.get("last_error") or "(no error detail)")
                nacks.append(f"    {what}: {error}")
        row = (p.get("node_id"), p.get("cluster"), p.get("group"), p.get("kind"), p.get("peer"))
        rows.append((*(_cell(v) for v in row), *states))
        notes.append(nacks)
    _echo_table(headers, rows, notes)


@_command("table", "json")
def sources(client: Client, output: str) -> None:
    """Service registry sources: synced, stale (serving last good state), HOLDING (a mass
    removal held back, with why), errors."""
    doc = _fetch(client, "/debug/sources", output, "no sources configured")
    if doc is None:
        return
    keys = ("name", "kind", "synced", "stale", "services", "rejected", "error")
    rows = [[*(_cell(s.get(k)) for k in keys[:2]), _state(s)] for s in doc]
    for row, s in zip(rows, doc, strict=True):
        row.extend(_cell(s.get(k)) for k in keys[2:])
    notes = [
        [f"    HOLDING {s.get('held_removals', 0)} removals: {s.get('hold_reason')}"]
        if s.get("holding")
        else []
        for s in doc
    ]
    for below, s in zip(notes, doc, strict=True):
        below.extend(f"    {one_line(note, 400)}" for note in s.get("notes", []))
    _echo_table(["NAME", "KIND", "STATE", *(k.upper() for k in keys[2:])], rows, notes)


def _state(source: dict[str, Any]) -> str:
    if source.get("holding"):
        return "HOLDING"
    if source.get("stale"):
        return "STALE"
    return "SYNCED" if source.get("synced") else "SYNCING"


@_command("table", "json", "yaml")
def policies(client: Client, output: str) -> None:
    """Traffic policy objects: state (ACCEPTED, WARNING, REJECTED, SHADOWED), the registry
    they came from (kubernetes, consul, file), why, where they apply."""
    doc = _fetch(client, "/debug/policies", output, "no policy objects")
    if doc is None:
        return
    headers = ("KIND", "NAME", "STATE", "SOURCE", "SERVICES", "ORIGIN")
    rows = []
    for p in doc:
        services = ",".join(p.get("services", [])) or "-"
        name = f"{p.get('namespace')}/{p.get('name')}"
        state, source = p.get("state", "?"), p.get("source") or "-"
        rows.append((p.get("kind", "?"), name, state, source, services, p.get("origin")))
    notes = [[f"    {one_line(reason, 400)}" for reason in p.get("reasons", [])] for p in doc]
    _echo_table(headers, [[_cell(c) for c in r] for r in rows], notes)


@_command("table", "json", "yaml")
@click.option("--node", required=True, help="Node id of a connected proxy.")
@click.option("--type", "type_", type=click.Choice(TYPES), help="Only this resource type.")
@click.option("--patch", is_flag=True, help="Under each change, a unified diff of its JSON.")
def diff(client: Client, node: str, type_: str | None, patch: bool, output: str) -> None:
    """What a proxy has acknowledged versus what it would get now, per resource: added,
    removed, or changed and in which fields (why a type is STALE or NACKED)."""
    doc = _fetch(client, "/debug/diff", output, node=node, type=type_)
    if doc is None:
        return
    states = " ".join(f"{t}={v.get('state')}" for t, v in doc.get("types", {}).items())
    click.echo(f"NODE {doc.get('node')}  GROUP {doc.get('group')}  {states}".rstrip())
    changes = doc.get("changes", [])
    if not changes:
        click.echo("no differences: the proxy has acknowledged what it would get now")
        return
    rows = [(c["type"], c["name"], c["change"], _fields(c)) for c in changes]
    _echo_table(
        ("TYPE", "NAME", "CHANGE", "FIELDS"), rows, [_change_notes(c, patch) for c in changes]
    )


def _change_notes(change: dict[str, Any], patch: bool) -> list[str]:
    notes = []
    if change.get("in_flight"):
        notes.append("    sent, waiting for the proxy's ACK")
    if change.get("note"):
        notes.append(f"    {change['note']}")
    if patch and change.get("patch"):
        notes.extend(f"    {line}" for line in change["patch"].splitlines())
    return notes


def _fields(change: dict[str, Any], width: int = 100) -> str:
    fields = change.get("fields")
    if fields is None:
        return "?"
    if not fields:
        return "-"
    shown: list[str] = []
    rest = len(fields)
    for f in fields:
        if shown and len(", ".join([*shown, f])) > width:
            break
        shown.append(f)
        rest -= 1
    return ", ".join(shown) + (f" (+{rest} more)" if rest else "")


@main.command()
@click.option("--node", help="Node id of a connected proxy (its current configuration).")
@click.option("--group", help="A proxy group key instead (its snapshot; no ACK state).")
@click.option("--host", help="The request's Host (:authority), e.g. web or web:8080.")
@click.option("--target", help="A proxyless gRPC client's target instead, e.g. xds:///web.")
@click.option("--path", default="/", show_default=True, help="Path, with any query string.")
@click.option("--header", "headers", multiple=True, metavar="K=V", help="A request header.")
@click.option("--method", default="GET", show_default=True, help="HTTP method (Envoy only).")
@click.option("--port", type=int, help="Listener port the request arrives on (default: the"
              " port in --host if the proxy listens there, else its HTTP listener).")  # fmt: skip
@click.option("-o", "--output", type=click.Choice(("text", "json")), default="text",
              show_default=True)  # fmt: skip
@click.pass_obj
def explain(
    client: Client,
    node: str | None,
    group: str | None,
    host: str | None,
    target: str | None,
    path: str,
    headers: tuple[str, ...],
    method: str,
    port: int | None,
    output: str,
) -> None:
    """Why a request goes where it goes: the listener, virtual host and route that match
    (and why earlier routes did not), the policy rule behind the route, the clusters
    with their weights, and their endpoints (health, locality, priority, subset)."""
    if (node is None) == (group is None):
        raise click.UsageError("give --node (or --group)")
    if (host is None) == (target is None):
        raise click.UsageError("give --host (Envoy) or --target (proxyless gRPC)")
    params: dict[str, str | list[str]] = {"path": path, "method": method}
    for key, value in (("node", node), ("group", group), ("host", host), ("target", target)):
        if value is not None:
            params[key] = value
    if port is not None:
        params["port"] = str(port)
    if headers:
        params["header"] = list(headers)
    query = urllib.parse.urlencode(params, doseq=True)
    doc = client.get(f"/debug/explain?{query}")
    if output == "json":
        _dump(doc, output)
        return
    from xds_server.explain_text import render  # only this command needs it

    click.echo(render(doc))


@_command("table", "json")
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N events.")
@click.option("--follow", "-f", is_flag=True, help="Keep polling; print new and updated events.")
@click.option(
    "--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
    help="With --follow: seconds between polls.",
)  # fmt: skip
@click.option(
    "--for", "follow_for", type=click.FloatRange(min=0), metavar="SECONDS",
    help="With --follow: stop after this long (default: until interrupted).",
)  # fmt: skip
def events(
    client: Client,
    limit: int | None,
    follow: bool,
    interval: float,
    follow_for: float | None,
    output: str,
) -> None:
    """Registry and policy changes followed to every proxy: seen, pushed, ACKed by n of
    m proxies, convergence p50/p99/max, NACKs with Envoy's error, proxies pending."""
    from xds_server import events_report as report

    limit_param = None if limit is None else str(limit)
    if follow:
        try:
            _follow_events(client, limit_param, interval, follow_for, output)
        except KeyboardInterrupt:
            pass
        return
    doc = client.get("/debug/events", limit=limit_param)
    if output == "json":
        _dump(doc, output)
    elif not doc.get("events"):
        click.echo("no events")
    else:
        found = doc["events"]
        rows = [report.row(e) for e in found]
        _echo_table(report.HEADERS, rows, [report.notes(e) for e in found])


def _follow_events(
    client: Client, limit: str | None, interval: float, follow_for: float | None, output: str
) -> None:
    """Poll /debug/events; print each event when it is new or its row changed (table:
    fixed-width lines under one header; json: one document per line)."""
    import time

    from xds_server import events_report as report

    shown: dict[int, Any] = {}
    if output == "table":
        click.echo(report.follow_line(report.HEADERS))
    deadline = None if follow_for is None else time.monotonic() + follow_for
    while True:
        for e in client.get("/debug/events", limit=limit).get("events", []):
            now = (report.row(e), report.notes(e)) if output == "table" else e
            if shown.get(e["id"]) == now:
                continue
            shown[e["id"]] = now
            if output == "json":
                click.echo(json.dumps(e, separators=(",", ":")))
                continue
            click.echo(report.follow_line(report.row(e)))
            for note in report.notes(e):
                click.echo(note)
        if deadline is not None and time.monotonic() >= deadline:
            return
        left = interval if deadline is None else deadline - time.monotonic()
        time.sleep(max(0.0, min(interval, left)))
