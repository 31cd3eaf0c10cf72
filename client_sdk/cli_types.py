"""Argument types of the `statecache` command line: a bad value is a usage error (exit 2)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

import pre

__all__ = ["fingerprint", "hex_bytes", "int_at_least", "kind", "seconds", "url"]

_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")


def hex_bytes(
    size: int | None = None, max_size: int = pre.MAX_GROUP_ID_SIZE
) -> Callable[[str], bytes]:
    def parse(text: str) -> bytes:
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not hexadecimal: {text!r}") from None
        if size is not None and len(value) != size:
            raise argparse.ArgumentTypeError(f"need {size} bytes ({2 * size} hex digits)")
        if not 1 <= len(value) <= max_size:
            raise argparse.ArgumentTypeError(f"need 1 to {max_size} bytes")
        return value

    return parse


def url(text: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    return text.rstrip("/")


def kind(text: str) -> str:
    if not _KIND.fullmatch(text):
        raise argparse.ArgumentTypeError("a kind is [a-z][a-z0-9_]*, at most 32 characters")
    return text


def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more")
        if value >= 1 << 64:
            raise argparse.ArgumentTypeError("too large")
        return value

    return parse


def fingerprint(text: str) -> str:
    digits = re.sub(r"[\s-]", "", text)
    if not re.fullmatch(r"[0-9]{30}", digits):
        raise argparse.ArgumentTypeError("a fingerprint is 30 digits (six groups of five)")
    return text


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError("between 0 and 86400 seconds")
    return value
