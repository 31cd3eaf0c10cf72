"""decode(encode(x)) == x for generated records of every type."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from pre import LABEL_PATTERN, AccountSecrets, DeviceSecrets, NodeSecrets
from pre._codec import Record
from tests.pre.pre_strategies import records

SECRET_TYPES = (AccountSecrets, DeviceSecrets, NodeSecrets)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_decode_of_encode_is_identity(record_type: type[Record], data: st.DataObject) -> None:
    record = data.draw(records(record_type))
    encoding = record.to_bytes()
    decoded = record_type.from_bytes(encoding)
    assert decoded.to_bytes() == encoding
    if record_type not in SECRET_TYPES:  # those compare by identity (eq=False)
        assert decoded == record
    # The signature, where there is one, is the last field and all tbs() leaves out.
    signature = getattr(record, "signature", None)
    assert record.tbs() + (signature or b"") == encoding
    # The strategies follow the specs' own patterns; hold them to the published one.
    label = getattr(record, "label", None)
    assert label is None or re.fullmatch(LABEL_PATTERN, label)
