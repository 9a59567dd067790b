"""Drive HAProxy from the Waypost catalog through its runtime API (see docs/haproxy.md).

The entry point is `plugins.haproxy.plugin`; this package imports nothing from the host but
`gateway.hookspecs`.
"""
