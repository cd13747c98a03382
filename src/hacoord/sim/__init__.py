"""Deterministic cluster simulator for the Raft core."""
