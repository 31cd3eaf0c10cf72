"""Decoding `pre` records from request bytes into `ServiceError`s a caller can act on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pre

from ..errors import Code, ServiceError

R = TypeVar("R")

Clock = Callable[[], float]


def decode(decoder: Callable[[bytes], R], data: bytes, what: str) -> R:
    try:
        return decoder(data)
    except pre.PreError as exc:
        raise ServiceError(Code.MALFORMED, f"{what} is not a valid encoding") from exc


@contextmanager
def verifying(what: str) -> Iterator[None]:
    """Any `PreError` inside becomes INVALID_RECORD naming `what` (no internals)."""
    try:
        yield
    except pre.CertificateError as exc:
        raise ServiceError(Code.INVALID_RECORD, f"{what}: certificate not valid now") from exc
    except pre.PreError as exc:
        raise ServiceError(Code.INVALID_RECORD, f"{what} does not verify") from exc
