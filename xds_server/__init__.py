"""xds-server: an Envoy xDS control plane (SotW and delta ADS) for Envoy and proxyless gRPC."""

__version__ = "0.1.0"
