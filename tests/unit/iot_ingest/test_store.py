"""The dead-letter store cuts a line read in chunks into S3 parts, up to a limit."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from indutech_iot_ingest.sinks.store import Parts, StoredLine


class TestParts:
    @settings(max_examples=200, deadline=None)
    @given(
        size=st.integers(0, 200),
        chunk=st.integers(1, 70),
        part=st.integers(1, 40),
        limit=st.integers(1, 250),
    )
    def test_parts_are_the_first_limit_bytes_in_full_parts(
        self, size: int, chunk: int, part: int, limit: int
    ) -> None:
        """Every part but the last is part_bytes long; together they are the first limit
        bytes; truncated exactly when the stream was longer; exhausted after the last."""
        data = bytes(i % 251 for i in range(size))
        parts = Parts(
            iter([data[i : i + chunk] for i in range(0, size, chunk)]),
            part_bytes=part,
            limit=limit,
        )
        cut = []
        while piece := parts.next():
            cut.append(piece)
            if parts.exhausted:
                break
        assert parts.next() == b""
        assert b"".join(cut) == data[:limit]
        assert all(len(piece) == part for piece in cut[:-1])
        assert parts.truncated == (size > limit)
        assert parts.taken == min(size, limit)


class TestStoredLine:
    def test_headers_point_at_the_object_and_say_when_it_is_cut(self) -> None:
        """object, object_bytes, object_sha256; object_truncated only when cut."""
        whole = StoredLine(url="s3://b/k", size=5, sha256="ab", truncated=False)
        cut = StoredLine(url="s3://b/k", size=5, sha256="ab", truncated=True)
        assert dict(whole.headers()) == {
            "object": b"s3://b/k",
            "object_bytes": b"5",
            "object_sha256": b"ab",
        }
        assert dict(cut.headers())["object_truncated"] == b"true"
