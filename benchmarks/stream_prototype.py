"""Engine (c) prototype, for measurement only: mask a table's COPY text on the worker, in Python.

Not shipped in the package (see docs/notes-perf.md: it loses on total CPU). It reproduces, byte for
byte, the SQL expressions of the transformers the bench uses (``email``, ``phone``, the word picks
``first_name``/``last_name``/``city``/``company``/``address``/``full_name``, ``date_shift`` on dates,
``hash``, ``postal_code``, ``null``) for text/date columns without ``varchar(n)`` trimming beyond what the
bench needs, so ``benchmarks/engines.py --engines ...,stream`` can check its output against the
trigger's and time it.

* md5 / sha256: :mod:`hashlib` (C).
* ``hashtextextended``: PostgreSQL's ``hash_bytes_extended`` (Bob Jenkins' lookup3 with PostgreSQL's
  seeding). No maintained PyPI package provides it (``jenkins`` 2009 and ``jenkins-cffi`` 2017 wrap the
  original lookup3, whose seeding differs), so it is written out here in pure Python to measure what it
  costs; ``--md5-picks`` measures the alternative of keyed md5 for the picks (which the SQL side would
  then have to use too: about 0.3 us more per value there).
* COPY text: lines split on ``\\n``, fields on ``\\t``; only masked fields are unescaped (``\\N`` is NULL,
  backslash escapes as PostgreSQL's ``CopyReadAttributesText``) and their outputs escaped again.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from scalingo_staging_sync.anonymize import transformers as tr
from scalingo_staging_sync.anonymize.salt import derive_seed

M32 = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & M32


def hash_bytes_extended(data: bytes, seed: int) -> int:
    """PostgreSQL's ``hash_bytes_extended`` (src/common/hashfn.c, little-endian), as uint64."""
    length = len(data)
    a = b = c = (0x9E3779B9 + length + 3923095) & M32

    def mix(a, b, c):
        a = (a - c) & M32
        a ^= _rot(c, 4)
        c = (c + b) & M32  # noqa: E702
        b = (b - a) & M32
        b ^= _rot(a, 6)
        a = (a + c) & M32  # noqa: E702
        c = (c - b) & M32
        c ^= _rot(b, 8)
        b = (b + a) & M32  # noqa: E702
        a = (a - c) & M32
        a ^= _rot(c, 16)
        c = (c + b) & M32  # noqa: E702
        b = (b - a) & M32
        b ^= _rot(a, 19)
        a = (a + c) & M32  # noqa: E702
        c = (c - b) & M32
        c ^= _rot(b, 4)
        b = (b + a) & M32  # noqa: E702
        return a, b, c

    seed &= 0xFFFFFFFFFFFFFFFF
    if seed:
        a = (a + (seed >> 32)) & M32
        b = (b + (seed & M32)) & M32
        a, b, c = mix(a, b, c)
    pos = 0
    while length - pos >= 12:
        a = (a + int.from_bytes(data[pos : pos + 4], "little")) & M32
        b = (b + int.from_bytes(data[pos + 4 : pos + 8], "little")) & M32
        c = (c + int.from_bytes(data[pos + 8 : pos + 12], "little")) & M32
        a, b, c = mix(a, b, c)
        pos += 12
    rest = data[pos:]
    n = len(rest)
    if n:
        padded = rest + bytes(12 - n)
        a = (a + int.from_bytes(padded[0:4], "little")) & M32
        b = (b + int.from_bytes(padded[4:8], "little")) & M32
        # the lowest byte of c is reserved (PostgreSQL adds the length to the initial state instead)
        c = (c + (int.from_bytes(padded[8:12], "little") << 8)) & M32
    c ^= b
    c = (c - _rot(b, 14)) & M32  # noqa: E702
    a ^= c
    a = (a - _rot(c, 11)) & M32  # noqa: E702
    b ^= a
    b = (b - _rot(a, 25)) & M32  # noqa: E702
    c ^= b
    c = (c - _rot(b, 16)) & M32  # noqa: E702
    a ^= c
    a = (a - _rot(c, 4)) & M32  # noqa: E702
    b ^= a
    b = (b - _rot(a, 14)) & M32  # noqa: E702
    c ^= b
    c = (c - _rot(b, 24)) & M32  # noqa: E702
    return (b << 32) | c


_UNESCAPE_RE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|(.))", re.S)
_SIMPLE = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


def _unescape_one(m: re.Match) -> bytes:
    if m.group(1) is not None:
        return bytes([int(m.group(1), 8) & 0xFF])
    if m.group(2) is not None:
        return bytes([int(m.group(2), 16)])
    ch = m.group(3)
    return _SIMPLE.get(ch, ch)


def unescape(field: bytes) -> bytes | None:
    """One COPY text field -> its bytes (``None`` for ``\\N``)."""
    if field == b"\\N":
        return None
    if b"\\" not in field:
        return field
    return _UNESCAPE_RE.sub(_unescape_one, field)


def escape(value: bytes | None) -> bytes:
    if value is None:
        return b"\\N"
    if b"\\" in value or b"\t" in value or b"\n" in value or b"\r" in value:
        value = (
            value.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
        )
    return value


def _zero_padded(n: int, digits: int) -> bytes:
    return str(n).zfill(digits).encode()


class CopyMasker:
    """Masks the COPY text of one table (``columns``: the COPY column order)."""

    def __init__(
        self,
        specs: Mapping[str, Mapping[str, Any]],
        catalog: Mapping[str, tr.ColumnInfo],
        columns: list[str],
        key: str,
        md5_picks: bool = False,
    ):
        self.key = key.encode()
        self.seed = derive_seed(key)
        self.md5_picks = md5_picks
        self.funcs: list[tuple[int, Any]] = []
        for col, spec in specs.items():
            info = catalog[col]
            self.funcs.append((columns.index(col), self._build(spec, info)))

    def _pick_int(self, purpose: bytes, value: bytes) -> int:
        if self.md5_picks:
            return int(hashlib.md5(self.key + purpose + value).hexdigest()[:15], 16)
        return hash_bytes_extended(purpose + value, self.seed) & 0x7FFFFFFFFFFFFFFF

    def _build(self, spec: Mapping[str, Any], info: tr.ColumnInfo):
        name = spec["transformer"]
        key = self.key
        md5 = hashlib.md5
        if name == "email":
            domain = ("@" + (spec.get("domain") or tr.DEFAULT_EMAIL_DOMAIN)).encode()
            hex_len = 32 if info.max_length is None else min(32, info.max_length - 1 - len(domain))

            lower = bool(spec.get("case_insensitive"))

            def email(v: bytes) -> bytes:
                v = v.lower() if lower else v  # ASCII lower, as lower(... COLLATE "C")
                return b"u" + md5(key + b"|email|" + v).hexdigest()[:hex_len].encode() + domain

            return email
        if name == "phone":
            prefix = spec.get("prefix", "+999")
            digits = int(spec.get("digits", 12))
            if info.max_length is not None:
                digits = min(digits, info.max_length - len(prefix))
            modulus = 10**digits
            pre = prefix.encode()
            shape = re.compile(re.escape(pre) + rb"[0-9]{" + str(digits).encode() + rb"}")
            seps = [s.encode() for s in tr.PHONE_SEPARATORS]

            def phone(v: bytes) -> bytes:
                norm = v
                for s in seps:
                    norm = norm.replace(s, b"")
                x = int(md5(key + b"|phone|" + norm).hexdigest()[:15], 16)
                offset = 1 + x % (modulus - 1)
                text = v.decode()
                if len(text) == len(prefix) + digits and v.startswith(pre):
                    orig = int(v[-digits:]) if shape.fullmatch(v) else 0
                    return pre + _zero_padded((orig + offset) % modulus, digits)
                return pre + _zero_padded(offset, digits)

            return phone
        if name in ("first_name", "last_name", "city"):
            cls = tr.get_transformer(name)
            words = [w.encode() for w in cls.words]
            lowered = [w.lower() for w in words]
            purpose = f"|{cls.purpose}|".encode()
            n = len(words)
            limit = info.max_length

            def word(v: bytes) -> bytes:
                norm = v.strip(b" ").lower()
                x = self._pick_int(purpose, norm)
                first = norm.split(b" ", 1)[0]
                i = x % n
                out = words[(i + 1) % n] if first == lowered[i] else words[i]
                return out[:limit] if limit else out

            return word
        if name == "address":
            streets = [w.encode() for w in tr.STREETS]
            lowered = [w.lower() for w in streets]
            suffixes = [w.encode() for w in tr.STREET_SUFFIXES]

            def address(v: bytes) -> bytes:
                norm = v.strip(b" ").lower()
                x = self._pick_int(b"|address|", norm)
                parts = norm.split(b" ", 2)
                second = parts[1] if len(parts) > 1 else b""
                i = (x >> 20) % 24
                street = streets[(i + 1) % 24] if second == lowered[i] else streets[i]
                return str(1 + x % 999).encode() + b" " + street + b" " + suffixes[(x >> 40) % 8]

            return address
        if name == "date_shift" and info.base_type == "date":
            m = int(spec.get("max_days", 365))

            def date_shift(v: bytes) -> bytes:
                if v in (b"infinity", b"-infinity"):
                    return v
                x = self._pick_int(b"|date_shift|", v)
                days = (x % (2 * m) + m + 1) % (2 * m + 1) - m
                d = datetime.date.fromisoformat(v.decode()) + datetime.timedelta(days=days)
                return d.isoformat().encode()

            return date_shift
        if name == "company":
            cwords = [w.encode() for w in tr.COMPANY_WORDS]
            clower = [w.lower() for w in cwords]
            csuffix = [w.encode() for w in tr.COMPANY_SUFFIXES]
            cn = len(cwords)

            def company(v: bytes) -> bytes:
                norm = v.strip(b" ").lower()
                x = self._pick_int(b"|company|", norm)
                i = x % cn
                w = cwords[(i + 1) % cn] if norm.split(b" ", 1)[0] == clower[i] else cwords[i]
                return w + b" " + csuffix[(x >> 30) % len(csuffix)]

            return company
        if name == "postal_code":
            d = int(spec.get("digits", 5))
            pmod = 10**d
            allnum = re.compile(rb"[0-9]{" + str(d).encode() + rb"}")

            def postal_code(v: bytes) -> bytes:
                t = v.strip(b" ")
                x = int(md5(key + b"|postal_code|" + t.upper()).hexdigest()[:15], 16)
                offset = 1 + x % (pmod - 1)
                if len(t) == d and allnum.fullmatch(t):
                    return _zero_padded((int(t) + offset) % pmod, d)
                return _zero_padded(offset, d)

            return postal_code
        if name == "hash" and spec.get("algorithm", "sha256") == "sha256":
            hlen = min(int(spec.get("length", 32)), info.max_length or 64, 64)

            def hash_(v: bytes) -> bytes:
                return hashlib.sha256(key + b"|hash|" + v).hexdigest()[:hlen].encode()

            return hash_
        if name == "null":
            return lambda v: None
        raise NotImplementedError(f"prototype has no {name} for {info.type_sql}")

    def mask_line(self, line: bytes) -> bytes:
        fields = line.split(b"\t")
        for i, func in self.funcs:
            raw = fields[i]
            if raw == b"\\N":
                continue
            fields[i] = escape(func(unescape(raw)))
        return b"\t".join(fields)

    def mask_block(self, data: bytes) -> bytes:
        """A whole COPY text block (rows ending in ``\\n``, no ``\\.``)."""
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" after the last newline
        mask = self.mask_line
        out = [mask(line) for line in lines]
        out.append(tail)
        return b"\n".join(out)
