"""Masking engine (c): the COPY stream masked on the worker by DuckDB, before it reaches PostgreSQL.

The on-load masking trigger (engine (a), :func:`scalingo_staging_sync.anonymize.sql.trigger_statements`)
masks rows inside the staging server as ``COPY`` writes them. This engine computes the same bytes on the
worker: each block of a table's COPY text (as ``pg_restore -a`` writes it) goes through one vectorised
DuckDB query of the transformers' expressions, and the masked text is copied in with the trigger
disabled. The staging server never receives an unmasked value, and the masking CPU moves to the worker
(on Scalingo, a separate machine; see docs/performance.md, "Masking engines").

**Same output, byte for byte.** Every expression here is the DuckDB form of its SQL expression:
keyed md5 and sha256 (built into both, so DuckDB computes them in C as PostgreSQL does), the 60-bit
integers read from the md5's hex digits for word picks and date shifts, ASCII-only case folding,
``varchar(n)`` cuts. ``tests/anonymize/test_stream_engine.py`` loads the same rows through
both engines, on PostgreSQL 16 and 18, and compares the tables.

**What it masks, and what stays with the trigger.** :func:`select_list` knows the built-in
transformers ``email``, ``phone``, ``first_name``, ``last_name``, ``city``, ``full_name``,
``address``, ``postal_code``, ``company``, ``hash`` and the derived ``md5_of`` on ``text`` /
``varchar`` columns, ``ip`` on those and ``inet`` ones (not with ``unique: true``), ``null`` and
``fixed`` on columns of any type but ``char(n)`` (``fixed`` not on bit strings either: their casts
pad or cut where COPY refuses), and ``date_shift`` on ``date``, ``timestamp`` and ``timestamptz``
columns (a ``timestamptz`` is moved to UTC first, as the masking session prints it; a session in
another TimeZone or DateStyle keeps the table with its trigger). A derived column (``md5_of``,
``full_name`` with ``from``) reads its sources' new values in the same row, as the trigger reads
``NEW`` (an unmasked source whose text depends on session settings, such as a ``timestamptz``, keeps
the table with its trigger). A table with any other masked column (``json``, ``ip`` with
``unique: true``, transformers registered by users, custom strategies), a partition or child covered by an ancestor's trigger, a
database or archive not in UTF8, or DuckDB not installed, is masked by its trigger exactly as before:
the choice is made per table, before its first row is read, and logged.

**Fail closed.** The trigger is taken off only inside the transaction that loads the table through
this engine, and rolled back with the table if anything fails: it is dropped before the rows (a
disabled row trigger would still make ``COPY`` insert row by row, leave the pages not all-visible and
slow post-data down: measured in docs/performance.md) and created again, disabled, before the commit,
so a later load of the same table (a retried task) finds it and masks. A DuckDB error fails the table (rolled back to empty) with a message that
quotes no value and no key.

DuckDB is an optional dependency (``pip install 'airflow-provider-scalingo-staging-sync[stream]'``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from psycopg import sql

from scalingo_staging_sync.anonymize import transformers as tr
from scalingo_staging_sync.anonymize.transformers import KEY_GUC, ColumnInfo
from scalingo_staging_sync.pgerrors import withhold_quoted
from scalingo_staging_sync.tablename import TableName

log = logging.getLogger(__name__)

#: ``masking_engine`` values: ``auto`` = stream where it applies and DuckDB is installed, else trigger
ENGINES = ("auto", "stream", "trigger")
#: marks the comment of a masking trigger function that holds its column specs (JSON)
SPEC_MARK = "scalingo_staging_sync masking specs v1: "
#: COPY text masked per DuckDB query (whole lines). DuckDB holds about 8 times the block in memory
#: while it runs (about 0.5 GB of worker memory per table being loaded at 64 MB)
CHUNK = 64 << 20
#: the longest COPY line DuckDB's reader accepts (its default is 2 MB)
MAX_LINE = 1 << 28

_TEXT_TYPES = frozenset({"text", "varchar"})
_UP = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class StreamUnsupported(Exception):
    """This table (or column) is masked by its trigger: the message says why."""


class StreamMaskError(RuntimeError):
    """DuckDB failed on a block of COPY text; the message quotes no value."""


def duckdb_available() -> bool:
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return False
    return True


def arrow_folding_available() -> bool:
    """Whether DuckDB can call Arrow's ``ascii_lower`` / ``ascii_upper`` kernels here (pyarrow, and
    numpy, which DuckDB's Arrow functions need; both in the ``stream`` extra)."""
    try:
        import numpy  # noqa: F401
        import pyarrow.compute  # noqa: F401

        _duckdb_varchar()
    except Exception:  # noqa: BLE001 - missing or broken: translate() folds instead, the same text
        return False
    return True


def _duckdb_varchar() -> Any:
    try:
        from duckdb.sqltypes import VARCHAR  # DuckDB 1.4+
    except ImportError:
        from duckdb.typing import VARCHAR
    return VARCHAR


#: the DuckDB functions :func:`register_arrow_folding` creates: builtin case mapping -> its
#: ASCII-only Arrow kernel (A-Z only; every other byte, so every non-ASCII character, kept)
ARROW_FOLDING = {"lower": ("sss_ascii_lower", "ascii_lower"), "upper": ("sss_ascii_upper", "ascii_upper")}


def register_arrow_folding(con: Any) -> None:
    """Create the :data:`ARROW_FOLDING` functions on the DuckDB connection ``con``. Arrow's ASCII
    kernels map the bytes A-Z (a-z) and copy every other byte, which keeps every multi-byte UTF-8
    character as it is: the text of ``translate(v, 'A..Z', 'a..z')``, for about 0.05 µs per value
    instead of 1 (``benchmarks/stream_columns.py``; ``tests/anonymize/test_stream_engine.py`` compares
    them over every Unicode character)."""
    import pyarrow.compute as pc

    varchar = _duckdb_varchar()

    def one_argument(kernel: Any) -> Any:  # DuckDB counts the kernel's options as arguments
        return lambda values: kernel(values)

    con.execute("SET produce_arrow_string_view = false")  # the arrays the kernels take
    for name, kernel in ARROW_FOLDING.values():
        con.create_function(
            name, one_argument(getattr(pc, kernel)), [varchar], varchar, type="arrow", side_effects=False
        )
    # the mapping checked once here, on letters that Unicode case mapping changes and A-Z must not
    probe = "Ab \u00c9\u00e9 \u0130 \u212a \u01c5 \u2160 \u1e9e z"
    got = con.execute("SELECT sss_ascii_lower($1), sss_ascii_upper($1)", [probe]).fetchone()
    want = (
        probe.translate(str.maketrans(_UP, _UP.lower())),
        probe.translate(str.maketrans(_UP.lower(), _UP)),
    )
    if tuple(got) != want:
        raise RuntimeError("Arrow's ASCII case kernels do not map A-Z only here")


def engine_name(engine: str | None) -> str:
    """``engine`` (None: ``auto``) when it is one of :data:`ENGINES`; ValueError naming it otherwise."""
    value = engine or "auto"
    if value not in ENGINES:
        raise ValueError(f"masking_engine {engine!r} is not one of {', '.join(ENGINES)}")
    return value


def check_engine(engine: str | None) -> str:
    """:func:`engine_name`, and ``stream`` only where DuckDB is installed."""
    value = engine_name(engine)
    if value == "stream" and not duckdb_available():
        raise ValueError(
            "masking_engine 'stream' needs DuckDB on the worker: "
            "pip install 'airflow-provider-scalingo-staging-sync[stream]', or use 'auto' or 'trigger'"
        )
    return value


def spec_comment(specs: Mapping[str, Mapping[str, Any]]) -> str:
    """The comment of a trigger function: its column specs, for :func:`specs_of_comment`."""
    return SPEC_MARK + json.dumps({col: dict(spec) for col, spec in specs.items()}, sort_keys=True)


def specs_of_comment(comment: str | None) -> dict[str, dict[str, Any]] | None:
    if not comment or not comment.startswith(SPEC_MARK):
        return None
    try:
        specs = json.loads(comment[len(SPEC_MARK) :])
    except ValueError:
        return None
    return specs if isinstance(specs, dict) else None


# ------------------------------------------------------------------------------------------------
# DuckDB SQL text (constants only: values come from the COPY text, the key from a variable)


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _arr(words) -> str:
    return "[" + ", ".join(_lit(w) for w in words) + "]"


def unescape_sql(field: str) -> str:
    """DuckDB SQL decoding a raw COPY text field (COPY TO writes ``\\b \\f \\n \\r \\t \\v`` and
    ``\\\\``; an escaped backslash is parked as NUL, which PostgreSQL text never holds)."""
    chain = f"replace({field}, '\\\\', chr(0))"
    for esc, code in (("t", 9), ("n", 10), ("r", 13), ("b", 8), ("f", 12), ("v", 11)):
        chain = f"replace({chain}, '\\{esc}', chr({code}))"
    return f"(CASE WHEN contains({field}, '\\') THEN replace({chain}, chr(0), '\\') ELSE {field} END)"


KEY = "getvariable('sss_key')"


def _ascii_case(e: str, builtin: str, source: str, dest: str, arrow: bool = False) -> str:
    """ASCII-only case mapping of ``e``: DuckDB's ``lower``/``upper`` when every character of ``e``
    is one byte (``strlen = length``: then it maps A-Z only, as ``translate`` does), otherwise
    Arrow's ASCII kernel with ``arrow`` (:func:`register_arrow_folding`), else ``translate``
    (``lower`` would map non-ASCII letters too). ``translate`` costs about 1 µs per value
    here, ``lower`` under 0.05 (``benchmarks/casefold.py``). ``e`` appears four times, but DuckDB's
    common-subexpression elimination computes it once (``EXPLAIN`` shows it in a projection below)."""
    other = f"{ARROW_FOLDING[builtin][0]}({e})" if arrow else f"translate({e}, '{source}', '{dest}')"
    return f"CASE WHEN strlen({e}) = length({e}) THEN {builtin}({e}) ELSE {other} END"


def _alower(e: str, arrow: bool = False) -> str:
    return _ascii_case(e, "lower", _UP, _UP.lower(), arrow)


def _aupper(e: str, arrow: bool = False) -> str:
    return _ascii_case(e, "upper", _UP.lower(), _UP, arrow)


def _keyed_md5(purpose: str, e: str) -> str:
    return f"md5({KEY} || '|{purpose}|' || {e})"


def _hash_int(purpose: str, e: str) -> str:
    return f"('0x' || left({_keyed_md5(purpose, e)}, 15))::BIGINT"


def _zero_padded(n: str, digits: int) -> str:
    return f"substr(({10**digits} + {n})::VARCHAR, 2)"


def _fit(expr: str, info: ColumnInfo, natural: int | None) -> str:
    if tr.cuts(info, natural):
        return f"left({expr}, {info.max_length})"
    return expr


def _date_plus(d: str, days: str) -> str:
    """The text of the date ``d`` (PostgreSQL's ISO text: ``YYYY-MM-DD``, ``YYYY-MM-DD BC``) plus
    ``days``, as PostgreSQL writes it (DuckDB reads and writes ``(BC)``)."""
    return f"replace((replace({d}, ' BC', ' (BC)')::DATE + {days})::VARCHAR, ' (BC)', ' BC')"


def _bc(e: str) -> str:
    return f"CASE WHEN ends_with({e}, ' BC') THEN ' BC' ELSE '' END"


def _days(x: str, max_days: int) -> str:
    """The shift of ``date_shift``: ``-max_days..-1, 1..max_days`` days from the keyed integer ``x``."""
    m = max_days
    return f"(({x} % {2 * m} + {m + 1}) % {2 * m + 1} - {m})::INT"


#: the error a ``utc_only`` select raises on a timestamptz written at another offset than +00
OFFSET_MARK = "sss-stream: a timestamptz not at +00"


def _timestamp_shift(c: str, max_days: int, tz: bool, utc_only: bool = False) -> str:
    """``date_shift`` of a timestamp's ISO text ``c`` (``YYYY-MM-DD HH:MM:SS[.f][ BC]``): the trigger's
    ``src + make_interval(days => d)`` with ``d`` from the keyed hash of ``src::text``; the time of
    day is kept. A ``timestamptz`` is written with its UTC offset (``+00``, ``+05:30``, ``-03``,
    ``+00:09:21``) by pg_dump, while the masking session (TimeZone UTC) hashes its UTC text: a value
    at ``+00`` is that text already; another is first moved to UTC (DuckDB's timestamp arithmetic,
    proleptic Gregorian as PostgreSQL's, BC years included), then hashed, shifted and written in UTC
    (``+00``): the same instant as the trigger's. ``utc_only``: a value at another offset raises
    :data:`OFFSET_MARK` instead (:class:`StreamMasker` then masks the block again with the general
    form): the move to UTC is a subquery, which DuckDB computes as a join carrying the row's columns,
    and it cost about 3 us per row even where every value is at +00."""
    body = f"replace({c}, ' BC', '')"
    date = f"split_part({body}, ' ', 1) || {_bc(c)}"  # the date's text, its era kept
    rest = f"split_part({body}, ' ', 2)"  # HH:MM:SS[.f][+HH[:MM[:SS]]]
    shifted = _date_plus(date, _days(_hash_int("date_shift", c), max_days))
    # 'YYYY-MM-DD[ BC]' -> 'YYYY-MM-DD <clock>[ BC]', the shifted date written once
    same_clock = f"replace(replace({shifted} || '|', ' BC|', ' ' || {rest} || ' BC'), '|', ' ' || {rest})"
    if not tz:
        return f"CASE WHEN {c} IN ('infinity', '-infinity') THEN {c} ELSE {same_clock} END"
    if utc_only:  # error()'s argument is not a constant, so that it is not folded when planning
        mark = f"error({_lit(OFFSET_MARK)} || left({c}, 0))"
        return (
            f"CASE WHEN {c} IS NULL OR {c} IN ('infinity', '-infinity') THEN {c} "
            f"WHEN ends_with({body}, '+00') THEN {same_clock} ELSE {mark} END"
        )

    def seconds(hms: str) -> str:  # 'HH[:MM[:SS]]' -> seconds
        h, m, s = (
            f"coalesce(TRY_CAST(NULLIF(split_part({hms}, ':', {k}), '') AS BIGINT), 0)" for k in (1, 2, 3)
        )
        return f"({h} * 3600 + {m} * 60 + {s})"

    # another offset: moved to UTC in a subquery over the values that need it (NULL for the others,
    # so that DuckDB, which computes it over the distinct values, does it once for those)
    w_body = "replace(w, ' BC', '')"
    w_rest = f"split_part({w_body}, ' ', 2)"
    clock = f"regexp_extract({w_rest}, '^[0-9:.]+')"
    offset = f"substr({w_rest}, length({clock}) + 1)"
    sign = f"CASE WHEN starts_with({offset}, '-') THEN -1 ELSE 1 END"
    local = seconds(f"split_part({clock}, '.', 1)")
    frac = f"CASE WHEN contains({clock}, '.') THEN '.' || split_part({clock}, '.', 2) ELSE '' END"
    utc = f"({local} - {sign} * {seconds(f'substr({offset}, 2)')})"
    # the UTC date (ud: the day moves by dd, -1, 0 or +1) and time of day (sod seconds)
    hh, mm, ss = (_zero_padded(e, 2) for e in ("sod // 3600", "sod % 3600 // 60", "sod % 60"))
    w_date = f"split_part({w_body}, ' ', 1) || {_bc('w')}"
    parts = (
        f"SELECT CASE WHEN dd = 0 THEN dl ELSE {_date_plus('dl', 'dd')} END AS ud, "  # noqa: S608
        f"{hh} || ':' || {mm} || ':' || {ss} || fr AS clock "
        f"FROM (SELECT {w_date} AS dl, floor(s / 86400)::INT AS dd, s - floor(s / 86400)::BIGINT * 86400 AS sod, fr "
        f"FROM (SELECT {utc} AS s, {frac} AS fr) t0) t1"
    )
    moved = (
        f"(SELECT split_part(sd, ' ', 1) || ' ' || clock || '+00' || {_bc('sd')} "  # noqa: S608
        f"FROM (SELECT CASE WHEN {c} IN ('infinity', '-infinity') OR ends_with({body}, '+00') THEN NULL "
        f"ELSE {c} END AS w) a, LATERAL ({parts}) p, "
        f"LATERAL (SELECT split_part(ud, ' ', 1) || ' ' || clock || '+00' || {_bc('ud')} AS t) u, "
        f"LATERAL (SELECT {_hash_int('date_shift', 't')} AS x) h, "
        f"LATERAL (SELECT {_date_plus('ud', _days('x', max_days))} AS sd) d)"
    )
    return (
        f"CASE WHEN {c} IN ('infinity', '-infinity') THEN {c} "
        f"WHEN ends_with({body}, '+00') THEN {same_clock} ELSE {moved} END"
    )


def _v4_text(x: str) -> str:
    """``host('240.0.0.0'::inet + (x) % 2^28)``: dotted quad."""
    n = f"(({x}) % {tr.IpTransformer.V4_SIZE})"
    return (
        f"(240 + {n} // 16777216)::VARCHAR || '.' || ({n} // 65536 % 256)::VARCHAR || '.' "
        f"|| ({n} // 256 % 256)::VARCHAR || '.' || ({n} % 256)::VARCHAR"
    )


def _v6_text(x: str) -> str:
    """``host('2001:db8::'::inet + x)`` (0 <= x < 2^61) as PostgreSQL writes it
    (``inet_net_ntop_ipv6``): lower-case hex words without leading zeros, the longest run of two
    or more zero words (the first of equal ones) written ``::``. The words are 2001, db8, 0, 0 and
    x's four: the run from the third word (with x's leading zero words) is the longest, except
    when x's last three words are zero and its first is not (a run of three against two)."""
    w = [f"((({x}) >> {shift}) & 65535)" for shift in (48, 32, 16, 0)]
    hexw = [f"lower(hex({e}))" for e in w]
    tail = [" || ':' || ".join(hexw[k:]) for k in range(4)]
    return (
        f"CASE WHEN {w[0]} <> 0 AND {w[1]} = 0 AND {w[2]} = 0 AND {w[3]} = 0 "
        f"THEN '2001:db8:0:0:' || {hexw[0]} || '::' "
        f"WHEN {w[0]} <> 0 THEN '2001:db8::' || {tail[0]} "
        f"WHEN {w[1]} <> 0 THEN '2001:db8::' || {tail[1]} "
        f"WHEN {w[2]} <> 0 THEN '2001:db8::' || {tail[2]} "
        f"WHEN {w[3]} <> 0 THEN '2001:db8::' || {tail[3]} "
        "ELSE '2001:db8::' END"
    )


class _Builder:
    def __init__(self, arrow_folding: bool = False, utc_only: bool = False):
        #: fold with Arrow's ASCII kernels (registered on the connection), not ``translate``
        self.arrow = arrow_folding
        #: timestamptz values at +00 only (:func:`_timestamp_shift`)
        self.utc_only = utc_only

    @staticmethod
    def pick_ex(words, x: str, word: str) -> str:
        n = len(words)
        return (
            f"CASE WHEN {word} = {_arr([w.lower() for w in words])}[1 + ({x}) % {n}] "
            f"THEN {_arr(words)}[1 + (({x}) + 1) % {n}] ELSE {_arr(words)}[1 + ({x}) % {n}] END"
        )

    def over_norm(self, c: str, purpose: str, expr: str) -> str:
        """``expr`` with ``n`` = the normalised value and ``x`` = its keyed hash, each computed once."""
        norm = _alower(f"trim({c}, ' ')", self.arrow)
        return (
            f"(SELECT {expr} FROM (SELECT {norm} AS n) s, "  # noqa: S608 (DuckDB text of constants)
            f"LATERAL (SELECT {_hash_int(purpose, 'n')} AS x) h)"
        )

    def ip(self, c: str, inet: bool) -> str:
        """The ``ip`` transformer (``IpTransformer.expression``): the address as text (``host()`` of
        an inet: its COPY text without the prefix length; a text value trimmed and ASCII
        lower-cased), hashed; ``240.0.0.0 + x % 2^28`` or ``2001:db8:: + x`` written as
        PostgreSQL's ``host()`` writes it, the next one when that is the original; an inet keeps its
        prefix length."""
        address = f"split_part({c}, '/', 1)" if inet else _alower(f"trim({c}, ' ')", self.arrow)
        # never the original: an address in the output's range that the hash lands on takes the next
        out = (
            f"CASE WHEN v6 THEN CASE WHEN {_v6_text('x')} = a THEN {_v6_text('x + 1')} ELSE {_v6_text('x')} END "
            f"ELSE CASE WHEN {_v4_text('x')} = a THEN {_v4_text('x + 1')} ELSE {_v4_text('x')} END END"
        )
        if inet:  # set_masklen(chosen, masklen(src)): inet writes a prefix length below the maximum
            out = f"{out} || CASE WHEN contains(v, '/') THEN '/' || split_part(v, '/', 2) ELSE '' END"
        v6 = "strpos(a, ':') > 0"  # family(src) = 6 for an inet, as the text form tells it
        return (
            f"(SELECT {out} FROM (SELECT {c} AS v, {address} AS a) s, "  # noqa: S608
            f"LATERAL (SELECT {_hash_int('ip', 'a')} AS x, {v6} AS v6) h)"
        )

    def expression(
        self,
        col: str,
        c: str,
        spec: Mapping[str, Any],
        info: ColumnInfo,
        new: Callable[[str], str] | None = None,
    ) -> str:
        """The DuckDB expression of ``spec`` on the decoded value ``c`` of column ``info``, giving
        the SQL expression's text (decoded: :func:`select_list` escapes it, :func:`escape_sql`, where
        it may hold a character COPY escapes);
        :class:`StreamUnsupported` when there is none. ``new(other)`` is the decoded new value of
        another column of the row (derived columns: ``md5_of``, ``full_name`` with ``from``)."""
        name = spec.get("transformer")
        options = tr.options_of(spec)
        transformer = tr.all_transformers().get(str(name))
        if transformer is None or type(transformer).__module__ != tr.__name__:
            raise StreamUnsupported(f"{col}: transformer {name!r} is not a built-in one")
        if name == "null":
            return "NULL"
        if name in ("md5_of", "full_name") and transformer.depends_on(options):
            if new is None:
                raise StreamUnsupported(f"{col}: {name} reads other columns' masked values")
            if info.base_type not in _TEXT_TYPES:
                raise StreamUnsupported(
                    f"{col}: {name} on {info.type_sql} (only text and varchar columns stream)"
                )
            if name == "md5_of":  # md5((NEW.col)::text)
                return f"md5({new(options['column'])})"
            # CASE WHEN src IS NULL THEN NULL ELSE concat_ws(' ', (NEW.a)::text, ...) END, fitted
            pieces = ", ".join(new(part) for part in options["from"])
            return _fit(f"CASE WHEN {c} IS NULL THEN NULL ELSE concat_ws(' ', {pieces}) END", info, None)
        if name == "date_shift":
            if info.base_type not in ("date", "timestamp", "timestamptz"):
                raise StreamUnsupported(f"{col}: date_shift on {info.type_sql}")
            m = int(options.get("max_days", 365))
            if info.base_type == "date":
                return (
                    f"(SELECT CASE WHEN {c} IN ('infinity', '-infinity') THEN {c} "  # noqa: S608
                    f"ELSE {_date_plus(c, _days('x', m))} END FROM (SELECT {_hash_int('date_shift', c)} AS x) h)"
                )
            return _timestamp_shift(c, m, info.base_type == "timestamptz", self.utc_only)
        if name == "fixed":
            # CAST('<value>' AS <type>) in the trigger; COPY reads the same text with the same type
            # input in the same session (typmod, DateStyle, TimeZone), but for the casts that pad
            # or cut where the input would refuse
            if info.base_type in ("bpchar", "bit", "varbit"):
                raise StreamUnsupported(f"{col}: fixed on {info.type_sql} (its cast pads or cuts)")
            text = tr.FixedTransformer._text(options)
            if info.category == "string" and info.max_length is not None and len(text) > info.max_length:
                text = text[: info.max_length]  # CAST('...' AS varchar(n)) cuts it too
            return _lit(text)
        if name == "ip":
            if options.get("unique"):
                raise StreamUnsupported(f"{col}: ip with unique: true (a keyed permutation)")
            if info.base_type not in (*_TEXT_TYPES, "inet"):
                raise StreamUnsupported(
                    f"{col}: ip on {info.type_sql} (text, varchar and inet columns stream)"
                )
            return self.ip(c, info.base_type == "inet")
        if info.base_type not in _TEXT_TYPES:
            raise StreamUnsupported(
                f"{col}: {name} on {info.type_sql} (only text and varchar columns stream)"
            )
        if name == "email":
            domain = "@" + (options.get("domain") or tr.DEFAULT_EMAIL_DOMAIN)
            hex_len = 32 if info.max_length is None else max(0, min(32, info.max_length - len(domain) - 1))
            value = _alower(c, self.arrow) if options.get("case_insensitive") else c
            return f"'u' || left({_keyed_md5('email', value)}, {hex_len}) || {_lit(domain)}"
        if name == "phone":
            prefix = options.get("prefix", "+999")
            d = int(options.get("digits", 12))
            if info.max_length is not None:
                d = min(d, info.max_length - len(prefix))
            pn = c
            for ch in tr.PHONE_SEPARATORS:
                pn = f"replace({pn}, {_lit(ch)}, '')"
            off = f"(1 + {_hash_int('phone', pn)} % {10**d - 1})"
            shape = _lit(re.escape(prefix) + "[0-9]{" + str(d) + "}")
            return (
                f"{_lit(prefix)} || CASE WHEN length({c}) = {len(prefix) + d} AND starts_with({c}, {_lit(prefix)}) "
                f"THEN {_zero_padded(f'((CASE WHEN regexp_full_match({c}, {shape}) THEN right({c}, {d})::BIGINT ELSE 0 END + {off}) % {10**d})', d)} "
                f"ELSE {_zero_padded(off, d)} END"
            )
        if name in ("first_name", "last_name", "city"):
            words = transformer.words  # type: ignore[attr-defined]
            natural = max(map(len, words))
            expr = self.pick_ex(tr.fit_words(words, info, natural), "x", "split_part(n, ' ', 1)")
            return _fit(self.over_norm(c, transformer.purpose, expr), info, natural)  # type: ignore[attr-defined]
        if name == "full_name":
            natural = max(map(len, tr.FIRST_NAMES)) + 1 + max(map(len, tr.LAST_NAMES))
            first = self.pick_ex(tr.fit_words(tr.FIRST_NAMES, info, natural), "x", "split_part(n, ' ', 1)")
            last = self.pick_ex(tr.LAST_NAMES, "(x >> 30)", "split_part(n, ' ', 2)")
            return _fit(self.over_norm(c, "full_name", f"{first} || ' ' || {last}"), info, natural)
        if name == "address":
            street = self.pick_ex(tr.STREETS, "(x >> 20)", "split_part(n, ' ', 2)")
            suffix = f"{_arr(tr.STREET_SUFFIXES)}[1 + (x >> 40) % {len(tr.STREET_SUFFIXES)}]"
            natural = tr.AddressTransformer.NATURAL
            expr = f"(1 + x % 999)::VARCHAR || ' ' || {street} || ' ' || {suffix}"
            if not tr.cuts(info, natural):
                return _fit(self.over_norm(c, "address", expr), info, natural)
            # cut: an output equal to the original (lowered, trimmed) takes the next house number, as
            # in AddressTransformer.expression (which proves that one is never the original). The
            # output is ASCII, so DuckDB's lower() maps A-Z only, as the ASCII lower of PostgreSQL does
            out = _fit(expr, info, natural)
            following = _fit(
                f"(1 + (x + 1) % 999)::VARCHAR || ' ' || {street} || ' ' || {suffix}", info, natural
            )
            guarded = f"CASE WHEN rtrim(lower({out}), ' ') = n THEN {following} ELSE {out} END"
            return self.over_norm(c, "address", guarded)
        if name == "company":
            natural = max(map(len, tr.COMPANY_WORDS)) + 1 + max(map(len, tr.COMPANY_SUFFIXES))
            word = self.pick_ex(tr.fit_words(tr.COMPANY_WORDS, info, natural), "x", "split_part(n, ' ', 1)")
            suffix = f"{_arr(tr.COMPANY_SUFFIXES)}[1 + (x >> 30) % {len(tr.COMPANY_SUFFIXES)}]"
            return _fit(self.over_norm(c, "company", f"{word} || ' ' || {suffix}"), info, natural)
        if name == "postal_code":
            d = int(options.get("digits", 5))
            t = f"trim({c}, ' ')"
            return (
                f"(SELECT CASE WHEN octet_length(encode({t})) = {d} AND regexp_full_match({t}, '[0-9]{{{d}}}') "  # noqa: S608
                f"THEN {_zero_padded(f'({t}::BIGINT + o) % {10**d}', d)} ELSE {_zero_padded('o', d)} END "
                f"FROM (SELECT 1 + {_hash_int('postal_code', _aupper(t, self.arrow))} % {10**d - 1} AS o) h)"
            )
        if name == "hash":
            algorithm = options.get("algorithm", "sha256")
            transformer = tr.get_transformer("hash")
            full = transformer.full_length(options)  # type: ignore[attr-defined]
            length = transformer.output_length(info, options)  # type: ignore[attr-defined]
            h = f"sha256({KEY} || '|hash|' || {c})" if algorithm == "sha256" else _keyed_md5("hash", c)
            if options.get("encoding", "hex") == "base64url":  # as the SQL form: base64url, no padding
                h = f"rtrim(translate(to_base64(unhex({h})), '+/', '-_'), '=')"
            return h if length == full else f"left({h}, {length})"
        raise StreamUnsupported(f"{col}: transformer {name!r} has no stream form")


#: types whose COPY text (pg_dump's, ISO dates) is the ``::text`` of a masking session: the unmasked
#: columns a derived one may read (``timestamptz`` prints in the session's TimeZone, ``bpchar`` drops
#: its padding, floats and money follow settings)
_SAME_TEXT_TYPES = frozenset(
    {"text", "varchar", "citext", "name", "int2", "int4", "int8", "numeric", "uuid", "bool", "date"}
)


def escape_sql(e: str) -> str:
    """DuckDB SQL writing the text value ``e`` as a COPY text field (``copy_escape``)."""
    out = f"replace({e}, '\\', '\\\\')"
    for code, esc in ((9, "t"), (10, "n"), (13, "r"), (8, "b"), (12, "f"), (11, "v")):
        out = f"replace({out}, chr({code}), '\\{esc}')"
    return out


def select_list(
    specs: Mapping[str, Mapping[str, Any]],
    catalog: Mapping[str, ColumnInfo],
    columns: list[str],
    *,
    arrow_folding: bool = False,
    utc_only: bool = False,
) -> str:
    """The DuckDB select list masking ``columns`` (the archive's COPY column list, read as c0, c1...):
    masked columns as their transformer's expression, the others passed through as they are. A
    derived column (``md5_of``, ``full_name`` with ``from``) reads the new values of its sources, as
    the trigger reads ``NEW``. With ``arrow_folding``, case folding calls the
    :func:`register_arrow_folding` functions."""
    missing = [c for c in specs if c not in columns]
    if missing:
        raise StreamUnsupported(f"masked column(s) {missing} are not in the archive's COPY data")
    builder = _Builder(arrow_folding, utc_only)
    position = {col: i for i, col in enumerate(columns)}
    values: dict[str, str] = {}  # column -> DuckDB expression of its new value (decoded text)

    def new(col: str, stack: tuple[str, ...] = ()) -> str:
        if col in values:
            return values[col]
        if col in stack:
            raise StreamUnsupported(f"derived columns form a cycle: {' -> '.join((*stack, col))}")
        info = catalog.get(col)
        if info is None:
            raise StreamUnsupported(f"{col}: not in the table's catalog")
        if col not in position:
            raise StreamUnsupported(f"{stack[-1]}: reads {col}, which is not in the archive's COPY data")
        c = unescape_sql(f"c{position[col]}")
        spec = specs.get(col)
        if spec is None:  # not masked: a derived column reads its value as ``(NEW.col)::text``
            if info.base_type not in _SAME_TEXT_TYPES:
                raise StreamUnsupported(f"{stack[-1]}: reads {col} ({info.type_sql}), whose text may differ")
            values[col] = c
            return c
        if info.base_type in ("bpchar",):
            raise StreamUnsupported(f"{col}: {info.type_sql} (padded text)")
        if stack and spec.get("transformer") == "fixed" and info.category != "string":
            # (NEW.col)::text is the type's own text of the value, not the rules file's
            raise StreamUnsupported(f"{stack[-1]}: reads {col}, a fixed {info.type_sql}")
        expr = builder.expression(col, c, spec, info, lambda other: new(other, (*stack, col)))
        transformer = tr.all_transformers().get(str(spec.get("transformer")))
        if transformer is not None and transformer.keeps_empty and info.category == "string":
            expr = f"CASE WHEN {c} = '' THEN '' ELSE {expr} END"  # as transformers.keep_empty_sql
        values[col] = expr
        return expr

    parts = []
    for i, col in enumerate(columns):
        if col not in specs:
            parts.append(f"c{i}")
            continue
        expr = new(col)
        spec = specs[col]
        if spec.get("transformer") == "fixed" or (
            spec.get("transformer") == "full_name" and tr.options_of(spec).get("from")
        ):
            expr = escape_sql(expr)  # the others write no character COPY escapes
        parts.append(f"{expr} AS c{i}")
    return ", ".join(parts)


def _redacted(exc: BaseException) -> str:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {withhold_quoted(first, '<withheld>')[:200]}"


class StreamMasker:
    """One table's masking query, reused for every block of its COPY text.

    Blocks are masked one at a time on a worker thread (DuckDB runs without the GIL) while the caller
    sends the previous block's output to PostgreSQL and reads the next one from pg_restore: one
    table's load keeps pg_restore, DuckDB and the server busy at once instead of in turn."""

    def __init__(
        self,
        table: TableName,
        specs: Mapping[str, Mapping[str, Any]],
        catalog: Mapping[str, ColumnInfo],
        columns: list[str],
        key: str,
        *,
        workdir: str | os.PathLike | None = None,
        before_commit: Sequence[sql.Composable] = (),
        arrow_folding: bool | None = None,
    ):
        import duckdb

        self.table = table
        #: case folding through Arrow's ASCII kernels (None: wherever pyarrow is installed and its
        #: functions register); the text is the same either way
        self.arrow_folding = arrow_folding_available() if arrow_folding is None else arrow_folding
        self._table_specs = (specs, catalog, columns)
        self.ncols = len(columns)
        #: timestamptz values at +00 only, until a block holds another offset (_timestamp_shift)
        self.utc_only = True
        self._build_query()
        self._tail = bytearray()
        self._pending = 0
        self._lines = 0
        self._blocks = 0
        self._in: Any = None
        self._job: Future[tuple[str, int, int]] | None = None
        #: run by :meth:`before_commit`, in the load transaction, once the rows are in
        self._before_commit = list(before_commit)
        self._pool: ThreadPoolExecutor | None = None
        self.con: Any = None
        self._dir = tempfile.mkdtemp(prefix="sss-stream-", dir=workdir or _shm())
        try:
            self._open_block()
            self.con = duckdb.connect()
            self.con.execute("SET threads = 1")
            self.con.execute("SET VARIABLE sss_key = $1::VARCHAR", [key])
            if self.arrow_folding:
                try:
                    register_arrow_folding(self.con)
                except Exception as exc:
                    if arrow_folding is not None:  # asked for explicitly
                        raise
                    log.warning(
                        "%s: Arrow case folding unavailable (%s): translate() folds instead",
                        table, type(exc).__name__,
                    )  # fmt: skip
                    self.arrow_folding = False
                    self._build_query()
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sss-mask")
        except BaseException:
            self.close()
            raise

    def _build_query(self) -> None:
        specs, catalog, columns = self._table_specs
        self.select = select_list(
            specs, catalog, columns, arrow_folding=self.arrow_folding, utc_only=self.utc_only
        )
        types = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(self.ncols)) + "}"
        # the block's file names go between these (the select list holds braces: no str.format)
        self._query = (
            f"COPY (SELECT {self.select} FROM read_csv(",  # noqa: S608 (DuckDB text of constants and temp paths)
            f", delim='\t', quote='', escape='', header=false, nullstr='\\N', auto_detect=false, "
            f"max_line_size={MAX_LINE}, buffer_size={2 * MAX_LINE}, columns={types})) TO ",
            " (FORMAT csv, delim '\t', quote '', escape '', header false, nullstr '\\N')",
        )

    def _open_block(self) -> None:
        self._blocks += 1
        self._src = os.path.join(self._dir, f"in-{self._blocks}.copy")
        self._in = open(self._src, "wb")  # noqa: SIM115 (closed by _submit or close)
        self._pending = 0
        self._lines = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Take COPY text (any cut); yield masked COPY text whenever :data:`CHUNK` bytes of whole
        lines are waiting (the block before them, while they are masked)."""
        self._tail += data
        cut = self._tail.rfind(b"\n") + 1
        if cut:
            self._in.write(self._tail[:cut])
            self._lines += self._tail.count(b"\n", 0, cut)
            del self._tail[:cut]
            self._pending += cut
        if self._pending >= CHUNK:
            yield from self._submit()

    def finish(self) -> Iterator[bytes]:
        """The rest, masked (the COPY text must end with a whole line)."""
        if self._tail:
            raise StreamMaskError(f"the COPY text of {self.table} ends inside a line")
        if self._pending:
            yield from self._submit()
        if self._job is not None:
            job, self._job = self._job, None
            yield from self._output(job)

    def mask(self, data: bytes) -> bytes:
        """Whole lines of COPY text in, the same lines masked out."""
        return b"".join([*self.feed(data), *self.finish()])

    def _submit(self) -> Iterator[bytes]:
        """Start masking the block written so far; yield the previous block's output meanwhile."""
        assert self._pool is not None
        self._in.close()
        src, lines = self._src, self._lines
        dst = os.path.join(self._dir, f"out-{self._blocks}.copy")
        previous = self._job
        self._job = self._pool.submit(self._mask_file, src, dst, lines)
        self._open_block()
        if previous is not None:
            yield from self._output(previous)

    def _mask_file(self, src: str, dst: str, lines: int) -> tuple[str, int, int]:
        try:
            try:
                written = self.con.execute(self._query_for(src, dst)).fetchone()
            except Exception as exc:
                if not (self.utc_only and OFFSET_MARK in str(exc)):
                    raise
                # pg_dump wrote timestamptz values at another offset than +00 (its session was not
                # in UTC): this block and the next ones move each value to UTC first
                log.info("%s: timestamptz values at other offsets than +00: each moved to UTC", self.table)
                self.utc_only = False
                self._build_query()
                written = self.con.execute(self._query_for(src, dst)).fetchone()
        except Exception as exc:
            import duckdb

            if isinstance(exc, duckdb.Error):
                raise StreamMaskError(
                    f"masking {self.table} on the worker failed: {_redacted(exc)}"
                ) from None
            raise
        finally:
            os.unlink(src)
        return dst, (written[0] if written else -1), lines

    def _query_for(self, src: str, dst: str) -> str:
        head, middle, end = self._query
        return head + _lit(src) + middle + _lit(dst) + end

    def _output(self, job: Future[tuple[str, int, int]]) -> Iterator[bytes]:
        dst, written, lines = job.result()
        try:
            if written != lines:  # never a row lost or doubled
                raise StreamMaskError(f"masking {self.table} on the worker gave {written} rows for {lines}")
            with open(dst, "rb") as out:
                while block := out.read(1 << 20):
                    yield block
        finally:
            try:
                os.unlink(dst)
            except FileNotFoundError:
                pass

    def before_commit(self, conn: Any) -> None:
        for statement in self._before_commit:
            conn.execute(statement)

    def close(self) -> None:
        try:
            if self._in is not None:
                self._in.close()
            if self._pool is not None:
                self._pool.shutdown(wait=True)  # a block being masked ends first
            if self.con is not None:
                self.con.close()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> StreamMasker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shm() -> str | None:
    """A memory-backed directory for the blocks when it has room for a few of them (unmasked rows
    then never reach a disk beyond the archive itself); else the temporary directory."""
    path = "/dev/shm"
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    room = st.f_bavail * st.f_frsize >= 8 * CHUNK
    return path if room and os.access(path, os.W_OK | os.X_OK) else None


# ------------------------------------------------------------------------------------------------
# The loader's hook: which tables stream, found from the masking triggers themselves

_TRIGGER_SQL = """
SELECT t.tgenabled::text, pn.nspname, p.proname, obj_description(p.oid, 'pg_proc')
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
WHERE n.nspname = %s AND c.relname = %s AND t.tgname = %s
"""


def masking_trigger(conn: Any, schema: str, name: str) -> Any:
    """The masking trigger on the table ``schema.name`` (the one named by ``sql.trigger_name``) as the
    row ``(tgenabled, schema and name of the function it calls, that function's comment)``; None when
    the table has none. A trigger the stream engine disabled after masking a load is still found."""
    from scalingo_staging_sync.anonymize.sql import trigger_name

    return conn.execute(_TRIGGER_SQL, (schema, name, trigger_name(schema, name))).fetchone()


class StreamMasking:
    """The loader's per-table hook (``load_table_data(copy_filter=...)``): for a table whose own
    masking trigger is installed, returns a :class:`StreamMasker` and drops the trigger in the open
    transaction (the masker creates it again, disabled, before the commit); None (the trigger masks,
    or nothing does) otherwise."""

    def __init__(self, engine: str = "auto"):
        self.engine = check_engine(engine)
        self.enabled = self.engine != "trigger" and duckdb_available()
        self.used: dict[str, str] = {}  # table -> "stream" or the reason it did not

    def __call__(self, conn: Any, table: TableName, columns: list[str]) -> StreamMasker | None:
        from scalingo_staging_sync.anonymize.planner import read_table
        from scalingo_staging_sync.anonymize.sql import (
            attach_trigger_statements,
            trigger_function_name,
            trigger_name,
        )

        trigger = trigger_name(table.schema, table.name)
        row = masking_trigger(conn, table.schema, table.name)
        if row is None:
            return None  # no masking trigger: an unmasked table
        enabled, fn_schema, fn_name, comment = row
        try:
            if not self.enabled:
                raise StreamUnsupported(
                    f"masking_engine {self.engine!r}" if self.engine == "trigger" else "no DuckDB"
                )
            if (fn_schema, fn_name) != (table.schema, trigger_function_name(table.schema, table.name)):
                raise StreamUnsupported("it is covered by an ancestor's masking trigger")
            specs = specs_of_comment(comment)
            if not specs:
                raise StreamUnsupported("its trigger function carries no column specs")
            *encodings, datestyle, timezone = conn.execute(
                "SELECT current_setting('server_encoding'), current_setting('client_encoding'), "
                "current_setting('DateStyle'), current_setting('TimeZone')"
            ).fetchone()
            if tuple(encodings) != ("UTF8", "UTF8"):
                raise StreamUnsupported(f"encodings {encodings[0]}/{encodings[1]} (UTF8 only)")
            # date_shift hashes a date's text as the session prints it: ISO, and timestamptz in UTC
            # (the masking sessions' styles, anonymize.salt.MASKING_STYLES)
            if not datestyle.startswith("ISO") and any(
                s.get("transformer") == "date_shift" for s in specs.values()
            ):
                raise StreamUnsupported(f"DateStyle {datestyle} (date_shift streams under ISO)")
            (key,) = conn.execute("SELECT current_setting(%s, true)", (KEY_GUC,)).fetchone()
            if not key:
                raise StreamUnsupported("the session carries no masking key")
            cat = read_table(conn, table.schema, table.name)
            if cat is None:
                raise StreamUnsupported("not found in the catalog")
            if timezone not in ("UTC", "Etc/UTC") and any(
                s.get("transformer") == "date_shift"
                and getattr(cat.columns.get(col), "base_type", None) == "timestamptz"
                for col, s in specs.items()
            ):
                raise StreamUnsupported(f"TimeZone {timezone} (a timestamptz's date_shift streams under UTC)")
            ident = sql.Identifier(table.schema, table.name)
            # the same trigger again, disabled, before the commit: the mark of a table already
            # masked on the worker (a fallback above turns it back on)
            masker = StreamMasker(
                table, specs, cat.columns, columns, key,
                before_commit=[
                    attach_trigger_statements(table.schema, table.name, table.schema, table.name)[1],
                    sql.SQL("ALTER TABLE ONLY {} DISABLE TRIGGER {}").format(ident, sql.Identifier(trigger)),
                ],
            )  # fmt: skip
        except StreamUnsupported as why:
            if enabled != "A":
                # disabled by an earlier stream load of this table (a retried task): the trigger
                # masks this load, so it must fire again (in this transaction, with the rows)
                conn.execute(
                    sql.SQL("ALTER TABLE ONLY {} ENABLE ALWAYS TRIGGER {}").format(
                        sql.Identifier(table.schema, table.name), sql.Identifier(trigger)
                    )
                )
            self._note(table, f"trigger ({why})")
            return None
        try:
            conn.execute("SAVEPOINT sss_stream")
            conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(trigger), ident))
            conn.execute("RELEASE SAVEPOINT sss_stream")
        except Exception as exc:  # not the owner...: the trigger masks
            conn.execute("ROLLBACK TO SAVEPOINT sss_stream")
            masker.close()
            if enabled != "A":
                raise StreamMaskError(
                    f"{table}: its masking trigger is disabled and cannot be changed ({type(exc).__name__}); "
                    "its rows would load unmasked"
                ) from None
            self._note(table, f"trigger (its trigger cannot be dropped for the load: {type(exc).__name__})")
            return None
        self._note(table, "stream")
        return masker

    def _note(self, table: TableName, how: str) -> None:
        self.used[str(table)] = how
        if how != "stream" and self.engine == "stream":
            log.warning("%s: masked by its trigger, not on the worker: %s", table, how)
        else:
            log.info(
                "%s: masked %s",
                table,
                "on the worker (stream engine)" if how == "stream" else f"by its {how}",
            )
