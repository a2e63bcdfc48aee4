"""Safe extraction of a Scalingo backup archive (``.tar.gz`` holding a ``*.pgsql`` pg_dump file)."""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import posixpath
import shutil
import tarfile
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TypeVar

from scalingo_staging_sync.scalingo.errors import ScalingoArchiveError

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: dump file names in order of preference (the gem's: a Scalingo PostgreSQL backup holds one ``*.pgsql``;
#: a ``*.sql`` is kept only if its content is a PostgreSQL dump, see :func:`check_dump_file`)
DUMP_SUFFIXES = (".pgsql", ".dump", ".sql")
PLAIN_SQL_MARKERS = (b"--\n-- PostgreSQL database dump", b"-- PostgreSQL database dump")


def check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse absolute paths, ``..`` components, links, devices and fifos (named in the error)."""
    name = member.name
    where = f"archive {archive.name}: member {name!r}"
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise ScalingoArchiveError(
            f"{where} has an absolute path; refusing to extract. The file is not a genuine Scalingo backup."
        )
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    if ".." in parts:
        raise ScalingoArchiveError(
            f"{where} climbs out of the extraction directory ('..'); refusing to extract. "
            f"The file is not a genuine Scalingo backup."
        )
    if member.issym() or member.islnk():
        raise ScalingoArchiveError(
            f"{where} is a link to {member.linkname!r}; refusing to extract links. "
            f"The file is not a genuine Scalingo backup."
        )
    if not (member.isfile() or member.isdir()):
        raise ScalingoArchiveError(
            f"{where} is a device/fifo/special file; refusing to extract. "
            f"The file is not a genuine Scalingo backup."
        )


def check_dump_file(path: Path) -> str:
    """Return ``"custom"`` (pg_dump -Fc, magic ``PGDMP``) or ``"plain"``; raise otherwise."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"PGDMP"):
        return "custom"
    text = head.lstrip(b"\xef\xbb\xbf")
    if any(text.startswith(m) for m in PLAIN_SQL_MARKERS) or b"PostgreSQL database dump" in text[:200]:
        return "plain"
    raise ScalingoArchiveError(
        f"{path.name} is not a pg_dump archive (no 'PGDMP' custom-format magic and no plain SQL dump "
        f"header; starts with {head[:16]!r}). Check that the backup belongs to a PostgreSQL addon."
    )


def open_gzip(path: Path | IO[bytes]) -> IO[bytes]:
    """The decompressed stream of the gzip file ``path`` (or of a binary file object): python-isal's
    reader (ISA-L's inflate, about 1.4 times tarfile's zlib stream here, decompressing ahead on a thread)
    where it is installed, else the standard library's ``gzip`` (zlib). Both check every member's CRC
    and length when read to the end, and read concatenated members (``docs/performance.md``,
    "Component benchmarks")."""
    try:
        from isal import igzip_threaded
    except ImportError:  # isal is a dependency, but its wheel may be missing somewhere
        return gzip.open(path, "rb")
    return igzip_threaded.open(path, "rb", threads=1)


def gzip_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a broken gzip stream raises (zlib's, ISA-L's)."""
    errors: tuple[type[BaseException], ...] = (zlib.error, gzip.BadGzipFile, EOFError)
    try:
        from isal import isal_zlib
    except ImportError:
        return errors
    return (*errors, isal_zlib.error)


def _rank(name: str) -> tuple[int, str] | None:
    """How good a member name is as the dump (lower wins): ``*.pgsql``, then ``*.dump``, then ``*.sql``,
    then the first name in sorted order; None for a member that is not a dump candidate."""
    lowered = name.lower()
    for i, suffix in enumerate(DUMP_SUFFIXES):
        if lowered.endswith(suffix):
            return (i, name)
    return None


def extract_dump(archive: Path, dest_dir: Path, *, source: IO[bytes] | None = None) -> Path:
    """Validate every member of ``archive``, extract the ``*.pgsql`` dump (fallback ``*.dump``, then
    ``*.sql``) into ``dest_dir`` and return its path, after checking it is a pg_dump archive.
    ``source``: read the archive's bytes from this file object instead of the file ``archive`` (a
    :class:`GrowingFile` while the archive downloads; ``archive`` then only names it in messages).

    One pass over the gzip stream (:func:`open_gzip`, read as ``r|``, then to its end so its
    CRC is checked): each member is checked as it comes. Only the candidate dump that is the choice
    so far is written, under a ``.part`` name: ``*.pgsql`` wins over ``*.dump`` and ``*.sql``, the
    first name in sorted order among several, and a later member with the chosen name replaces it
    (as tar does). A candidate that cannot win is never written; one that wins removes the previous
    choice's ``.part`` before it is written, so at most one candidate is on disk at any time (a genuine
    Scalingo backup holds one ``*.pgsql``: it is the only file written). Only when the whole archive
    has been read and every member passed is the chosen dump renamed into place; anything refused on
    the way removes the ``.part`` file, so a bad member anywhere in the archive leaves nothing behind.
    (Listing the members first and extracting afterwards decompresses the archive twice.)
    """
    archive = Path(archive)
    dest_dir = Path(dest_dir)
    chosen: str | None = None  # member name of the dump kept so far
    part: Path | None = None  # its .part file
    files: list[str] = []
    candidates: list[str] = []
    broken_gzip = gzip_errors()
    try:
        try:
            with (
                open_gzip(archive if source is None else source) as stream,
                tarfile.open(fileobj=stream, mode="r|") as tar,
            ):
                for member in tar:
                    check_member(member, archive)
                    if not member.isfile():
                        continue
                    # the stdlib "data" filter semantics (already enforced by check_member), but written
                    # by us: flat name, temporary name, atomic rename at the end
                    tarfile.data_filter(member, str(dest_dir))
                    files.append(member.name)
                    rank = _rank(member.name)
                    if rank is None:
                        continue
                    candidates.append(member.name)
                    if chosen is not None and rank > _rank(chosen):  # type: ignore[operator]
                        continue  # not kept: read past it, never written
                    if part is not None:  # the previous choice loses (or the same name again)
                        part.unlink(missing_ok=True)
                        part = None
                    dest_dir.mkdir(parents=True, exist_ok=True)
                    chosen = member.name
                    part = dest_dir / f".{len(files)}.{posixpath.basename(member.name)}.part"
                    source = tar.extractfile(member)
                    if source is None:  # pragma: no cover - regular files always have a stream
                        raise ScalingoArchiveError(
                            f"archive {archive.name}: cannot read member {member.name!r}"
                        )
                    with source, open(part, "wb") as out:
                        shutil.copyfileobj(source, out, 1024 * 1024)
                # tar stops at its end-of-archive blocks: read the gzip stream to its end, so its
                # CRC and length are checked (a corrupt or cut archive is refused, not half-read)
                while stream.read(1024 * 1024):
                    pass
        except tarfile.FilterError as exc:
            raise ScalingoArchiveError(f"archive {archive.name}: unsafe member refused ({exc})") from None
        except FollowStopped:
            raise
        except (tarfile.TarError, OSError, *broken_gzip) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, (tarfile.TarError, *broken_gzip)):
                if "gzip" not in str(exc).lower() and "compressed" not in str(exc).lower():
                    raise
            raise ScalingoArchiveError(
                f"archive {archive.name} is not a readable .tar.gz ({type(exc).__name__}: {exc}); delete it "
                f"and download the backup again."
            ) from None
        if chosen is None or part is None:
            raise ScalingoArchiveError(
                f"archive {archive.name} holds no PostgreSQL dump (*.pgsql, *.dump or *.sql); its files are: "
                f"{files or 'none'}. Check the backup belongs to the PostgreSQL addon "
                f"(pass addon_id explicitly if the app has several databases)."
            )
        same_suffix = sorted({c for c in candidates if _rank(c)[0] == _rank(chosen)[0]})  # type: ignore[index]
        if len(same_suffix) > 1:
            suffix = DUMP_SUFFIXES[_rank(chosen)[0]]  # type: ignore[index]
            log.warning(
                "archive %s holds several %s files (%s); using %s",
                archive.name,
                suffix,
                ", ".join(same_suffix),
                chosen,
            )
        target = dest_dir / posixpath.basename(chosen)
        part.replace(target)
        part = None
    finally:
        if part is not None:
            part.unlink(missing_ok=True)
    try:
        fmt = check_dump_file(target)
    except ScalingoArchiveError:
        target.unlink(missing_ok=True)  # not a PostgreSQL dump: nothing of it is kept
        raise
    log.info(
        "extracted %s (%s format, %d bytes) from %s", target.name, fmt, target.stat().st_size, archive.name
    )
    return target


class FollowStopped(Exception):
    """A :class:`GrowingFile` stops being read: its download restarted from byte 0 or failed."""


class GrowingFile(io.RawIOBase):
    """Read a file while a download appends to it (another thread): a read waits for more bytes until
    the writer calls :meth:`end`; :meth:`stop` (a restart from byte 0, a failed download) makes every
    read raise :class:`FollowStopped`. The writer calls :meth:`grew` with the file it writes and the
    bytes written so far, after flushing them; the file is opened at the first call and read through
    that descriptor, so the download's final rename does not disturb it."""

    def __init__(self, wait_s: float = 1.0) -> None:
        super().__init__()
        self.path: Path | None = None
        self._cond = threading.Condition()
        self._fh: IO[bytes] | None = None
        self._size = 0
        self._pos = 0
        self._ended = False
        self._stopped: str | None = None
        self._wait_s = wait_s

    # the writer's side
    def grew(self, path: Path, size: int) -> None:
        with self._cond:
            if self._fh is None and self._stopped is None:
                self.path = Path(path)
                self._fh = open(self.path, "rb")  # noqa: SIM115 - closed by close()
            elif self.path is not None and Path(path) != self.path:
                raise ValueError(f"GrowingFile follows {self.path}, not {path}")
            self._size = size
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def stop(self, why: str) -> None:
        with self._cond:
            if self._stopped is None:
                self._stopped = why
            self._cond.notify_all()

    # the reader's side
    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        with self._cond:
            while self._stopped is None and not self._ended and self._pos >= self._size:
                self._cond.wait(self._wait_s)
            if self._stopped is not None:
                raise FollowStopped(self._stopped)
            available = self._size - self._pos
            fh = self._fh
        if available <= 0 or fh is None:
            return 0  # the download ended: end of file
        data = os.pread(fh.fileno(), min(len(buffer), available), self._pos)
        with self._cond:  # stopped while reading: the file may have been emptied under the read
            if self._stopped is not None:
                raise FollowStopped(self._stopped)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    @property
    def stopped(self) -> str | None:
        """Why reading stopped (see :meth:`stop`), or None."""
        with self._cond:
            return self._stopped

    def close(self) -> None:
        with self._cond:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
        super().close()


def download_and_extract(
    download: Callable[[GrowingFile], _T], archive: Path, dest_dir: Path
) -> tuple[_T, Path]:
    """Run ``download(follower)`` (it writes a file and renames it ``archive`` when complete, calling
    ``follower.grew`` / ``follower.stop`` as :func:`scalingo_staging_sync.scalingo.download.
    download_archive` does) while :func:`extract_dump` reads the same bytes on a thread: the
    gzip is inflated and the dump written as the archive arrives, not after.

    The extraction only ends once the download has returned (its size and gzip checks passed): a
    download that fails stops the extraction, which removes what it wrote, and the download's error is
    raised. A download that restarted from byte 0 stops it too; the archive is then extracted again
    from the finished file. An archive the extraction refuses raises its error once the download has
    ended. Returns ``(what download returned, the dump's path)``."""
    archive = Path(archive)
    follower = GrowingFile()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract") as pool:
        extracting = pool.submit(extract_dump, archive, dest_dir, source=follower)
        try:
            try:
                result = download(follower)
            except BaseException:
                follower.stop("the download failed")
                with contextlib.suppress(BaseException):
                    extracting.result()
                raise
            follower.end()
            try:
                return result, extracting.result()
            except Exception:  # noqa: BLE001 - re-raised unless the restart explains it
                if follower.stopped is None:
                    raise
                log.info("extracting %s again from the downloaded file (%s)", archive.name, follower.stopped)
        finally:
            follower.close()
    return result, extract_dump(archive, dest_dir)
