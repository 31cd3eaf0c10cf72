"""Hypothesis strategies for every `pre` record, derived from its field specs.

Each field's strategy follows its `wire(...)` spec in `pre/_codec.py` (integer widths,
fixed sizes, vector bounds, text patterns, enumerations, optional and nested values);
records with cross-field rules (`__post_init__`) get those few fields drawn together.
Values are valid field contents, not valid cryptography: a generated certificate's
signature does not verify, which the codec neither knows nor cares about.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import strategies as st

from pre import (
    AccountManifest,
    DeviceKeys,
    DeviceSecrets,
    EnrollmentRequest,
    GrantShare,
    ManifestNode,
    ManifestUpdate,
    SnapshotHeader,
    label_for_group,
)
from pre._codec import Enum8, Fixed, Maybe, Nested, Opaque, Record, Seq, Spec, Text, UInt
from pre.keystore import _PassphraseBox

# Long vectors are legal but slow to generate and add nothing past a few hundred bytes.
MAX_GENERATED_BYTES = 300
MAX_GENERATED_ITEMS = 4
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def for_spec(spec: Spec[Any]) -> st.SearchStrategy[Any]:
    match spec:
        case UInt():
            return st.integers(0, spec.limit - 1)
        case Fixed():
            return st.binary(min_size=spec.size, max_size=spec.size)
        case Opaque():
            upper = min(spec.max_size, max(spec.min_size, MAX_GENERATED_BYTES))
            return st.binary(min_size=spec.min_size, max_size=upper)
        case Text():
            limit = spec.max_bytes
            return st.from_regex(spec.pattern, fullmatch=True).filter(
                lambda s: len(s.encode()) <= limit
            )
        case Enum8():
            return st.sampled_from(list(spec.cls))
        case Maybe():
            return st.none() | for_spec(spec.inner)
        case Seq():
            inner = for_spec(spec.inner)
            size = min(spec.max_items, MAX_GENERATED_ITEMS)
            return st.lists(inner, max_size=size).map(tuple)
        case Nested():
            return records(spec.cls)
    raise TypeError(f"no strategy for {type(spec).__name__}")


def field_strategies(cls: type[Record]) -> dict[str, st.SearchStrategy[Any]]:
    return {
        f.name: for_spec(f.metadata["spec"])
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    }


@st.composite
def _grant_shares(draw: st.DrawFn) -> GrantShare:
    shares = draw(st.integers(1, 255))
    counts = {
        "shares": st.just(shares),
        "threshold": st.integers(1, shares),
        "share_index": st.integers(1, shares),
    }
    return draw(st.builds(GrantShare, **{**field_strategies(GrantShare), **counts}))


@st.composite
def _snapshot_headers(draw: st.DrawFn) -> SnapshotHeader:
    fields = field_strategies(SnapshotHeader)
    group_id = draw(fields["group_id"])
    label = draw(st.sampled_from(["account", label_for_group(group_id)]))
    return draw(
        st.builds(
            SnapshotHeader, **{**fields, "group_id": st.just(group_id), "label": st.just(label)}
        )
    )


def _sorted_unique(items: tuple[Any, ...]) -> tuple[Any, ...]:
    by_key = {item.key: item for item in items}
    return tuple(by_key[k] for k in sorted(by_key))


@st.composite
def _manifests(draw: st.DrawFn, cls: type[Record]) -> Any:
    """Manifests and updates: sections sorted by key, nodes numbered 1..N, the threshold
    within them, version 1 naming no previous manifest."""
    values = {name: draw(strategy) for name, strategy in field_strategies(cls).items()}
    for section in ("labels", "devices", "grants", "grants_removed", "purges"):
        if section in values:
            values[section] = _sorted_unique(values[section])
    count = draw(st.integers(1, 5))
    values["nodes"] = tuple(
        draw(records(ManifestNode)).replace(share_index=i) for i in range(1, count + 1)
    )
    values["threshold"] = draw(st.integers(1, count))
    if cls is AccountManifest:
        values["version"] = draw(st.integers(1, (1 << 64) - 1))
        values["previous"] = (
            bytes(32)
            if values["version"] == 1
            else draw(st.binary(min_size=32, max_size=32).filter(any))
        )
    else:
        values["version"] = draw(st.integers(2, (1 << 64) - 1))
    return cls(**values)


@st.composite
def _enrollment_requests(draw: st.DrawFn) -> EnrollmentRequest:
    """Distinct nodes, the threshold within them, a name without formatting marks."""
    fields = field_strategies(EnrollmentRequest)
    nodes = tuple(dict.fromkeys(draw(fields["nodes"].filter(bool))))
    return EnrollmentRequest(
        account_id=draw(fields["account_id"]),
        keys=draw(fields["keys"]),
        nodes=nodes,
        threshold=draw(st.integers(1, len(nodes))),
        name=draw(st.text(st.characters(categories=["L", "N", "Zs"]), max_size=16)),
        signature=draw(fields["signature"]),
    )


# Valid Umbral public keys (a DeviceKeys' pre_key must be a curve point).
_PRE_KEYS = [DeviceSecrets.generate().public_keys.pre_key for _ in range(16)]

_SPECIAL: dict[type[Record], st.SearchStrategy[Any]] = {
    EnrollmentRequest: _enrollment_requests(),
    AccountManifest: _manifests(AccountManifest),
    ManifestUpdate: _manifests(ManifestUpdate),
    GrantShare: _grant_shares(),
    SnapshotHeader: _snapshot_headers(),
    DeviceKeys: st.builds(
        DeviceKeys,
        **{**field_strategies(DeviceKeys), "pre_key": st.sampled_from(_PRE_KEYS)},
    ),
    DeviceSecrets: st.builds(
        DeviceSecrets,
        **{
            **field_strategies(DeviceSecrets),
            "pre_secret": st.integers(1, SECP256K1_ORDER - 1).map(lambda n: n.to_bytes(32, "big")),
        },
    ),
    _PassphraseBox: st.builds(
        _PassphraseBox,
        **{
            **field_strategies(_PassphraseBox),
            "log2_n": st.integers(10, 20),
            "r": st.integers(1, 8),
            "p": st.integers(1, 4),
        },
    ),
}


def records(cls: type[Record]) -> st.SearchStrategy[Any]:
    """Valid instances of `cls`, built with `st.builds` from its field specs."""
    if cls in _SPECIAL:
        return _SPECIAL[cls]
    return st.deferred(lambda: st.builds(cls, **field_strategies(cls)))
