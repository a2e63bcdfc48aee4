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


def test_a_sql_file_is_the_last_choice_and_kept_only_when_it_is_a_postgresql_dump(tmp_path):
    """As the gem did: ``*.pgsql``, then ``*.dump``, then ``*.sql`` (whatever its name says, its content
    decides: a custom-format or plain PostgreSQL dump is used, a MySQL dump is refused by name)."""
    plain = b"--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n"
    only_sql = _tar_gz(tmp_path / "a.tar.gz", [("backup/db.sql", DUMP, tarfile.REGTYPE)])
    assert extract_dump(only_sql, tmp_path / "a").read_bytes() == DUMP
    only_plain = _tar_gz(tmp_path / "b.tar.gz", [("db.sql", plain, tarfile.REGTYPE)])
    assert extract_dump(only_plain, tmp_path / "b").read_bytes() == plain
    both = _tar_gz(
        tmp_path / "c.tar.gz", [("a.sql", plain, tarfile.REGTYPE), ("z.dump", DUMP, tarfile.REGTYPE)]
    )
    dump = extract_dump(both, tmp_path / "c")
    assert dump.name == "z.dump" and _leftovers(tmp_path / "c") == ["z.dump"]
    mysql = _tar_gz(
        tmp_path / "d.tar.gz", [("dump.sql", b"-- MySQL dump 10.13  Distrib 8.0.36\n", tarfile.REGTYPE)]
    )
    with pytest.raises(ScalingoArchiveError, match=r"dump\.sql is not a pg_dump archive.*PostgreSQL addon"):
        extract_dump(mysql, tmp_path / "d")
    assert _leftovers(tmp_path / "d") == []


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


@pytest.fixture(params=["isal", "stdlib"])
def gzip_reader(request, monkeypatch):
    """Each test below runs with python-isal's reader (shipped) and with the standard library's, as
    where isal is not installed (its import made to fail)."""
    if request.param == "stdlib":
        monkeypatch.setitem(sys.modules, "isal", None)
    return request.param


def test_the_reader_is_isal_where_installed_else_the_standard_library(tmp_path, gzip_reader):
    import gzip

    from scalingo_staging_sync.scalingo.archive import open_gzip

    archive = _tar_gz(tmp_path / "a.tar.gz", [("db.pgsql", DUMP, tarfile.REGTYPE)])
    with open_gzip(archive) as stream:
        assert isinstance(stream, gzip.GzipFile) is (gzip_reader == "stdlib")
        assert type(getattr(stream, "raw", stream)).__module__.startswith("isal") is (gzip_reader == "isal")
    assert extract_dump(archive, tmp_path / "x").read_bytes() == DUMP


def test_an_archive_with_a_wrong_crc_is_refused_though_its_tar_reads(tmp_path, gzip_reader):
    """The gzip trailer's CRC32 of the whole stream is checked: tarfile's own ``r|gz`` never did."""
    data = bytearray(_tar_gz(tmp_path / "a.tar.gz", [("db.pgsql", DUMP, tarfile.REGTYPE)]).read_bytes())
    data[-8] ^= 0xFF  # the CRC32 (the trailer is CRC32, then the length, little-endian)
    bad = tmp_path / "crc.tar.gz"
    bad.write_bytes(bytes(data))
    with tarfile.open(bad, mode="r|gz") as tar:  # what the extraction used: it reads through
        assert [m.name for m in tar] == ["db.pgsql"]
    with pytest.raises(ScalingoArchiveError, match=r"crc\.tar\.gz is not a readable \.tar\.gz.*CRC"):
        extract_dump(bad, tmp_path / "x")
    assert _leftovers(tmp_path / "x") == []


def test_a_corrupt_deflate_stream_is_refused(tmp_path, gzip_reader):
    data = bytearray(
        _tar_gz(tmp_path / "a.tar.gz", [("db.pgsql", os.urandom(200_000), tarfile.REGTYPE)]).read_bytes()
    )
    data[20:4000] = os.urandom(3980)
    bad = tmp_path / "garbled.tar.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ScalingoArchiveError, match=r"garbled\.tar\.gz is not a readable \.tar\.gz"):
        extract_dump(bad, tmp_path / "x")
    assert _leftovers(tmp_path / "x") == []


def test_a_truncated_archive_is_refused_by_either_reader(tmp_path, gzip_reader):
    whole = _tar_gz(tmp_path / "a.tar.gz", [("db.pgsql", DUMP, tarfile.REGTYPE)]).read_bytes()
    for cut_at in (len(whole) // 2, len(whole) - 4):  # inside the data; inside the trailer
        cut = tmp_path / f"cut{cut_at}.tar.gz"
        cut.write_bytes(whole[:cut_at])
        with pytest.raises(ScalingoArchiveError, match=f"cut{cut_at}.tar.gz is not a readable .tar.gz"):
            extract_dump(cut, tmp_path / "x")
        assert _leftovers(tmp_path / "x") == []


def test_a_multi_member_gzip_is_read_whole(tmp_path, gzip_reader):
    """gzip files may hold several members back to back (pigz, concatenated streams): all are read."""
    import gzip

    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        info = tarfile.TarInfo("db.pgsql")
        info.size = len(DUMP)
        tar.addfile(info, io.BytesIO(DUMP))
    raw = tar_bytes.getvalue()
    third = len(raw) // 3
    archive = tmp_path / "multi.tar.gz"
    archive.write_bytes(b"".join(gzip.compress(raw[i : i + third]) for i in range(0, len(raw), third)))
    assert extract_dump(archive, tmp_path / "x").read_bytes() == DUMP
