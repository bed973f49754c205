"""Pure functions from the registry model to Envoy resources."""
