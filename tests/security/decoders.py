"""The decoders the battery fuzzes, found by walking rather than listed, so a new record
type or wire model is fuzzed without anyone remembering to add it."""

from __future__ import annotations

import pydantic

from cache_service.protocol import models as wire
from pre._codec import Record


def pre_record_types() -> list[type[Record]]:
    """Every Record subclass of `pre`, found by walking the class tree."""
    found: list[type[Record]] = []
    pending = list(Record.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] == "pre":
            found.append(cls)
    return sorted(found, key=lambda cls: cls.__name__)


def wire_models() -> list[type[pydantic.BaseModel]]:
    """Every model defined in cache_service/protocol/models.py."""
    return sorted(
        (
            obj
            for obj in vars(wire).values()
            if isinstance(obj, type)
            and issubclass(obj, pydantic.BaseModel)
            and obj.__module__ == wire.__name__
            and not obj.__name__.startswith("_")
        ),
        key=lambda cls: cls.__name__,
    )
