"""Engine (c) with DuckDB, for measurement only: the COPY text of ``users``/``orders`` masked by one
vectorised DuckDB query (``read_csv`` of the COPY text, the transformer expressions, ``COPY TO``).

DuckDB has md5 but not PostgreSQL's ``hashtextextended``. Two modes: ``exact=False`` uses the keyed md5
for the word picks and ``date_shift`` (``stream_prototype.CopyMasker(md5_picks=True)`` gives the same
bytes; the SQL side would have to switch to md5 picks too); ``exact=True`` computes PostgreSQL's
``hash_bytes_extended`` in DuckDB SQL (:func:`hash_bytes_extended_sql`: lookup3's 32-bit arithmetic on
``UBIGINT``, ``list_reduce`` over the 12-byte blocks), byte-identical to the trigger. Only the bench transformers and only COPY text without backslash escapes
in the masked columns are handled (a shipped engine would unescape/escape them with ``replace``).

DuckDB is not a dependency of the project: install it in a separate venv and put its site-packages
after the project's on ``PYTHONPATH`` (see docs/notes-perf.md).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

from scalingo_staging_sync.anonymize import transformers as tr
from scalingo_staging_sync.anonymize.salt import derive_seed

UP = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _arr(words) -> str:
    return "[" + ", ".join(_lit(w) for w in words) + "]"


M32 = 4294967295
_MIX = [("a", "c", 4, "c", "b"), ("b", "a", 6, "a", "c"), ("c", "b", 8, "b", "a")] + [
    ("a", "c", 16, "c", "b"),
    ("b", "a", 19, "a", "c"),
    ("c", "b", 4, "b", "a"),
]
_FINAL = [
    ("c", "b", 14),
    ("a", "c", 11),
    ("b", "a", 25),
    ("c", "b", 16),
    ("a", "c", 4),
    ("b", "a", 14),
    ("c", "b", 24),
]


def _rot(x: str, k: int) -> str:
    return f"((({x} << {k}) | ({x} >> {32 - k})) & {M32})"


def _sub(x: str, y: str) -> str:
    return f"(({x} + 4294967296 - {y}) & {M32})"


def _add(x: str, y: str) -> str:
    return f"(({x} + {y}) & {M32})"


def _st(a: str, b: str, c: str) -> str:
    return "{'a': " + a + ", 'b': " + b + ", 'c': " + c + "}"


def _step(prev: str, a: str, b: str, c: str) -> str:
    """One sequential update of the (a, b, c) state; the one-element list binds ``s`` once, so the SQL
    grows linearly with the number of steps."""
    return f"list_transform([{prev}], lambda s: {_st(a, b, c)})[1]"


def _fields() -> dict[str, str]:
    return {x: f"s.{x}" for x in "abc"}


def _mix(prev: str) -> str:
    e = prev
    for t, o, k, t2, src in _MIX:
        f = _fields()
        f[t] = f"xor({_sub('s.' + t, 's.' + o)}, {_rot('s.' + o, k)})"
        e = _step(e, f["a"], f["b"], f["c"])
        f = _fields()
        f[t2] = _add("s." + t2, "s." + src)
        e = _step(e, f["a"], f["b"], f["c"])
    return e


def _final(prev: str) -> str:
    e = prev
    for t, o, k in _FINAL:
        f = _fields()
        f[t] = _sub(f"xor(s.{t}, s.{o})", _rot("s." + o, k))
        e = _step(e, f["a"], f["b"], f["c"])
    return e


def _word(h: str, i: str) -> str:
    """Little-endian uint32 number ``i`` (0-based) of the hex string ``h``."""
    parts = " || ".join(f"substr({h}, ({i}) * 8 + {o}, 2)" for o in (7, 5, 3, 1))
    return f"('0x' || {parts})::UBIGINT"


def hash_bytes_extended_sql(x: str, seed: int) -> str:
    """DuckDB SQL of PostgreSQL's ``hash_bytes_extended(bytes of x, seed)`` (uint64, little-endian
    server), i.e. ``hashtextextended(x, seed)`` as unsigned."""
    seed &= 0xFFFFFFFFFFFFFFFF
    length = f"octet_length(encode({x}))"
    h = f"(hex(encode({x})) || repeat('0', 24))"
    init = f"(2654435769 + {length} + 3923095)::UBIGINT"
    e = _st(init, init, init)
    if seed:
        e = _mix(_step(e, _add("s.a", str(seed >> 32)), _add("s.b", str(seed & M32)), "s.c"))
    body = _mix(
        _step(
            "acc",
            _add("acc.a", _word(h, "i*3")),
            _add("acc.b", _word(h, "i*3+1")),
            _add("acc.c", _word(h, "i*3+2")),
        )
    )
    e = f"list_reduce(range({length} // 12), lambda acc, i: {body}, {e})"
    last = f"({length} // 12) * 3"
    tail = _step(
        e,
        f"CASE WHEN {length} % 12 > 0 THEN {_add('s.a', _word(h, last))} ELSE s.a END",
        f"CASE WHEN {length} % 12 > 0 THEN {_add('s.b', _word(h, last + ' + 1'))} ELSE s.b END",
        f"CASE WHEN {length} % 12 > 0 THEN (s.c + ({_word(h, last + ' + 2')} << 8)) & {M32} ELSE s.c END",
    )
    return f"list_transform([{_final(tail)}], lambda r: (r.b << 32) | r.c)[1]"


def unescape_sql(field: str) -> str:
    """DuckDB SQL decoding a raw COPY text field: pg_dump only writes ``\\b \\f \\n \\r \\t \\v`` and
    ``\\\\``; an escaped backslash is parked as NUL (impossible in PostgreSQL text) while the others are
    decoded."""
    chain = f"replace({field}, '\\\\', chr(0))"
    for esc, code in (("t", 9), ("n", 10), ("r", 13), ("b", 8), ("f", 12), ("v", 11)):
        chain = f"replace({chain}, '\\{esc}', chr({code}))"
    return f"(CASE WHEN contains({field}, '\\') THEN replace({chain}, chr(0), '\\') ELSE {field} END)"


class DuckMasker:
    def __init__(
        self,
        specs: Mapping[str, Mapping[str, Any]],
        catalog,
        columns: list[str],
        key: str,
        exact: bool = False,
    ):
        import duckdb

        self.con = duckdb.connect()
        self.con.execute("SET threads=1")
        self.columns = columns
        k = _lit(key)

        def alower(e: str) -> str:
            return f"translate({e}, '{UP}', '{UP.lower()}')"

        seed = derive_seed(key)

        def md5int(purpose: str, e: str) -> str:
            if exact:  # hashtextextended('|purpose|' || e, seed) & (2^63 - 1), as the SQL side
                salted = f"('|{purpose}|' || {e})"
                return f"({hash_bytes_extended_sql(salted, seed)} & 9223372036854775807)::BIGINT"
            return f"('0x' || left(md5({k} || '|{purpose}|' || {e}), 15))::BIGINT"

        def md5key(purpose: str, e: str) -> str:
            return f"('0x' || left(md5({k} || '|{purpose}|' || {e}), 15))::BIGINT"

        def norm(c: str) -> str:
            return alower(f"trim({c}, ' ')")

        def pick_ex(words, x: str, word: str) -> str:
            n = len(words)
            return (
                f"CASE WHEN {word} = {_arr([w.lower() for w in words])}[1 + ({x}) % {n}] "
                f"THEN {_arr(words)}[1 + (({x}) + 1) % {n}] ELSE {_arr(words)}[1 + ({x}) % {n}] END"
            )

        def words(c: str, cls) -> str:
            pick = pick_ex(cls.words, "x", "split_part(n, chr(32), 1)")
            return f"(SELECT {pick} FROM (SELECT {norm(c)} AS n) s, LATERAL (SELECT {md5int(cls.purpose, 'n')} AS x) h)"  # noqa: S608 (DuckDB text of constants, quoted by _lit; no psycopg here)

        def fit(expr: str, info, natural: int | None) -> str:
            if info.max_length is not None and (natural is None or natural > info.max_length):
                return f"left({expr}, {info.max_length})"
            return expr

        def zero_padded(n: str, digits: int) -> str:
            return f"substr(({10**digits} + {n})::VARCHAR, 2)"

        exprs: dict[str, str] = {}
        for col, spec in specs.items():
            info = catalog[col]
            c = unescape_sql('"' + col + '"')
            name = spec["transformer"]
            if name == "email":
                value = alower(c) if spec.get("case_insensitive") else c
                domain = "@" + (spec.get("domain") or tr.DEFAULT_EMAIL_DOMAIN)
                hex_len = (
                    32 if info.max_length is None else max(0, min(32, info.max_length - 1 - len(domain)))
                )
                exprs[col] = f"'u' || left(md5({k} || '|email|' || {value}), {hex_len}) || {_lit(domain)}"
            elif name in ("first_name", "last_name", "city"):
                cls = tr.get_transformer(name)
                exprs[col] = fit(words(c, cls), info, max(len(w) for w in cls.words))
            elif name == "company":
                pick = pick_ex(tr.COMPANY_WORDS, "x", "split_part(n, chr(32), 1)")
                natural = max(map(len, tr.COMPANY_WORDS)) + 1 + max(map(len, tr.COMPANY_SUFFIXES))
                exprs[col] = fit(
                    f"(SELECT {pick} || ' ' || {_arr(tr.COMPANY_SUFFIXES)}[1 + (x >> 30) % {len(tr.COMPANY_SUFFIXES)}] "  # noqa: S608 (DuckDB text of constants)
                    f"FROM (SELECT {norm(c)} AS n) s, LATERAL (SELECT {md5int('company', 'n')} AS x) h)",
                    info,
                    natural,
                )
            elif name == "postal_code":
                d = int(spec.get("digits", 5))
                t = f"trim({c}, ' ')"
                up = f"translate({t}, '{UP.lower()}', '{UP}')"
                exprs[col] = (
                    f"(SELECT CASE WHEN octet_length(encode({t})) = {d} AND regexp_full_match({t}, '[0-9]{{{d}}}') "  # noqa: S608 (DuckDB text of constants)
                    f"THEN {zero_padded(f'({t}::BIGINT + o) % {10**d}', d)} ELSE {zero_padded('o', d)} END "
                    f"FROM (SELECT 1 + {md5key('postal_code', up)} % {10**d - 1} AS o) h)"
                )
            elif name == "hash" and spec.get("algorithm", "sha256") == "sha256":
                hlen = min(int(spec.get("length", 32)), info.max_length or 64, 64)
                exprs[col] = f"left(sha256({k} || '|hash|' || {c}), {hlen})"
            elif name == "null":
                exprs[col] = "NULL"
            elif name == "phone":
                pn = c
                for ch in tr.PHONE_SEPARATORS:
                    pn = f"replace({pn}, {_lit(ch)}, '')"
                off = f"(1 + {md5key('phone', pn)} % 999999999999)"
                exprs[col] = (
                    f"'+999' || CASE WHEN length({c}) = 16 AND starts_with({c}, '+999') THEN substr(((CASE WHEN "
                    f"regexp_full_match({c}, '\\+999[0-9]{{12}}') THEN right({c}, 12)::BIGINT ELSE 0 END + {off}) "
                    f"% 1000000000000 + 1000000000000)::VARCHAR, 2) ELSE substr(({off} + 1000000000000)::VARCHAR, 2) END"
                )
            elif name == "address":
                street = pick_ex(tr.STREETS, "(x >> 20)", "split_part(n, chr(32), 2)")
                exprs[col] = (
                    f"(SELECT (1 + x % 999)::VARCHAR || ' ' || {street} || ' ' || {_arr(tr.STREET_SUFFIXES)}"  # noqa: S608 (DuckDB text of constants, quoted by _lit; no psycopg here)
                    f"[1 + (x >> 40) % 8] FROM (SELECT {norm(c)} AS n) s, LATERAL (SELECT {md5int('address', 'n')} AS x) h)"
                )
            elif name == "date_shift" and catalog[col].base_type == "date":
                exprs[col] = (
                    # the hash outside the CASE: DuckDB evaluates lambdas inside a CASE branch slowly
                    f"(SELECT CASE WHEN {c} IN ('infinity', '-infinity') THEN {c} ELSE strftime({c}::DATE + "  # noqa: S608 (DuckDB text of constants)
                    f"(((x % 730 + 366) % 731 - 365)::INT), '%Y-%m-%d') END "
                    f"FROM (SELECT {md5int('date_shift', c)} AS x) h)"
                )
            else:
                raise NotImplementedError(name)
        self.select = ", ".join(f'{exprs.get(c, chr(34) + c + chr(34))} AS "{c}"' for c in columns)
        self.types = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in columns) + "}"

    def mask_block(self, data: bytes) -> bytes:
        with tempfile.TemporaryDirectory() as d:
            src, dst = os.path.join(d, "in.copy"), os.path.join(d, "out.copy")
            with open(src, "wb") as f:
                f.write(data)
            self.con.execute(
                f"COPY (SELECT {self.select} FROM read_csv('{src}', delim='\t', quote='', escape='', "  # noqa: S608 (DuckDB text of constants, quoted by _lit; no psycopg here)
                f"header=false, all_varchar=true, nullstr='\\N', auto_detect=false, columns={self.types})) "
                f"TO '{dst}' (FORMAT csv, delim '\t', quote '', escape '', header false, nullstr '\\N')"
            )
            with open(dst, "rb") as f:
                return f.read()
