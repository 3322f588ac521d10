"""deploy/iam's policies moved onto other buckets (the policy tests' and compose's MinIO
users): the S3 rights kept, nothing widened, the rest left out."""

from __future__ import annotations

import json

import pytest

from indutech_devtools.iam import IAM_DIR, moved_policy, production_buckets

LOCAL = {"lake": "indutech-lake", "backup": "indutech-backup"}
S3_WORKERS = (
    "iot-ingest",
    "iot-to-s3",
    "iot-aggregator",
    "sql-backup",
    "sql-to-redshift",
    "identity-sync",
)


class TestSessionPolicy:
    def test_paths_move_under_the_test_prefix_and_buckets_stay_whole(self) -> None:
        policy = moved_policy("iot-to-s3", LOCAL, {"lake": "tests/x/"})
        resources = [r for s in policy["Statement"] for r in s["Resource"]]
        assert resources == [
            "arn:aws:s3:::indutech-lake",
            "arn:aws:s3:::indutech-lake/tests/x/iot/*",
            "arn:aws:s3:::indutech-lake/tests/x/_state/iot-to-s3/*",
        ]

    @pytest.mark.parametrize("worker", S3_WORKERS)
    def test_the_s3_actions_are_the_policy_s_own(self, worker: str) -> None:
        """Every S3 statement is kept with its actions unchanged; only kms: ones are dropped."""
        document = json.loads((IAM_DIR / f"{worker}.json").read_text())
        policy = moved_policy(worker, LOCAL, {"lake": "p/", "backup": "q/"})
        kept = [s["Action"] for s in policy["Statement"]]
        original = [s["Action"] for s in document["Statement"]]
        assert kept == [a for a in original if all(x.startswith("s3:") for x in a)]
        assert all(a[0].startswith("kms:") for a in original if a not in kept)
        assert not any("*" in action for actions in kept for action in actions)

    def test_a_policy_without_s3_rights_is_refused(self) -> None:
        with pytest.raises(ValueError, match="grants nothing on S3"):
            moved_policy("metrics-shipper", LOCAL, {})

    def test_production_names_come_from_values_prod(self) -> None:
        assert production_buckets() == {
            "lake": "indutech-datalake",
            "backup": "indutech-erp-backup",
        }
