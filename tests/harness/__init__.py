"""Reusable test harness: real Envoy, loopback backends, proxyless gRPC clients.

Pure test utilities; nothing here imports the server's code (or ``envoy``).
``tests/`` is a package, so pytest puts the project root on ``sys.path``: import
``tests.harness.envoy`` etc.; fixtures: ``pytest_plugins = ["tests.harness.fixtures"]``.

Modules: ``ports`` (free_port), ``waiting`` (wait_for, async_wait_for),
``envoy`` (EnvoyProcess, bootstrap, static_bootstrap, validate_bootstrap),
``backends`` (HttpBackend, GrpcBackend, RequestLoop, http_get, grpc_whoami),
``grpc_xds`` (GrpcXdsClient, grpc_bootstrap; runs ``grpc_client_main.py``),
``fixtures`` (factory fixtures that stop everything at teardown).
"""
