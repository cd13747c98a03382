"""Adapters that run failover workflows on top of the coordination API."""
