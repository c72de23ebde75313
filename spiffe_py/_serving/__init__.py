"""Serving-side helpers shared by spiffe-server and spiffe-agent (not part of the workload library API).

- :mod:`.limits`: gRPC message size limits enforced on the length prefix, before buffering.
- :mod:`.connections`: per-peer connection caps, TLS handshake and idle timeouts, RLIMIT_NOFILE.
- :mod:`.logs`: a logging filter that collapses floods of repeated warnings and errors.
- :mod:`.buckets`: the token bucket of both rate limits (server per agent, agent per identity), an LRU table.
"""
