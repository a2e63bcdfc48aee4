"""The archive is extracted while it downloads (``archive.download_and_extract``): the same dump as
extracting the finished file, through resumes, failures and refused archives, with nothing left
behind when the download or the archive is refused."""

from __future__ import annotations

import io
import os
import secrets
import tarfile
import threading
import time

import pytest
from scalingo_helpers import APP, archive_log

from scalingo_staging_sync.scalingo.archive import GrowingFile, download_and_extract, extract_dump
from scalingo_staging_sync.scalingo.download import sha256_file
from scalingo_staging_sync.scalingo.errors import ScalingoArchiveError, ScalingoDownloadError


@pytest.fixture
def fake_archive_bytes():
    """A ``.tar.gz`` holding a 4 MB ``*.pgsql`` (custom-format magic, incompressible bytes)."""
    dump = b"PGDMP\x01\x0e\x00" + secrets.token_bytes(4 << 20)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("20260301010000_shop.pgsql")
        info.size = len(dump)
        tar.addfile(info, io.BytesIO(dump))
    return buf.getvalue(), dump


def _pipelined(client, fake_app, dest_dir, **kwargs):
    meta = client.latest_done_backup(APP, fake_app.id)
    archive = dest_dir / "b.tar.gz"
    return download_and_extract(
        lambda follower: client.download_backup(APP, fake_app.id, meta, archive, follower=follower, **kwargs),
        archive,
        dest_dir / "x",
    )


def test_the_dump_is_written_before_the_archive_has_arrived(fake_archive_bytes, tmp_path):
    """A download that stops short of its last bytes until the extraction has written part of the
    dump: the extraction reads the archive as it grows, not after."""
    archive, dump_bytes = fake_archive_bytes
    dest = tmp_path / "x"
    target = tmp_path / "a.tar.gz"
    part = target.with_name(target.name + ".part")
    seen_before_the_end: list[int] = []

    def download(follower: GrowingFile) -> str:
        head = len(archive) * 9 // 10
        with open(part, "wb") as out:
            out.write(archive[:head])
            out.flush()
            follower.grew(part, head)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                written = [p.stat().st_size for p in dest.glob(".*.part")] if dest.exists() else []
                if written and written[0] > 0:
                    seen_before_the_end.append(written[0])
                    break
                time.sleep(0.01)
            out.write(archive[head:])
            out.flush()
            follower.grew(part, len(archive))
        os.replace(part, target)
        return "done"

    result, dump = download_and_extract(download, target, dest)
    assert result == "done"
    assert seen_before_the_end and seen_before_the_end[0] > 0
    assert dump.read_bytes() == dump_bytes
    assert [p.name for p in dest.iterdir()] == [dump.name]  # no .part left


def test_pipelined_extraction_gives_the_dump_of_the_finished_file(
    fake, fake_app, client, chinook_dump, tmp_path
):
    backup = fake.add_backup(APP, chinook_dump)
    result, dump = _pipelined(client, fake_app, tmp_path)
    assert result.sha256 == sha256_file(backup.archive)
    assert dump.read_bytes() == chinook_dump.read_bytes()
    assert dump.read_bytes() == extract_dump(result.path, tmp_path / "again").read_bytes()


def test_a_resumed_download_is_followed_without_a_second_extraction(
    fake, fake_app, client, chinook_dump, tmp_path
):
    fake.add_backup(APP, chinook_dump)
    fake.cut_download()  # the connection drops half-way: the resume appends to the same file
    with archive_log() as messages:
        result, dump = _pipelined(client, fake_app, tmp_path)
    assert result.resumes == 1
    assert dump.read_bytes() == chinook_dump.read_bytes()
    assert any(m.startswith("extracted ") for m in messages)  # the log is read
    assert not any("again" in m for m in messages)


def test_a_failed_download_stops_the_extraction_and_leaves_nothing(
    fake, fake_app, client, chinook_dump, tmp_path
):
    fake.add_backup(APP, chinook_dump)
    fake.cut_download(after_bytes=20_000, times=50)
    started = time.monotonic()
    with pytest.raises(ScalingoDownloadError, match="connection lost"):
        _pipelined(client, fake_app, tmp_path, max_resumes=2)
    assert time.monotonic() - started < 30  # the extraction thread did not keep the call waiting
    assert not list(tmp_path.rglob("*.pgsql")) and not list(tmp_path.rglob("*.part"))
    assert not [t for t in threading.enumerate() if t.name.startswith("extract")]


def test_a_truncated_archive_refused_at_the_end_of_the_download_leaves_nothing(
    fake, fake_app, client, chinook_dump, tmp_path
):
    whole = fake.add_backup(APP, chinook_dump).archive.read_bytes()
    short = tmp_path / "short.tar.gz"
    short.write_bytes(whole[: len(whole) // 2])
    fake.add_backup(APP, archive=short, reported_size=len(whole))
    with pytest.raises(ScalingoDownloadError, match="truncated"):
        _pipelined(client, fake_app, tmp_path / "dl")
    assert not list((tmp_path / "dl").rglob("*.pgsql")) and not list((tmp_path / "dl").rglob("*.part"))


def test_an_unsafe_archive_is_refused_once_downloaded(fake, fake_app, client, chinook_dump, tmp_path):
    fake.add_backup(APP, chinook_dump, traversal_member=True)
    with pytest.raises(ScalingoArchiveError, match=r"'\.\./.*\.pgsql' climbs out"):
        _pipelined(client, fake_app, tmp_path / "t")
    assert not list(tmp_path.rglob("*.pgsql")) and not list((tmp_path / "t").rglob("*.part"))
