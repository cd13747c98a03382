"""The Raft layer: a pure core (:mod:`hacoord.raft.core`) and the code that drives it."""
