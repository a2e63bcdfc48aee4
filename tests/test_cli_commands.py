"""`scalingo-staging-sync` commands that need no database: validate, transformers, schema, init; the
console script's declaration; exit codes; and that no command imports Airflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml
from cli_helpers import PACKAGE_ROOT, run_cli
from click.testing import CliRunner

from scalingo_staging_sync.anonymize.rules import RulesError, load_rules, rules_schema
from scalingo_staging_sync.anonymize.transformers import all_transformers
from scalingo_staging_sync.cli import example_files, main

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "provider" / "scalingo_staging_sync"
EXAMPLE_RULES = PACKAGE / "example_dags" / "rules.example.yaml"


def run(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter, as the console script runs it."""
    return run_cli(*args, timeout=120)


def test_console_script_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["scalingo-staging-sync"] == "scalingo_staging_sync.cli:main"


def test_validate_accepts_the_shipped_rules_files():
    for path in (REPO / "config" / "anonymization.yaml", EXAMPLE_RULES):
        proc = run("validate", str(path))
        assert proc.returncode == 0, proc.stderr
        assert f"{path}: valid" in proc.stdout
        load_rules(path)


BAD = """\
source_app: my-app
anonymization_tables:
  - table: users
    columns:
      email: email
      emial: {transformer: email, domian: example.com}
      email: null
  - table: orders
    strategy: nope
  - table: users
    columns: {phone: phone}
"""


def test_validate_reports_every_error_with_file_and_line(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(BAD)
    proc = run("validate", str(path))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert (
        f"{path}:7: anonymization_tables[0].columns.email: duplicate key (first defined on line 5); "
        "a key may appear once per mapping: keep one"
    ) in lines
    assert any(
        line.startswith(f"{path}:6: anonymization_tables[0].columns.emial.domian: unknown option")
        for line in lines
    )
    assert any(
        line.startswith(f"{path}:9: anonymization_tables[1].strategy: unknown strategy 'nope'")
        for line in lines
    )
    assert any(
        line.startswith(f"{path}:10: anonymization_tables[2].table: public.users is already configured")
        for line in lines
    )
    assert lines[-1] == f"{path}: 4 error(s)"


def test_validate_reports_unknown_keys_and_yaml_syntax_with_lines(tmp_path):
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("source_app: a\npii_scan:\n  on_unmasked: fail\n  alow: []\n")
    proc = run("validate", str(unknown))
    assert proc.returncode == 1
    assert f"{unknown}:4: pii_scan.alow: unknown key" in proc.stderr.splitlines()

    broken = tmp_path / "broken.yaml"
    broken.write_text("source_app: a\nanonymization_tables:\n  - table: [x\n")
    proc = run("validate", str(broken))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"{broken}:4: not valid YAML")


def test_validate_usage_errors_exit_2(tmp_path):
    assert run("validate", str(tmp_path / "missing.yaml")).returncode == 2
    assert run("validate").returncode == 2
    assert run("no-such-command").returncode == 2


def test_load_rules_refuses_duplicate_keys(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("source_app: a\nsource_app: b\n")
    with pytest.raises(RulesError) as err:
        load_rules(path)
    assert "duplicate key 'source_app' (first defined on line 1)" in str(err.value)
    assert "line 2" in str(err.value)


def test_transformers_lists_the_registry_with_guarantees():
    proc = run("transformers", "--json")
    assert proc.returncode == 0, proc.stderr
    infos = {t["name"]: t for t in json.loads(proc.stdout)}
    assert set(infos) == set(all_transformers())
    assert infos["email"]["guarantees"]["unique"] is True
    assert infos["first_name"]["guarantees"]["unique"] is False
    assert infos["fixed"]["guarantees"]["keeps_null"] is False
    assert infos["fixed"]["options"]["value"]["required"] is True
    assert infos["email"]["guarantees"]["min_length"] >= 16 + len("@example.com")
    for name, t in all_transformers().items():  # the CLI shows each transformer's declared guarantees
        assert infos[name]["guarantees"]["deterministic"] is t.deterministic, name
        assert infos[name]["guarantees"]["keeps_length"] is t.keeps_length, name
    text = run("transformers").stdout
    for name, t in all_transformers().items():
        assert f"{name}  [" in text and t.description in text


def test_schema_prints_the_packaged_json_schema():
    proc = run("schema")
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == rules_schema()


def test_init_writes_the_example_files_and_refuses_to_overwrite(tmp_path):
    files = example_files()
    assert EXAMPLE_RULES in files
    out = tmp_path / "project"
    proc = run("init", str(out))
    assert proc.returncode == 0, proc.stderr
    for f in files:
        assert (out / f.name).read_bytes() == f.read_bytes()
    load_rules(out / "rules.example.yaml")  # the starter rules load as written

    (out / "rules.example.yaml").write_text("edited")
    proc = run("init", str(out))
    assert proc.returncode == 1
    assert f"{out / 'rules.example.yaml'}: exists (pass --force to overwrite it)" in proc.stderr
    assert (out / "rules.example.yaml").read_text() == "edited"
    assert run("init", str(out), "--force").returncode == 0
    assert (out / "rules.example.yaml").read_bytes() == EXAMPLE_RULES.read_bytes()


def test_example_rules_are_commented_and_cover_every_top_level_key():
    text = EXAMPLE_RULES.read_text()
    assert text.count("\n#") > 10
    # every top-level key of the schema appears in the starter file (set or commented out)
    for key in rules_schema()["properties"]:
        assert f"{key}:" in text, key
    assert yaml.safe_load(text)["source_app"]


def test_no_command_imports_airflow(tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text(EXAMPLE_RULES.read_text())
    code = f"""
import sys
from click.testing import CliRunner
from scalingo_staging_sync.cli import main
runner = CliRunner()
for args in (["validate", {str(rules)!r}], ["transformers"], ["schema"], ["init", {str(tmp_path / "i")!r}],
             ["scan", "--dsn", "host=127.0.0.1 port=1 dbname=x connect_timeout=1"]):
    result = runner.invoke(main, args)
    assert result.exit_code in (0, 1), (args, result.output)
loaded = sorted(m for m in sys.modules if m == "airflow" or m.startswith("airflow."))
print("AIRFLOW:", loaded)
"""
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "AIRFLOW: []" in proc.stdout


def test_scan_unreachable_database_fails_without_leaking_the_password():
    result = CliRunner().invoke(
        main, ["scan", "--dsn", "postgresql://bob:s3cret-pw@127.0.0.1:1/db?connect_timeout=1"]
    )
    assert result.exit_code == 1
    assert "cannot connect to bob@127.0.0.1:1/db" in result.output
    assert "s3cret-pw" not in result.output


def test_validate_refuses_derived_column_cycles_with_their_line(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "source_app: a\n"
        "anonymization_tables:\n"
        "  - table: users\n"
        "    columns:\n"
        "      full_name: {transformer: full_name, from: [first_name, last_name]}\n"
        "      first_name: {transformer: md5_of, column: full_name}\n"
        "      last_name: last_name\n"
    )
    proc = run("validate", str(path))
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(
        f"{path}:5: anonymization_tables[0].columns.full_name: derived columns of public.users form a cycle: "
        "full_name -> first_name -> full_name"
    )
    assert lines[-1] == f"{path}: 1 error(s)"


def test_validate_refuses_an_invalid_pii_scan_pattern_with_its_line(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "source_app: a\npii_scan:\n  patterns:\n    content:\n      - name: broken\n        regex: '(unclosed'\n"
    )
    proc = run("validate", str(path))
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == (
        f"{path}:6: pii_scan.patterns.content[0].regex: '(unclosed' is not a valid regular expression "
        "(missing ), unterminated subpattern at position 0); fix the regex (a literal special character "
        "is escaped: \\(, \\.)"
    )


def test_validate_refuses_a_condition_that_does_not_parse_with_its_line(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "source_app: a\nanonymization_tables:\n  - table: emp\n    columns: {email: email}\n"
        "    condition: 'emp_id >'\n"
    )
    proc = run("validate", str(path))
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0].startswith(
        f"{path}:5: anonymization_tables[0].condition: does not parse as an SQL boolean expression: "
        "syntax error at the end of the condition (it is incomplete)"
    )
