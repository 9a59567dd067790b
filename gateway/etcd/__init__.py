"""The etcd v2 API as a frontend of its own: ``/v2/keys`` over the KV store, and the cluster
endpoints etcd clients ask first (``/v2/members``, ``/v2/machines``, ``/version``, ``/health``).

It adds its routes to the HTTP API through the `waypost_http_routes` hook (`plugin`), reads
through ``facade.read`` (`reads`) and writes through ``facade.write`` (`keys`, `ttl`), like any
third-party frontend. `tree` is the pure mapping between etcd nodes and KV rows.
"""
