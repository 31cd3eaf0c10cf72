"""A device's own MLS state, sealed so that only that device opens it.

The state of an MLS member holds its signature secret key: whoever opens it is that
member. So it is not sealed under a label's KEK (every device of the account holds those)
but under a key derived from the device's own secret key material: another device of the
account, even holding the account seed, cannot open it.

- address: the device id, then the first 16 bytes of SHA-256 over a domain label, the
  device id and the MLS group id (length-prefixed): the snapshot group id under which the
  backup is stored, of kind `OWN_STATE_KIND`. It does not show nodes the MLS group id, and
  it is the device's own: nodes store an `OWN_STATE_KIND` snapshot only from the device its
  address begins with (`owns_own_state_address`), so another device of the account, which
  holds the same KEKs and can derive the address, cannot publish there a newer epoch that
  would hide this device's backups and refuse its next ones;
- sealed: a version byte, a random 12-byte nonce, AES-256-GCM under
  HKDF(device secrets, "own-state-key") with associated data binding the version, the
  address and the MLS epoch (a backup served for another group or epoch does not open).
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import _primitives as prim
from .errors import DecodeError, DecryptionError, translate
from .keys import DEVICE_ID_SIZE, DeviceSecrets
from .snapshots import MAX_SNAPSHOT_PLAINTEXT

__all__ = [
    "MAX_OWN_STATE_PLAINTEXT",
    "OWN_STATE_ADDRESS_SIZE",
    "OWN_STATE_KIND",
    "open_own_state",
    "own_state_address",
    "owns_own_state_address",
    "seal_own_state",
]

OWN_STATE_ADDRESS_SIZE = 32
# The snapshot kind of a device's own MLS state, which nodes bind to its address's device.
OWN_STATE_KIND = "mls_state"
_VERSION = 1
_NONCE_SIZE = 12
_TAG_SIZE = 16
_OVERHEAD = 1 + _NONCE_SIZE + _TAG_SIZE
# Sealed, it still fits in one snapshot.
MAX_OWN_STATE_PLAINTEXT = MAX_SNAPSHOT_PLAINTEXT - _OVERHEAD
_MAX_GROUP_ID = 1024


def own_state_address(device_id: bytes, mls_group_id: bytes) -> bytes:
    """The snapshot group id of this device's backup of one MLS group (32 bytes)."""
    if len(device_id) != DEVICE_ID_SIZE:
        raise ValueError(f"a device id is {DEVICE_ID_SIZE} bytes")
    if not 1 <= len(mls_group_id) <= _MAX_GROUP_ID:
        raise ValueError(f"an MLS group id here is 1 to {_MAX_GROUP_ID} bytes")
    hashed = prim.digest("own-state-address", device_id, mls_group_id)
    return device_id + hashed[: OWN_STATE_ADDRESS_SIZE - DEVICE_ID_SIZE]


def owns_own_state_address(device_id: bytes, address: bytes) -> bool:
    """Whether `address` is one of `device_id`'s own-state addresses (what a node checks
    of an `OWN_STATE_KIND` snapshot against its author)."""
    return len(address) == OWN_STATE_ADDRESS_SIZE and address[:DEVICE_ID_SIZE] == device_id


def _key(device: DeviceSecrets) -> bytes:
    # Both secrets: the key is as hard to get as the device itself. A label of its own, so
    # it is independent of every other key derived from them.
    return prim.hkdf(device.signing_seed + device.pre_secret, salt=None, info="own-state-key")


def _associated_data(address: bytes, mls_epoch: int) -> bytes:
    if not 0 <= mls_epoch < 1 << 64:
        raise ValueError("MLS epoch out of range")
    return prim.digest("own-state", bytes([_VERSION]), address, mls_epoch.to_bytes(8, "big"))


def seal_own_state(
    device: DeviceSecrets, address: bytes, mls_epoch: int, plaintext: bytes
) -> bytes:
    """`plaintext` sealed for `device` alone, bound to `address` and `mls_epoch`."""
    if len(address) != OWN_STATE_ADDRESS_SIZE:
        raise ValueError(f"an own-state address is {OWN_STATE_ADDRESS_SIZE} bytes")
    if len(plaintext) > MAX_OWN_STATE_PLAINTEXT:
        raise ValueError("own state too large")
    nonce = os.urandom(_NONCE_SIZE)
    ciphertext = AESGCM(_key(device)).encrypt(
        nonce, plaintext, _associated_data(address, mls_epoch)
    )
    return bytes([_VERSION]) + nonce + ciphertext


def open_own_state(device: DeviceSecrets, address: bytes, mls_epoch: int, sealed: bytes) -> bytes:
    """The plaintext `seal_own_state` sealed for `device` at (`address`, `mls_epoch`).

    `DecodeError` for bytes that are not a sealed own state of this version;
    `DecryptionError` for another device's, another address's or epoch's, or altered bytes.
    """
    if len(sealed) < _OVERHEAD or len(sealed) > MAX_SNAPSHOT_PLAINTEXT:
        raise DecodeError("sealed own state of impossible size")
    if sealed[0] != _VERSION:
        raise DecodeError(f"sealed own state of unknown version {sealed[0]}")
    nonce, ciphertext = sealed[1 : 1 + _NONCE_SIZE], sealed[1 + _NONCE_SIZE :]
    ad = _associated_data(address, mls_epoch)
    with translate(DecryptionError, "own state does not open for this device"):
        return AESGCM(_key(device)).decrypt(nonce, ciphertext, ad)
