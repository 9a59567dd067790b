"""The Raft log: the interface the core talks to (`interface`), its one-member implementation
(`single`), a write-ahead log of entries (`wal`, its file work in `disk`, its on-disk format in
`records`) and the snapshots that let it be compacted (`snapshots`)."""
