"""Errors of the mls-rs store (`client_sdk.mlsrs`), in the SDK's family."""

from __future__ import annotations

from ..errors import StatecacheError

__all__ = ["StateFormatError", "StoreError"]


class StoreError(StatecacheError):
    """The store's local files are damaged, or a backup this device wrote does not open."""


class StateFormatError(StoreError, ValueError):
    """Group state bytes that are not of the layout of the pinned mls-rs binding."""
