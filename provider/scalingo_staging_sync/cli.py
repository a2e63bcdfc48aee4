"""``scalingo-staging-sync``: the provider's tools without Airflow.

Validate a rules file, preview the plan of an archive, scan any database for personal data (and write
a starter rules file from it), list the transformers, print the JSON Schema, start a project.

Exit codes, for CI: 0 = fine, 1 = findings or invalid input (each one printed), 2 = usage error.
Nothing here imports Airflow (``tests/test_cli_commands.py`` checks it).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

EXIT_OK = 0
EXIT_FINDINGS = 1
GZIP_MAGIC = b"\x1f\x8b"


def _fail(lines: list[str] | str) -> None:
    for line in [lines] if isinstance(lines, str) else lines:
        click.echo(line, err=True)
    sys.exit(EXIT_FINDINGS)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(
    package_name="airflow-provider-scalingo-staging-sync", prog_name="scalingo-staging-sync"
)
@click.option("-v", "--verbose", is_flag=True, help="Show the library's log messages.")
def main(verbose: bool) -> None:
    """Scalingo staging sync: rules, plans and PII scans, without Airflow.

    Exit codes: 0 ok, 1 findings or invalid input, 2 usage error.
    """
    import logging

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    else:  # results are printed by the commands; the log would repeat them
        logging.getLogger("scalingo_staging_sync").setLevel(logging.ERROR)


# --------------------------------------------------------------------------------------------------
# validate


def validate_file(path: Path) -> list[str]:
    """Every problem of the rules file at ``path``, each as ``file:line: message`` (empty = valid)."""
    import yaml

    from scalingo_staging_sync.anonymize.rules import RulesError, validate_rules_dict
    from scalingo_staging_sync.anonymize.yaml_loader import compose, duplicate_keys, error_path, line_of

    shown = str(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        return [f"{shown}: cannot read the rules file: {exc.strerror}"]
    try:
        root = compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        return [f"{shown}:{line}: not valid YAML: {problem}"]
    errors = [
        f"{shown}:{d.line}: {d.path}: duplicate key (first defined on line {d.first_line}); "
        "a key may appear once per mapping: keep one"
        for d in duplicate_keys(root)
    ]
    data = yaml.safe_load(text)
    try:
        validate_rules_dict(data, path=shown)
    except RulesError as exc:
        for message in exc.errors:
            errors.append(f"{shown}:{line_of(root, error_path(message))}: {message}")
    return errors


@main.command()
@click.argument("rules", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(rules: Path) -> None:
    """Check the rules file RULES: schema errors, unknown and duplicate keys, transformers and their
    options, strategies, conditions. Each problem is printed as file:line: message."""
    errors = validate_file(rules)
    if errors:
        _fail([*errors, f"{rules}: {len(errors)} error(s)"])
    from scalingo_staging_sync.anonymize.rules import load_rules

    loaded = load_rules(rules)
    click.echo(
        f"{rules}: valid ({len(loaded.anonymization_tables)} table rule(s), "
        f"{len(loaded.exclude_tables)} excluded table(s), {len(loaded.pii_scan.allow)} allow-list entr"
        f"{'y' if len(loaded.pii_scan.allow) == 1 else 'ies'})"
    )


def _load_rules_or_fail(path: Path):
    from scalingo_staging_sync.anonymize.rules import load_rules
    from scalingo_staging_sync.errors import SyncError

    try:
        return load_rules(path)
    except SyncError:
        _fail([*validate_file(path), f"{path}: invalid rules file (see above)"])


# --------------------------------------------------------------------------------------------------
# plan


def _head(path: Path, size: int = 2) -> bytes:
    with path.open("rb") as fh:
        return fh.read(size)


@main.command()
@click.argument("rules", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--archive",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A Scalingo backup (.tar.gz, extracted to a temporary directory) or a pg_dump archive "
    "(custom, tar or directory format), e.g. its *.pgsql.",
)
@click.option("--exclude-table", "exclude_tables", multiple=True, help="Also exclude this table's data.")
@click.option("--pg-bin", type=click.Path(file_okay=False, path_type=Path), help="PostgreSQL client tools.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(
    rules: Path, archive: Path, exclude_tables: tuple[str, ...], pg_bin: Path | None, as_json: bool
) -> None:
    """Print the inventory of ARCHIVE, how each entry is classified, and the anonymization plan of
    RULES for it. Reads the archive only: no database, no Airflow."""
    loaded = _load_rules_or_fail(rules)
    from scalingo_staging_sync.errors import SyncError
    from scalingo_staging_sync.inventory.plan import plan_from_archive, plan_lines

    tools = None
    with tempfile.TemporaryDirectory(prefix="scalingo-staging-sync-plan-") as tmp:
        try:
            dump = archive
            if archive.is_file() and _head(archive) == GZIP_MAGIC:  # a Scalingo backup .tar.gz
                from scalingo_staging_sync.scalingo.archive import extract_dump

                dump = extract_dump(archive, Path(tmp))
            if pg_bin is not None:
                from scalingo_staging_sync.restore.pgtools import find_pg_tools

                tools = find_pg_tools(str(pg_bin))
            result = plan_from_archive(str(dump), loaded, exclude_tables=exclude_tables, tools=tools)
        except SyncError as exc:
            _fail(f"{archive}: {exc}")
    data = result.to_json()
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        click.echo("\n".join(plan_lines(data)))


# --------------------------------------------------------------------------------------------------
# scan


def _safe_dsn(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - shown as-is without the DSN
        return "(unparsable DSN)"
    return f"{parts.get('user') or '?'}@{parts.get('host') or 'local'}:{parts.get('port') or 5432}/{parts.get('dbname') or '?'}"


def _scan_rules_plan(conn: Any, loaded: Any, path: Path, dsn: str) -> dict[str, Any]:
    """What the rules' ``anonymization_tables`` and ``pii_scan.enabled`` mean to ``scan --rules``, as to
    the DAG's PII scan: the columns the rules mask count as masked, and so do the materialized-view
    columns computed only from them (as the DAG's finalize step finds them, on a connection of their
    own), and the rows outside a conditional rule's ``condition`` are sampled. Planned on the scanned
    database; a rule that does not fit it is printed on stderr and its columns are not counted as masked."""
    import psycopg

    from scalingo_staging_sync.anonymize.planner import plan_on_database
    from scalingo_staging_sync.anonymize.postload import masked_view_columns_on, unconditionally_masked
    from scalingo_staging_sync.pii.scanner import masked_columns_from_plan, partially_masked_from_plan

    if not loaded.pii_scan.enabled:
        click.echo(
            f"note: {path} sets pii_scan.enabled: false (the DAG skips its PII scan); scanning as asked",
            err=True,
        )
    items, problems = plan_on_database(conn, loaded)
    for problem in problems:
        click.echo(f"note: {path}: {problem}: its columns are not counted as masked", err=True)
    masked = masked_columns_from_plan(items)
    conditional = {i["table"]: i["condition"] for i in items if i.get("condition")}
    with psycopg.connect(dsn, autocommit=True) as views_conn:  # its search_path is emptied
        in_views = masked_view_columns_on(views_conn, unconditionally_masked(masked, conditional))
    return {
        "masked_columns": masked + in_views,
        "conditional": conditional,
        "partially_masked": partially_masked_from_plan(items),
    }


@main.command()
@click.option(
    "--dsn", required=True, envvar="SCALINGO_STAGING_SYNC_SCAN_DSN", help="libpq connection string or URI."
)
@click.option("--schema", "schemas", multiple=True, help="Scan only this schema (repeatable; default: all).")
@click.option(
    "--sample-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Rows sampled per table [default: the --rules file's pii_scan.sample_rows, else 1000].",
)
@click.option(
    "--rules",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Apply this rules file: pii_scan (allow-list, extra patterns, sample_rows), exclude_tables "
    "(must be empty, not flagged by name) and large_objects (keep: their content is scanned).",
)
@click.option(
    "--suggest-rules",
    "suggest_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a starter rules file for the findings to this path.",
)
@click.option(
    "--source-app", default="my-production-app", show_default=True, help="source_app of --suggest-rules."
)
@click.option("--target-app", default=None, help="target_app of --suggest-rules (the staging app).")
@click.option("--force", is_flag=True, help="Overwrite the --suggest-rules file.")
@click.option(
    "--copies/--no-copies",
    default=True,
    show_default=True,
    help="Look for copies of the people's names and e-mail addresses (read from the columns named so) "
    "in the other columns: an admin log's 'Jean Dupont', a note naming the customer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the scan report as JSON.")
def scan(
    dsn: str,
    schemas: tuple[str, ...],
    sample_rows: int | None,
    rules: Path | None,
    suggest_out: Path | None,
    source_app: str,
    target_app: str | None,
    force: bool,
    copies: bool,
    as_json: bool,
) -> None:
    """Scan a database for personal data: column names and sampled values of every user table.

    Exit code 1 when a finding is neither allowed nor masked; with --suggest-rules, 0 once the
    starter rules file is written (then review it and run validate)."""
    import psycopg

    from scalingo_staging_sync.pii.scanner import scan_database

    if suggest_out is not None and suggest_out.exists() and not force:
        raise click.UsageError(f"{suggest_out} exists; pass --force to overwrite it")
    kwargs: dict[str, Any] = {"sample_rows": sample_rows or 1000}
    if rules is not None:
        loaded = _load_rules_or_fail(rules)
        kwargs.update(
            allow=list(loaded.pii_scan.allow),
            extra_patterns=dict(loaded.pii_scan.patterns) or None,
            sample_rows=sample_rows or loaded.pii_scan.sample_rows,
            # as the PII scan task of a sync: an excluded table's data is not restored, so it must be
            # empty (a parent covers its partitions and children); kept large objects are read
            excluded_tables=[str(t) for t in loaded.exclude_table_names],
            large_objects=loaded.large_objects == "keep",
        )
    where = _safe_dsn(dsn)
    try:
        conn = psycopg.connect(dsn, autocommit=True)
    except psycopg.Error as exc:
        _fail(
            f"cannot connect to {where}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        )
    with conn:
        if rules is not None:
            kwargs.update(_scan_rules_plan(conn, loaded, rules, dsn))
        if copies:
            from scalingo_staging_sync.pii.scanner import CopyIndex, list_tables

            kwargs["tables"] = list_tables(conn, list(schemas) or None)  # listed once, for both
            kwargs["copies"] = CopyIndex.of_people(conn, kwargs["tables"])
        report = scan_database(conn, database=where, schemas=list(schemas) or None, **kwargs)
        suggested = None
        if suggest_out is not None:
            from scalingo_staging_sync.suggest import render_rules_yaml, suggest_rules

            suggested = suggest_rules(conn, report, copies=kwargs.get("copies"))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        click.echo(
            f"PII scan of {where}: {report.tables_scanned} table(s), {report.columns_scanned} column(s) "
            f"({report.columns_sampled} sampled, {report.rows_sampled} rows), {len(report.findings)} finding(s)"
        )
        for f in report.findings:
            extra = f" ({f.allow_reason})" if f.allow_reason else ""
            click.echo(f"  {f.status:<8} {f.severity:<6} {f.qualified_name}  {f.reason}{extra}")
        for table, error in sorted(report.errors.items()):
            click.echo(f"  error    {table}: could not be sampled ({error})")
        for table, state in sorted(report.excluded.items()):
            fix = (
                ""
                if state == "empty"
                else " (excluded by the rules file: empty it, or drop it from exclude_tables)"
            )
            click.echo(f"  excluded {table}: {state}{fix}")
        lo = report.large_objects
        if lo.get("kept"):
            click.echo(
                f"  large objects: {lo.get('count', 0)} (rules large_objects: keep), {lo.get('sampled', 0)} "
                "content-scanned"
            )
        elif lo.get("unexpected"):
            click.echo(
                f"  large objects: {lo.get('count', 0)} present and not kept (large_objects: drop): their "
                "content is not scanned; set large_objects: keep in the --rules file to scan it"
            )
    if suggested is not None and suggest_out is not None:
        suggest_out.parent.mkdir(parents=True, exist_ok=True)
        suggest_out.write_text(
            render_rules_yaml(suggested, source_app=source_app, target_app=target_app, database=where),
            "utf-8",
        )
        from scalingo_staging_sync.suggest import summary_lines

        click.echo(f"wrote {suggest_out}: {summary_lines(suggested)[0]}", err=as_json)
        sys.exit(EXIT_OK)
    if not report.passed:
        problems = [
            f"{len(report.unmasked)} unmasked finding(s)",
            f"{len(report.errors)} table(s) not scanned",
        ]
        if report.excluded_not_empty:
            problems.append(f"excluded table(s) holding rows: {', '.join(report.excluded_not_empty)}")
        if report.large_objects.get("unexpected"):
            problems.append(f"{report.large_objects.get('count', 0)} large object(s) not kept by the rules")
        _fail(", ".join(problems))


# --------------------------------------------------------------------------------------------------
# transformers, schema


def _unique_flag(g: dict[str, Any]) -> str:
    """``unique (128 hash bits)``, ``unique with unique: true`` (only with those options), ``not unique``."""
    if not g["unique"]:
        return "not unique"
    if g.get("unique_bits"):
        return f"unique ({g['unique_bits']} hash bits)"
    return f"unique with {g['unique_with']}" if g.get("unique_with") else "unique"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON.")
def transformers(as_json: bool) -> None:
    """List the transformers: what each outputs, its options and its guarantees."""
    from scalingo_staging_sync.reference import transformers_info

    infos = transformers_info()
    if as_json:
        click.echo(json.dumps(infos, indent=2, sort_keys=True))
        return
    for info in infos:
        g = info["guarantees"]
        flags = [
            "deterministic" if g["deterministic"] else "random",
            _unique_flag(g),
            "keeps NULL" if g["keeps_null"] else "NULL replaced",
            *(["keeps ''"] if g["keeps_empty"] else []),
            "keeps length" if g["keeps_length"] else "length may change",
            f"needs varchar(n) >= {g['min_length']}" if g["min_length"] else "any length",
        ]
        accepts = "any type" if info["accepts"] == ["*"] else ", ".join(info["accepts"]) + " columns"
        click.echo(f"{info['name']}  [{accepts}; {', '.join(flags)}]")
        click.echo(f"    {info['description']}")
        for name, schema in info["options"].items():
            detail = {k: v for k, v in schema.items() if k not in ("required", "description", "pattern")}
            req = " (required)" if schema.get("required") else ""
            text = schema.get("description", "")
            click.echo(f"    option {name}{req}: {json.dumps(detail, sort_keys=True)} {text}".rstrip())


@main.command()
def schema() -> None:
    """Print the JSON Schema of the rules file (for editors: yaml-language-server, VS Code...)."""
    from scalingo_staging_sync.anonymize.rules import rules_schema

    click.echo(json.dumps(rules_schema(), indent=2))


# --------------------------------------------------------------------------------------------------
# init


#: file names in ``scalingo_staging_sync/example_dags``: the reference DAG (a two-line file calling the
#: DAG factory of the package) and the commented starter rules
EXAMPLE_FILE_NAMES = ("scalingo_staging_sync.py", "rules.example.yaml")


def example_files() -> list[Path]:
    """The shipped example files that exist: the reference DAG and the starter rules file (the names the
    ``example_dags`` package exports as ``REFERENCE_DAG_FILE`` / ``EXAMPLE_RULES_FILE`` when it has them)."""
    folder = Path(__file__).resolve().parent / "example_dags"
    names = list(EXAMPLE_FILE_NAMES)
    try:
        import scalingo_staging_sync.example_dags as examples

        exported = [getattr(examples, a, None) for a in ("REFERENCE_DAG_FILE", "EXAMPLE_RULES_FILE")]
        names = [Path(p).name for p in exported if p is not None] or names
    except ImportError:  # a folder of package data without __init__.py
        pass
    return [folder / name for name in names if (folder / name).is_file()]


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init(directory: Path, force: bool) -> None:
    """Write the reference DAG and a commented starter rules file into DIRECTORY."""
    files = example_files()
    if not files:
        _fail("this installation ships no example files (scalingo_staging_sync/example_dags is missing)")
    existing = [directory / f.name for f in files if (directory / f.name).exists()]
    if existing and not force:
        _fail([f"{p}: exists (pass --force to overwrite it)" for p in existing])
    directory.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, directory / f.name)
        click.echo(f"wrote {directory / f.name}")
    click.echo(
        "next: edit the rules file, check it with `scalingo-staging-sync validate`, put the DAG in your "
        "DAGs folder and set [scalingo_staging_sync] rules_file (AIRFLOW__SCALINGO_STAGING_SYNC__RULES_FILE) "
        "to the rules file"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
