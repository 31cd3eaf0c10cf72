"""Content-Digest field values (RFC 9530)."""

from __future__ import annotations

from pre import content_digest


def test_rfc_9530_example() -> None:
    """RFC 9530 §2: the sha-256 digest of the body {"hello": "world"}."""
    body = b'{"hello": "world"}'
    assert content_digest(body) == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"


def test_empty_body() -> None:
    assert content_digest(b"") == "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"
