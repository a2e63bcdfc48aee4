"""`pip install` ships the reference DAG (and the example rules file): a wheel is built, installed into a
fresh virtualenv (Airflow itself borrowed from the development environment, the package from the
wheel) and provides the DAG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_RULES = REPO / "provider" / "scalingo_staging_sync" / "example_dags" / "rules.example.yaml"


def test_wheel_installed_in_a_fresh_virtualenv_provides_the_dag(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO), "-w", str(wheels)],
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("airflow_provider_scalingo_staging_sync-*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # Airflow and the other dependencies come from the development environment (appended after the
    # venv's own site-packages, whose .pth files, like the development checkout's editable install, are
    # not processed): the package itself can only come from the wheel.
    (site / "zz_dev_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--ignore-installed"]
        + ["-q", str(wheel)],
        check=True,
        timeout=600,
        env=clean_env,
    )
    probe = textwrap.dedent(
        """
        import importlib.util, json
        import scalingo_staging_sync
        from scalingo_staging_sync import example_dags
        spec = importlib.util.spec_from_file_location("ref", example_dags.REFERENCE_DAG_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(json.dumps({
            "package": scalingo_staging_sync.__file__,
            "version": scalingo_staging_sync.__version__,
            "dag_id": module.dag.dag_id,
            "tasks": len(module.dag.tasks),
            "rules": example_dags.EXAMPLE_RULES_FILE.is_file(),
        }))
        """
    )
    env = dict(clean_env)
    env["AIRFLOW_HOME"] = str(tmp_path / "home")
    out = subprocess.run(
        [str(python), "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["package"].startswith(str(site)), found
    assert found["dag_id"] == "scalingo_staging_sync" and found["tasks"] == 18
    from scalingo_staging_sync import __version__

    assert found["version"] == __version__
    assert wheel.name.startswith(f"airflow_provider_scalingo_staging_sync-{__version__}-")
    # the example rules file is added by the "cli" work (example_dags/rules.example.yaml): shipped with it
    assert found["rules"] == EXAMPLE_RULES.is_file()
