"""Durable Raft storage: a segmented write-ahead log plus atomic snapshot files.

This package is the only file IO of the Raft layer. :class:`~.disk.DiskStorage`
is the production implementation; :class:`hacoord.sim.disk.SimDisk` implements the
same :class:`~.base.LogStorage` protocol in memory for the simulator.
"""
