"""Tools for tests and benchmarks of hacoord deployments (not used by the library itself)."""
