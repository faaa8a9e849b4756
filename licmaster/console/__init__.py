"""The operator's console, in the master's process and loop, above the daemon: a JSON API under
/api/v1/, Prometheus metrics at /metrics, the live dashboard (docs/admin-api.md), and the usage
report from the journal. Nothing here is on the PBXs' request path: it renders `Master.status()`
when asked, and the daemon never imports it."""
