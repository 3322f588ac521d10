"""An over-long line is kept whole in the S3 dead-letter store, under a key made of the
file's fingerprint and the line's offset, so a replay overwrites rather than duplicates."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from indutech_common.s3 import create_s3_client
from indutech_common.schemas import Topics
from tests.integration.iot_ingest.conftest import (
    IngestTopics,
    dead_letter_prefix,
    ingest_settings,
    read_committed,
    run_prefix,
    running,
)
from tests.support.iam import assume_worker_role, s3_client_as, use_credentials
from tests.support.kafka import temporary_topics
from tests.support.s3 import list_keys
from tests.support.stack import StackSettings

MAX_LINE = 64 * 1024
KEEP = 1024


def _reading(event_id: str) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "sensor_id": "s-1",
            "site": "pune",
            "metric": "power",
            "value": 120.5,
            "unit": "kW",
            "event_time": "2026-05-01T12:00:00Z",
        }
    ).encode()


async def _object(stack: StackSettings, url: str) -> bytes:
    bucket, key = url.removeprefix("s3://").split("/", 1)
    async with create_s3_client(stack.s3) as s3:
        response = await s3.get_object(Bucket=bucket, Key=key)
        assert response["ServerSideEncryption"] in ("aws:kms", "AES256")
        async with response["Body"] as body:
            return await body.read()


async def assert_write_only_to_its_prefix(
    stack: StackSettings, credentials: dict[str, str], url: str, unique: str
) -> None:
    """The policy was in force: the store is write-only to the worker (``url``, an object
    it wrote, cannot be read back), and its rights end at its own prefix."""
    bucket, key = url.removeprefix("s3://").split("/", 1)
    async with s3_client_as(stack, credentials) as client:
        with pytest.raises(ClientError, match="AccessDenied"):
            await client.get_object(Bucket=bucket, Key=key)
        with pytest.raises(ClientError, match="AccessDenied"):
            await client.put_object(
                Bucket=bucket, Key=f"{run_prefix(unique)}iot/forged.parquet", Body=b"x"
            )


class TestDeadLetterStore:
    @pytest.mark.parametrize("rights", ["root", "iam-policy"])
    async def test_over_long_lines_are_kept_whole_once_per_line_across_a_replay(  # noqa: PLR0917 - fixtures + parameters
        self,
        stack: StackSettings,
        topics: IngestTopics,
        san: Path,
        unique: str,
        rights: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A 12 MB line (multipart) in a plain file and a 200 KB line in a .gz: each dead
        letter keeps 1 KiB and points at an encrypted object equal to the whole line; a
        replay from scratch writes the same two keys again, not two more objects.
        "iam-policy": the worker holds only the rights of deploy/iam/iot-ingest.json."""
        s3 = stack.s3
        credentials: dict[str, str] = {}
        if rights == "iam-policy":
            credentials = await assume_worker_role(
                "iot-ingest", stack, {"lake": run_prefix(unique)}
            )
            s3 = use_credentials(monkeypatch, credentials, stack.s3)
        big = b'{"pad": "' + bytes(48 + i % 64 for i in range(12 * 1024 * 1024)) + b'"}'
        plain = san / "sensors" / "plain.jsonl"
        plain.write_bytes(_reading("p-0") + b"\n" + big + b"\n" + _reading("p-1") + b"\n")
        medium = b"[" + b"1," * (100 * 1024) + b"1]"
        packed = san / "sensors" / "packed.jsonl.gz"
        packed.write_bytes(gzip.compress(_reading("g-0") + b"\n" + medium + b"\n"))
        offsets = {str(plain): len(_reading("p-0")) + 1, str(packed): len(_reading("g-0")) + 1}
        lines = {str(plain): big, str(packed): medium}
        settings = ingest_settings(
            stack, topics, san, unique, s3=s3, max_line_bytes=MAX_LINE, dead_letter_keep_bytes=KEEP
        )
        async with running(settings) as worker:
            found = await read_committed(stack, topics, expected=3, expected_dead=2)
            stored = worker.metrics.registry.get_sample_value(
                "indutech_dead_letter_objects_total", {"worker": "iot-ingest"}
            )
            (ping,) = [r for r in await worker.health.check() if r.name == "s3"]
        assert ping.ok, ping.error  # /readyz's S3 check passes on the worker's own rights
        assert stored == 2
        assert set(found.ids) == {"p-0", "p-1", "g-0"}
        assert len(found.dead_letters) == 2
        urls = set()
        for value, headers in found.dead_letters:
            source = headers["file"].decode()
            line = lines[source]
            assert headers["reason"] == b"line_too_long"
            assert int(headers["offset"]) == offsets[source]
            assert value == line[:KEEP]
            url = headers["object"].decode()
            fingerprint = headers["fingerprint"].decode()
            key = f"{dead_letter_prefix(unique)}{fingerprint}/{offsets[source]:020d}"
            assert url == f"s3://{stack.s3.lake_bucket}/{key}"
            assert int(headers["object_bytes"]) == len(line)
            assert headers["object_sha256"].decode() == hashlib.sha256(line).hexdigest()
            assert "object_truncated" not in headers
            assert await _object(stack, url) == line
            urls.add(url)
        keys = await list_keys(stack.s3, stack.s3.lake_bucket, dead_letter_prefix(unique))
        assert {f"s3://{stack.s3.lake_bucket}/{key}" for key in keys} == urls

        # the same files read again from their start (a checkpoint topic of its own, as
        # after a crash before the commit): the objects are overwritten, not duplicated
        replay_checkpoints = f"test.{unique}.checkpoints-replay"
        async with temporary_topics(stack.kafka, {replay_checkpoints: Topics.INGEST_CHECKPOINTS}):
            replay = ingest_settings(
                stack,
                topics,
                san,
                unique,
                s3=s3,
                max_line_bytes=MAX_LINE,
                dead_letter_keep_bytes=KEEP,
                checkpoint_topic=replay_checkpoints,
                transactional_id=f"iot-ingest-test-{unique}-replay",
            )
            async with running(replay):
                again = await read_committed(stack, topics, expected=6, expected_dead=4)
        assert {headers["object"].decode() for _, headers in again.dead_letters} == urls
        assert await list_keys(stack.s3, stack.s3.lake_bucket, dead_letter_prefix(unique)) == keys
        for url in urls:
            assert hashlib.sha256(await _object(stack, url)).hexdigest() in {
                hashlib.sha256(line).hexdigest() for line in lines.values()
            }
        if credentials:
            await assert_write_only_to_its_prefix(stack, credentials, min(urls), unique)

    async def test_a_line_beyond_the_object_limit_is_kept_up_to_it_and_says_so(
        self, stack: StackSettings, topics: IngestTopics, san: Path, unique: str
    ) -> None:
        """dead_letter_max_object_bytes caps an object; the dead letter says object_truncated."""
        huge = b"x" * (3 * 1024 * 1024 + 5)
        (san / "sensors" / "huge.jsonl").write_bytes(huge + b"\n" + _reading("h-0") + b"\n")
        settings = ingest_settings(
            stack,
            topics,
            san,
            unique,
            max_line_bytes=MAX_LINE,
            dead_letter_keep_bytes=KEEP,
            dead_letter_max_object_bytes=2 * 1024 * 1024,
        )
        async with running(settings):
            found = await read_committed(stack, topics, expected=1, expected_dead=1)
        ((_, headers),) = found.dead_letters
        assert headers["object_truncated"] == b"true"
        assert int(headers["object_bytes"]) == 2 * 1024 * 1024
        assert await _object(stack, headers["object"].decode()) == huge[: 2 * 1024 * 1024]
