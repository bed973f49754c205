"""An xDS-managed gRPC server (gRFC A36), run as its own process by ``GrpcXdsServer``.

grpcio's xDS server exists only in the sync stack (``grpc.server(..., xds=True)``) and
reads ``GRPC_XDS_BOOTSTRAP`` once per process, so every server is a separate process.

Usage: ``python grpc_server_main.py NAME PORT [MAX_CONNECTION_AGE_MS]``. Serves
``/xdstest.Echo/Whoami`` on 127.0.0.1:PORT with ``xds_server_credentials`` (fallback:
insecure). The reply is one JSON object, ``{"name": NAME, "peer": <caller's SPIFFE ID
or "">, "serial": <caller's certificate serial, hex, or "">}``, so a test sees whether
the call was mutual TLS and with which certificate. Prints ``{"started": true}`` once
bound; exits when its parent process goes away or on SIGTERM. MAX_CONNECTION_AGE_MS
makes clients reconnect that often (a graceful GOAWAY), so new handshakes show rotated
certificates.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent import futures
from typing import Any

import grpc
from cryptography import x509


def _peer(context: Any) -> tuple[str, str]:
    pems = context.auth_context().get("x509_pem_cert") or []
    if not pems:
        return "", ""
    cert = x509.load_pem_x509_certificate(pems[0])
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return (uris[0] if uris else ""), f"{cert.serial_number:x}"


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    name, port = argv[1], int(argv[2])

    def whoami(request: bytes, context: Any) -> bytes:
        peer, serial = _peer(context)
        return json.dumps({"name": name, "peer": peer, "serial": serial}).encode()

    handler = grpc.method_handlers_generic_handler(
        "xdstest.Echo", {"Whoami": grpc.unary_unary_rpc_method_handler(whoami)}
    )
    options = []
    if len(argv) == 4:
        options = [
            ("grpc.max_connection_age_ms", int(argv[3])),
            ("grpc.max_connection_age_grace_ms", 10_000),
        ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=options, xds=True)
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.xds_server_credentials(grpc.insecure_server_credentials())
    server.add_secure_port(f"127.0.0.1:{port}", credentials)
    server.start()
    print(json.dumps({"started": True, "pid": os.getpid()}), flush=True)
    parent = os.getppid()
    try:
        while os.getppid() == parent:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
