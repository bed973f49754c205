"""Workload identity: SPIFFE IDs, the built-in CA and its command line (issue 13).

Model-free: nothing here knows registries, translators or the serving core, so the CA can
be used by the xDS port's TLS, by SDS and by the `xds-server ca` command alike.
"""
