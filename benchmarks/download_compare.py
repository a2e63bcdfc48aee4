"""Download of one Scalingo backup archive: ScalingoHook vs ``curl``, from the same (fake) server.

Used by ``benchmarks/run.py`` (the fake Scalingo API of the sandbox runs in the bench process; each
download runs in a child process so only the downloader's memory is measured). Standalone::

    AIRFLOW_CONN_SCALINGO_DEFAULT='<json>' python benchmarks/download_compare.py hook --app A --dest DIR
    AIRFLOW_CONN_SCALINGO_DEFAULT='<json>' python benchmarks/download_compare.py url --app A

``hook`` downloads the latest done backup with ``ScalingoHook.download_backup`` then extracts it with
``ScalingoHook.extract_dump``, and prints one JSON line (seconds, bytes, peak RSS before/after each step).
``url`` prints the signed download URL, for ``curl``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from download_memory import peak_rss_mb  # noqa: E402


def _backup(app: str):
    from scalingo_staging_sync.hooks.scalingo import ScalingoHook

    hook = ScalingoHook()
    addon = hook.get_postgresql_addon(app)
    return hook, addon, hook.latest_done_backup(app, addon["id"])


def child_hook(app: str, dest: Path) -> dict:
    hook, addon, backup = _backup(app)
    rss_start = peak_rss_mb()
    started = time.monotonic()
    result = hook.download_backup(app, addon["id"], backup, dest / backup.get("name", "backup.tar.gz"))
    download_s = time.monotonic() - started
    rss_download = peak_rss_mb()
    started = time.monotonic()
    dump = hook.extract_dump(result.path, dest / "x")
    extract_s = time.monotonic() - started
    return {
        "bytes": result.size,
        "download_s": round(download_s, 3),
        "extract_s": round(extract_s, 3),
        "dump_bytes": Path(dump).stat().st_size,
        "peak_rss_before_mb": round(rss_start, 1),
        "peak_rss_after_download_mb": round(rss_download, 1),
        "peak_rss_after_extract_mb": round(peak_rss_mb(), 1),
    }


def child_url(app: str) -> str:
    hook, addon, backup = _backup(app)
    return hook.archive_url(app, addon["id"], backup["id"])


def _run_child(args: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise RuntimeError(f"download child failed: {proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def compare(app: str, env: dict[str, str], work: Path, repeat: int = 3, log=print) -> dict:
    """Alternate hook and curl downloads (+ extraction) of the same archive ``repeat`` times each."""
    hook_runs: list[dict] = []
    curl_runs: list[dict] = []
    for i in range(repeat):
        for kind in ("hook", "curl") if i % 2 == 0 else ("curl", "hook"):
            dest = work / f"dl-{kind}-{i}"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            if kind == "hook":
                run = json.loads(_run_child(["hook", "--app", app, "--dest", str(dest)], env))
                hook_runs.append(run)
                log(
                    f"  download {i + 1} hook: {run['download_s']:.2f} s "
                    f"({run['bytes'] / 1e6 / max(run['download_s'], 1e-9):.0f} MB/s), "
                    f"extract {run['extract_s']:.2f} s, peak RSS {run['peak_rss_after_extract_mb']:.0f} MB"
                )
            else:
                url = _run_child(["url", "--app", app], env)
                archive = dest / "backup.tar.gz"
                started = time.monotonic()
                subprocess.run(["curl", "-sS", "-f", "-o", str(archive), url], check=True)
                download_s = time.monotonic() - started
                started = time.monotonic()
                (dest / "x").mkdir()
                subprocess.run(["tar", "-xzf", str(archive), "-C", str(dest / "x")], check=True)
                extract_s = time.monotonic() - started
                size = archive.stat().st_size
                curl_runs.append(
                    {"bytes": size, "download_s": round(download_s, 3), "extract_s": round(extract_s, 3)}
                )
                log(
                    f"  download {i + 1} curl: {download_s:.2f} s ({size / 1e6 / max(download_s, 1e-9):.0f} MB/s), "
                    f"tar -xzf {extract_s:.2f} s"
                )
            shutil.rmtree(dest, ignore_errors=True)
    size = hook_runs[0]["bytes"]
    hook_s = statistics.median(r["download_s"] for r in hook_runs)
    curl_s = statistics.median(r["download_s"] for r in curl_runs)
    return {
        "archive_bytes": size,
        "repeat": repeat,
        "hook_download_s": [r["download_s"] for r in hook_runs],
        "curl_download_s": [r["download_s"] for r in curl_runs],
        "hook_median_s": round(hook_s, 3),
        "curl_median_s": round(curl_s, 3),
        "hook_mb_s": round(size / 1e6 / hook_s, 1),
        "curl_mb_s": round(size / 1e6 / curl_s, 1),
        "hook_vs_curl_time_ratio": round(hook_s / curl_s, 3),
        "hook_extract_median_s": round(statistics.median(r["extract_s"] for r in hook_runs), 3),
        "tar_extract_median_s": round(statistics.median(r["extract_s"] for r in curl_runs), 3),
        "peak_rss_before_mb": max(r["peak_rss_before_mb"] for r in hook_runs),
        "peak_rss_after_download_mb": max(r["peak_rss_after_download_mb"] for r in hook_runs),
        "peak_rss_after_extract_mb": max(r["peak_rss_after_extract_mb"] for r in hook_runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=("hook", "url"))
    parser.add_argument("--app", required=True)
    parser.add_argument("--dest", type=Path)
    args = parser.parse_args(argv)
    if args.mode == "hook":
        print(json.dumps(child_hook(args.app, args.dest)))
    else:
        print(child_url(args.app))
    return 0


if __name__ == "__main__":
    sys.exit(main())
