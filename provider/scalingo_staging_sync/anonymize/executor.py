"""Running one table's plan item: on load (masking trigger during the table's COPY) or in place (one
UPDATE transaction), with retries on transient errors and the residual-value proof.

**on_load** (``mode="on_load"`` and a dump): TRUNCATE the table (idempotent retries), install a
``BEFORE INSERT`` PL/pgSQL trigger whose assignments are the transformer expressions, load the table's
data with ``restore.runner.run_pg_restore(section="data", only_data=[table], jobs=1)`` in a session
carrying the key setting (PGOPTIONS), drop the trigger function in ``finally``, count the rows. The
proof's originals come from the first rows of the archive's COPY stream (``stream_table_copy``).

**in_place**: (with a dump, load the table's data first, without trigger) then one transaction:
``statement_timeout``, the key setting (``set_config(..., true)``: local), a sample of originals
(``SELECT key, masked ... WHERE (<cond>) LIMIT n``), the UPDATE / inline query / custom statement,
commit after checking the transaction status.

Retries (tenacity, exponential backoff): serialization failures, deadlocks, lock timeouts, lost
connections. SQL errors (syntax, constraint, missing column, statement timeout) are not retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from scalingo_staging_sync.anonymize.planner import read_table
from scalingo_staging_sync.anonymize.salt import derive_key, key_settings, target_with_key
from scalingo_staging_sync.anonymize.sql import (
    attach_trigger_statements,
    column_expressions,
    drop_function_statement,
    sample_statement,
    trigger_function_name,
    trigger_name,
    trigger_statements,
    update_statement,
)
from scalingo_staging_sync.anonymize.strategies import StrategyContext, build_custom_statement, get_custom
from scalingo_staging_sync.anonymize.stream import masking_trigger, spec_comment
from scalingo_staging_sync.anonymize.transformers import get_transformer, options_of
from scalingo_staging_sync.fingerprint import (
    ALGORITHM,
    PHRASE_ALGORITHM,
    PHRASE_TRANSFORMERS,
    TEXT_STYLES,
    fingerprint,
    first_word_tag,
    phrase_hash,
    phrase_key,
    row_phrases,
)
from scalingo_staging_sync.pgconn import PgTarget, turn_off_timeouts
from scalingo_staging_sync.pgerrors import (
    MASKED_VALUE_FIXES,
    SanitizedDatabaseError,
    describe_pg_error,
    sanitized,
)
from scalingo_staging_sync.restore.copytext import parse_copy_header, parse_copy_row
from scalingo_staging_sync.secrets import mask_secret
from scalingo_staging_sync.tablename import TableName

log = logging.getLogger(__name__)

SAMPLE_ROWS = 200


class AnonymizationError(SanitizedDatabaseError):
    """Masking a table failed. The message names the table, the SQLSTATE, constraint and column,
    never a row value (see :mod:`scalingo_staging_sync.pgerrors`)."""


def _guarded(func, what: str):
    """``func()`` with database and pg_restore errors turned into row-free :class:`AnonymizationError`
    (the original exception is not chained)."""
    from scalingo_staging_sync.restore.errors import RestoreError

    return sanitized(
        func, what, error_cls=AnonymizationError, catch=(RestoreError,), fixes=MASKED_VALUE_FIXES
    )


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0


# --------------------------------------------------------------------------------------------------
# Transient errors and retries


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: concurrency conflicts and lost connections, not SQL errors."""
    import psycopg
    from psycopg import errors as e

    if isinstance(exc, (e.SerializationFailure, e.DeadlockDetected, e.LockNotAvailable)):
        return True
    if isinstance(exc, e.QueryCanceled):  # statement timeout / cancel: deterministic enough, do not loop
        return False
    if isinstance(exc, (e.AdminShutdown, e.CrashShutdown, e.CannotConnectNow, e.ConnectionException)):
        return True
    if isinstance(exc, psycopg.OperationalError) and getattr(exc, "sqlstate", None) is None:
        return True  # client-side: connection lost / refused
    return False


def with_retries(policy: RetryPolicy, func, *, what: str):
    from tenacity import (
        Retrying,
        retry_if_exception,
        stop_after_attempt,
        wait_exponential,
    )

    def before_sleep(state) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s: transient error on attempt %d/%d (%s); retrying in %.1fs",
            what,
            state.attempt_number,
            policy.attempts,
            describe_pg_error(exc) if exc else "",
            state.next_action.sleep if state.next_action else 0.0,
        )

    retrying = Retrying(
        stop=stop_after_attempt(max(1, policy.attempts)),
        wait=wait_exponential(
            multiplier=policy.base_delay_s, min=policy.base_delay_s, max=policy.max_delay_s
        ),
        retry=retry_if_exception(is_transient),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(func)


# --------------------------------------------------------------------------------------------------
# Proof


#: plan-item key of :func:`build_proof`'s input: ``{column: the text the server prints for the column's
#: fixed value}`` (:func:`fixed_as_read`)
FIXED_AS_READ = "_fixed_as_read"


def fixed_as_read(conn: Any, item: Mapping[str, Any], cat: Any) -> dict[str, str]:
    """Each ``fixed`` value of the item as verification reads it back: cast to its column's type and
    printed by the server in the session's styles (``0`` in a ``numeric(10,2)`` is ``0.00``, ``true`` in a
    boolean ``t``). An original equal to it is no residue of the original (every masked row holds it)."""
    import psycopg

    fixed = get_transformer("fixed")
    out: dict[str, str] = {}
    for column, spec in (item.get("columns") or {}).items():
        if not isinstance(spec, Mapping) or spec.get("transformer") != "fixed" or column not in cat.columns:
            continue
        text = str(fixed._text(options_of(spec)))  # type: ignore[attr-defined]
        try:
            with conn.transaction():
                row = conn.execute(
                    sql.SQL("SELECT CAST(%s::text AS {})::text").format(
                        sql.SQL(cat.columns[column].type_sql)
                    ),
                    (text,),
                ).fetchone()
        except psycopg.Error:
            continue  # refused by check_fixed_values, with its own message
        if row and row[0] is not None:
            out[column] = row[0]
    return out


def _skip(item: Mapping[str, Any], column: str, original: str) -> bool:
    spec = (item.get("columns") or {}).get(column)
    if not spec:
        return False
    if (item.get(FIXED_AS_READ) or {}).get(column) == original:
        return True
    try:
        transformer = get_transformer(spec["transformer"])
    except KeyError:
        return False
    if original == "" and transformer.keeps_empty:
        return True  # kept empty: nothing was there to mask (keep_empty_sql)
    return transformer.skip_in_proof(original, options_of(spec))


def _phrase_paths(
    masked: Iterable[str], specs: Mapping[str, Any], table: str = ""
) -> dict[str, list[list[str]]]:
    """``{json column: [path segments]}`` of the paths a ``json`` rule masks with a transformer whose
    originals identify a person (:data:`PHRASE_TRANSFORMERS`): pretix keeps its attendees' names in
    ``name_parts`` documents, and their copies elsewhere (an invoice's address block) must be found."""
    from scalingo_staging_sync.anonymize.transformers import json_path_segments

    out: dict[str, list[list[str]]] = {}
    for column in masked:
        spec = specs.get(column)
        if not isinstance(spec, Mapping) or spec.get("transformer") != "json":
            continue
        for path, inner in (options_of(spec).get("paths") or {}).items():
            name = inner if isinstance(inner, str) else (inner or {}).get("transformer")
            segments = json_path_segments(path)
            if name in PHRASE_TRANSFORMERS and not _bare_name_of_a_thing(table, segments):
                out.setdefault(column, []).append(segments)
    return out


#: last tokens of a table of changes to every kind of record (the audited gem's ``audits``,
#: PaperTrail's ``versions``, an activity log): a bare ``name`` in its documents is any record's
_CHANGE_LOG_TOKENS = frozenset(
    {"audit", "audits", "version", "versions", "log", "logs", "history", "histories", "changes", "activities"}
)


def _bare_name_of_a_thing(table: str, segments: list[str]) -> bool:
    """A path ending in a bare ``name`` key in a table of changes, whose parent key is not named for a
    person: Chatwoot's ``audits.audited_changes`` hold the names of inboxes, teams, macros; masked to
    be safe, they are no person's name to look for elsewhere (their copies would be every team's
    name). ``user.name``, ``first_name`` there, and a ``name`` in any other table's documents (GoTrue's
    ``raw_user_meta_data``) are still looked for."""
    from scalingo_staging_sync.pii.detectors import is_people_table, tokenize_name

    keys = [s for s in segments if s != "*"]
    if not keys or keys[-1].lower() not in ("name", "names", "nom", "nombre"):
        return False
    tokens = tokenize_name(table)
    if not tokens or tokens[-1] not in _CHANGE_LOG_TOKENS:
        return False
    return len(keys) < 2 or not is_people_table(tokenize_name(keys[-2]))


def _json_path_values(row: Mapping[str, str | None], paths: Mapping[str, list[list[str]]]) -> list[str]:
    """The string values at ``paths`` of the row's JSON documents (a text that is not JSON: none)."""
    import json

    from scalingo_staging_sync.anonymize.transformers import json_values_at

    values: list[str] = []
    for column, column_paths in paths.items():
        text = row.get(column)
        if not text:
            continue
        try:
            document = json.loads(text)
        except ValueError:
            continue
        for segments in column_paths:
            values += [v for v in json_values_at(document, segments) if isinstance(v, str) and v]
    return values


def build_proof(
    item: Mapping[str, Any], salt: str, key_columns: list[str], rows: Iterable[Mapping[str, str | None]]
) -> dict[str, Any]:
    """CONTRACTS residual-value proof from rows of original text values (NULLs skipped)."""
    masked = list(item.get("masked_columns") or [])
    specs = item.get("columns") or {}
    people = [
        c
        for c in masked
        if isinstance(specs.get(c), Mapping) and specs[c].get("transformer") in PHRASE_TRANSFORMERS
    ]
    # json columns: the paths masked as names or e-mails
    people_paths = _phrase_paths(masked, specs, str(item.get("name") or ""))
    emails: set[str] = set()
    names: set[str] = set()
    out_rows = []
    sampled = 0  # rows with a key: those whose masked values are all NULL have nothing to fingerprint
    if key_columns and masked:
        for row in rows:
            if people or people_paths:
                originals = [row[c] for c in people if row.get(c)]
                originals += _json_path_values(row, people_paths)
                row_emails, row_names = row_phrases(originals)  # type: ignore[arg-type]
                emails |= row_emails
                names |= row_names
            key = [row.get(k) for k in key_columns]
            if all(k is None for k in key):  # a NULL part is looked up with IS NULL (verification)
                continue
            sampled += 1
            values = {
                col: fingerprint(salt, row[col])
                for col in masked
                if row.get(col) is not None and not _skip(item, col, row[col])  # type: ignore[arg-type]
            }
            if values:
                out_rows.append({"key": key, "values": values})
    proof: dict[str, Any] = {
        "algorithm": ALGORITHM,
        "key_columns": list(key_columns),
        "rows": out_rows,
        "sampled_rows": sampled,
    }
    if emails or names:
        key = phrase_key(salt)
        proof["phrases"] = {
            "algorithm": PHRASE_ALGORITHM,
            "columns": people + [c for c in people_paths if c not in people],
            "emails": sorted(phrase_hash(key, p) for p in emails),
            "names": sorted(phrase_hash(key, p) for p in names),
            "firsts": sorted({first_word_tag(key, p.split(" ", 1)[0]) for p in names}),
            "lengths": sorted({p.count(" ") + 1 for p in names}),
        }
    return proof


def rekeyable_columns(item: Mapping[str, Any], key_columns: Iterable[str]) -> list[str]:
    """Key columns the item masks with a column transformer that reads only the column itself: their
    masked value is computable from the original one (:func:`rekey_proof`). A table whose primary key
    is masked is then still proven, by the key's masked values."""
    specs = item.get("columns") or {}
    out = []
    for col in key_columns:
        spec = specs.get(col)
        if not spec:
            continue
        try:
            transformer = get_transformer(spec["transformer"])
        except KeyError:
            continue
        if not transformer.depends_on(options_of(spec)):
            out.append(col)
    return out


def rekey_proof(conn: Any, item: Mapping[str, Any], proof: dict[str, Any], key: str) -> dict[str, Any]:
    """The proof with its masked key columns' values replaced by their masked values, computed on the
    server with the masking expressions (the session carries the key, in a transaction of its own or
    the caller's): the verifier then finds each sampled row by the key it has after masking. The
    values (fingerprints of the originals) are unchanged."""
    key_columns = list(proof.get("key_columns") or [])
    cols = rekeyable_columns(item, key_columns)
    if not cols or not proof.get("rows"):
        return proof
    cat = _table_catalog(conn, item)
    specs = {c: item["columns"][c] for c in cols}
    exprs = column_expressions(specs, cat.columns, src_for=lambda c: sql.Identifier("v", c))
    values = sql.SQL(", ").join(
        sql.SQL("CAST({} AS {}) AS {}").format(
            sql.Placeholder(), sql.SQL(cat.columns[c].type_sql), sql.Identifier(c)
        )
        for c in cols
    )
    query = sql.SQL("SELECT {} FROM (SELECT {}) AS v").format(
        sql.SQL(", ").join(sql.SQL("({})::text").format(exprs[c]) for c in cols), values
    )
    positions = [key_columns.index(c) for c in cols]
    rows = []
    with conn.transaction():
        for name, value in key_settings(key).items():
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        for row in proof["rows"]:
            masked = conn.execute(query, [row["key"][i] for i in positions], prepare=True).fetchone()
            new_key = list(row["key"])
            for i, value in zip(positions, masked, strict=True):
                new_key[i] = value
            rows.append({**row, "key": new_key})
    return {**proof, "rows": rows}


#: rows of a table's COPY text read, at most, per row of its proof's sample, looking for rows whose
#: masked columns hold a value (:func:`sample_from_copy`)
SAMPLE_SCAN_FACTOR = 10


def sample_from_copy(
    lines: Iterator[str], limit: int = SAMPLE_ROWS, masked: Sequence[str] = ()
) -> list[dict[str, str | None]]:
    """Up to ``limit`` rows of a COPY stream (header first) as ``{column: text}``; closes the stream.
    Rows where a ``masked`` column is not NULL come first (they have originals to fingerprint; a
    column filled only in recent rows is NULL in a table's first ones): up to ``limit`` *
    :data:`SAMPLE_SCAN_FACTOR` rows are read to find them, then rows without fill the sample."""
    rows: list[dict[str, str | None]] = []
    without: list[dict[str, str | None]] = []
    try:
        header = next(lines, None)
        if header is None:
            return rows
        names = parse_copy_header(header)
        read = 0
        for line in lines:
            if len(rows) >= limit or read >= limit * SAMPLE_SCAN_FACTOR or (not masked and read >= limit):
                break
            read += 1
            row = dict(zip(names, parse_copy_row(line), strict=False))
            if not masked or any(row.get(c) is not None for c in masked):
                rows.append(row)
            elif len(without) < limit:
                without.append(row)
    finally:
        close = getattr(lines, "close", None)
        if close:
            close()
    return rows + without[: limit - len(rows)]


# --------------------------------------------------------------------------------------------------
# Running


def _qualified(item: Mapping[str, Any]) -> str:
    """The item's table in the canonical :class:`TableName` form (quoted where a part needs it), the
    form the archive's TOC lookups and the primary keys read from the archive use."""
    return str(TableName(item["schema"], item["name"]))


def _load_table(dump_path: str, target: PgTarget, table: str, tools: Any) -> None:
    from scalingo_staging_sync.restore.runner import run_pg_restore

    run_pg_restore(dump_path, target, section="data", only_data=[table], jobs=1, tools=tools)


def _truncate(conn: Any, item: Mapping[str, Any], relkind: str = "r") -> None:
    """Empty the table itself (``ONLY``: its inheritance children are other plan items, maybe
    already loaded); a partitioned table is emptied with its partitions."""
    only = sql.SQL("ONLY ") if relkind == "r" else sql.SQL("")
    conn.execute(sql.SQL("TRUNCATE {}{}").format(only, sql.Identifier(item["schema"], item["name"])))


def _count(conn: Any, item: Mapping[str, Any]) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(item["schema"], item["name"]))
    )
    return int(row.fetchone()[0])


def _table_catalog(conn: Any, item: Mapping[str, Any]):
    cat = read_table(conn, item["schema"], item["name"])
    if cat is None:
        raise AnonymizationError(f"table {_qualified(item)} does not exist in {conn.info.dbname}")
    return cat


_DESCENDANTS_SQL = """
WITH RECURSIVE tree(oid) AS (
    SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = %(oid)s
    UNION
    SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid
)
SELECT c.oid, n.nspname, c.relname, c.relkind::text
FROM tree JOIN pg_class c ON c.oid = tree.oid JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY n.nspname, c.relname
"""

_TRIGGER_OF_SQL = """
SELECT pn.nspname, p.proname, t.tgenabled::text
FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
WHERE t.tgrelid = %s AND t.tgname = %s
"""


def descendants(conn: Any, oid: int) -> list[tuple[int, str, str, str]]:
    """(oid, schema, name, relkind) of every partition and inheritance child of ``oid``, at any depth
    (``pg_inherits``, as PostgreSQL's own DML on the parent reaches them)."""
    return [tuple(r) for r in conn.execute(_DESCENDANTS_SQL, {"oid": oid}).fetchall()]  # type: ignore[misc]


def install_masking_trigger(conn: Any, item: Mapping[str, Any]) -> list[str]:
    """Empty the table, install its masking trigger, ``ENABLE ALWAYS``, on the table and on every
    partition and inheritance child that holds rows (``pg_inherits`` at install time), and check that
    each of them has one. Returns the tables covered.

    A child that has its own plan item (the planner emits one per leaf partition and per inheritance
    child) keeps its own trigger, whatever the order the items are installed in: each table's rows are
    masked by its nearest ruled ancestor (itself first). An install never replaces a trigger calling
    the function of one of its own descendants, and always replaces one calling a farther ancestor's."""
    cat = _table_catalog(conn, item)
    check_fixed_values(conn, item, cat)  # before the table is emptied
    schema, name = item["schema"], item["name"]
    create_fn, create_trigger, drop = trigger_statements(schema, name, item["columns"], cat.columns, conn)
    children = descendants(conn, cat.oid)
    _truncate(conn, item, cat.relkind)
    conn.execute(drop)
    # functions of tables between this one and a descendant: their rules are nearer to its rows
    closer = {(s, trigger_function_name(s, n)) for _o, s, n, _k in children}
    with conn.transaction():
        conn.execute(create_fn)
        # the specs the function was built from: the stream engine masks the same columns the same way
        conn.execute(
            sql.SQL("COMMENT ON FUNCTION {}() IS {}").format(
                sql.Identifier(schema, trigger_function_name(schema, name)),
                sql.Literal(spec_comment(item["columns"])),
            )
        )
        if cat.relkind == "r":
            conn.execute(create_trigger)
        for oid, child_schema, child_name, relkind in children:
            if relkind != "r":  # partitioned (no rows of its own), foreign: nothing is loaded into it
                continue
            conn.execute(
                sql.SQL("LOCK TABLE ONLY {} IN SHARE ROW EXCLUSIVE MODE").format(
                    sql.Identifier(child_schema, child_name)
                )
            )
            row = conn.execute(_TRIGGER_OF_SQL, (oid, trigger_name(child_schema, child_name))).fetchone()
            if row is not None and (row[0], row[1]) in closer:
                continue  # installed by the child's own plan item, or by a nearer ruled ancestor's
            for statement in attach_trigger_statements(child_schema, child_name, schema, name):
                conn.execute(statement)
    covered = ([] if cat.relkind != "r" else [(cat.oid, schema, name)]) + [
        (oid, s, n) for oid, s, n, kind in children if kind == "r"
    ]
    missing = []
    for oid, s, n in covered:
        row = conn.execute(_TRIGGER_OF_SQL, (oid, trigger_name(s, n))).fetchone()
        if row is None or row[2] != "A":
            missing.append(f"{s}.{n}")
    if missing:
        conn.execute(drop)
        raise AnonymizationError(
            f"{_qualified(item)}: the masking trigger could not be installed ENABLE ALWAYS on "
            f"{', '.join(missing)}; their rows would load unmasked"
        )
    if children:
        log.info(
            "%s: masking trigger also covers %d partition(s)/child table(s): %s",
            _qualified(item),
            len(covered) - (cat.relkind == "r"),
            ", ".join(f"{s}.{n}" for _o, s, n in covered if (s, n) != (schema, name)),
        )
    return [f"{s}.{n}" for _o, s, n in covered]


def missing_masking_triggers(conn: Any, items: Iterable[Mapping[str, Any]]) -> list[str]:
    """The tables of the ``on_load`` plan items that have no masking trigger: loaded now, their rows
    would arrive unmasked (another run replaced the database after this one prepared it, or a prepare
    step did not run). A trigger the stream engine disabled after masking a load is still there."""
    missing: list[str] = []
    for item in items:
        if not isinstance(item, Mapping) or item.get("mode") != "on_load":
            continue
        if masking_trigger(conn, item["schema"], item["name"]) is None:
            missing.append(_qualified(item))
    return missing


def drop_masking_trigger(conn: Any, item: Mapping[str, Any]) -> None:
    """Drop the item's trigger function and, with it, every masking trigger calling it."""
    conn.execute(drop_function_statement(item["schema"], item["name"]))


_install_trigger = install_masking_trigger
_drop_trigger = drop_masking_trigger


def _archive_sample(
    item: Mapping[str, Any], dump_path: str, tools: Any, sample_rows: int
) -> tuple[list[str], list[dict[str, str | None]]]:
    """The key columns of the table's proof and the first ``sample_rows`` rows of its COPY text."""
    from scalingo_staging_sync.anonymize.planner import archive_row_keys
    from scalingo_staging_sync.restore.runner import stream_table_copy

    table = _qualified(item)
    key_columns = list(item.get("key_columns") or [])
    if not key_columns:
        key_columns = archive_row_keys(dump_path, tools).get(table, [])
    masked = list(item.get("masked_columns") or [])
    return key_columns, sample_from_copy(stream_table_copy(dump_path, table, tools), sample_rows, masked)


def as_verification_reads(
    conn: Any, item: Mapping[str, Any], sample: list[dict[str, str | None]]
) -> list[dict[str, str | None]]:
    """``sample`` (rows of archive text) with the values of its masked columns whose type is not a
    string type replaced by the text the staging server prints for them in the styles verification
    reads in (:data:`~scalingo_staging_sync.fingerprint.TEXT_STYLES`).

    ``pg_dump`` sets DateStyle, IntervalStyle and the float digits but not TimeZone: a ``timestamptz``
    is written as production's session printed it (``2024-03-01 15:45:00+05:30``), and verification
    would read the same instant back as ``2024-03-01 10:15:00+00``: a surviving original would not
    match its fingerprint. Each value is cast by the server to its column's type and printed again,
    one query per such column; string columns are printed as they are stored, and keep their text."""
    from scalingo_staging_sync.anonymize.transformers import STRING_TYPES

    masked = list(item.get("masked_columns") or [])
    if not sample or not masked:
        return sample
    cat = _table_catalog(conn, item)
    columns = [
        c
        for c in masked
        if c in cat.columns
        and cat.columns[c].base_type not in STRING_TYPES
        and any(row.get(c) is not None for row in sample)
    ]
    if not columns:
        return sample
    out = [dict(row) for row in sample]
    with conn.transaction():
        _set_local(conn, TEXT_STYLES)
        for column in columns:
            query = sql.SQL(
                "SELECT CAST(u.v AS {})::text FROM unnest(%s::text[]) WITH ORDINALITY AS u(v, i) ORDER BY u.i"
            ).format(sql.SQL(cat.columns[column].type_sql))
            printed = conn.execute(query, ([row.get(column) for row in sample],)).fetchall()
            for row, (value,) in zip(out, printed, strict=True):
                row[column] = value
    return out


def _start_on_load(
    item: Mapping[str, Any], dump_path: str, tools: Any, sample_rows: int
) -> tuple[str, Any, float, list[str], list[dict[str, str | None]]]:
    """What every on-load step begins with: the table's name, the PostgreSQL tools (found if not
    given), the start time, and the proof's key columns and sample, read from the archive."""
    from scalingo_staging_sync.restore.pgtools import find_pg_tools

    table = _qualified(item)
    tools = tools or find_pg_tools()
    started = time.monotonic()
    key_columns, sample = _guarded(
        lambda: _archive_sample(item, dump_path, tools, sample_rows), f"sample {table} from the archive"
    )
    return table, tools, started, key_columns, sample


def _on_load_proof(
    item: Mapping[str, Any],
    target: PgTarget,
    salt: str,
    key_columns: list[str],
    sample: list[dict[str, str | None]],
    retry: RetryPolicy,
) -> dict:
    """The proof of a table masked on load, on one staging connection: the archive's sample as
    verification will read it (:func:`as_verification_reads`), fingerprinted (:func:`build_proof`),
    and keyed by its masked keys where the key is masked (:func:`rekey_proof`)."""
    key = derive_key(salt)

    def attempt() -> dict:
        with target.connect(autocommit=True) as conn:
            rows = as_verification_reads(conn, item, sample)
            proof_item = item
            if any(
                isinstance(s, Mapping) and s.get("transformer") == "fixed"
                for s in (item.get("columns") or {}).values()
            ):
                with conn.transaction():
                    _set_local(conn, TEXT_STYLES)
                    proof_item = dict(
                        item, **{FIXED_AS_READ: fixed_as_read(conn, item, _table_catalog(conn, item))}
                    )
            return rekey_proof(conn, item, build_proof(proof_item, salt, key_columns, rows), key)

    what = f"record the residual-value proof of {_qualified(item)}"
    return _guarded(lambda: with_retries(retry, attempt, what=what), what)


def run_on_load(
    item: Mapping[str, Any],
    target: PgTarget,
    salt: str,
    dump_path: str,
    *,
    tools: Any = None,
    retry: RetryPolicy = RetryPolicy(),
    sample_rows: int = SAMPLE_ROWS,
) -> dict[str, Any]:
    """Mask one table on load on its own: trigger, load of this table's data, trigger dropped."""
    keyed_target = target_with_key(target, derive_key(salt))
    table, tools, started, key_columns, sample = _start_on_load(item, dump_path, tools, sample_rows)
    proof = _on_load_proof(item, target, salt, key_columns, sample, retry)

    def attempt() -> int:
        with target.connect(autocommit=True) as conn:
            _install_trigger(conn, item)
            try:
                log.info("%s: masking trigger installed; loading the table's data", table)
                _load_table(dump_path, keyed_target, table, tools)
            finally:
                _drop_trigger(conn, item)
            return _count(conn, item)

    what = f"anonymize {table} (on load)"
    rows = _guarded(lambda: with_retries(retry, attempt, what=what), what)
    return _result(item, "on_load", rows, started, proof)


def prepare_on_load(
    item: Mapping[str, Any],
    target: PgTarget,
    salt: str,
    dump_path: str,
    *,
    tools: Any = None,
    retry: RetryPolicy = RetryPolicy(),
    sample_rows: int = SAMPLE_ROWS,
) -> dict[str, Any]:
    """Shared data load, step 1: take the proof from the archive and install the masking trigger.

    The table's rows then arrive through the data section's ``pg_restore --jobs`` (run with the key,
    see :func:`scalingo_staging_sync.anonymize.salt.target_with_key`), masked as COPY writes them;
    :func:`finish_on_load` drops the trigger afterwards.
    """
    table, tools, started, key_columns, sample = _start_on_load(item, dump_path, tools, sample_rows)
    proof = _on_load_proof(item, target, salt, key_columns, sample, retry)

    def attempt() -> list[str]:
        with target.connect(autocommit=True) as conn:
            return _install_trigger(conn, item)

    what = f"install the masking trigger of {table}"
    covered = _guarded(lambda: with_retries(retry, attempt, what=what), what)
    log.info("%s: masking trigger installed; its rows will be masked as the data section loads them", table)
    return {
        "table": table,
        "mode": "on_load",
        "step": "prepared",
        "masked_columns": list(item.get("masked_columns") or item.get("columns") or []),
        "covered_tables": covered,
        "proof": proof,
        "duration_s": round(time.monotonic() - started, 3),
    }


def finish_on_load(
    item: Mapping[str, Any],
    target: PgTarget,
    prepared: Mapping[str, Any],
    *,
    retry: RetryPolicy = RetryPolicy(),
) -> dict[str, Any]:
    """Shared data load, step 2: drop the masking trigger (before post-data) and count the rows."""
    from scalingo_staging_sync.restore.api import table_stats

    table = _qualified(item)
    started = time.monotonic()

    def attempt() -> None:
        with target.connect(autocommit=True) as conn:
            _drop_trigger(conn, item)

    what = f"drop the masking trigger of {table}"
    _guarded(lambda: with_retries(retry, attempt, what=what), what)
    stats = _guarded(lambda: table_stats(target, [table]).get(table) or {}, f"count the rows of {table}")
    proof = dict(prepared.get("proof") or {})
    result = _result(item, "on_load", int(stats.get("rows", 0)), started, proof)
    result["duration_s"] = round(result["duration_s"] + float(prepared.get("duration_s") or 0.0), 3)
    return result


def _set_local(conn: Any, settings: Mapping[str, str]) -> dict[str, str]:
    """Set ``settings`` for the open transaction (``set_config(..., true)``), in one statement;
    returns the values they replace."""
    names = list(settings)
    previous = conn.execute(
        sql.SQL("SELECT {}").format(
            sql.SQL(", ").join(sql.SQL("current_setting({})").format(sql.Literal(n)) for n in names)
        )
    ).fetchone()
    conn.execute(
        sql.SQL("SELECT {}").format(
            sql.SQL(", ").join(
                sql.SQL("set_config({}, {}, true)").format(sql.Literal(n), sql.Literal(settings[n]))
                for n in names
            )
        )
    )
    return dict(zip(names, previous, strict=True))


def run_in_place(
    item: Mapping[str, Any],
    target: PgTarget,
    salt: str,
    *,
    dump_path: str | None = None,
    tools: Any = None,
    retry: RetryPolicy = RetryPolicy(),
    statement_timeout_s: float | None = None,
    email_domain: str = "example.com",
    sample_rows: int = SAMPLE_ROWS,
) -> dict[str, Any]:
    table = _qualified(item)
    key = derive_key(salt)
    started = time.monotonic()

    if dump_path:
        from scalingo_staging_sync.restore.pgtools import find_pg_tools

        tools = tools or find_pg_tools()

        def load() -> None:
            with target.connect(autocommit=True) as conn:
                _truncate(conn, item, _table_catalog(conn, item).relkind)
            _load_table(dump_path, target, table, tools)

        what = f"load {table}"
        _guarded(lambda: with_retries(retry, load, what=what), what)

    def attempt() -> tuple[int, dict]:
        with target.connect(autocommit=False) as conn:
            # as pg_restore does: the staging role's own timeouts (set for its application) do not bound
            # the masking; only statement_timeout_s does
            turn_off_timeouts(conn)
            cat = _table_catalog(conn, item)
            done = _masked_mark(conn, cat.oid)
            if done is not None:  # committed by an earlier attempt whose answer was lost: not twice
                log.warning(
                    "%s: already masked in place by an earlier attempt (%d rows); not again", table, done[0]
                )
                conn.rollback()
                return done
            check_fixed_values(conn, item, cat)
            statement, masked = _statement(item, cat, email_domain)
            # compiled first (EXPLAIN reads no row): a condition or query the server refuses is named
            # with the server's own message, which the sanitized error of a failed UPDATE cannot quote
            from scalingo_staging_sync.anonymize.rehearsal import item_problem

            problem = item_problem(conn, item, email_domain, checked_cat=cat)  # read and cast above
            if problem:
                raise AnonymizationError(problem + "; fix the rules file", retryable=False)
            if statement_timeout_s:
                conn.execute(
                    "SELECT set_config('statement_timeout', %s, true)",
                    (f"{int(statement_timeout_s * 1000)}ms",),
                )
            for name, value in key_settings(key).items():
                conn.execute("SELECT set_config(%s, %s, true)", (name, value))
            key_columns = list(item.get("key_columns") or [])
            proof_item = dict(item, masked_columns=masked)
            if key_columns and masked:
                names = [*key_columns, *masked]
                # read in the styles verification reads them (fingerprint.TEXT_STYLES), then back to
                # the session's own for the masking statement (date_shift hashes a date's text)
                own = _set_local(conn, TEXT_STYLES)
                sample = []
                # rows with an original to fingerprint first (a column filled only in recent rows
                # is NULL in a table's first ones), then rows without, up to sample_rows in all
                for with_values in (True, False):
                    stmt = sample_statement(
                        item["schema"],
                        item["name"],
                        key_columns,
                        masked,
                        item.get("condition"),
                        sample_rows - len(sample),
                        only=update_only(item, cat),  # the rows the UPDATE masks, not its children's
                        with_values=with_values,
                    )
                    sample += [dict(zip(names, r, strict=True)) for r in conn.execute(stmt).fetchall()]
                    if len(sample) >= sample_rows:
                        break
                proof_item[FIXED_AS_READ] = fixed_as_read(conn, item, cat)
                _set_local(conn, own)
            else:
                sample = []
            proof = build_proof(proof_item, salt, key_columns, sample)
            proof = rekey_proof(conn, item, proof, key)  # a masked key: found by its masked values
            if item.get("query"):  # reviewed inline SQL, run as given (may hold several statements)
                cur = conn.execute(sql.SQL(item["query"]))  # type: ignore[arg-type]
            else:
                cur = conn.execute(statement, prepare=True)
            rows = max(cur.rowcount, 0)
            _mark_masked(conn, cat.oid, table, rows, proof)  # in the masking's own transaction
            from psycopg.pq import TransactionStatus

            if conn.info.transaction_status != TransactionStatus.INTRANS:
                raise AnonymizationError(f"{table}: transaction is not in a committable state")
            conn.commit()
            return rows, proof

    what = f"anonymize {table} (in place)"
    rows, proof = _guarded(lambda: with_retries(retry, attempt, what=what), what)
    if rows or item.get("query"):  # a query may update rows it does not count: rewritten anyway
        what = f"rewrite {table} without its unmasked row versions"
        _guarded(lambda: with_retries(retry, lambda: rewrite_tables(target, item), what=what), what)
    return _result(item, "in_place", rows, started, proof)


def _masked_mark(conn: Any, oid: int) -> tuple[int, dict] | None:
    """(rows, proof) of a table this restore already masked in place (``targets.MASKED_TABLE``), or None;
    None too without the list (a database this package did not restore)."""
    import json

    from scalingo_staging_sync.restore.targets import MASKED_TABLE, STATE_SCHEMA

    exists = conn.execute("SELECT to_regclass(%s)", (f"{STATE_SCHEMA}.{MASKED_TABLE}",)).fetchone()
    if not exists or exists[0] is None:
        return None
    row = conn.execute(
        sql.SQL("SELECT rows, proof FROM {} WHERE table_oid = %s").format(
            sql.Identifier(STATE_SCHEMA, MASKED_TABLE)
        ),
        (oid,),
    ).fetchone()
    return None if row is None else (int(row[0]), json.loads(bytes(row[1]).decode("utf-8")))


def _mark_masked(conn: Any, oid: int, table: str, rows: int, proof: dict) -> None:
    import json

    from scalingo_staging_sync.restore.targets import MASKED_TABLE, STATE_SCHEMA

    exists = conn.execute("SELECT to_regclass(%s)", (f"{STATE_SCHEMA}.{MASKED_TABLE}",)).fetchone()
    if not exists or exists[0] is None:
        return
    conn.execute(
        sql.SQL("INSERT INTO {} (table_oid, table_name, rows, proof) VALUES (%s, %s, %s, %s)").format(
            sql.Identifier(STATE_SCHEMA, MASKED_TABLE)
        ),
        (oid, table, rows, json.dumps(proof).encode("utf-8")),
    )


def check_fixed_values(conn: Any, item: Mapping[str, Any], cat: Any) -> None:
    """Every ``fixed`` value of the item's rules cast to its column's type on the staging server, before
    any row is masked: a value the archive-only planning could not judge (a date, an inet...) is refused
    here, naming the rule, instead of failing the data load with a message that names neither. Every
    such value of the item is named in one error, not only the first."""
    from scalingo_staging_sync.anonymize.planner import fixed_cast_problem

    fixed = get_transformer("fixed")
    problems: list[str] = []
    for column, spec in (item.get("columns") or {}).items():
        if not isinstance(spec, Mapping) or spec.get("transformer") != "fixed" or column not in cat.columns:
            continue
        info = cat.columns[column]
        text = str(fixed._text(options_of(spec)))  # type: ignore[attr-defined]
        problem = fixed_cast_problem(conn, info, text)
        if problem:
            reason = problem.split(":")[0]
            problems.append(
                f"{_qualified(item)}.{column}: the rule's fixed value {text!r} does not fit the column's type "
                f"{info.type_sql} ({reason})"
            )
    if problems:
        raise AnonymizationError(
            "; ".join(problems) + "; give a value of that type in the rules file", retryable=False
        ) from None


def rewrite_tables(target: PgTarget, item: Mapping[str, Any]) -> list[str]:
    """``VACUUM (FULL)`` the item's table and every table of its partition or inheritance tree that
    holds rows (the tables an UPDATE of the item reaches): an UPDATE leaves the unmasked version of each
    row in the table's pages until vacuum reuses them, where a copy of the database files (a physical
    backup of the staging addon, a disk snapshot) would carry it. The rewrite copies the live rows
    into new files and drops the old ones at its commit (PostgreSQL truncates a dropped relation's
    file at once). Before post-data there is no index to rebuild. Returns the tables rewritten."""
    with target.connect(autocommit=True) as conn:
        turn_off_timeouts(conn)
        cat = _table_catalog(conn, item)
        tables = [(item["schema"], item["name"])] if cat.relkind == "r" else []
        if not update_only(item, cat):
            tables += [
                (schema, name) for _, schema, name, relkind in descendants(conn, cat.oid) if relkind == "r"
            ]
        for schema, name in tables:
            conn.execute(sql.SQL("VACUUM (FULL) {}").format(sql.Identifier(schema, name)))
    rewritten = [str(TableName(schema, name)) for schema, name in tables]
    log.info(
        "%s: rewritten without the row versions its masking left: %s", _qualified(item), ", ".join(rewritten)
    )
    return rewritten


def _statement(
    item: Mapping[str, Any], cat: Any, email_domain: str
) -> tuple[sql.Composable | None, list[str]]:
    if item.get("query"):
        return None, list(item.get("masked_columns") or [])
    strategy = item.get("strategy")
    if strategy and not item.get("columns"):
        custom = get_custom(strategy)
        if custom is None:
            raise AnonymizationError(
                f"{_qualified(item)}: custom strategy {strategy!r} is not registered here"
            )
        ctx = StrategyContext(
            item["schema"],
            item["name"],
            cat.columns,
            item.get("condition"),
            email_domain,
            only=update_only(item, cat),
        )
        return build_custom_statement(custom, ctx)
    specs = item["columns"]
    exprs = column_expressions(specs, cat.columns)
    only = update_only(item, cat)
    return update_statement(item["schema"], item["name"], exprs, item.get("condition"), only=only), list(
        specs
    )


def update_only(item: Mapping[str, Any], cat: Any) -> bool:
    """``UPDATE ONLY`` for a plain table whose inheritance children have their own plan items (the archive
    plan marks it ``children_planned``): PostgreSQL's UPDATE on the parent would reach the children's
    rows too and mask them twice. A partitioned table holds no rows of its own (its leaves are items)."""
    return bool(item.get("children_planned")) and getattr(cat, "relkind", "r") == "r"


def _result(item: Mapping[str, Any], mode: str, rows: int, started: float, proof: dict) -> dict[str, Any]:
    duration = time.monotonic() - started
    log.info(
        "%s: %d rows anonymized %s in %.2fs (%d sampled rows in the proof)",
        _qualified(item),
        rows,
        mode.replace("_", " "),
        duration,
        len(proof["rows"]),
    )
    return {
        "table": _qualified(item),
        "mode": mode,
        "rows": rows,
        "duration_s": round(duration, 3),
        "masked_columns": list(item.get("masked_columns") or []),
        "condition": item.get("condition"),
        "proof": proof,
    }


def run_table_plan(
    item: Mapping[str, Any],
    target: PgTarget,
    salt: str,
    *,
    dump_path: str | None = None,
    tools: Any = None,
    retry: RetryPolicy = RetryPolicy(),
    statement_timeout_s: float | None = None,
    email_domain: str = "example.com",
    sample_rows: int = SAMPLE_ROWS,
) -> dict[str, Any]:
    """Anonymize one table as planned; returns the CONTRACTS XCom result with the proof."""
    mask_secret(salt)
    if item.get("mode") == "on_load":
        if not dump_path:
            raise AnonymizationError(
                f"{_qualified(item)} is planned on_load but no dump_path was given to the operator"
            )
        return run_on_load(item, target, salt, dump_path, tools=tools, retry=retry, sample_rows=sample_rows)
    return run_in_place(
        item,
        target,
        salt,
        dump_path=dump_path,
        tools=tools,
        retry=retry,
        statement_timeout_s=statement_timeout_s,
        email_domain=email_domain,
        sample_rows=sample_rows,
    )
