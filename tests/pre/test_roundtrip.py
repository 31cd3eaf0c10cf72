"""Every record decodes from its own encoding to an equal record with identical bytes."""

from __future__ import annotations

from pre import AccountSecrets, DeviceSecrets, NodeSecrets
from pre._codec import Record

# Secret holders compare by identity (eq=False); compare their encodings and what derives
# from them instead.
SECRET_TYPES = (AccountSecrets, DeviceSecrets, NodeSecrets)


def test_decode_of_encode_is_the_same_record(
    record_type: type[Record], sample_records: dict[type[Record], tuple[Record, ...]]
) -> None:
    samples = sample_records[record_type]
    assert samples, f"no samples for {record_type.__name__}"
    for record in samples:
        data = record.to_bytes()
        decoded = record_type.from_bytes(data)
        assert type(decoded) is record_type
        assert decoded.to_bytes() == data
        # A fresh copy encodes from its fields, not from the cached encoding.
        assert record.replace().to_bytes() == data
        if record_type in SECRET_TYPES:
            assert decoded is not record
        else:
            assert decoded == record
            assert hash(decoded) == hash(record)


def test_decoded_secrets_derive_the_same_public_values(
    account: AccountSecrets, member_device: DeviceSecrets, node: NodeSecrets
) -> None:
    decoded_account = AccountSecrets.from_bytes(account.to_bytes())
    assert decoded_account.seed == account.seed
    assert decoded_account.account_id == account.account_id
    assert decoded_account.kfrag_verifying_key == account.kfrag_verifying_key
    assert decoded_account.label_public_key("account", 3) == account.label_public_key("account", 3)

    decoded_device = DeviceSecrets.from_bytes(member_device.to_bytes())
    assert decoded_device.signing_seed == member_device.signing_seed
    assert decoded_device.pre_secret == member_device.pre_secret
    assert decoded_device.public_keys == member_device.public_keys

    decoded_node = NodeSecrets.from_bytes(node.to_bytes())
    assert decoded_node.public_key == node.public_key


def test_encodings_start_with_tag_and_version(
    record_type: type[Record], sample_records: dict[type[Record], tuple[Record, ...]]
) -> None:
    for record in sample_records[record_type]:
        assert record.to_bytes()[:2] == bytes([record_type.TAG, 1])


def test_record_types_have_distinct_tags(record_types: list[type[Record]]) -> None:
    tags = [cls.TAG for cls in record_types]
    assert len(tags) == len(set(tags))
