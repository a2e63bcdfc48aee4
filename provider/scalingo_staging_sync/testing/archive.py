"""Build backup archives the way Scalingo does: ``<YYYYMMDDhhmmss>_<resource_id>.tar.gz`` holding
``<YYYYMMDDhhmmss>_<resource_id>.pgsql`` (a ``pg_dump -Fc`` file), plus deliberately broken variants
for tests (no dump, ``../`` member, symlink)."""

from __future__ import annotations

import io
import tarfile
import time
from datetime import datetime, timezone
from pathlib import Path


def backup_name(resource_id: str, created_at: datetime | None = None) -> str:
    created_at = (created_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{created_at:%Y%m%d%H%M%S}_{resource_id}"


def build_backup_archive(
    dump_path: str | Path | None,
    out_dir: str | Path,
    name: str,
    *,
    include_dump: bool = True,
    traversal_member: bool = False,
    symlink_member: bool = False,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write ``<out_dir>/<name>.tar.gz`` and return its path.

    ``dump_path`` is a real ``pg_dump`` file stored as ``<name>.pgsql`` (unless ``include_dump`` is
    False). ``traversal_member`` adds a ``../<name>.pgsql`` entry, ``symlink_member`` a symlink.
    """
    out = Path(out_dir) / f"{name}.tar.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        if include_dump and dump_path is not None:
            tar.add(str(dump_path), arcname=f"{name}.pgsql", recursive=False)
        if traversal_member:
            _add_bytes(tar, f"../{name}.pgsql", b"PGDMP evil")
        if symlink_member:
            info = tarfile.TarInfo(f"{name}.link.pgsql")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        for arcname, data in (extra_files or {}).items():
            _add_bytes(tar, arcname, data)
    return out


def _add_bytes(tar: tarfile.TarFile, arcname: str, data: bytes) -> None:
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
