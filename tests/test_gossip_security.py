"""memberlist's keyring rules and AES-GCM envelope (security.go, keyring.go in 0.2.2). Byte
equality with memberlist's own ciphertexts is in test_gossip_codec (golden vectors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings, strategies as st

from agent.gossip import codec, security
from agent.gossip.security import GossipDecryptError, Keyring, KeyringError

K16, K24, K32 = b"a" * 16, b"b" * 24, b"c" * 32
NONCE = bytes(range(12))


def test_keyring_construction_rules():
    assert Keyring().keys == () and not Keyring() and Keyring().primary_key is None
    ring = Keyring([K24, K32, K16], primary=K16)
    assert ring.keys == (K16, K24, K32) and ring.primary_key == K16 and ring
    with pytest.raises(KeyringError, match="primary"):
        Keyring([K16])
    with pytest.raises(KeyringError, match="16, 24 or 32"):
        Keyring(primary=b"short")


def test_keyring_install_use_remove():
    ring = Keyring(primary=K16)
    ring.add_key(K32)
    ring.add_key(K32)  # already installed: no-op
    assert ring.keys == (K16, K32)
    ring.use_key(K32)
    assert ring.keys == (K32, K16)
    with pytest.raises(KeyringError, match="not in the keyring"):
        ring.use_key(K24)
    with pytest.raises(KeyringError, match="primary"):
        ring.remove_key(K32)
    ring.remove_key(K24)  # unknown: no-op, as memberlist
    ring.remove_key(K16)
    assert ring.keys == (K32,)
    with pytest.raises(KeyringError):
        ring.add_key(b"x" * 20)


def test_first_key_added_to_empty_ring_is_primary():
    ring = Keyring()
    ring.add_key(K24)
    ring.add_key(K16)
    assert ring.primary_key == K24
    with pytest.raises(KeyringError):
        Keyring().remove_key(K16)


def test_repr_never_shows_keys():
    assert "a" * 16 not in repr(Keyring(primary=K16)) and "61" * 16 not in repr(Keyring(primary=K16))


def test_versions_and_sizes():
    assert security.encryption_version(1) == 0
    assert [security.encryption_version(v) for v in (2, 3, 4, 5)] == [1, 1, 1, 1]
    assert security.encrypt_overhead(0) == 45 and security.encrypt_overhead(1) == 29
    assert security.encrypted_length(1, 10) == 39
    assert security.encrypted_length(0, 16) == 1 + 12 + 32 + 16  # a full block of padding
    for version in (0, 1):
        for size in (0, 1, 15, 16, 17, 100):
            sealed = security.encrypt_payload(version, K16, b"x" * size, nonce=NONCE)
            assert len(sealed) == security.encrypted_length(version, size)
            assert sealed[0] == version and sealed[1:13] == NONCE


@pytest.mark.parametrize("key", [K16, K24, K32])
@pytest.mark.parametrize("version", [0, 1])
def test_round_trip_every_key_size_and_version(key, version):
    sealed = security.encrypt_payload(version, key, b"hello gossip", b"aad")
    assert security.decrypt_payload([K16, K24, K32], sealed, b"aad") == b"hello gossip"
    with pytest.raises(GossipDecryptError):
        security.decrypt_payload([key], sealed, b"other aad")


def test_version_zero_matches_pkcs7_then_gcm():
    sealed = security.encrypt_payload(0, K16, b"abc", nonce=NONCE)
    assert sealed[13:] == AESGCM(K16).encrypt(NONCE, b"abc" + b"\x0d" * 13, None)


def test_secondary_keys_open_and_wrong_keys_refused():
    sealed = security.encrypt_payload(1, K24, b"m")
    assert security.decrypt_payload([K16, K24], sealed) == b"m"
    with pytest.raises(GossipDecryptError, match="no installed keys"):
        security.decrypt_payload([K16, K32], sealed)
    with pytest.raises(GossipDecryptError, match="no installed keys"):
        security.decrypt_payload([], sealed)


@pytest.mark.parametrize("data, match", [(b"", "empty"), (b"\x02" + b"\0" * 40, "version"),
                                         (b"\x01" + b"\0" * 20, "too small"), (b"\x00" + b"\0" * 40, "too small")])
def test_malformed_envelopes(data, match):
    with pytest.raises(GossipDecryptError, match=match):
        security.decrypt_payload([K16], data)


def test_version_zero_bad_padding_refused():
    bad = b"\x00" + NONCE + AESGCM(K16).encrypt(NONCE, b"x" * 15 + b"\x40", None)
    with pytest.raises(GossipDecryptError, match="padding"):
        security.decrypt_payload([K16], bad)


def test_envelope_seals_with_primary_and_opens_with_any():
    ring = Keyring([K32], primary=K16)
    envelope = security.Envelope(ring, version=1, nonce_source=lambda n: NONCE)
    sealed = envelope.seal(b"p")
    assert security.decrypt_payload([K16], sealed) == b"p"
    assert envelope.sealed_length(1) == len(sealed) and envelope.overhead() == 29
    ring.use_key(K32)
    assert envelope.open(sealed) == b"p"
    with pytest.raises(KeyringError):
        security.Envelope(Keyring()).seal(b"p")


def test_golden_ciphertexts_open():
    """Every encrypted vector memberlist made opens with its key through our envelope."""
    vectors = json.loads((Path(__file__).parent / "data/gossip/go_vectors.json").read_text())["vectors"]
    import base64
    opened = 0
    for vector in vectors:
        if vector.get("key") and vector["kind"] == "packet":
            data = bytes.fromhex(vector["hex"])
            assert security.decrypt_payload([base64.b64decode(vector["key"])], data)
            opened += 1
    assert opened >= 3


def test_decrypt_error_is_a_decode_error():
    assert issubclass(GossipDecryptError, codec.GossipDecodeError)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_junk_raises_only_decrypt_error(data):
    try:
        security.decrypt_payload([K16, K32], data)
    except GossipDecryptError:
        pass
