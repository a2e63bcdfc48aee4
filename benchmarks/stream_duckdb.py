"""Engine (c) with DuckDB, for measurement only: the COPY text of ``users``/``orders`` masked by one
vectorised DuckDB query (``read_csv`` of the COPY text, the transformer expressions, ``COPY TO``).

DuckDB has md5 but not PostgreSQL's ``hashtextextended``, so the word picks and ``date_shift`` use the
keyed md5 (``stream_prototype.CopyMasker(md5_picks=True)`` gives the same bytes; the SQL side would have
to switch to md5 picks too). Only the bench transformers and only COPY text without backslash escapes
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

UP = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _arr(words) -> str:
    return "[" + ", ".join(_lit(w) for w in words) + "]"


class DuckMasker:
    def __init__(self, specs: Mapping[str, Mapping[str, Any]], catalog, columns: list[str], key: str):
        import duckdb

        self.con = duckdb.connect()
        self.con.execute("SET threads=1")
        self.columns = columns
        k = _lit(key)

        def alower(e: str) -> str:
            return f"translate({e}, '{UP}', '{UP.lower()}')"

        def md5int(purpose: str, e: str) -> str:
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

        exprs: dict[str, str] = {}
        for col, spec in specs.items():
            c = '"' + col + '"'
            name = spec["transformer"]
            if name == "email":
                exprs[col] = f"'u' || md5({k} || '|email|' || {alower(c)}) || '@example.com'"
            elif name in ("first_name", "last_name", "city"):
                exprs[col] = words(c, tr.get_transformer(name))
            elif name == "phone":
                pn = c
                for ch in tr.PHONE_SEPARATORS:
                    pn = f"replace({pn}, {_lit(ch)}, '')"
                off = f"(1 + {md5int('phone', pn)} % 999999999999)"
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
                    f"CASE WHEN {c} IN ('infinity', '-infinity') THEN {c} ELSE strftime({c}::DATE + "
                    f"((({md5int('date_shift', c)} % 730 + 366) % 731 - 365)::INT), '%Y-%m-%d') END"
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
