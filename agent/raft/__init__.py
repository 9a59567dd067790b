"""The durable Raft log: a write-ahead log of entries (`wal`), its on-disk format (`records`)
and the snapshots that let it be compacted (`snapshots`)."""
