"""The content checksum, the restore chain, the schedule and the settings."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from indutech_common.schemas.sql_backup import ChunkSpec, Manifest, Plan
from indutech_sql_backup.checksum import TableChecksum, table_checksum
from indutech_sql_backup.cli import main
from indutech_sql_backup.dialects import TableRef
from indutech_sql_backup.scheduling import next_run
from indutech_sql_backup.sinks import chain
from indutech_sql_backup.sources import selected

TABLE = pa.table(
    {
        "id": [1, 2, 3, 4],
        "name": ["a", None, "", "é"],
        "money": pa.array(
            [Decimal("1.10"), None, Decimal("-0.01"), Decimal("9.99")], pa.decimal128(18, 2)
        ),
        "ok": [True, None, False, True],
        "blob": [b"\x00", b"", None, b"xyz"],
        "at": pa.array([1, None, 3, 4], pa.timestamp("us", tz="UTC")),
    }
)


class TestChecksum:
    def test_independent_of_batch_boundaries(self) -> None:
        checksum = TableChecksum(TABLE.schema)
        for batch in TABLE.to_batches(max_chunksize=1):
            checksum.update(batch)
        assert checksum.hexdigest() == table_checksum(TABLE)
        assert checksum.rows == 4

    @pytest.mark.parametrize(
        ("column", "values"),
        [
            ("name", ["a", "", "", "é"]),  # NULL is not the empty string
            (
                "money",
                pa.array(
                    [Decimal("1.11"), None, Decimal("-0.01"), Decimal("9.99")], pa.decimal128(18, 2)
                ),
            ),
            ("ok", [True, False, False, True]),
            ("blob", [b"\x00", None, None, b"xyz"]),
        ],
    )
    def test_any_change_changes_it(self, column: str, values: object) -> None:
        index = TABLE.schema.get_field_index(column)
        changed = TABLE.set_column(index, column, pa.array(values, TABLE.schema.field(column).type))
        assert table_checksum(changed) != table_checksum(TABLE)

    def test_sliced_arrays_hash_like_copies(self) -> None:
        sliced = TABLE.slice(1, 3)
        copy = pa.Table.from_pylist(sliced.to_pylist(), schema=TABLE.schema)
        assert table_checksum(sliced) == table_checksum(copy)


def _manifest(kind: str, day: int, start: str | None, end: str) -> Manifest:
    plan = Plan(
        plan_id=f"{kind}{day}",
        kind=kind,
        database="erp",
        dialect="postgres",
        schema_name="s",
        table="t",
        day=date(2026, 1, day),
        columns=(),
        key=("id",),
        key_from="primary key",
        watermark="row_version",
        chunk_column="id",
        chunks=(ChunkSpec(chunk=0, lo=None, hi=None),),
        position_from=start,
        position_to=end,
        created_at=datetime(2026, 1, day, tzinfo=UTC),
    )
    return Manifest(plan=plan, parts=(), rows=0, bytes=0, completed_at=plan.created_at)


class TestChain:
    def test_follows_positions_from_the_newest_full(self) -> None:
        runs = [
            _manifest("full", 1, None, "p1"),
            _manifest("delta", 2, "p1", "p2"),
            _manifest("full", 3, None, "p3"),
            _manifest("delta", 4, "p3", "p4"),
            _manifest("delta", 5, "p4", "p5"),
        ]
        assert [m.plan.plan_id for m in chain(runs)] == ["full3", "delta4", "delta5"]
        assert [m.plan.plan_id for m in chain(runs, until=date(2026, 1, 2))] == ["full1", "delta2"]
        assert chain(runs, until=date(2025, 12, 31)) == []

    def test_a_gap_is_never_crossed(self) -> None:
        runs = [_manifest("full", 1, None, "p1"), _manifest("delta", 3, "pX", "p3")]
        assert [m.plan.plan_id for m in chain(runs)] == ["full1"]


class TestSelection:
    def test_include_exclude_and_the_deletes_log(self) -> None:
        assert selected(TableRef("sales", "orders"), ["sales.*"], [])
        assert not selected(TableRef("sales", "orders"), ["sales.*"], ["*.ord*"])
        assert not selected(TableRef("hr", "people"), ["sales.*"], [])
        assert not selected(TableRef("sales", "indutech_deletes"), ["*.*"], [])


class TestSchedule:
    def test_next_run_is_today_or_tomorrow_at_the_time(self) -> None:
        now = datetime(2026, 3, 1, 1, 30, tzinfo=UTC)
        assert next_run(now, "02:00") == datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
        assert next_run(now, "01:00") == datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


class TestConfig:
    def test_bad_settings_exit_2_naming_the_variable(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setenv("INDUTECH_S3__KMS_KEY_ID", "k")
        monkeypatch.setenv("SQL_BACKUP_DELTA_AT_UTC", "25:00")
        monkeypatch.setenv("SQL_BACKUP_ERP__PASSWORD", "a-secret-value")
        assert main(["discover"]) == 2
        error = capsys.readouterr().err
        assert "SQL_BACKUP_DELTA_AT_UTC" in error
        assert "a-secret-value" not in error

    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("SQL_BACKUP_SCHEMA_DRIFT", "sometimes"),
            ("SQL_BACKUP_MAX_ATTEMPTS", "0"),
            ("SQL_BACKUP_RETRY_DELAY_S", "0"),
            ("SQL_BACKUP_FAIL_ON_SKIPPED_TABLE", "perhaps"),
        ],
    )
    def test_bad_hardening_settings_exit_2_naming_the_variable(
        self,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        variable: str,
        value: str,
    ) -> None:
        monkeypatch.setenv("INDUTECH_S3__KMS_KEY_ID", "k")
        monkeypatch.setenv(variable, value)
        assert main(["discover"]) == 2
        assert variable in capsys.readouterr().err

    def test_worker_without_kafka_says_what_to_set(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        for name in list(__import__("os").environ):
            if name.startswith(("INDUTECH_KAFKA", "SQL_BACKUP_KAFKA")):
                monkeypatch.delenv(name)
        monkeypatch.setenv("INDUTECH_S3__KMS_KEY_ID", "k")
        monkeypatch.setenv("SQL_BACKUP_ERP__DATABASE", "erp")
        assert main(["worker"]) == 2
        assert "SQL_BACKUP_KAFKA__BOOTSTRAP_SERVERS" in capsys.readouterr().err
