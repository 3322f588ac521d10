"""The common file tailer: identity by content, rotation, truncation, gzip, long lines."""

from __future__ import annotations

import gzip
import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from indutech_common.tailing import (
    FileState,
    FileTailer,
    LineKind,
    OutsideRootError,
    SkipReason,
    WatchSpec,
    open_under,
)
from indutech_common.tailing.paths import glob_regex, walk

SPEC = WatchSpec(name="logs", patterns=("*.log", "*.log.gz"))
CSV = WatchSpec(name="csv", patterns=("*.csv",), header_lines=1)


def tailer(root: Path, *specs: WatchSpec, **options: object) -> FileTailer:
    defaults: dict[str, object] = {"fingerprint_bytes": 64, "gzip_settle_s": 0.0}
    return FileTailer(root, specs or (SPEC,), **{**defaults, **options})  # type: ignore[arg-type]


def drain(t: FileTailer, rounds: int = 3) -> list[bytes]:
    """Scan and read until nothing more comes (gzip files need two scans to settle)."""
    out: list[bytes] = []
    for _ in range(rounds):
        t.scan()
        out += [line.data for line in t.read(10_000) if line.kind is not LineKind.HEADER]
    t.mark_committed(t.dirty_states())
    return out


def lines(prefix: str, count: int, start: int = 0) -> str:
    return "".join(f"{prefix} line number {i:04d} with some padding\n" for i in range(start, count))


class TestRotation:
    def test_rename_then_new_file_loses_and_repeats_nothing(self, tmp_path: Path) -> None:
        """The renamed file is read to its end through its descriptor; the new one from 0."""
        t = tailer(tmp_path)
        current = tmp_path / "app.log"
        current.write_text(lines("a", 5))
        assert len(drain(t)) == 5
        with current.open("a") as out:
            out.write(lines("a", 7, 5))
        current.rename(tmp_path / "app-1.log")
        current.write_text(lines("b", 3))
        got = drain(t)
        assert sorted(got) == sorted(
            x.encode() for x in (lines("a", 7, 5) + lines("b", 3)).splitlines()
        )

    def test_compressed_rotated_file_is_the_same_file(self, tmp_path: Path) -> None:
        """a.log.1 → a.log.1.gz keeps the fingerprint (decompressed content): nothing repeats."""
        t = tailer(tmp_path)
        rotated = tmp_path / "app-1.log"
        rotated.write_text(lines("a", 10))
        assert len(drain(t)) == 10
        (tmp_path / "app-1.log.gz").write_bytes(gzip.compress(rotated.read_bytes()))
        rotated.unlink()
        assert drain(t) == []
        assert drain(t) == []

    def test_late_file_and_partial_line(self, tmp_path: Path) -> None:
        """A file appearing later is picked up; a line without its newline waits for it."""
        t = tailer(tmp_path)
        assert drain(t) == []
        late = tmp_path / "late.log"
        late.write_text(lines("c", 2) + "partial")
        assert len(drain(t)) == 2
        with late.open("a") as out:
            out.write(" end\n")
        assert drain(t) == [b"partial end"]


class TestTruncation:
    def test_truncated_and_rewritten_file_is_read_from_its_start(self, tmp_path: Path) -> None:
        """A file rewritten (even past the old offset) is a new file with a new fingerprint."""
        t = tailer(tmp_path)
        path = tmp_path / "t.log"
        path.write_text(lines("old", 4))
        drain(t)
        path.write_text(lines("new", 9))
        assert drain(t) == [x.encode() for x in lines("new", 9).splitlines()]

    def test_same_prefix_after_truncation_gets_a_new_generation(self, tmp_path: Path) -> None:
        """Same first bytes, fewer of them: a new generation, so derived ids cannot collide."""
        t = tailer(tmp_path)
        path = tmp_path / "t.log"
        path.write_text(lines("same", 6))
        drain(t)
        path.write_text(lines("same", 3))
        assert len(drain(t)) == 3
        generations = sorted(state.generation for state in t.states.values())
        assert generations == [0, 1]
        assert len({state.fingerprint for state in t.states.values()}) == 2


class TestIdentity:
    def test_restart_on_a_new_inode_resumes_by_fingerprint(self, tmp_path: Path) -> None:
        """After a remount (new inode, same content) the committed offset is used."""
        path = tmp_path / "a.log"
        path.write_text(lines("a", 4))
        first = tailer(tmp_path)
        assert len(drain(first)) == 4
        saved = [FileState.from_json_bytes(s.to_json_bytes()) for s in first.states.values()]
        first.close()
        copy = tmp_path / "copy.tmp"
        copy.write_bytes(path.read_bytes() + lines("a", 6, 4).encode())
        path.unlink()
        os.rename(copy, path)
        second = tailer(tmp_path)
        second.restore(saved)
        assert drain(second) == [x.encode() for x in lines("a", 6, 4).splitlines()]

    def test_rewind_returns_to_the_committed_offsets(self, tmp_path: Path) -> None:
        """Lines read but not committed are read again after a rewind."""
        (tmp_path / "a.log").write_text(lines("a", 3))
        t = tailer(tmp_path)
        t.scan()
        assert len(t.read(100)) == 3
        t.rewind()
        t.scan()
        assert len(t.read(100)) == 3


class TestLimitsAndFormats:
    def test_too_long_line_is_handed_out_once_with_its_first_bytes(self, tmp_path: Path) -> None:
        """An over-long line is not buffered whole; the next line is intact."""
        (tmp_path / "a.log").write_bytes(b"ok 1\n" + b"x" * 5000 + b"\nok 2\n")
        t = tailer(tmp_path, max_line_bytes=1024, keep_bytes=100)
        t.scan()
        got = t.read(100)
        assert [line.kind for line in got] == [LineKind.LINE, LineKind.TOO_LONG, LineKind.LINE]
        assert got[1].data == b"x" * 100
        assert got[1].length == 5000
        assert (got[1].offset, got[2].offset) == (5, 5006)

    def test_lines_read_in_small_batches_have_the_offsets_of_the_file(self, tmp_path: Path) -> None:
        """Batches of 3 cut anywhere (around a long line, an empty line, a partial last line):
        every line once, with its own start and end in the file, and the state at the end."""
        content = (
            b"a\n\nbb\nccc\n" + b"y" * 2000 + b"\nd\ne\nf\ng\nh\ni\n" + b"x" * 40 + b"\nj\npartial"
        )
        (tmp_path / "a.log").write_bytes(content)
        t = tailer(tmp_path, max_line_bytes=1024, keep_bytes=10)
        t.scan()
        got = []
        while batch := t.read(3):
            assert len(batch) <= 3
            got += batch
        expected_starts = [0]
        for line in content.split(b"\n")[:-1]:
            expected_starts.append(expected_starts[-1] + len(line) + 1)
        assert [line.offset for line in got] == expected_starts[:-1]
        assert [line.end for line in got] == expected_starts[1:]
        assert [line.data for line in got if line.kind is LineKind.LINE] == [
            b"a", b"", b"bb", b"ccc", b"d", b"e", b"f", b"g", b"h", b"i", b"x" * 40, b"j"
        ]  # fmt: skip
        assert [line.kind for line in got].count(LineKind.TOO_LONG) == 1
        (state,) = t.dirty_states()
        assert state.offset == expected_starts[-1]
        assert state.lines == len(got)

    def test_truncated_gzip_yields_the_readable_lines_then_an_error(self, tmp_path: Path) -> None:
        """A cut gzip stream: the lines before the cut, then one truncated_gzip line."""
        data = gzip.compress(lines("z", 200).encode())
        (tmp_path / "cut.log.gz").write_bytes(data[: len(data) // 2])
        t = tailer(tmp_path)
        got = []
        for _ in range(3):
            t.scan()
            got += t.read(10_000)
        assert got[-1].kind is LineKind.TRUNCATED_GZIP
        assert all(line.kind is LineKind.LINE for line in got[:-1])
        assert got[-1].state.complete
        assert t.read(10_000) == []  # the error is handed out once, not on every read

    def test_corrupt_gzip_yields_one_error_line_at_offset_zero(self, tmp_path: Path) -> None:
        """A .gz that is not gzip: one corrupt_gzip line, then nothing however often read."""
        (tmp_path / "plain.log.gz").write_bytes(b"plain text, not gzip\n")
        t = tailer(tmp_path)
        got = []
        for _ in range(4):
            t.scan()
            got += t.read(10_000)
        assert [(line.kind, line.offset) for line in got] == [(LineKind.CORRUPT_GZIP, 0)]

    def test_csv_header_is_kept_with_each_line(self, tmp_path: Path) -> None:
        """The header is handed out as HEADER and attached to every line, also after a restart."""
        (tmp_path / "a.csv").write_text("x,y\n1,2\n3,4\n")
        t = tailer(tmp_path, CSV)
        t.scan()
        got = t.read(10)
        assert [line.kind for line in got] == [LineKind.HEADER, LineKind.LINE, LineKind.LINE]
        assert {line.header for line in got} == {b"x,y"}


class TestForgetting:
    def test_a_deleted_file_is_forgotten_after_the_delay_and_the_others_are_kept(
        self, tmp_path: Path
    ) -> None:
        """Only the state of a file no scan has found for after_s is dropped."""
        t = tailer(tmp_path, gone_idle_s=0.0, close_idle_s=0.0)
        (tmp_path / "a.log").write_text(lines("a", 3))
        (tmp_path / "b.log").write_text(lines("b", 3))
        assert len(drain(t)) == 6
        assert t.forget_unseen(0.2) == []
        doomed = next(s for s in t.states.values() if s.path.endswith("a.log"))
        (tmp_path / "a.log").unlink()
        drain(t)
        assert t.forget_unseen(0.2) == []  # not yet: it has been gone for less than 0.2 s
        time.sleep(0.3)
        drain(t)
        assert t.forget_unseen(0.2) == [doomed]
        assert [s.path for s in t.states.values()] == [str(tmp_path / "b.log")]
        time.sleep(0.3)
        drain(t)
        assert t.forget_unseen(0.2) == []  # b is parked, unchanged, and still seen

    def test_nothing_is_forgotten_while_no_file_is_found(self, tmp_path: Path) -> None:
        """A SAN that shows no file at all (unmounted) is not a mass deletion."""
        t = tailer(tmp_path, gone_idle_s=0.0, close_idle_s=0.0)
        (tmp_path / "a.log").write_text(lines("a", 3))
        assert len(drain(t)) == 3
        (tmp_path / "a.log").unlink()
        time.sleep(0.3)
        drain(t)
        assert t.forget_unseen(0.2) == []
        assert len(t.states) == 1

    def test_restored_states_of_missing_files_are_forgotten_after_the_delay(
        self, tmp_path: Path
    ) -> None:
        """A checkpoint restored for a file deleted while the worker was down goes too."""
        old = FileState(base="0" * 40, fingerprint_len=64, path=str(tmp_path / "gone.log"))
        t = tailer(tmp_path)
        t.restore([old])
        (tmp_path / "here.log").write_text(lines("h", 2))
        drain(t)
        assert t.forget_unseen(0.2) == []
        time.sleep(0.3)
        drain(t)
        assert t.forget_unseen(0.2) == [old]


class TestSymlinks:
    def test_links_leading_outside_are_never_read_and_reported_once(self, tmp_path: Path) -> None:
        """A link to a file and one to a directory outside the root: nothing read, each
        reported once as symlink_outside however often the root is scanned."""
        outside = tmp_path / "outside"
        (outside / "dir").mkdir(parents=True)
        (outside / "secret.log").write_text(lines("secret", 3))
        (outside / "dir" / "inner.log").write_text(lines("inner", 3))
        root = tmp_path / "san"
        root.mkdir()
        (root / "own.log").write_text(lines("own", 2))
        (root / "link.log").symlink_to(outside / "secret.log")
        (root / "linked-dir").symlink_to(outside / "dir")
        spec = WatchSpec(name="logs", patterns=("*.log", "**/*.log"))
        skipped: list[tuple[str, SkipReason]] = []
        t = tailer(root, spec, on_skipped=lambda path, reason: skipped.append((path, reason)))
        with capture_logs() as logs:
            got = drain(t) + drain(t)
        assert got == [x.encode() for x in lines("own", 2).splitlines()]
        assert sorted(skipped) == [
            (str(root / "link.log"), SkipReason.SYMLINK_OUTSIDE),
            (str(root / "linked-dir"), SkipReason.SYMLINK_OUTSIDE),
        ]
        refused = [entry for entry in logs if entry["event"] == "file_refused"]
        assert sorted(entry["path"] for entry in refused) == [
            str(root / "link.log"),
            str(root / "linked-dir"),
        ]
        assert all(entry["log_level"] == "warning" for entry in refused)

    def test_a_link_inside_the_root_is_read_once_under_its_target_name(
        self, tmp_path: Path
    ) -> None:
        """The link is not followed; its target is read under its own name, once."""
        (tmp_path / "real.log").write_text(lines("r", 4))
        (tmp_path / "alias.log").symlink_to(tmp_path / "real.log")
        skipped: list[tuple[str, SkipReason]] = []
        t = tailer(tmp_path, on_skipped=lambda path, reason: skipped.append((path, reason)))
        assert drain(t) == [x.encode() for x in lines("r", 4).splitlines()]
        assert skipped == [(str(tmp_path / "alias.log"), SkipReason.SYMLINK)]
        assert [state.path for state in t.states.values()] == [str(tmp_path / "real.log")]

    def test_open_under_refuses_a_link_anywhere_in_the_path(self, tmp_path: Path) -> None:
        """O_NOFOLLOW on every component: a link as the file or as a directory is refused."""
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "f.log").write_text("x\n")
        root = tmp_path / "san"
        (root / "real").mkdir(parents=True)
        (root / "real" / "ok.log").write_text("ok\n")
        (root / "file-link.log").symlink_to(outside / "f.log")
        (root / "dir-link").symlink_to(outside)
        os.mkfifo(root / "pipe.log")
        fd = open_under(root, "real/ok.log")
        try:
            assert os.read(fd, 10) == b"ok\n"
        finally:
            os.close(fd)
        for relative in ("file-link.log", "dir-link/f.log", "pipe.log", "../outside/f.log"):
            with pytest.raises(OutsideRootError):
                os.close(open_under(root, relative))


class TestRotationNames:
    ROTATING = WatchSpec(
        name="rotating", patterns=("*.jsonl", "*.jsonl.gz", "*.jsonl.[0-9]", "*.jsonl.[0-9].gz")
    )

    def test_rename_to_dot_1_then_compress_reads_every_line_once(self, tmp_path: Path) -> None:
        """line-a.jsonl → line-a.jsonl.1 → line-a.jsonl.1.gz, both newly matched: each line
        once (the renamed file keeps its fingerprint), also across a restart."""
        active = tmp_path / "line-a.jsonl"
        active.write_text(lines("a", 5))
        first = tailer(tmp_path, self.ROTATING)
        got = drain(first)
        with active.open("a") as out:
            out.write(lines("a", 8, 5))
        active.rename(tmp_path / "line-a.jsonl.1")
        active.write_text(lines("b", 3))
        got += drain(first)
        saved = [FileState.from_json_bytes(s.to_json_bytes()) for s in first.states.values()]
        first.close()
        rotated = tmp_path / "line-a.jsonl.1"
        (tmp_path / "line-a.jsonl.1.gz").write_bytes(gzip.compress(rotated.read_bytes()))
        rotated.unlink()
        with active.open("a") as out:
            out.write(lines("b", 4, 3))
        second = tailer(tmp_path, self.ROTATING)
        second.restore(saved)
        got += drain(second)
        expected = lines("a", 8) + lines("b", 4)
        assert sorted(got) == sorted(x.encode() for x in expected.splitlines())

    def test_a_file_no_spec_matches_is_reported_once(self, tmp_path: Path) -> None:
        """Logged once as file_unmatched and passed to on_skipped; hidden names are not."""
        (tmp_path / "a.jsonl").write_text(lines("a", 1))
        (tmp_path / "a.jsonl.1.zst").write_text(lines("z", 1))
        (tmp_path / ".a.jsonl.2.gz.tmp").write_text(lines("t", 1))
        skipped: list[tuple[str, SkipReason]] = []
        t = tailer(
            tmp_path, self.ROTATING, on_skipped=lambda path, reason: skipped.append((path, reason))
        )
        with capture_logs() as logs:
            drain(t)
            drain(t)
        assert skipped == [(str(tmp_path / "a.jsonl.1.zst"), SkipReason.NO_ROUTE)]
        unmatched = [entry for entry in logs if entry["event"] == "file_unmatched"]
        assert [entry["path"] for entry in unmatched] == [str(tmp_path / "a.jsonl.1.zst")]


class TestUnterminatedLastLine:
    def test_the_rest_of_a_settled_file_is_handed_out_once(self, tmp_path: Path) -> None:
        """After tail_settle_s without growth the last line comes out as UNTERMINATED,
        the state ends at the file's size, and later appends start a new line."""
        path = tmp_path / "a.log"
        path.write_text(lines("a", 2) + "last without newline")
        t = tailer(tmp_path, tail_settle_s=0.3, close_idle_s=0.0)
        t.scan()
        assert [line.data for line in t.read(100)] == [
            x.encode() for x in lines("a", 2).splitlines()
        ]
        assert t.read(100) == []  # not settled yet
        time.sleep(0.4)
        with capture_logs() as logs:
            t.scan()
            tail = t.read(100)
            t.scan()
            assert t.read(100) == []
        assert [(line.kind, line.data) for line in tail] == [
            (LineKind.UNTERMINATED, b"last without newline")
        ]
        (state,) = t.dirty_states()
        assert state.offset == path.stat().st_size
        assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == [
            "unterminated_line"
        ]
        t.mark_committed(t.dirty_states())
        with path.open("a") as out:
            out.write("\nnext\n")
        assert drain(t) == [b"", b"next"]

    def test_without_a_settle_time_the_last_line_waits(self, tmp_path: Path) -> None:
        """tail_settle_s=None keeps the old rule: a line is complete only with its newline."""
        (tmp_path / "a.log").write_text(lines("a", 1) + "partial")
        t = tailer(tmp_path, close_idle_s=0.0)
        assert len(drain(t)) == 1
        time.sleep(0.2)
        assert drain(t) == []

    def test_a_short_file_of_one_unterminated_line_is_read_once_settled(
        self, tmp_path: Path
    ) -> None:
        """Too short for a fingerprint and without a newline: identified by its whole
        content once settled, and handed out once (also after a restart)."""
        path = tmp_path / "one.log"
        path.write_text('{"only": 1}')
        t = tailer(tmp_path, tail_settle_s=0.3)
        assert drain(t) == []
        time.sleep(0.4)
        assert drain(t) == [b'{"only": 1}']
        saved = [FileState.from_json_bytes(s.to_json_bytes()) for s in t.states.values()]
        t.close()
        again = tailer(tmp_path, tail_settle_s=0.3)
        again.restore(saved)
        assert drain(again) == []

    def test_a_settled_csv_with_only_its_header_is_not_fingerprinted(self, tmp_path: Path) -> None:
        """Every file with that header would match such a fingerprint: it waits for a row,
        and is read from its header on once one comes."""
        (tmp_path / "a.csv").write_text("x,y\n")
        old = time.time() - 10
        os.utime(tmp_path / "a.csv", (old, old))
        t = tailer(tmp_path, CSV, tail_settle_s=0.1)
        drain(t)
        assert t.states == {}
        with (tmp_path / "a.csv").open("a") as out:
            out.write("1,2\n")
        assert drain(t) == [b"1,2"]


class TestLineReader:
    @pytest.mark.parametrize("compressed", [False, True])
    def test_a_too_long_line_is_read_again_whole(self, tmp_path: Path, compressed: bool) -> None:
        """The line handed out with its first keep_bytes is read whole from the file."""
        long_line = bytes(range(256)).replace(b"\n", b"") * 200
        content = b"ok 1\n" + long_line + b"\nok 2\n"
        name = "a.log.gz" if compressed else "a.log"
        (tmp_path / name).write_bytes(gzip.compress(content) if compressed else content)
        t = tailer(tmp_path, max_line_bytes=1024, keep_bytes=100)
        got = []
        for _ in range(3):
            t.scan()
            got += t.read(100)
        (too_long,) = [line for line in got if line.kind is LineKind.TOO_LONG]
        assert too_long.data == long_line[:100]
        with t.line_reader(too_long, chunk_bytes=4000) as chunks:
            assert b"".join(chunks) == long_line


class TestRoot:
    def test_a_missing_root_shows_no_file_and_is_logged_once(self, tmp_path: Path) -> None:
        """An unmounted SAN is no file at all (nothing forgotten), logged once, not raised."""
        t = tailer(tmp_path / "not-mounted")
        with capture_logs() as logs:
            assert drain(t) == []
            assert drain(t) == []
        assert [entry["event"] for entry in logs] == ["root_unreadable"]
        assert t.forget_unseen(0.0) == []


_NAME = st.sampled_from(["a", "b", ".h", "x.log", "x.log.1", "x.log.1.gz", "y.csv", "[z]"])
_GLOB = st.sampled_from(["*", "**", "*.log", "*.log.[0-9]*", "?.log", "[!a]", ".*", "x.log*"])


class TestGlobsMatchPathlib:
    @settings(max_examples=60, deadline=None)
    @given(
        files=st.lists(st.lists(_NAME, min_size=1, max_size=4), min_size=1, max_size=12),
        pattern=st.lists(_GLOB, min_size=1, max_size=3),
    )
    def test_the_walk_finds_what_path_glob_finds(
        self, files: list[list[str]], pattern: list[str]
    ) -> None:
        """On a tree without links, walk + glob_regex select the regular files Path.glob does."""
        if pattern[-1] == "**":
            pattern = [*pattern, "*"]
        glob = "/".join(pattern)
        with tempfile.TemporaryDirectory() as directory:
            root = Path(directory)
            for parts in files:
                path = root.joinpath(*parts)
                if any(parent.is_file() for parent in path.parents) or path.is_dir():
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("x\n")
            expected = {str(p.relative_to(root)) for p in root.glob(glob) if p.is_file()}
            match = glob_regex([glob]).match
            found = {relative for relative, _ in walk(str(root)) if match(relative)}
        assert found == expected
