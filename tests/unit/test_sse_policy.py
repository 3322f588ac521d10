"""The SSE policy fills in encryption and refuses writes without it (no server needed)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from indutech_common.s3 import SseNotAppliedError, SsePolicy, SseRequiredError
from indutech_common.settings import S3Settings

PUT = SimpleNamespace(name="PutObject")


class TestSsePolicy:
    def test_default_kms_added(self) -> None:
        """A put without SSE gets aws:kms and the configured key."""
        policy = SsePolicy(S3Settings(sse="aws:kms", kms_key_id="k1"))
        params: dict[str, Any] = {"Bucket": "b", "Key": "k"}
        policy.before_parameter_build(params, PUT)
        assert params["ServerSideEncryption"] == "aws:kms"
        assert params["SSEKMSKeyId"] == "k1"

    def test_explicit_aes_kept(self) -> None:
        policy = SsePolicy(S3Settings(sse="aws:kms", kms_key_id="k1"))
        params: dict[str, Any] = {"ServerSideEncryption": "AES256"}
        policy.before_parameter_build(params, PUT)
        assert params == {"ServerSideEncryption": "AES256"}

    @pytest.mark.parametrize("value", ["", "none", "NONE"])
    def test_non_encryption_refused(self, value: str) -> None:
        """An SSE value that is not an encryption is refused before sending."""
        policy = SsePolicy(S3Settings(sse="AES256"))
        with pytest.raises(SseRequiredError, match="refused"):
            policy.before_parameter_build({"ServerSideEncryption": value}, PUT)

    def test_unconfirmed_response_raises(self) -> None:
        """A server that stored without confirming SSE is an error, not a silent success."""
        policy = SsePolicy(S3Settings(sse="AES256"))
        with pytest.raises(SseNotAppliedError):
            policy.after_call({"ETag": "x"}, PUT)
        policy.after_call({"ETag": "x", "ServerSideEncryption": "AES256"}, PUT)
