"""Registry sources: each turns one registry into the registry-neutral model."""
