"""Safe extraction of a Scalingo backup archive (``.tar.gz`` holding a ``*.pgsql`` pg_dump file)."""

from __future__ import annotations

import logging
import posixpath
import shutil
import tarfile
import zlib
from pathlib import Path

from scalingo_staging_sync.scalingo.errors import ScalingoArchiveError

log = logging.getLogger(__name__)

DUMP_SUFFIXES = (".pgsql", ".dump")
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


def extract_dump(archive: Path, dest_dir: Path) -> Path:
    """Validate every member of ``archive``, extract the ``*.pgsql`` dump (fallback ``*.dump``) into
    ``dest_dir`` and return its path, after checking it is a pg_dump archive.

    One pass over the gzip stream (``r|gz``): each member is checked as it comes, and each candidate
    dump is written under a ``.part`` name. Only when the whole archive has been read and every member
    passed is the chosen dump renamed into place; anything refused on the way removes the ``.part``
    files, so a bad member anywhere in the archive leaves nothing behind. (Listing the members first
    and extracting afterwards decompresses the archive twice.)
    """
    archive = Path(archive)
    dest_dir = Path(dest_dir)
    parts: dict[str, Path] = {}  # member name -> its .part file
    files: list[str] = []
    try:
        try:
            with tarfile.open(archive, mode="r|gz") as tar:
                for member in tar:
                    check_member(member, archive)
                    if not member.isfile():
                        continue
                    files.append(member.name)
                    if not member.name.lower().endswith(DUMP_SUFFIXES):
                        continue
                    # the stdlib "data" filter semantics (already enforced by check_member), but written
                    # by us: flat name, temporary name, atomic rename at the end
                    tarfile.data_filter(member, str(dest_dir))
                    dest_dir.mkdir(parents=True, exist_ok=True)
                    if member.name in parts:  # the same name twice: the later member wins, as in tar
                        parts.pop(member.name).unlink(missing_ok=True)
                    tmp = dest_dir / f".{len(files)}.{posixpath.basename(member.name)}.part"
                    parts[member.name] = tmp
                    source = tar.extractfile(member)
                    if source is None:  # pragma: no cover - regular files always have a stream
                        raise ScalingoArchiveError(
                            f"archive {archive.name}: cannot read member {member.name!r}"
                        )
                    with source, open(tmp, "wb") as out:
                        shutil.copyfileobj(source, out, 1024 * 1024)
        except tarfile.FilterError as exc:
            raise ScalingoArchiveError(f"archive {archive.name}: unsafe member refused ({exc})") from None
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, (tarfile.TarError, EOFError)):
                if "gzip" not in str(exc).lower() and "compressed" not in str(exc).lower():
                    raise
            raise ScalingoArchiveError(
                f"archive {archive.name} is not a readable .tar.gz ({type(exc).__name__}: {exc}); delete it "
                f"and download the backup again."
            ) from None
        chosen = None
        for suffix in DUMP_SUFFIXES:
            candidates = sorted(name for name in parts if name.lower().endswith(suffix))
            if candidates:
                if len(candidates) > 1:
                    log.warning(
                        "archive %s holds several %s files (%s); using %s",
                        archive.name,
                        suffix,
                        ", ".join(candidates),
                        candidates[0],
                    )
                chosen = candidates[0]
                break
        if chosen is None:
            raise ScalingoArchiveError(
                f"archive {archive.name} holds no PostgreSQL dump (*.pgsql or *.dump); its files are: "
                f"{files or 'none'}. Check the backup belongs to the PostgreSQL addon "
                f"(pass addon_id explicitly if the app has several databases)."
            )
        target = dest_dir / posixpath.basename(chosen)
        parts.pop(chosen).replace(target)
    finally:
        for tmp in parts.values():
            tmp.unlink(missing_ok=True)
    fmt = check_dump_file(target)
    log.info(
        "extracted %s (%s format, %d bytes) from %s", target.name, fmt, target.stat().st_size, archive.name
    )
    return target
