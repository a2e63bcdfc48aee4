"""Extraction of a Scalingo backup archive, four ways on the same archive, in rotating order, medians of
wall and CPU seconds:

* ``two_pass``: listing the members first and extracting afterwards (what it did until 0.2.0), which
  decompresses the archive twice;
* ``tarfile_gz``: one pass with the standard library's ``tarfile`` ``r|gz`` (zlib), what it did before
  python-isal; it never checks the gzip CRC;
* ``gzip_stdlib``: ``extract_dump`` with the standard library's ``gzip`` reader (zlib): what it does
  where python-isal is not installed;
* ``isal``: ``extract_dump`` as shipped: python-isal's threaded reader (ISA-L's inflate).

    PYTHONPATH=provider .venv/bin/python benchmarks/extract_bench.py --scale 0.5 --repeat 5
    # the make bench archive, kept (make bench ... --keep): sandbox/fake-scalingo/archives/*/*.tar.gz
    PYTHONPATH=provider .venv/bin/python benchmarks/extract_bench.py --archive <a .tar.gz> --repeat 5

The archive is a real ``pg_dump -Fc`` of ``benchmarks/datagen.py`` at ``--scale`` in an embedded
PostgreSQL 16, wrapped as a Scalingo backup (.tar.gz) by ``scalingo_staging_sync.testing.archive``.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datagen import generate  # noqa: E402

from scalingo_staging_sync.scalingo import archive as archive_mod  # noqa: E402
from scalingo_staging_sync.scalingo.archive import check_member, extract_dump  # noqa: E402
from scalingo_staging_sync.testing.archive import build_backup_archive  # noqa: E402
from scalingo_staging_sync.testing.postgres import start_embedded_postgres  # noqa: E402


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / Path(member.name).name
    with tar.extractfile(member) as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out, 1024 * 1024)
    return target


def two_pass(archive: Path, dest: Path) -> Path:
    """The former extraction: ``getmembers()`` (reads the whole stream), then ``extractfile`` (seeks
    back, i.e. decompresses again from the start)."""
    with tarfile.open(archive, mode="r:gz") as tar:
        members = tar.getmembers()
        for member in members:
            check_member(member, archive)
        return _write(tar, next(m for m in members if m.isfile() and m.name.endswith(".pgsql")), dest)


def tarfile_gz(archive: Path, dest: Path) -> Path:
    """One pass with ``tarfile``'s own gzip stream (``r|gz``, zlib), as ``extract_dump`` did before isal."""
    target = None
    with tarfile.open(archive, mode="r|gz") as tar:
        for member in tar:
            check_member(member, archive)
            if member.isfile() and member.name.endswith(".pgsql"):
                target = _write(tar, member, dest)
    if target is None:
        raise SystemExit(f"{archive}: no *.pgsql member")
    return target


def gzip_stdlib(archive: Path, dest: Path) -> Path:
    """``extract_dump`` with the standard library's gzip reader (as where python-isal is missing)."""
    shipped = archive_mod.open_gzip
    archive_mod.open_gzip = lambda path: gzip.open(path, "rb")
    try:
        return extract_dump(archive, dest)
    finally:
        archive_mod.open_gzip = shipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--archive", type=Path, help="an existing backup archive (no dataset generated)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="extract-bench-"))
    if args.archive:
        archive = args.archive
        dump = tarfile_gz(archive, base / "reference")
    else:
        pg = start_embedded_postgres(16, base / "pg")
        try:
            pg.create_database("prod")
            generate(pg.conninfo("prod"), args.scale)
            dump = pg.pg_dump("prod", base / "prod.pgsql")
            archive = build_backup_archive(dump, base, "backup")
        finally:
            pg.stop()
    engines = {
        "two_pass": two_pass,
        "tarfile_gz": tarfile_gz,
        "gzip_stdlib": gzip_stdlib,
        "isal": extract_dump,
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
    for round_ in range(args.repeat):
        names = list(engines)
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            out = base / f"out-{name}"
            shutil.rmtree(out, ignore_errors=True)
            cpu, wall = time.process_time(), time.perf_counter()
            extracted = engines[name](archive, out)
            times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
            assert _same(extracted, dump), name
    print(
        f"archive {archive.stat().st_size / 1e6:.1f} MB (dump {dump.stat().st_size / 1e6:.1f} MB), "
        f"{args.repeat} rounds, medians:"
    )
    base_wall = statistics.median(w for _, w in times["two_pass"])
    for name, runs in times.items():
        wall = statistics.median(w for _, w in runs)
        cpu = statistics.median(c for c, _ in runs)
        print(f"  {name:11s} wall {wall:6.3f} s  cpu {cpu:6.3f} s  ratio {wall / base_wall:.2f}")
    shutil.rmtree(base, ignore_errors=True)
    return 0


def _same(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


if __name__ == "__main__":
    raise SystemExit(main())
