"""extract_dump reads the archive once: every member is checked, and nothing is left behind when a
member anywhere in the archive (before or after the dump) is refused or the stream is cut."""

from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path

import pytest

from scalingo_staging_sync.scalingo.archive import extract_dump
from scalingo_staging_sync.scalingo.errors import ScalingoArchiveError

DUMP = b"PGDMP" + bytes(range(256)) * 4000  # a custom-format magic and 1 MB of body


def _tar_gz(path: Path, members: list[tuple[str, bytes | None, bytes]]) -> Path:
    """members: (name, data or None for a symlink, type)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == tarfile.SYMTYPE:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return path


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*")) if directory.exists() else []


#: directory watched by the audit hook below, and what it saw: (file opened for writing, the other
#: files in the directory at that moment). An audit hook cannot be removed: it only records while set.
_WATCH: dict = {"dir": None, "writes": []}


def _audit(event: str, args: tuple) -> None:
    watched = _WATCH["dir"]
    if watched is None or event != "open" or not isinstance(args[0], (str, os.PathLike)):
        return
    path, mode, flags = Path(args[0]), args[1], args[2]
    writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
        mode is None and flags & (os.O_WRONLY | os.O_RDWR)
    )
    if writing and path.parent == watched:
        _WATCH["writes"].append((path.name, sorted(p.name for p in watched.iterdir())))


sys.addaudithook(_audit)


def _extract_watched(archive: Path, dest: Path) -> tuple[Path, list[tuple[str, list[str]]]]:
    """extract_dump, with every file it opens for writing in ``dest`` recorded (by Python's audit hooks:
    the real open calls, nothing replaced)."""
    _WATCH.update(dir=dest, writes=[])
    try:
        return extract_dump(archive, dest), list(_WATCH["writes"])
    finally:
        _WATCH["dir"] = None


def test_the_dump_is_extracted_in_one_pass_and_nothing_else_is_written(tmp_path):
    archive = _tar_gz(
        tmp_path / "a.tar.gz", [("README.txt", b"hi", tarfile.REGTYPE), ("db.pgsql", DUMP, tarfile.REGTYPE)]
    )
    dump = extract_dump(archive, tmp_path / "x")
    assert dump == tmp_path / "x" / "db.pgsql" and dump.read_bytes() == DUMP
    assert _leftovers(tmp_path / "x") == ["db.pgsql"]


@pytest.mark.parametrize(
    "bad",
    [("../evil.pgsql", b"PGDMP", tarfile.REGTYPE), ("link.pgsql", None, tarfile.SYMTYPE)],
    ids=["traversal", "symlink"],
)
def test_a_bad_member_after_the_dump_leaves_no_partial_file(tmp_path, bad):
    archive = _tar_gz(tmp_path / "a.tar.gz", [("db.pgsql", DUMP, tarfile.REGTYPE), bad])
    with pytest.raises(ScalingoArchiveError, match=bad[0].replace(".", r"\.")):
        extract_dump(archive, tmp_path / "x")
    assert _leftovers(tmp_path / "x") == []


def test_a_truncated_archive_is_refused_and_leaves_no_partial_file(tmp_path):
    whole = _tar_gz(tmp_path / "a.tar.gz", [("db.pgsql", DUMP, tarfile.REGTYPE)]).read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ScalingoArchiveError, match="cut.tar.gz is not a readable .tar.gz"):
        extract_dump(cut, tmp_path / "x")
    assert _leftovers(tmp_path / "x") == []


def test_pgsql_wins_over_dump_and_the_first_name_wins_among_several(tmp_path, caplog):
    other = b"PGDMP" + b"other"
    archive = _tar_gz(
        tmp_path / "a.tar.gz",
        [
            ("z.dump", other, tarfile.REGTYPE),
            ("b/2.pgsql", other, tarfile.REGTYPE),
            ("a/1.pgsql", DUMP, tarfile.REGTYPE),
        ],
    )
    dump = extract_dump(archive, tmp_path / "x")
    assert dump.name == "1.pgsql" and dump.read_bytes() == DUMP
    assert _leftovers(tmp_path / "x") == ["1.pgsql"]
    assert "several .pgsql files" in caplog.text


def test_only_the_kept_dump_is_written(tmp_path):
    """Candidates that cannot be kept (a ``*.dump`` once a ``*.pgsql`` is chosen, a later name in sorted
    order) are read past, never written to disk."""
    other = b"PGDMP" + b"\0" * 3_000_000
    archive = _tar_gz(
        tmp_path / "a.tar.gz",
        [
            ("a/1.pgsql", DUMP, tarfile.REGTYPE),
            ("z.dump", other, tarfile.REGTYPE),
            ("b/2.pgsql", other, tarfile.REGTYPE),
            ("notes.txt", b"x", tarfile.REGTYPE),
        ],
    )
    dump, writes = _extract_watched(archive, tmp_path / "x")
    assert dump.name == "1.pgsql" and dump.read_bytes() == DUMP
    assert [name for name, _ in writes] == [".1.1.pgsql.part"], writes
    assert _leftovers(tmp_path / "x") == ["1.pgsql"]


def test_a_better_candidate_later_replaces_the_previous_one_before_it_is_written(tmp_path):
    """Worst order (each candidate beats the one before): at most one candidate is on disk at any time."""
    other = b"PGDMP" + b"other"
    archive = _tar_gz(
        tmp_path / "a.tar.gz",
        [
            ("z.dump", other, tarfile.REGTYPE),
            ("b/2.pgsql", other, tarfile.REGTYPE),
            ("a/1.pgsql", DUMP, tarfile.REGTYPE),
        ],
    )
    dump, writes = _extract_watched(archive, tmp_path / "x")
    assert dump.read_bytes() == DUMP
    assert [name for name, _ in writes] == [".1.z.dump.part", ".2.2.pgsql.part", ".3.1.pgsql.part"]
    assert all(present == [] for _, present in writes), f"a superseded candidate was still on disk: {writes}"
    assert _leftovers(tmp_path / "x") == ["1.pgsql"]


def test_a_bad_member_after_a_skipped_candidate_still_refuses_the_archive(tmp_path):
    archive = _tar_gz(
        tmp_path / "a.tar.gz",
        [
            ("db.pgsql", DUMP, tarfile.REGTYPE),
            ("old.dump", b"PGDMP-old", tarfile.REGTYPE),
            ("../../etc/cron.d/x", b"* * * * * root sh", tarfile.REGTYPE),
        ],
    )
    with pytest.raises(ScalingoArchiveError, match=r"'\.\./\.\./etc/cron\.d/x' climbs out"):
        extract_dump(archive, tmp_path / "x")
    assert _leftovers(tmp_path / "x") == []


def test_the_same_name_twice_keeps_the_later_member_as_tar_does(tmp_path):
    archive = _tar_gz(
        tmp_path / "a.tar.gz",
        [("db.pgsql", b"PGDMP-old", tarfile.REGTYPE), ("db.pgsql", DUMP, tarfile.REGTYPE)],
    )
    assert extract_dump(archive, tmp_path / "x").read_bytes() == DUMP
    assert _leftovers(tmp_path / "x") == ["db.pgsql"]


def test_not_gzip_at_all_is_refused(tmp_path):
    plain = tmp_path / "p.tar.gz"
    plain.write_bytes(b"plain text, not gzip")
    with pytest.raises(ScalingoArchiveError, match="not a readable .tar.gz"):
        extract_dump(plain, tmp_path / "x")
