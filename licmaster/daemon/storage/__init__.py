"""What a master keeps on disk: the journal of what happened (journal.py), what must last (store.py:
user assignments, hardware ever installed, the epoch), and the data directory's lock (datadir.py)."""
