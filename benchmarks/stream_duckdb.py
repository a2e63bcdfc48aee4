"""Engine (c) with DuckDB, for measurement only: the COPY text of ``users``/``orders`` masked by one
vectorised DuckDB query (``read_csv`` of the COPY text, the transformer expressions, ``COPY TO``).

DuckDB has md5 but not PostgreSQL's ``hashtextextended``. Two modes: ``exact=False`` uses the keyed md5
for the word picks and ``date_shift`` (``stream_prototype.CopyMasker(md5_picks=True)`` gives the same
bytes; the SQL side would have to switch to md5 picks too); ``exact=True`` computes PostgreSQL's
``hash_bytes_extended`` in DuckDB SQL (:func:`hash_bytes_extended_sql`: lookup3's 32-bit arithmetic on
``UBIGINT``, ``list_reduce`` over the 12-byte blocks), byte-identical to the trigger. Only the bench transformers and only COPY text without backslash escapes
in the masked columns are handled (a shipped engine would unescape/escape them with ``replace``).

The exact mode's hash and the COPY text decoding are the shipped engine's
(:mod:`scalingo_staging_sync.anonymize.stream`, which ships the exact engine); this module keeps the
md5-picks variant that was measured against it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

from scalingo_staging_sync.anonymize import transformers as tr
from scalingo_staging_sync.anonymize.salt import derive_seed
from scalingo_staging_sync.anonymize.stream import _arr, _lit, unescape_sql
from scalingo_staging_sync.anonymize.stream import hash_bytes_extended_sql as _shipped_hash

UP = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
M32 = 4294967295


def hash_bytes_extended_sql(x: str, seed: int) -> str:
    """The shipped DuckDB form of PostgreSQL's ``hash_bytes_extended`` with the seed as literals."""
    unsigned = seed & 0xFFFFFFFFFFFFFFFF
    return _shipped_hash(x, seed != 0, str(unsigned >> 32), str(unsigned & M32))


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
