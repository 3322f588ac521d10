"""The batch path (Arrow's JSON reader over a whole poll) against the per-record path (the
model, record by record): the same good and bad records give the same rows and the same
dead letters, whatever the batch path takes or leaves."""

from __future__ import annotations

import json
from datetime import timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, model_validator

from indutech_common.schemas import ClientTicket, SensorReading
from indutech_iot_to_s3.sources import RecordCodec
from indutech_iot_to_s3.sources.batch import BatchRules, UnsupportedModelError

CODEC = RecordCodec(sensor_topic="s", ticket_topic="t")
MODELS: dict[str, type[SensorReading] | type[ClientTicket]] = {
    "s": SensorReading,
    "t": ClientTicket,
}

READING: dict[str, Any] = {
    "event_id": "e-1",
    "event_time": "2026-01-01T00:00:00.020000Z",
    "schema_version": 1,
    "sensor_id": "sensor-00001",
    "site": "lyon",
    "metric": "temperature",
    "value": 60.01,
    "unit": "C",
    "quality": "good",
}
TICKET: dict[str, Any] = {
    "event_id": None,
    "event_time": "2026-03-01T12:30:00.5+02:00",
    "schema_version": 1,
    "ticket_id": "t1",
    "customer_id": "c1",
    "region": "emea",
    "revenue": "10.50",
    "latency_ms": 5,
    "status": "open",
}
BASE = {"s": READING, "t": TICKET}


def dumps(record: dict[str, Any], **options: Any) -> bytes:
    return json.dumps(record, separators=(",", ":"), **options).encode()


def changed(topic: str, **changes: Any) -> bytes:
    return dumps({**BASE[topic], **changes})


def without(topic: str, name: str) -> bytes:
    return dumps({k: v for k, v in BASE[topic].items() if k != name})


def assert_same(topic: str, values: list[bytes | None]) -> None:
    """Both paths: the same valid rows (offsets included) and the same refusals."""
    offsets = [1000 + i for i in range(len(values))]
    old = CODEC.decode_records(topic, offsets, values)
    new = CODEC.decode_batch(topic, offsets, values)
    assert [(r.index, r.reason, r.detail) for r in new.rejected] == [
        (r.index, r.reason, r.detail) for r in old.rejected
    ]
    assert (new.valid is None) == (old.valid is None)
    if old.valid is not None and new.valid is not None:
        assert new.valid.schema == old.valid.schema == CODEC.batch_schema(topic)
        assert new.valid.to_pylist() == old.valid.to_pylist()
        assert new.valid.equals(old.valid)


# Records each path must agree on: what the batch path takes and what it must leave.
EDGE_CASES: dict[str, list[bytes | None]] = {
    "s": [
        changed("s", sensor_id=" padded "),
        changed("s", sensor_id="x\u0085"),
        changed("s", site="\u3000lyon"),
        changed("s", site="Łódź"),
        changed("s", site="é" * 256),
        changed("s", site="é" * 257),
        changed("s", site=""),
        changed("s", unit=""),
        changed("s", unit="u" * 33),
        changed("s", event_id=""),
        changed("s", event_id=None),
        without("s", "event_id"),
        without("s", "quality"),
        changed("s", quality=None),
        changed("s", quality="GOOD"),
        changed("s", quality=" good"),
        without("s", "schema_version"),
        changed("s", schema_version=None),
        changed("s", schema_version=2),
        changed("s", schema_version=1.0),
        changed("s", schema_version=70000),
        changed("s", value=5),
        changed("s", value="1.5"),
        changed("s", value=True),
        changed("s", value=12345678901234567890123),
        changed("s", value=1e308),
        changed("s", value=-0.0),
        b'{"value": 1e400, ' + changed("s")[1:].replace(b'"value":60.01,', b""),
        changed("s", value=None),
        changed("s", sensor_id=5),
        changed("s", sensor_id={"a": 1}),
        changed("s", extra="x"),
        changed("s")[:-1] + b',"site":"porto"}',  # a repeated key: the model keeps the last
        changed("s", event_time="2026-01-01T00:00:00"),
        changed("s", event_time="2026-01-01T05:30:00+05:30"),
        changed("s", event_time="2026-01-01T00:00:00-23:59"),
        changed("s", event_time="2026-01-01T00:00:00z"),
        changed("s", event_time="2026-01-01 00:00:00Z"),
        changed("s", event_time="2026-01-01T00:00:00.1234567Z"),
        changed("s", event_time="2026-02-30T00:00:00Z"),
        changed("s", event_time="2026-06-30T23:59:60Z"),
        changed("s", event_time="0001-01-01T00:00:00+01:00"),
        changed("s", event_time="9999-12-31T23:00:00-05:00"),
        changed("s", event_time="1000-01-01T00:00:00Z"),
        changed("s", event_time=1767225600),
        changed("s", event_time="2026-01-01"),
        dumps({**READING, "site": "Gdańsk"}, ensure_ascii=True),  # \\u escapes
        dumps(READING, indent=1),  # valid, over several lines
        b" " + changed("s"),
        b"\xef\xbb\xbf" + changed("s"),
        changed("s") + b"\r",
        changed("s")[:-1] + b',"site":"\xff"}',
        changed("s", site="\ud800"),  # json.dumps writes a lone surrogate escape
        changed("s", site="nul\x00"),
        changed("s", site="tab\tin"),
        changed("s") + b" " + changed("s"),  # two objects in one value
        changed("s") + changed("s"),
        b"[]",
        b"{}",
        b"null",
        b"{nope",
        b"",
        None,
        changed("s"),
    ],
    "t": [
        changed("t", revenue="12.34"),
        changed("t", revenue="-0.00"),
        changed("t", revenue="0012.30"),
        changed("t", revenue="9999999999999999.99"),
        changed("t", revenue="99999999999999999.99"),
        changed("t", revenue="12.345"),
        changed("t", revenue="12.3400"),
        changed("t", revenue="1e3"),
        changed("t", revenue=" 12.34 "),
        changed("t", revenue="+1.00"),
        changed("t", revenue=12),
        changed("t", revenue=12.5),
        changed("t", revenue=None),
        changed("t", latency_ms=-1),
        changed("t", latency_ms=0),
        changed("t", latency_ms=5.0),
        changed("t", latency_ms=2**63),
        changed("t", latency_ms=2**70),
        changed("t", latency_ms="5"),
        changed("t", latency_ms=True),
        changed("t", status="pending"),
        without("t", "status"),
        changed("t", customer_id=" c1 "),
        changed("t"),
    ],
}


class TestDerivedRules:
    def test_both_record_models_take_the_batch_path(self) -> None:
        """Every rule of the two models is one the batch path knows how to prove."""
        assert CODEC.batch_path("s")
        assert CODEC.batch_path("t")

    def test_canonical_records_are_all_taken(self) -> None:
        """What iot-ingest writes (the model's own JSON) never needs the per-record path."""
        for topic, model in MODELS.items():
            record = model.model_validate(BASE[topic])
            values: list[bytes | None] = [record.to_json_bytes()] * 50
            result = BatchRules.from_model(model).decode(values)
            assert result.left == []
            assert result.taken == list(range(50))

    def test_an_unknown_rule_keeps_a_model_on_the_per_record_path(self) -> None:
        """A constraint or validator the derivation does not know is refused, not ignored."""

        class Pattern(BaseModel):
            model_config = ConfigDict(extra="forbid")
            name: str = Field(pattern="^a")

        class Checked(BaseModel):
            name: str

            @model_validator(mode="after")
            def _check(self) -> Checked:
                return self

        class Strict(BaseModel):
            model_config = ConfigDict(strict=True)
            name: str

        for model in (Pattern, Checked, Strict):
            with pytest.raises(UnsupportedModelError):
                BatchRules.from_model(model)

    def test_arrow_trims_every_character_pydantic_strips(self) -> None:
        """The strip check relies on it: over every code point, at either end."""

        class Stripped(BaseModel):
            model_config = ConfigDict(str_strip_whitespace=True)
            values: list[str]

        points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
        texts = [f"{chr(c)}x" for c in points] + [f"x{chr(c)}" for c in points]
        stripped = Stripped(values=texts).values
        pydantic_strips = [a != b for a, b in zip(texts, stripped, strict=True)]
        array = pa.array(texts)
        arrow_trims = pc.not_equal(pc.utf8_trim_whitespace(array), array).to_pylist()
        missed = [t for t, p, a in zip(texts, pydantic_strips, arrow_trims, strict=True) if p > a]
        assert missed == []
        assert sum(pydantic_strips) == 50  # 25 characters, at either end


class TestSameRowsAndDeadLetters:
    @pytest.mark.parametrize("topic", ["s", "t"])
    def test_edge_cases_one_by_one(self, topic: str) -> None:
        """Each record alone among good ones: same rows, same refusals."""
        good = changed(topic)
        for value in EDGE_CASES[topic]:
            assert_same(topic, [good] * 20 + [value] + [good] * 20)

    @pytest.mark.parametrize("topic", ["s", "t"])
    def test_edge_cases_all_in_one_poll(self, topic: str) -> None:
        """All of them in one poll, between good records: the halving finds each."""
        good = changed(topic)
        values: list[bytes | None] = []
        for value in EDGE_CASES[topic]:
            values += [good] * 7 + [value]
        assert_same(topic, values)

    def test_values_that_only_parse_together(self) -> None:
        """Three values each invalid alone that, joined, read as three objects: refused."""
        good = changed("s").decode()
        values: list[bytes | None] = [
            good[:-1].encode() + b',"site":"x}',  # an open string swallowing the next value
            b'{","unit":"C"}',
            (good + good).encode(),  # two objects, to make the count match
        ]
        assert_same("s", [changed("s")] * 9 + values + [changed("s")] * 9)

    def test_a_poll_with_no_valid_record(self) -> None:
        assert_same("s", [b"{}", b"[]", None])
        assert CODEC.decode_batch("s", [1, 2, 3], [b"{}", b"[]", None]).valid is None


_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["lyon", " x", "x ", "", "a" * 256, "a" * 257, "é\u0085", "\t"]),
)
_field_values: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.one_of(st.none(), _text),
    "event_time": st.one_of(
        st.datetimes(
            timezones=st.sampled_from(
                [None, *(timezone(timedelta(minutes=m)) for m in (0, 90, -330, 1439, -1439))]
            )
        ).map(lambda d: d.isoformat()),
        st.sampled_from(["2026-01-01T00:00:00Z", "2026-13-01T00:00:00Z", "x"]),
        st.integers(),
    ),
    "schema_version": st.sampled_from([1, 2, 1.0, None, "1"]),
    "sensor_id": _text,
    "site": _text,
    "metric": _text,
    "value": st.one_of(st.floats(allow_nan=False), st.integers(), st.text(max_size=5)),
    "unit": _text,
    "quality": st.sampled_from(["good", "uncertain", "bad", "Good", None, 1]),
    "ticket_id": _text,
    "customer_id": _text,
    "region": _text,
    "revenue": st.one_of(
        st.decimals(allow_nan=False, allow_infinity=False, places=2).map(str),
        st.decimals(allow_nan=False, allow_infinity=False).map(str),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    "latency_ms": st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans()),
    "status": st.sampled_from(["open", "resolved", "closed", "OPEN"]),
}


@st.composite
def records(draw: st.DrawFn, topic: str) -> bytes | None:
    """A record near the model: most fields kept, some changed, dropped or added."""
    record = dict(BASE[topic])
    for name in list(record):
        action = draw(st.sampled_from(["keep"] * 6 + ["change", "change", "drop"]))
        if action == "change":
            record[name] = draw(_field_values[name])
        elif action == "drop":
            del record[name]
    if draw(st.integers(0, 30)) == 0:
        record["unknown"] = 1
    ascii_only = draw(st.booleans())
    return json.dumps(record, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


class TestProperty:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def test_any_poll_gives_the_same_rows_and_dead_letters(self, data: st.DataObject) -> None:
        topic = data.draw(st.sampled_from(["s", "t"]))
        values = data.draw(st.lists(records(topic), min_size=1, max_size=40))
        assert_same(topic, values)
