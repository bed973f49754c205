"""Shared pytest configuration: make the project root importable for `tests.*` helpers."""
