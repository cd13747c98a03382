"""The runnable member: a RaftNode with TCP transport, HTTP API and a KV state machine."""
