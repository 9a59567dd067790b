"""memberlist's keyring and AES-GCM envelope (security.go, keyring.go in 0.2.2).

Sealed bytes are: version byte, 12-byte nonce, then AES-GCM ciphertext with its 16-byte tag.
Version 0 pads the plaintext PKCS#7-style to 16 bytes before sealing; version 1 does not.
memberlist sends version 0 only when it speaks protocol 1, else 1; it opens both. The key size
(16, 24 or 32 bytes) picks AES-128/192/256. Packets are sealed with no associated data; a stream
frame uses its own 5-byte header (encryptMsg, big-endian length) as associated data. 0.2.2 has no
labels. The first key in the ring is the primary: the only one used to seal, the first tried to
open. Key bytes are never logged or put in exception messages.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.gossip.codec import GossipDecodeError

NONCE_SIZE = 12
TAG_SIZE = 16
_BLOCK = 16
_VERSION_SIZE = 1
MAX_ENCRYPTION_VERSION = 1


class GossipDecryptError(GossipDecodeError):
    """No installed key opens the message, or it is not an encrypted message at all."""


class KeyringError(ValueError):
    """A key or keyring operation memberlist refuses (bad size, unknown key, primary removal)."""


def validate_key(key: bytes) -> None:
    if len(key) not in (16, 24, 32):
        raise KeyringError("key size must be 16, 24 or 32 bytes")


def encryption_version(protocol_version: int) -> int:
    """The envelope version memberlist sends when it speaks `protocol_version`."""
    return 0 if protocol_version == 1 else 1


def encrypt_overhead(version: int) -> int:
    """The most bytes sealing adds (what sendMsg reserves in a packet)."""
    return _VERSION_SIZE + NONCE_SIZE + TAG_SIZE + (_BLOCK if version == 0 else 0)


def encrypted_length(version: int, size: int) -> int:
    """The exact sealed size of `size` plaintext bytes."""
    padding = 0 if version >= 1 else _BLOCK - size % _BLOCK
    return _VERSION_SIZE + NONCE_SIZE + size + padding + TAG_SIZE


def encrypt_payload(version: int, key: bytes, msg: bytes, associated: bytes = b"", *,
                    nonce: bytes | None = None) -> bytes:
    """`msg` sealed under `key`; `nonce` only for reproducible tests (random otherwise)."""
    if version not in (0, 1):
        raise ValueError(f"unsupported encryption version {version}")
    validate_key(key)
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    if len(nonce) != NONCE_SIZE:
        raise ValueError("nonce must be 12 bytes")
    if version == 0:
        pad = _BLOCK - len(msg) % _BLOCK
        msg = msg + bytes((pad,)) * pad
    return bytes((version,)) + nonce + AESGCM(key).encrypt(nonce, msg, associated or None)


def decrypt_payload(keys: Iterable[bytes], data: bytes, associated: bytes = b"") -> bytes:
    """The plaintext of sealed `data`, trying every key in order; GossipDecryptError if none
    opens it."""
    if not data:
        raise GossipDecryptError("cannot decrypt empty payload")
    version = data[0]
    if version > MAX_ENCRYPTION_VERSION:
        raise GossipDecryptError(f"unsupported encryption version {version}")
    if len(data) < encrypted_length(version, 0):
        raise GossipDecryptError(f"payload is too small to decrypt: {len(data)}")
    nonce = data[_VERSION_SIZE:_VERSION_SIZE + NONCE_SIZE]
    sealed = data[_VERSION_SIZE + NONCE_SIZE:]
    for key in keys:
        try:
            plain = AESGCM(key).decrypt(nonce, sealed, associated or None)
        except (InvalidTag, ValueError):
            continue
        if version == 0:
            # memberlist trusts the last byte as the pad length (the tag vouched for it).
            if plain and plain[-1] <= len(plain):
                return plain[:len(plain) - plain[-1]]
            raise GossipDecryptError("bad padding in version 0 payload")
        return plain
    raise GossipDecryptError("no installed keys could decrypt the message")


class Keyring:
    """memberlist's Keyring: the primary key first, then the others, no duplicates. Mutable,
    owned by one agent (keys rotate through Serf queries at run time)."""

    def __init__(self, keys: Iterable[bytes] = (), primary: bytes | None = None) -> None:
        self._keys: list[bytes] = []
        keys = [bytes(k) for k in keys]
        if keys or primary:
            if not primary:
                raise KeyringError("empty primary key not allowed")
            for key in [bytes(primary), *keys]:
                self.add_key(key)

    @property
    def keys(self) -> tuple[bytes, ...]:
        return tuple(self._keys)

    @property
    def primary_key(self) -> bytes | None:
        return self._keys[0] if self._keys else None

    def __bool__(self) -> bool:
        """Whether encryption is on (memberlist's EncryptionEnabled)."""
        return bool(self._keys)

    def __repr__(self) -> str:
        return f"<Keyring keys={len(self._keys)}>"  # never the key bytes

    def add_key(self, key: bytes) -> None:
        """Install `key` for opening messages; it becomes primary only in an empty ring."""
        validate_key(key)
        if bytes(key) not in self._keys:
            self._keys.append(bytes(key))

    def use_key(self, key: bytes) -> None:
        """Make an installed key the primary (peers should already have it)."""
        if bytes(key) not in self._keys:
            raise KeyringError("requested key is not in the keyring")
        self._keys.remove(bytes(key))
        self._keys.insert(0, bytes(key))

    def remove_key(self, key: bytes) -> None:
        """Drop a key; removing the primary is refused, an unknown key is a no-op."""
        if not self._keys or bytes(key) == self._keys[0]:
            raise KeyringError("removing the primary key is not allowed")
        if bytes(key) in self._keys:
            self._keys.remove(bytes(key))


class Envelope:
    """A keyring bound to the envelope version this node sends: the codec's `Sealer`."""

    def __init__(self, keyring: Keyring, version: int = 1,
                 nonce_source: Callable[[int], bytes] = os.urandom) -> None:
        if version not in (0, 1):
            raise ValueError(f"unsupported encryption version {version}")
        self.keyring, self.version, self._nonce = keyring, version, nonce_source

    def seal(self, plain: bytes, associated: bytes = b"") -> bytes:
        key = self.keyring.primary_key
        if key is None:
            raise KeyringError("the keyring is empty")
        return encrypt_payload(self.version, key, plain, associated, nonce=self._nonce(NONCE_SIZE))

    def open(self, sealed: bytes, associated: bytes = b"") -> bytes:
        return decrypt_payload(self.keyring.keys, sealed, associated)

    def sealed_length(self, size: int) -> int:
        return encrypted_length(self.version, size)

    def overhead(self) -> int:
        return encrypt_overhead(self.version)
