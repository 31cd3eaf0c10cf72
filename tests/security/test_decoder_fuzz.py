"""Decoder fuzzing: every `pre` record decoder and every wire model, with hypothesis and
(where it installs) atheris.

tests/pre/test_decoders_fuzz.py already feeds every record type arbitrary bytes, bytes
behind its valid tag and a few edits of valid encodings; its examples count towards this
check's figure. Here are the input families it leaves out:

- type confusion: a valid encoding of one record type, retagged as another;
- splices: pieces of valid encodings of several types joined together;
- deep edits: up to 24 overwrites, insertions and cuts of a valid encoding.

For the wire models of cache_service/protocol/models.py (request bodies the node parses,
and the answers the SDK parses from nodes it does not trust): arbitrary bytes, arbitrary
JSON, schema-directed JSON from each model's own JSON schema, and that JSON mutated (as
text and as structure). The expected family is `PreError` for records and pydantic's
`ValidationError` for models; any other exception is a finding, and so is an accepted
value that does not come back unchanged from its own encoding.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pre
from cache_service.protocol import models as wire
from pre._codec import Record, Tag
from tests.pre.pre_strategies import records
from tests.pre.test_decoders_fuzz import edited
from tests.security.battery import FIGURES, SIZE
from tests.security.decoders import pre_record_types, wire_models

CHECK = "decoder_fuzz"
FIGURES.goal(CHECK, "unexpected_exceptions", "==", 0)
FIGURES.goal(CHECK, "non_canonical_accepted", "==", 0)

FUZZ = settings(
    max_examples=SIZE.decoder_examples,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MODEL_FUZZ = settings(
    max_examples=SIZE.model_examples,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


RECORD_TYPES = pre_record_types()
MODELS = wire_models()


def test_the_walks_find_everything() -> None:
    """Guard for the walks: every tag has its record type, every API model is a wire model."""
    assert {cls.TAG for cls in RECORD_TYPES} == set(Tag)
    assert {wire.RegisterAccountRequest, wire.SnapshotQuery, wire.ReencryptResponse} <= set(MODELS)
    FIGURES.set(CHECK, "record_types", len(RECORD_TYPES))
    FIGURES.set(CHECK, "wire_models", len(MODELS))


# records


def decode_record(record_type: type[Record], data: bytes) -> None:
    FIGURES.add(CHECK, "pre_examples")
    try:
        record = record_type.from_bytes(data)
    except pre.PreError:
        return
    except Exception as exc:
        FIGURES.add(CHECK, "unexpected_exceptions")
        FIGURES.note(CHECK, f"{record_type.__name__}.from_bytes: {type(exc).__name__}: {exc}")
        raise
    if record.to_bytes() != data:
        FIGURES.add(CHECK, "non_canonical_accepted")
        raise AssertionError(f"{record_type.__name__} accepted a non-canonical encoding")


any_record = st.sampled_from(RECORD_TYPES).flatmap(records)


@pytest.mark.timeout(SIZE.test_timeout)
@pytest.mark.parametrize("record_type", RECORD_TYPES, ids=lambda c: c.__name__)
@FUZZ
@given(other=any_record)
def test_type_confusion(record_type: type[Record], other: Record) -> None:
    """Another type's valid encoding under this type's tag: the fields must not line up."""
    data = other.to_bytes()
    decode_record(record_type, bytes([record_type.TAG]) + data[1:])


@pytest.mark.timeout(SIZE.test_timeout)
@pytest.mark.parametrize("record_type", RECORD_TYPES, ids=lambda c: c.__name__)
@FUZZ
@given(
    own=st.data(),
    others=st.lists(any_record, min_size=1, max_size=3),
    cuts=st.lists(st.integers(0, 1 << 16), min_size=2, max_size=8),
)
def test_splices(
    record_type: type[Record], own: st.DataObject, others: list[Record], cuts: list[int]
) -> None:
    """This type's valid prefix, then pieces of other valid encodings."""
    first = own.draw(records(record_type)).to_bytes()
    pieces = [first[: cuts[0] % (len(first) + 1)]]
    for other, cut in zip(others, cuts[1:], strict=False):
        data = other.to_bytes()
        start = cut % (len(data) + 1)
        pieces.append(data[start : start + (cut >> 8) % 200])
    decode_record(record_type, b"".join(pieces))


_DEEP_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["set", "insert", "delete", "cut"]), st.integers(0), st.integers(0, 255)
    ),
    min_size=4,
    max_size=24,
)


@pytest.mark.timeout(SIZE.test_timeout)
@pytest.mark.parametrize("record_type", RECORD_TYPES, ids=lambda c: c.__name__)
@FUZZ
@given(data=st.data(), edits=_DEEP_EDITS)
def test_deep_edits(
    record_type: type[Record], data: st.DataObject, edits: list[tuple[str, int, int]]
) -> None:
    encoding = data.draw(records(record_type)).to_bytes()
    decode_record(record_type, edited(encoding, edits))


# wire models

# JSON values: every JSON type, big and odd numbers, long and non-ASCII strings.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=50)
    | st.sampled_from(["", "account", "group:AA", "A" * 300, "\u0000", "\ud7ff", "1e400"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=30,
)

GENERATED_STRING_MAX = 200  # the schemas allow megabytes; a few hundred characters suffice


def from_schema(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid under the JSON schema subset pydantic writes for our models (`$ref`,
    `anyOf`, `enum`/`const`, objects, arrays, strings with patterns, bounded integers)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return st.deferred(lambda: from_schema(defs[name], defs))
    if "anyOf" in schema:
        return st.one_of([from_schema(option, defs) for option in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        optional = {k: from_schema(v, defs) for k, v in props.items() if k not in required}
        return st.fixed_dictionaries(
            {k: from_schema(v, defs) for k, v in props.items() if k in required},
            optional=optional,
        )
    if kind == "array":
        low = schema.get("minItems", 0)
        high = min(schema.get("maxItems", low + 3), low + 3)
        return st.lists(from_schema(schema.get("items", {}), defs), min_size=low, max_size=high)
    if kind == "string":
        low = schema.get("minLength", 0)
        high = min(schema.get("maxLength", GENERATED_STRING_MAX), max(low, GENERATED_STRING_MAX))
        pattern = schema.get("pattern")
        if pattern is None:
            return st.text(min_size=low, max_size=high)
        body = pattern.removeprefix("^").removesuffix("$")
        if body.endswith("*") and body.count("[") == 1:  # e.g. base64url: draw the length
            alphabet = st.from_regex(re.compile(body[:-1]), fullmatch=True)
            return st.lists(alphabet, min_size=low, max_size=high).map("".join)
        return st.from_regex(re.compile(pattern), fullmatch=True).filter(
            lambda s: low <= len(s) <= high
        )
    if kind == "integer":
        low = schema.get("minimum", -(2**63))
        high = schema.get("maximum", schema.get("exclusiveMaximum", 2**63) - 1)
        return st.integers(low, high)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    return json_values


def model_values(model: type[pydantic.BaseModel]) -> st.SearchStrategy[Any]:
    schema = model.model_json_schema()
    return from_schema(schema, schema.get("$defs", {}))


def validate_model(model: type[pydantic.BaseModel], data: bytes | str) -> None:
    FIGURES.add(CHECK, "model_examples")
    try:
        value = model.model_validate_json(data)
    except pydantic.ValidationError:
        return
    except Exception as exc:
        FIGURES.add(CHECK, "unexpected_exceptions")
        FIGURES.note(CHECK, f"{model.__name__}.model_validate_json: {type(exc).__name__}: {exc}")
        raise
    FIGURES.add(CHECK, "model_accepted")
    again = model.model_validate_json(value.model_dump_json())
    if again != value:
        FIGURES.add(CHECK, "non_canonical_accepted")
        raise AssertionError(f"{model.__name__} does not survive its own encoding")


def validate_query(data: dict[str, str]) -> None:
    """The snapshot query is validated from the query string's str -> str mapping."""
    FIGURES.add(CHECK, "model_examples")
    try:
        wire.SnapshotQuery.model_validate(data)
    except pydantic.ValidationError:
        return
    except Exception as exc:
        FIGURES.add(CHECK, "unexpected_exceptions")
        FIGURES.note(CHECK, f"SnapshotQuery.model_validate: {type(exc).__name__}: {exc}")
        raise
    FIGURES.add(CHECK, "model_accepted")


models = pytest.mark.parametrize("model", MODELS, ids=lambda c: c.__name__)


@pytest.mark.timeout(SIZE.test_timeout)
@models
@MODEL_FUZZ
@given(data=st.binary(max_size=400) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_bytes_and_any_json(model: type[pydantic.BaseModel], data: bytes) -> None:
    validate_model(model, data)


@pytest.mark.timeout(SIZE.test_timeout)
@models
@MODEL_FUZZ
@given(data=st.data())
def test_schema_directed_json(model: type[pydantic.BaseModel], data: st.DataObject) -> None:
    validate_model(model, json.dumps(data.draw(model_values(model))))


_TEXT_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["set", "insert", "delete", "cut"]),
        st.integers(0),
        st.sampled_from(b'{}[]",:0123456789.-+eE\\ntfalsu\x00\xff') | st.integers(0, 255),
    ),
    min_size=1,
    max_size=6,
)


def _replace_somewhere(value: Any, path: list[int], new: Any, *, delete: bool) -> Any:
    """`value` with the node `path` picks (indices mod the container size) replaced or
    deleted; an added key where the container is an object and `new` is drawn for it."""
    if not path or not isinstance(value, dict | list) or not value:
        return new
    step, rest = path[0], path[1:]
    if isinstance(value, dict):
        keys = sorted(value)
        key = keys[step % len(keys)]
        out = dict(value)
        if delete and not rest:
            del out[key]
        elif step % 7 == 0 and not rest:
            out[f"extra{step}"] = new
        else:
            out[key] = _replace_somewhere(value[key], rest, new, delete=delete)
        return out
    items = list(value)
    index = step % len(items)
    if delete and not rest:
        del items[index]
    else:
        items[index] = _replace_somewhere(items[index], rest, new, delete=delete)
    return items


@pytest.mark.timeout(SIZE.test_timeout)
@models
@MODEL_FUZZ
@given(
    data=st.data(),
    how=st.sampled_from(["text", "structure"]),
    edits=_TEXT_EDITS,
    path=st.lists(st.integers(0, 1 << 16), min_size=1, max_size=4),
    new=json_values,
    delete=st.booleans(),
)
def test_mutated_valid_json(
    model: type[pydantic.BaseModel],
    data: st.DataObject,
    how: str,
    edits: list[tuple[str, int, int]],
    path: list[int],
    new: Any,
    delete: bool,
) -> None:
    value = data.draw(model_values(model))
    if how == "text":
        validate_model(model, edited(json.dumps(value).encode(), edits))
    else:
        validate_model(model, json.dumps(_replace_somewhere(value, path, new, delete=delete)))


@pytest.mark.timeout(SIZE.test_timeout)
@MODEL_FUZZ
@given(
    query=st.dictionaries(
        st.sampled_from(["order", "after", "before", "limit", "group", "data", "x"]),
        st.text(max_size=40)
        | st.integers(-(2**70), 2**70).map(str)
        | st.sampled_from(["true", "false", "1", "0", "yes", "asc", "desc", "1e3", "NaN"]),
    )
)
def test_snapshot_query_strings(query: dict[str, str]) -> None:
    validate_query(query)


def test_deep_nesting_and_huge_numbers() -> None:
    """Inputs that break recursive parsers or big-number conversions."""
    for model in MODELS:
        for data in (
            b"[" * 100_000 + b"]" * 100_000,
            b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
            b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            b'{"key_epoch": 1' + b"0" * 100_000 + b"}",
            b'{"limit": 1e999999}',
            b'"' + b"\\u0000" * 100_000 + b'"',
        ):
            validate_model(model, data)


# atheris (coverage-guided, libFuzzer): in a subprocess, as libFuzzer ends its process

ATHERIS_SCRIPT = Path(__file__).with_name("atheris_decoders.py")
_DONE = re.compile(rb"Done (\d+) runs in (\d+) second")


@pytest.mark.timeout(SIZE.atheris_seconds + 120)
def test_atheris(tmp_path: Path) -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        FIGURES.set(CHECK, "atheris", "not installed")
        pytest.skip("atheris is not installed (pip install atheris; Linux x86_64 wheels)")
    FIGURES.set(CHECK, "atheris", "ran")
    artifacts, corpus = tmp_path / "crashes", tmp_path / "corpus"
    artifacts.mkdir()
    corpus.mkdir()  # the harness seeds it with valid encodings and documents
    done = subprocess.run(
        [
            sys.executable,
            str(ATHERIS_SCRIPT),
            str(corpus),
            f"-runs={SIZE.atheris_runs}",
            f"-max_total_time={SIZE.atheris_seconds}",
            f"-artifact_prefix={artifacts}/",
            "-rss_limit_mb=2048",
        ],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        timeout=SIZE.atheris_seconds + 110,
        check=False,
    )
    output = done.stdout + done.stderr
    match = _DONE.search(output)
    runs = int(match.group(1)) if match else 0
    FIGURES.add(CHECK, "atheris_runs", runs)
    if done.returncode != 0:
        FIGURES.add(CHECK, "unexpected_exceptions")
        FIGURES.note(CHECK, "atheris: " + output[-400:].decode(errors="replace"))
    assert done.returncode == 0, output[-3000:].decode(errors="replace")
    assert runs > 0, output[-2000:].decode(errors="replace")
