"""Batch encoding in one call gives byte for byte what the v0.1 per-record path gave.

Content hashes, idempotency digests and batch checksums all depend on these bytes, so
``prepare_batch`` (which encodes a step of records with one ``orjson.dumps``) is compared with
a reference kept here: the per-record encoding of v0.1 and its request digest.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.codec import FIRST_STEP, INT_MAX, INT_MIN, encode_many, prepare_batch
from app.core.errors import InvalidInput


def reference_encode(record: dict[str, Any]) -> bytes:
    """The v0.1 encoding of one plain, NUL-free record: sorted keys, compact."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any("\0" in k or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(has_nul, value))
    return False


def reference_digest(collection: str, records: list[dict[str, Any]], generated: bytes) -> str:
    """The v0.1 request digest: the header, one flag byte per record, the records' bytes."""
    body = hashlib.sha256()
    for record in records:
        body.update(reference_encode(record))
    head = hashlib.sha256(orjson.dumps(["append", collection, len(records)]))
    head.update(generated)
    head.update(body.digest())
    return head.hexdigest()


def filler(n: int) -> list[dict[str, Any]]:
    """Records ahead of the corpus, so it is encoded by the one-call path (after the first,
    record-by-record step)."""
    return [{"id": f"f{i}", "n": i} for i in range(n)]


def corpus() -> list[dict[str, Any]]:
    long_text = 'ab\u00e9\u4e2d\U0001f600"\\/\n\t' * 5000
    return [
        {"id": "unicode", "text": "caf\u00e9 \u4e2d\u6587 \U0001f600 \u2028\u2029 \ufeff"},
        {"id": "escapes", "s": '"\\/\b\f\n\r\t\x01\x1f\x7f', 'k"\\': "\u0001"},
        {"id": "nested", "a": {"b": {"c": [1, [2, [3, {"d": None}]]]}}, "e": [[[]]]},
        {"id": "ints", "big": INT_MAX, "small": INT_MIN, "zero": 0, "neg": -1, "l": 2**53 + 1},
        {
            "id": "floats",
            "nz": -0.0,
            "huge": 1e300,
            "tiny": 5e-324,
            "sub": 2.2250738585072014e-308 / 3,
            "pi": 3.141592653589793,
            "one": 1.0,
            "e": 1e16,
            "m": -1.5e-7,
            "max": 1.7976931348623157e308,
        },
        {"id": "order", "z": 1, "a": 2, "\u00e9": 3, "B": 4, "_": 5, "10": 6, "9": 7, "": 8},
        {"id": "empty", "d": {}, "l": [], "s": ""},
        {"id": "long", "text": long_text},
        {"id": "types", "t": True, "f": False, "n": None, "i": 7, "x": 0.5, "s": "s", "l": [1]},
        {"id": "sep-like", "s": ',"\\u0000",', "t": "},{", "u": "\\u0000"},
        {"id": "keys", "\u00e9": {"\u00e8": 1, "e": 2}, "\U0001f600": [{"b": 1, "a": 2}]},
    ]


def test_encode_many_matches_per_record_encoding() -> None:
    records = [r for r in corpus() if r["id"] != "sep-like"]
    got = encode_many(records)
    assert got is not None
    assert got == [reference_encode(r) for r in records]


def test_text_that_looks_like_the_separator_falls_back_to_per_record() -> None:
    records = corpus()
    assert encode_many(records) is None  # an escaped-NUL look-alike: not split by bytes
    batch = prepare_batch(filler(FIRST_STEP) + records, None)
    assert list(batch.encoded)[FIRST_STEP:] == [reference_encode(r) for r in records]


def test_prepare_batch_matches_the_v01_path_bytes_and_digest() -> None:
    records = filler(FIRST_STEP) + corpus() * 3
    batch = prepare_batch(records, None, batch_id="b-1", collection="c")
    assert list(batch.encoded) == [reference_encode(r) for r in records]
    assert batch.digest == reference_digest("c", records, bytes(len(records)))


def test_generated_ids_are_in_the_bytes_and_the_digest() -> None:
    records: list[dict[str, Any]] = [{"n": i, "s": f"\u00e9{i}"} for i in range(300)]
    batch = prepare_batch(records, None, batch_id="b-2", collection="c")
    ids = list(batch.ids)
    with_ids = [{**r, "id": rid} for r, rid in zip(records, ids, strict=True)]
    assert list(batch.encoded) == [reference_encode(r) for r in with_ids]
    assert batch.digest == reference_digest("c", with_ids, bytes([1]) * len(records))


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "nul", "s": "a\0b"},
        {"id": "nul-key", "a\0": 1},
        {"id": "nan", "x": float("nan")},
        {"id": "inf", "x": float("-inf")},
        {"id": "big", "x": INT_MAX + 1},
        {"id": "tuple", "x": (1, 2)},
        {"id": "set", "x": {1}},
        {"id": "key", "x": {1: 2}},
    ],
)
def test_a_non_plain_record_is_refused_or_normalised_as_before(bad: dict[str, Any]) -> None:
    records = [*filler(FIRST_STEP + 5), bad, *filler(3)]
    assert encode_many(records) is None  # the step goes record by record
    if bad["id"] == "tuple":  # normalised to a list, as v0.1 did
        batch = prepare_batch(records, None)
        assert list(batch.encoded)[FIRST_STEP + 5] == b'{"id":"tuple","x":[1,2]}'
        return
    with pytest.raises(InvalidInput) as err:
        prepare_batch(records, None)
    assert err.value.argument == f"records[{FIRST_STEP + 5}]"


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=INT_MIN, max_value=INT_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=25,
)
records_st = st.lists(
    st.dictionaries(st.text(max_size=8), json_value, max_size=6).map(
        lambda d: {**d, "id": "x" + str(len(d))}
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records_st)
def test_hypothesis_one_call_equals_per_record(records: list[dict[str, Any]]) -> None:
    got = encode_many(records)
    if has_nul(records):
        assert got is None
        return
    assert got == [reference_encode(r) for r in records]
    batch = prepare_batch(filler(FIRST_STEP) + records, None, batch_id="h", collection="c")
    assert list(batch.encoded)[FIRST_STEP:] == [reference_encode(r) for r in records]
