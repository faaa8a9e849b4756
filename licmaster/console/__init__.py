"""The operator's console, in the master's process and loop: a JSON API under /api/v1/, Prometheus
metrics at /metrics (docs/admin-api.md). Nothing here is on the PBXs' request path: it reads the
master's state when asked."""
