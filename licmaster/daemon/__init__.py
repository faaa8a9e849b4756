"""The master daemon: lifecycle, role, dispatch, sessions, the asyncio glue and the master's status;
`ha/` (standby masters, etcd, the grace window, taking over and giving way) and `storage/` (the
journal, the durable store, the data directory's lock). The console sits above it (licmaster/console/)."""
