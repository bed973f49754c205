"""Proxyless gRPC xDS client loop, run as its own process by ``GrpcXdsClient``.

gRPC reads ``GRPC_XDS_BOOTSTRAP`` (or ``GRPC_XDS_BOOTSTRAP_CONFIG``) once per
process, so every simulated client is a separate process.

Usage: ``python grpc_client_main.py TARGET [INTERVAL_S] [TIMEOUT_S] [METADATA_JSON]``,
e.g. ``xds:///web``. Calls ``/xdstest.Echo/Whoami`` every INTERVAL_S (default 0.05)
and prints one JSON line per call: ``{"ok": true, "body": "b1"}`` or
``{"ok": false, "code": "UNAVAILABLE", "error": "..."}``, with ``dt``, the call's
duration in seconds. With ``XDSTEST_XDS_CREDENTIALS=1`` in the environment the channel
uses ``grpc.xds_channel_credentials`` (TLS as the xDS cluster says, else insecure; gRFC
A29) instead of insecure credentials. METADATA_JSON is a list of objects (header → value): the calls
send each in turn, and each line names the one it sent as ``md``. Exits when its
parent process goes away or on SIGTERM.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time

import grpc
import grpc.experimental

WHOAMI_METHOD = "/xdstest.Echo/Whoami"
XDS_CREDENTIALS_ENV = "XDSTEST_XDS_CREDENTIALS"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    target = argv[1]
    interval = float(argv[2]) if len(argv) > 2 else 0.05
    timeout = float(argv[3]) if len(argv) > 3 else 2.0
    metadata: list[dict[str, str]] = json.loads(argv[4]) if len(argv) > 4 else []
    sets = itertools.cycle(metadata) if metadata else itertools.repeat(None)
    parent = os.getppid()
    if os.environ.get(XDS_CREDENTIALS_ENV) == "1":
        fallback = grpc.experimental.insecure_channel_credentials()
        channel = grpc.secure_channel(target, grpc.xds_channel_credentials(fallback))
    else:
        channel = grpc.insecure_channel(target)
    call = channel.unary_unary(WHOAMI_METHOD)
    print(json.dumps({"started": True, "target": target, "pid": os.getpid()}), flush=True)
    try:
        while os.getppid() == parent:
            started = time.monotonic()
            line: dict[str, object]
            md = next(sets)
            try:
                reply: bytes = call(b"", timeout=timeout, metadata=tuple((md or {}).items()))
                line = {"ok": True, "body": reply.decode()}
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.Call) else None
                details = err.details() if isinstance(err, grpc.Call) else str(err)
                line = {
                    "ok": False,
                    "code": code.name if code is not None else "UNKNOWN",
                    "error": details or "",
                }
            except Exception as exc:
                line = {"ok": False, "code": "CLIENT", "error": f"{type(exc).__name__}: {exc}"}
            line["t"] = round(time.time(), 3)
            line["dt"] = round(time.monotonic() - started, 4)
            if md is not None:
                line["md"] = md
            print(json.dumps(line), flush=True)
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
