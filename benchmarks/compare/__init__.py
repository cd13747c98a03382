"""Side-by-side benchmark of hacoord, etcd and PySyncObj (``python -m benchmarks.compare``)."""
