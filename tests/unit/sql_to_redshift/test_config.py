"""Settings and command line of sql-to-redshift: bad values exit 2 naming the variable."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import pytest

from indutech_common.settings import load_settings
from indutech_sql_to_redshift.cli import main
from indutech_sql_to_redshift.config import SqlToRedshiftSettings
from indutech_sql_to_redshift.sinks import S3ManifestStager, stager_for
from tests.support.cli import refused_at_start, set_environment

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    return set_environment(
        monkeypatch,
        {"SQL_TO_REDSHIFT_S3__SSE": "AES256"},
        clear_prefixes=("INDUTECH_", "SQL_TO_REDSHIFT_"),
    )


class TestSettings:
    def test_prefix_and_secrets(self, env: pytest.MonkeyPatch) -> None:
        """SQL_TO_REDSHIFT_* is read; the warehouse password is a secret nobody prints."""
        env.setenv("SQL_TO_REDSHIFT_WAREHOUSE__PASSWORD", "hunter2-secret")
        env.setenv("SQL_TO_REDSHIFT_TABLES", '["orders", "customers"]')
        settings = load_settings(SqlToRedshiftSettings)
        assert settings.tables == ("orders", "customers")
        assert settings.raw_schema == "erp_raw"
        assert settings.model_schema == "erp"
        assert "hunter2-secret" not in repr(settings)
        assert "hunter2-secret" not in str(settings.warehouse)

    @pytest.mark.parametrize(
        ("variable", "value", "expected"),
        [
            ("SQL_TO_REDSHIFT_RAW_SCHEMA", "erp_raw;drop", "lower-case SQL identifier"),
            ("SQL_TO_REDSHIFT_MODEL_SCHEMA", "erp_raw", "must differ"),
            ("SQL_TO_REDSHIFT_TABLES", '["Orders"]', "not lower-case table names"),
            ("SQL_TO_REDSHIFT_REDSHIFT_IAM_ROLE", "", "redshift_iam_role"),
        ],
    )
    def test_exits_2_naming_the_variable(
        self,
        env: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        variable: str,
        value: str,
        expected: str,
    ) -> None:
        env.setenv(variable, value)
        if variable.endswith("IAM_ROLE"):
            env.setenv("SQL_TO_REDSHIFT_WAREHOUSE__DIALECT", "redshift")
        err = refused_at_start(main, capsys, ["verify"])
        assert expected in err
        assert variable.removeprefix("SQL_TO_REDSHIFT_") in err

    @pytest.mark.usefixtures("env")
    def test_help_lists_every_command_and_setting(self, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exit_:
            main(["--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        for word in ("run", "load", "rebuild", "verify", "migrate"):
            assert word in out
        for variable in ("SQL_TO_REDSHIFT_RAW_SCHEMA", "SQL_TO_REDSHIFT_COMPLETED_TOPIC"):
            assert variable in out


class TestStager:
    def test_redshift_gets_the_manifest_stager_of_its_settings(
        self, env: pytest.MonkeyPatch
    ) -> None:
        """Redshift: manifests in the lake's staging prefix, COPY with the configured role;
        PostgreSQL: the sink's binary COPY (no stager)."""
        role = "arn:aws:iam::123456789012:role/indutech-redshift-copy"
        env.setenv("SQL_TO_REDSHIFT_WAREHOUSE__DIALECT", "redshift")
        env.setenv("SQL_TO_REDSHIFT_REDSHIFT_IAM_ROLE", role)
        env.setenv("SQL_TO_REDSHIFT_S3__LAKE_BUCKET", "lake")
        env.setenv("SQL_TO_REDSHIFT_S3__BACKUP_BUCKET", "backup")
        client = cast("S3Client", object())
        stager = stager_for(load_settings(SqlToRedshiftSettings), client)
        assert isinstance(stager, S3ManifestStager)
        assert (stager.staging_bucket, stager.backup_bucket) == ("lake", "backup")
        assert stager.staging_prefix == "warehouse-staging/sql-to-redshift/"
        assert stager.iam_role == role
        assert stager.statements.dialect == "redshift"
        env.setenv("SQL_TO_REDSHIFT_WAREHOUSE__DIALECT", "postgres")
        assert stager_for(load_settings(SqlToRedshiftSettings), client) is None
