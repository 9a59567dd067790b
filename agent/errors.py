"""Domain exceptions of the core.

Frontends map these to their own error forms (an HTTP status, a DNS rcode) in one table each;
the core never knows about status codes.
"""


class WaypostError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidRequest(WaypostError):
    """The request is malformed or names a field wrongly; the message names the field."""


class NotFound(WaypostError):
    """The named object does not exist."""


class PermissionDenied(WaypostError):
    """The token may not do this."""


class UnknownDatacenter(WaypostError):
    """A request named a datacenter this agent has no path to."""

    def __init__(self, dc: str) -> None:
        super().__init__("No path to datacenter")
        self.dc = dc


class NoLeader(WaypostError):
    """No cluster leader is known; consistent reads and writes cannot proceed."""

    def __init__(self) -> None:
        super().__init__("No cluster leader")


class NoServers(WaypostError):
    """A client agent knows no server to send a request to (Consul's text)."""

    def __init__(self) -> None:
        super().__init__("No known Consul servers")


class UnknownCommand(WaypostError):
    """A log entry carries a command type this server does not know; replicas must not diverge."""
