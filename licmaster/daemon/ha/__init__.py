"""High availability: the standby master's replication and takeover (replication.py), leadership
held in etcd (etcd.py, leadership.py), who held what before (recovery.py), and the one owner of
role changes after start and of the grace window (failover.py)."""
