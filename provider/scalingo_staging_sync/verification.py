"""Residual-value verification: prove that no sampled production value survived anonymization.

Input: the results of the AnonymizeTableOperator mapped tasks (docs/CONTRACTS.md, "Residual-value
proof"): per table ``{"table", "mode", "rows", "masked_columns", "proof": {"algorithm", "key_columns",
"rows": [{"key": [...], "values": {column: fingerprint}}]}}``.

For each table, one query re-reads the sampled keys (``WHERE (k1, k2) IN ((...), ...)``: the key
texts are sent untyped so PostgreSQL casts them to the key columns' types and can use the primary-key
index), computes ``fingerprint(salt, current::text)`` of every masked column, and fails when it equals
the recorded one: same key, same value, the original is still there. Row counts are checked too:
``count(*)`` against the rows the anonymize task reported, and against the restore's per-table rows
when given.

Statistics too: ``pg_stats`` (``most_common_vals``, ``histogram_bounds``) of the table and of its
ancestors (a partitioned or inheritance parent's statistics cover the children's rows), and the MCV
lists of extended statistics (``pg_stats_ext``), are read for each masked column; every value listed
is fingerprinted and compared with the sampled originals. A match fails the table: the statistics
were computed before masking (an autovacuum ANALYZE before an in-place UPDATE, or statistics restored
from a ``pg_dump --statistics`` archive) and ``anonymize.postload.analyze_masked`` did not run.

No Airflow here. Values are never logged or returned: only counts and column names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scalingo_staging_sync.errors import SyncError
from scalingo_staging_sync.fingerprint import ALGORITHM, TEXT_STYLES, fingerprint
from scalingo_staging_sync.pgconn import turn_off_timeouts
from scalingo_staging_sync.tablename import TableName

log = logging.getLogger(__name__)

_KEY_BATCH = 250  # keys per query (a proof holds about 200)
_ROWS_PER_KEY = 20  # rows read per sampled key (more than one only in a table without primary key)


class ResidualValueError(SyncError):
    """Verification failed: sampled originals survived, or row counts differ. Names table.column."""

    def __init__(self, report: VerificationReport):
        self.report = report
        super().__init__("Residual-value verification failed: " + "; ".join(report.failures))


@dataclass
class TableVerification:
    table: str
    mode: str | None = None
    passed: bool = True
    rows_found: int | None = None
    rows_reported: int | None = None
    rows_restored: int | None = None
    keys_sampled: int = 0
    keys_found: int = 0
    columns: dict[str, dict[str, int]] = field(default_factory=dict)  # col -> {checked, survived}
    survived_columns: list[str] = field(default_factory=list)
    #: col -> {"checked": values listed in pg_stats / pg_stats_ext, "survived": sampled originals among them}
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    stats_survived_columns: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: rows the proof sampled whose masked values were all NULL (or a fixed value already): no
    #: original there to look for (Pay's ``stripe_account``, NULL unless the app uses Stripe Connect)
    sampled_without_values: int = 0
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_s"] = round(self.duration_s, 3)
        return data


@dataclass
class VerificationReport:
    tables: list[TableVerification]
    duration_s: float

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tables)

    @property
    def failures(self) -> list[str]:
        return [f"{t.table}: {p}" for t in self.tables for p in t.problems]

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "passed": self.passed,
            "algorithm": ALGORITHM,
            "duration_s": round(self.duration_s, 3),
            "failures": self.failures,
            "tables": [t.to_dict() for t in self.tables],
        }


def _results_list(results: Any) -> list[Mapping[str, Any]]:
    if results is None:
        return []
    if isinstance(results, Mapping):
        return [results]
    return [r for r in results if r]


def verify_table(
    conn,
    result: Mapping[str, Any],
    salt: str,
    restored_rows: int | None = None,
    *,
    check_stats: bool = True,
) -> TableVerification:
    """Verify one anonymized table (see module doc)."""
    from psycopg import sql

    started = time.monotonic()
    # TableName's form, what plan items and results carry (a part holding a dot or a quote is quoted)
    table = TableName.parse(str(result["table"]))
    schema, name = table.schema, table.name
    check = TableVerification(table=str(table), mode=result.get("mode"))
    relation = sql.Identifier(schema, name)
    rows_reported = result.get("rows")
    check.rows_reported = int(rows_reported) if rows_reported is not None else None
    check.rows_restored = int(restored_rows) if restored_rows is not None else None

    with conn.cursor() as cur:
        # rows loaded on load are the table's own (an archive's TABLE DATA never holds its inheritance
        # children's rows, which are their own items): count ONLY them in a plain table
        cur.execute(
            "SELECT c.relkind::text FROM pg_class c WHERE c.oid = %s::regclass",
            (f"{relation.as_string(conn)}",),
        )
        kind = cur.fetchone()
        only = sql.SQL("ONLY ") if check.mode == "on_load" and kind and kind[0] == "r" else sql.SQL("")
        cur.execute(sql.SQL("SELECT count(*) FROM {}{}").format(only, relation))
        check.rows_found = int(cur.fetchone()[0])
    if check.rows_reported is not None:
        if check.mode == "in_place":  # rows = rows the UPDATE touched (a condition may narrow it)
            if check.rows_found < check.rows_reported:
                check.problems.append(
                    f"row count {check.rows_found} is below the {check.rows_reported} rows the anonymizer updated"
                )
        elif check.rows_found != check.rows_reported:
            check.problems.append(
                f"row count {check.rows_found} differs from the {check.rows_reported} rows the anonymizer loaded"
            )
    if check.rows_restored is not None and check.rows_found != check.rows_restored:
        check.problems.append(
            f"row count {check.rows_found} differs from the {check.rows_restored} rows of the restore"
        )

    proof = result.get("proof") or {}
    algorithm = proof.get("algorithm")
    # a NULL key part is looked up with IS NULL: a table without a primary key is keyed by its unmasked
    # columns (anonymize.planner._key_columns), any of which may be NULL
    samples = [r for r in proof.get("rows") or [] if r.get("key") and any(k is not None for k in r["key"])]
    key_columns = list(proof.get("key_columns") or [])
    if samples and algorithm != ALGORITHM:
        check.problems.append(f"proof algorithm {algorithm!r} is not {ALGORITHM!r}: cannot verify")
    elif samples and not key_columns:
        check.problems.append("proof has sampled rows but no key_columns: cannot verify")
    elif samples:
        _check_samples(conn, check, relation, key_columns, samples, salt)
        if check_stats:
            _check_statistics(conn, check, schema, name, samples, salt)
    elif result.get("masked_columns") and (check.rows_found or 0) > 0:
        if check.mode == "in_place" and result.get("condition") and check.rows_reported == 0:
            pass  # no row meets the rule's condition: none was masked, there is nothing to prove
        elif key_columns and int(proof.get("sampled_rows") or 0) > 0:
            # rows were sampled and found by their key, but none had an original to fingerprint
            check.sampled_without_values = int(proof["sampled_rows"])
        else:
            check.problems.append(
                "no residual-value proof although the table has rows and masked columns (without a primary "
                "key or an unmasked column that can be compared with =, no row can be sampled and found "
                "again: give the table a primary key, leave one such column unmasked, or exclude its data)"
            )
    check.passed = not check.problems
    check.duration_s = time.monotonic() - started
    return check


def _check_samples(conn, check, relation, key_columns: list[str], samples: list[dict], salt: str) -> None:
    columns = sorted({c for s in samples for c in (s.get("values") or {})})
    if not columns:
        return
    expected: dict[tuple[str | None, ...], dict[str, str]] = {
        tuple(None if k is None else str(k) for k in s["key"]): dict(s.get("values") or {}) for s in samples
    }
    check.keys_sampled = len(expected)
    stats = {c: {"checked": 0, "survived": 0} for c in columns}
    keys = list(expected)
    types = _key_types(conn, relation, key_columns)
    found = 0
    # keys with NULL parts in the same places are looked up together (a NULL part: IS NULL)
    groups: dict[tuple[bool, ...], list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(tuple(k is None for k in key), []).append(position)
    with conn.cursor() as cur:
        for nulls, positions in groups.items():
            for start in range(0, len(positions), _KEY_BATCH):
                batch = positions[start : start + _KEY_BATCH]
                cur.execute(_lookup_query(relation, key_columns, types, nulls, columns, keys, batch))
                for row in cur.fetchall():
                    recorded = expected[keys[row[0]]]
                    found += 1
                    for index, column in enumerate(columns):
                        original = recorded.get(column)
                        if original is None:
                            continue
                        stats[column]["checked"] += 1
                        current = row[1 + index]
                        if current is not None and fingerprint(salt, current) == original:
                            stats[column]["survived"] += 1
    check.keys_found = found
    check.columns = stats
    check.survived_columns = [c for c in columns if stats[c]["survived"]]
    for column in check.survived_columns:
        check.problems.append(
            f"column {check.table}.{column} still holds {stats[column]['survived']} of "
            f"{stats[column]['checked']} sampled original values"
        )
    if found == 0:
        check.problems.append(f"none of the {len(expected)} sampled keys was found after anonymization")


def _key_types(conn, relation, key_columns: list[str]) -> dict[str, str]:
    """``{key column: its type}``, with its modifiers: without them ``character`` and ``bit`` mean one
    character and one bit (``CAST('FRA' AS character)`` is ``'F'``)."""
    rows = conn.execute(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        (relation.as_string(conn),),
    ).fetchall()
    types = dict(rows)
    return {column: types[column] for column in key_columns if column in types}


def _lookup_query(relation, key_columns, types, nulls, columns, keys, positions):
    """One query for the sampled keys at ``positions`` (all NULL in the parts ``nulls`` marks): the rows
    of each (at most :data:`_ROWS_PER_KEY`), labelled with the key's position, and the text of every
    masked column. The keys are a ``VALUES`` list joined to the table, each archive text cast by the
    server to its column's type: the archive writes keys as production's server printed them (pg_dump:
    DateStyle ISO, production's TimeZone), which the staging session may print otherwise, so keys are
    never compared as text here. A key with an index is found through it (the planner's nested loop);
    a table without one is read once (a hash join), not once per key. Literals, not ``%s``
    parameters: a name holding ``%`` (a column ``discount %``) would be read as a placeholder."""
    from psycopg import sql

    joined = [c for c, is_null in zip(key_columns, nulls, strict=True) if not is_null]
    names = [sql.Identifier(f"k{i}") for i in range(len(joined))]
    values = sql.SQL(", ").join(
        sql.SQL("({})").format(
            sql.SQL(", ").join(
                [sql.Literal(p), *(sql.Literal(v) for v, n in zip(keys[p], nulls, strict=True) if not n)]
            )
        )
        for p in positions
    )
    on = sql.SQL(" AND ").join(
        sql.SQL("t.{} = CAST(v.{} AS {})").format(sql.Identifier(c), k, sql.SQL(types.get(c, "text")))
        for c, k in zip(joined, names, strict=True)
    )
    where = sql.SQL(" AND ").join(
        sql.SQL("t.{} IS NULL").format(sql.Identifier(c))
        for c, n in zip(key_columns, nulls, strict=True)
        if n
    )
    return sql.SQL(
        "SELECT s.sss_position, {outer} FROM (SELECT v.sss_position, {inner}, "
        "row_number() OVER (PARTITION BY v.sss_position) AS sss_n "
        "FROM {relation} AS t JOIN (VALUES {values}) AS v(sss_position, {names}) ON {on}{where}) AS s "
        "WHERE s.sss_n <= {limit}"
    ).format(
        outer=sql.SQL(", ").join(sql.Identifier("s", f"c{i}") for i in range(len(columns))),
        inner=sql.SQL(", ").join(
            sql.SQL("t.{}::text AS {}").format(sql.Identifier(c), sql.Identifier(f"c{i}"))
            for i, c in enumerate(columns)
        ),
        relation=relation,
        values=values,
        names=sql.SQL(", ").join(names),
        on=on,
        where=sql.SQL(" WHERE {}").format(where) if any(nulls) else sql.SQL(""),
        limit=sql.Literal(_ROWS_PER_KEY),
    )


_STATS_SQL = """
WITH RECURSIVE up(oid) AS (
    SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %(schema)s AND c.relname = %(name)s
    UNION
    SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.oid
), rels AS (
    SELECT n.nspname, c.relname FROM up JOIN pg_class c ON c.oid = up.oid
    JOIN pg_namespace n ON n.oid = c.relnamespace
)
SELECT rels.nspname::text, rels.relname::text, s.attname::text, v
FROM rels JOIN pg_stats s ON s.schemaname = rels.nspname AND s.tablename = rels.relname
CROSS JOIN LATERAL unnest(
    coalesce(s.most_common_vals::text::text[], '{}'::text[])
    || coalesce(s.histogram_bounds::text::text[], '{}'::text[])
) AS v
WHERE s.attname = ANY(%(columns)s::name[])
UNION ALL
SELECT rels.nspname::text, rels.relname::text, a::text, v
FROM rels JOIN pg_stats_ext e ON e.schemaname = rels.nspname AND e.tablename = rels.relname
CROSS JOIN LATERAL unnest(e.attnames) AS a
CROSS JOIN LATERAL unnest(coalesce(e.most_common_vals, '{}'::text[])) AS v
WHERE a = ANY(%(columns)s::name[])
"""


def _in_current_data(conn, schema: str, name: str, column: str, value: str) -> bool:
    """Whether the column holds ``value`` now. A low-entropy transformer (first names, countries) can
    output a value that some other row had originally: statistics computed on the masked data then list
    it legitimately. Only a listed original that the table no longer holds is stale (pre-masking)."""
    from psycopg import sql

    row = conn.execute(  # no %s parameter: the names may hold "%" (see _lookup_query)
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE ({})::text = {})").format(
            sql.Identifier(schema, name), sql.Identifier(column), sql.Literal(value)
        )
    ).fetchone()
    return bool(row and row[0])


def _check_statistics(conn, check, schema: str, name: str, samples: list[dict], salt: str) -> None:
    """Look for the sampled originals among the values ``pg_stats`` / ``pg_stats_ext`` list."""
    recorded: dict[str, set[str]] = {}
    for sample in samples:
        for column, value in (sample.get("values") or {}).items():
            recorded.setdefault(column, set()).add(value)
    if not recorded:
        return
    stats = {c: {"checked": 0, "survived": 0} for c in sorted(recorded)}
    with conn.cursor() as cur:
        cur.execute(_STATS_SQL, {"schema": schema, "name": name, "columns": sorted(recorded)})
        # the statistics of a parent cover its partitions and children: a value is stale only if the
        # relation the statistics describe no longer holds it (a conditional rule keeps other rows)
        for rel_schema, rel_name, column, value in cur.fetchall():
            if column not in stats or value is None:
                continue
            stats[column]["checked"] += 1
            if fingerprint(salt, value) in recorded[column] and not _in_current_data(
                conn, rel_schema, rel_name, column, value
            ):
                stats[column]["survived"] += 1
    check.stats = stats
    check.stats_survived_columns = [c for c in sorted(stats) if stats[c]["survived"]]
    for column in check.stats_survived_columns:
        check.problems.append(
            f"pg_stats of {check.table}.{column} still lists {stats[column]['survived']} sampled original "
            "value(s): statistics were computed before masking; ANALYZE the masked data "
            "(scalingo_staging_sync.anonymize.postload.analyze_masked)"
        )


def verify_anonymization_results(
    conn,
    results: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None,
    salt: str,
    restore_rows: Mapping[str, int] | None = None,
    *,
    check_stats: bool = True,
) -> VerificationReport:
    """Verify every table of ``results`` on the autocommit psycopg connection ``conn``."""
    if not salt:
        raise ValueError("the anonymization salt is empty: verification cannot recompute fingerprints")
    started = time.monotonic()
    restore_rows = {str(TableName.parse(str(k))): v for k, v in (restore_rows or {}).items()}
    tables = []
    for result in _results_list(results):
        table = str(TableName.parse(str(result["table"])))
        try:
            check = verify_table(conn, result, salt, restore_rows.get(table), check_stats=check_stats)
        except Exception as exc:  # a query error is a failure, never a silent pass
            from scalingo_staging_sync.pgerrors import describe_pg_error

            reason = describe_pg_error(exc)  # SQLSTATE and object names, never row contents
            check = TableVerification(table=table, mode=result.get("mode"), passed=False)
            check.problems.append(f"verification query failed ({reason})")
            log.warning("verification of %s failed: %s", table, reason)
        log.info(
            "verification %s: %s (rows %s, %d/%d sampled keys found%s)",
            check.table,
            "PASS" if check.passed else "FAIL",
            check.rows_found,
            check.keys_found,
            check.keys_sampled,
            f"; {'; '.join(check.problems)}" if check.problems else "",
        )
        tables.append(check)
    return VerificationReport(tables=tables, duration_s=time.monotonic() - started)


def _search_extension_schemas(conn) -> None:
    """Append to the session's ``search_path`` the schemas holding extensions that it misses. A key
    column of an extension's type (``vector``, ``citext``...) installed in a schema of its own
    (``CREATE EXTENSION vector SCHEMA extensions``) is compared with that extension's ``=``, which
    PostgreSQL looks up through the search path: the application's role or database puts the schema
    there, the archive does not carry that setting, and the lookup fails (``operator does not exist:
    extensions.vector = unknown``)."""
    from psycopg import sql

    missing = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
            " WHERE n.nspname <> ALL(current_schemas(true)) ORDER BY 1"
        ).fetchall()
    ]
    if missing:
        path = conn.execute("SELECT current_setting('search_path')").fetchone()[0]
        extra = ", ".join(sql.Identifier(schema).as_string(conn) for schema in missing)
        conn.execute("SELECT set_config('search_path', %s, false)", (f"{path}, {extra}" if path else extra,))


def verify_residuals(
    target,
    results: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None,
    salt: str,
    restore_rows: Mapping[str, int] | None = None,
    *,
    raise_on_failure: bool = True,
    check_stats: bool = True,
) -> dict[str, Any]:
    """Verify on a :class:`~scalingo_staging_sync.pgconn.PgTarget`; return the report dict.

    Raises :class:`ResidualValueError` (naming each table and column) when it fails, unless
    ``raise_on_failure`` is false.
    """
    with target.connect(autocommit=True) as conn:
        # a table without a primary key is looked up by a scan per key: the role's own statement_timeout
        # (set for its application) does not bound it, as in pg_restore's sessions
        turn_off_timeouts(conn)
        # values compared as text print as the archive printed them (pg_dump's DateStyle, IntervalStyle
        # and float digits), whatever the staging role or server sets
        for setting, value in TEXT_STYLES.items():
            conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
        _search_extension_schemas(conn)
        report = verify_anonymization_results(conn, results, salt, restore_rows, check_stats=check_stats)
    if raise_on_failure and not report.passed:
        raise ResidualValueError(report)
    return report.to_dict()
