"""The master daemon: lifecycle, role, dispatch, sessions, the asyncio glue, replication, the
journal, the store, recovery, config and logs."""
