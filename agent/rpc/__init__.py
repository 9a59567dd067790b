"""The server side of the core: typed reads and writes, their options, blocking queries,
and the endpoints that answer them (named as Consul's RPC endpoints)."""
