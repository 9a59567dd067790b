"""Check runners: HTTP, TCP, gRPC, script, Docker and alias checks, reporting through
`CheckNotifier`.

`factory.make_runner(spec, reactor, notifier, ...)` picks and builds the runner for a check;
`base` holds the shared run loop and Consul's output-capping rules. TTL checks have no runner:
the local state expires them. Each module owns one kind of check.
"""
