"""``waypost keygen``: a new gossip encryption key (base64 of 32 random bytes), as Consul's."""

from __future__ import annotations

import base64
import secrets
from types import SimpleNamespace

from gateway.cli.commands import Command, Context
from gateway.cli.flags import FlagSet

__all__ = ["COMMAND", "new_key"]

KEY_BYTES = 32  # AES-256, what Consul 1.8.7's keygen makes


def new_key() -> str:
    """A fresh key for `encrypt` or `waypost keyring -install`."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _run(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    ctx.out(new_key())  # extra arguments are ignored, as by Consul's keygen
    return 0


COMMAND = Command(
    name="keygen",
    synopsis="Generates a new encryption key",
    usage="""
Usage: waypost keygen

  Generates a new 32-byte encryption key that can be used to configure the
  agent to encrypt traffic. The output of this command is already
  in the proper format that the agent expects.
""",
    flags=lambda: FlagSet("keygen"),
    run=_run,
)
