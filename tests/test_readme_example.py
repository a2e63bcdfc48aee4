"""The README and the docs' examples are executed or checked, so they cannot go stale:

* the README stays a short introduction (at most 10 KB: it is also the PyPI page);
* every command of the README's shell blocks is run (`scalingo-staging-sync ...`, on a real Chinook
  database for `scan`) or checked against the code (`pip install` name, `make` targets, connection and
  variable names, environment variables, the DAG id and the params of `airflow dags trigger --conf`);
  a command of an unknown kind fails the test, so a new example gets a check;
* the README's "Reusing the operators in your own DAG" example is a DAG Airflow loads, built from the
  operators alone (tests/operators/test_custom_dag.py runs it end to end).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import scalingo_staging_sync

REPO = Path(__file__).resolve().parents[1]
#: the provider/ folder of the package this test imports, for the CLI run in a subprocess
PACKAGE_ROOT = str(Path(scalingo_staging_sync.__file__).resolve().parents[1])
README = REPO / "README.md"
EXAMPLE_DSN = "postgresql://localhost/myapp_copy"


def shell_commands(text: str) -> list[str]:
    """Every command of the ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_readme_is_at_most_10_kb():
    assert len(README.read_bytes()) <= 10 * 1024


def test_readme_has_the_expected_sections():
    headings = re.findall(r"^## (.+)$", README.read_text(), re.M)
    assert headings[:3] == ["How it keeps data safe", "Install", "Quick start in five steps"]
    safe = README.read_text().split("## How it keeps data safe", 1)[1].split("\n\n")[1]
    assert len(re.findall(r"[.!?](?:\s|$)", safe)) == 3, "three sentences"


def _dag_params() -> tuple[str, set[str]]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    dag_id = "scalingo_staging_sync"
    dag = bag.get_dag(dag_id)
    return dag_id, set(dag.params.keys())


def _env_vars_read_by_the_code() -> set[str]:
    names = set()
    for path in [*(REPO / "provider").rglob("*.py"), *(REPO / "dags").rglob("*.py")]:
        text = path.read_text()
        names |= set(re.findall(r"""environ(?:\.get)?[\[(]\s*["']([A-Z_]+)["']""", text))
        names |= set(re.findall(r"""^[A-Z_]+_ENV\s*=\s*["']([A-Z_]+)["']""", text, re.M))
    return names


def test_readme_commands_run_or_match_the_code(airflow_db, staging_pg16, chinook_dump, tmp_path):
    from scalingo_staging_sync import config
    from scalingo_staging_sync.anonymize.rules import load_rules
    from scalingo_staging_sync.anonymize.salt import SALT_VARIABLE
    from scalingo_staging_sync.hooks.scalingo import ScalingoHook

    commands = shell_commands(README.read_text())
    assert commands, "the README has shell examples"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    make_targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M))
    code_text = "\n".join(
        p.read_text() for p in [*Path(PACKAGE_ROOT).rglob("*.py"), *(REPO / "dags").rglob("*.py")]
    )
    env_vars = _env_vars_read_by_the_code()
    dag_id, params = _dag_params()

    staging_pg16.create_database("readme_myapp_copy")
    restore = subprocess.run(
        [
            str(Path(staging_pg16.bin_dir) / "pg_restore"),
            "--no-owner",
            "--no-privileges",
            "-d",
            staging_pg16.conninfo("readme_myapp_copy"),
            str(chinook_dump),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert restore.returncode == 0, restore.stderr
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    checked = 0
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "scalingo-staging-sync":
            argv = [a.replace(EXAMPLE_DSN, staging_pg16.conninfo("readme_myapp_copy")) for a in argv]
            proc = subprocess.run(
                [sys.executable, "-m", "scalingo_staging_sync.cli", *argv[1:]],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
            )
            assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-2000:])
        elif argv[:2] == ["pip", "install"]:
            assert re.split(r"[\[=<> ]", argv[2].strip("\"'"))[0] == project["name"]
        elif argv[0] == "make":
            assert argv[1] in make_targets, command
        elif argv[:3] == ["airflow", "connections", "add"]:
            conn_id = argv[3]
            if "--conn-type" in argv:
                assert argv[argv.index("--conn-type") + 1] == ScalingoHook.conn_type
                assert conn_id == ScalingoHook.default_conn_name
            else:
                assert argv[argv.index("--conn-uri") + 1].startswith("postgresql://")
                assert f'"{conn_id}"' in code_text, f"the reference DAG uses the connection {conn_id}"
        elif argv[:3] == ["airflow", "variables", "set"]:
            assert argv[3] == SALT_VARIABLE
        elif argv[0] == "export":
            for assignment in argv[1:]:
                name = assignment.split("=", 1)[0]
                prefix = f"AIRFLOW__{config.SECTION.upper()}__"
                if name.startswith(prefix):  # Airflow's form of a key of the provider's config section
                    assert name[len(prefix) :].lower() in config.OPTIONS, assignment
                else:
                    assert name in env_vars, assignment
        elif argv[:3] == ["airflow", "dags", "unpause"]:
            assert argv[3:] == [dag_id], command
        elif argv[:3] == ["airflow", "dags", "trigger"]:
            assert argv[3] == dag_id
            conf = json.loads(argv[argv.index("--conf") + 1])
            assert set(conf) <= params, set(conf) - params
        else:
            pytest.fail(f"README command without a check: {command!r} (add one to this test)")
        checked += 1
    assert checked == len(commands)

    # the quick start's files exist where the next steps say
    suggested = load_rules(tmp_path / "my-sync" / "rules.yaml")
    assert suggested.anonymization_tables
    assert (suggested.source_app, suggested.target_app) == ("my-production-app", "my-staging-app")
    assert (tmp_path / "my-sync" / "rules.example.yaml").is_file()


def readme_custom_dag_example() -> str:
    """The python block of the README's "Reusing the operators in your own DAG" section (also run end to
    end by tests/operators/test_custom_dag.py)."""
    section = README.read_text().split("## Reusing the operators in your own DAG", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_custom_dag_example_loads_and_uses_only_the_operators(airflow_db, tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    code = readme_custom_dag_example()
    imports = re.findall(r"^from (\S+) import", code, re.M)
    assert set(imports) <= {"airflow.sdk", "scalingo_staging_sync.operators"}, imports
    (tmp_path / "refresh_demo_db.py").write_text(code)
    bag = DagBag(dag_folder=str(tmp_path))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("refresh_demo_db")
    assert dag.render_template_as_native_obj is False
    assert {
        "backup",
        "schema",
        "plan",
        "data",
        "mask",
        "post",
        "scan",
        "verify",
        "promote",
        "cleanup",
    } <= set(dag.task_ids)
    assert dag.get_task("cleanup").is_teardown
