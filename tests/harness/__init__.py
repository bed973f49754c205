"""Reusable test harness: real Envoy, loopback backends, proxyless gRPC clients.

Pure test utilities; nothing here imports the server's code.
"""
