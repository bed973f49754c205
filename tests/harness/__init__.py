"""Reusable test harness: real Envoy, loopback backends, proxyless gRPC clients.

Pure test utilities; nothing here imports the server's code (or ``envoy``).
``tests/`` is a package, so pytest puts the project root on ``sys.path``: import
``tests.harness.envoy`` etc.; fixtures: ``pytest_plugins = ["tests.harness.fixtures"]``.

Modules:

- ``ports``: free_port; ``waiting``: wait_for, async_wait_for, GiveUp, running_task;
- ``lifecycle``: StartStop, Leftovers; ``loop_thread``: LoopThread (a loop on a thread);
- ``server_proc``: XdsServerProcess, run_xdsctl, script, stop_process, snapshot_endpoints;
- ``xds``: XdsServerThread (the gRPC server in-process); ``admin_state``: hand-made
  admin-server state;
- ``envoy``: EnvoyProcess, envoy_binary, bootstrap, static_bootstrap, validate_bootstrap;
- ``backends``: HttpBackend, GrpcBackend, RequestLoop, http_get, grpc_whoami;
- ``grpc_xds``: GrpcXdsClient, grpc_bootstrap (runs ``grpc_client_main.py``);
- ``kubeapi``: the kmock Kubernetes API;
- ``fixtures``, ``kube_fixtures``: factory fixtures that stop everything at teardown;
- ``e2e``: what the end-to-end tests share (traffic switches, Envoy counters, proxy
  sync, ``Mesh``).
"""
