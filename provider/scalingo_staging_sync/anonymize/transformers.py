"""Column transformers: one small, documented unit per way of masking a value (Greenmask-style).

Every transformer turns the *original* value of a column into a pure SQL expression (no pgcrypto, no
helper function in the database) that the engine uses in two places: the right-hand side of an
``UPDATE ... SET`` (in place) and an assignment in a ``BEFORE INSERT`` trigger (on load).

Shared properties (tested in ``tests/anonymize/test_transformers.py``):

* **Keyed and deterministic.** Every output comes from ``md5(<key> || '|<purpose>|' || value)`` where
  ``<key>`` is ``current_setting('scalingo_staging_sync.key')``, a secret derived from the salt and set
  per session (never written in the rules file, the catalog or a command line): its hex digits
  (``email``, ``hash``) or a 60-bit integer read from them (``phone``, ``postal_code``, word-list picks,
  ``date_shift`` offsets). md5 is built into PostgreSQL and DuckDB alike, so the stream engine computes
  the same bytes in C on the worker. The purpose depends on the kind of value, not on the table or
  column, so the same e-mail gives the same output in every table.
* **Never the original.** Word-list picks take ``words[x % n]`` and the next word when that one is
  the original's word (ASCII case-insensitively), from the list cut to ``varchar(n)`` when the output
  is cut; an ``address`` cut to ``varchar(n)`` that equals the original takes the next house number;
  digit-based outputs add a non-zero offset to the original when it already has the output's shape;
  ``date_shift`` moves by 1..N days, never 0.
* **Cheap.** One keyed hash per column and row (``BuildContext.let``: a PL/pgSQL variable in the
  on-load trigger; inline SQL repeats it, so inline forms read the hash once where they can), no
  array built per row, no regex on the common path, ASCII ``lower``/``upper`` (``COLLATE "C"``).
* **NULL stays NULL** (all the functions used are strict), except for ``fixed``.
* **Fits the column.** :meth:`Transformer.check` rejects, at planning time, a rule whose output cannot
  fit the column (type, ``varchar(n)``, ``NOT NULL``); :meth:`Transformer.expression` trims word-list
  outputs to ``n`` characters and sizes hash-based outputs to the budget.

Register your own with :func:`register_transformer`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from psycopg import sql

KEY_GUC = "scalingo_staging_sync.key"
KEY_SQL = sql.SQL("current_setting({})").format(sql.Literal(KEY_GUC))
STRING_TYPES = frozenset({"text", "varchar", "bpchar", "citext", "name"})
DATE_TYPES = frozenset({"date", "timestamp", "timestamptz"})
NUMERIC_TYPES = frozenset({"int2", "int4", "int8", "numeric", "float4", "float8"})
JSON_TYPES = frozenset({"json", "jsonb"})


@dataclass(frozen=True)
class ColumnInfo:
    """What the planner knows of a column (from the restored catalog)."""

    name: str
    type_sql: str  # format_type(), e.g. "character varying(60)"
    base_type: str  # pg_type.typname of the (domain's base) type, e.g. "varchar"
    max_length: int | None = None  # n of varchar(n)/char(n)
    not_null: bool = False
    generated: bool = False
    is_domain: bool = False
    #: labels of its enum type when known (the archive's CREATE TYPE ... AS ENUM); None otherwise
    enum_labels: tuple[str, ...] | None = None

    @property
    def category(self) -> str:
        if self.base_type in STRING_TYPES:
            return "string"
        if self.base_type in DATE_TYPES:
            return "date"
        if self.base_type in NUMERIC_TYPES:
            return "number"
        if self.base_type in JSON_TYPES:
            return "json"
        if self.base_type == "inet":
            return "inet"
        return "other"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "type_sql": self.type_sql,
            "base_type": self.base_type,
            "max_length": self.max_length,
            "not_null": self.not_null,
            "generated": self.generated,
            "is_domain": self.is_domain,
            "enum_labels": list(self.enum_labels) if self.enum_labels is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnInfo:
        values = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if values.get("enum_labels") is not None:
            values["enum_labels"] = tuple(values["enum_labels"])
        return cls(**values)


@dataclass
class BuildContext:
    """Passed to :meth:`Transformer.expression`.

    ``new(column)`` returns the masked expression of another column of the same row (for derived
    columns such as ``email_md5`` or ``full_name`` that must be computed from the *new* values).
    """

    column: ColumnInfo
    options: Mapping[str, Any]
    new: Callable[[str], sql.Composable] = field(default=lambda name: sql.Identifier(name))
    #: SQL of the secret key: ``current_setting(...)`` inline (UPDATE), or a PL/pgSQL variable read once
    #: per row (on-load trigger)
    key: sql.Composable = field(default_factory=lambda: KEY_SQL)
    #: ``let(expr, type)`` -> a reference to ``expr`` computed once: the expression itself (UPDATE: SQL
    #: has no common-subexpression elimination) or a PL/pgSQL variable assigned before the column
    let: Callable[[sql.Composable, str], sql.Composable] = field(default=lambda expr, _type: expr)
    #: True when ``let`` computes once (a variable): reading a let value again is then free
    cached: bool = False

    def hash(self, purpose: str, value: sql.Composable) -> sql.Composable:
        """``md5(key || '|purpose|' || value)`` (32 hex characters), computed once per row and column
        when the expression is used several times."""
        return self.let(keyed_md5(purpose, value, self.key), "text")

    def hash_int(self, purpose: str, value: sql.Composable) -> sql.Composable:
        """A non-negative 60-bit integer from the keyed md5 (``hex_int`` of its first 15 hex digits)."""
        return self.let(hex_int(keyed_md5(purpose, value, self.key), 1, 15), "bigint")


# --------------------------------------------------------------------------------------------------
# SQL building blocks


def keyed_md5(purpose: str, value: sql.Composable, key: sql.Composable = KEY_SQL) -> sql.Composable:
    """``md5(key || '|purpose|' || value)``: 32 hex characters, keyed by the secret salt."""
    return sql.SQL("md5({} || {} || {})").format(key, sql.Literal(f"|{purpose}|"), value)


def hex_int(hash_expr: sql.Composable, start: int, hex_digits: int = 7) -> sql.Composable:
    """Non-negative integer from ``hex_digits`` hex characters of a hash (7 -> 0..2^28-1)."""
    bits = hex_digits * 4
    cast = "int" if bits < 32 else "bigint"
    part = (
        sql.SQL("left({}, {})").format(hash_expr, sql.Literal(hex_digits))
        if start == 1
        else sql.SQL("substr({}, {}, {})").format(hash_expr, sql.Literal(start), sql.Literal(hex_digits))
    )
    return sql.SQL("('x' || {})::bit({})::{}").format(part, sql.SQL(str(bits)), sql.SQL(cast))


def text_array(words: tuple[str, ...]) -> sql.Composable:
    return sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(sql.Literal(w) for w in words))


def pick(words: tuple[str, ...], index: sql.Composable) -> sql.Composable:
    """``words[index % n]`` (index: a non-negative integer expression)."""
    return sql.SQL("({})[1 + {} % {}]").format(text_array(words), index, sql.Literal(len(words)))


def pick_excluding(
    words: tuple[str, ...], index: sql.Composable, exclude_lower: sql.Composable, cached: bool = False
) -> sql.Composable:
    """``words[index % n]``, or the next word when that one is ``exclude_lower`` (the original's word,
    lower-cased): the output never equals the original, case-insensitively. No array is built per row.

    ``index`` is read twice; when it is not ``cached`` (inline SQL recomputes it, keyed hash
    included), the common case reads it once: ``= ANY`` of the constant lower-case list rules out
    most originals first. Both forms give the same word."""
    n = len(words)
    lowered = sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(sql.Literal(w.lower()) for w in words))
    exact = sql.SQL(
        "CASE WHEN {ex} = ({low})[1 + {i} % {n}] THEN ({arr})[1 + ({i} + 1) % {n}] ELSE ({arr})[1 + {i} % {n}] END"
    ).format(ex=exclude_lower, low=lowered, arr=text_array(words), i=index, n=sql.Literal(n))
    if cached:
        return exact
    return sql.SQL("CASE WHEN {} = ANY({}) THEN {} ELSE {} END").format(
        exclude_lower, lowered, exact, pick(words, index)
    )


def as_text(src: sql.Composable) -> sql.Composable:
    return sql.SQL("({})::text").format(src)


def ascii_lower(text: sql.Composable) -> sql.Composable:
    """``lower()`` under the "C" collation: ASCII letters only, the same in every database whatever
    its locale, and about ten times cheaper than a libc/ICU ``lower()`` of a 40-character value."""
    return sql.SQL('lower({} COLLATE "C")').format(text)


def normalized(src: sql.Composable) -> sql.Composable:
    """``lower(btrim(value))`` (ASCII lower): the hash input of word-like values and the source of
    their words."""
    return ascii_lower(sql.SQL("btrim({})").format(as_text(src)))


def nth_word(norm: sql.Composable, n: int = 1) -> sql.Composable:
    """The n-th space-separated word of an already normalised (lower, trimmed) value."""
    return sql.SQL("split_part({}, ' ', {})").format(norm, sql.Literal(n))


def first_word(src: sql.Composable, n: int = 1) -> sql.Composable:
    """The n-th word of the value, lower-cased (compared with the lower-cased word lists)."""
    return nth_word(normalized(src), n)


def cuts(column: ColumnInfo, natural_max: int | None) -> bool:
    """Whether :func:`fit` cuts an output of at most ``natural_max`` characters (None: unbounded) to the
    column's length."""
    return column.max_length is not None and (natural_max is None or natural_max > column.max_length)


def fit(expr: sql.Composable, column: ColumnInfo, natural_max: int | None) -> sql.Composable:
    """Trim a (non-unique) string output to the column's length when it could exceed it."""
    if cuts(column, natural_max):
        return sql.SQL("left({}, {})").format(expr, sql.Literal(column.max_length))
    return expr


def fit_words(words: tuple[str, ...], column: ColumnInfo, natural_max: int | None) -> tuple[str, ...]:
    """The word list of an output's first word as :func:`fit` writes it: when ``fit`` cuts the output
    to the column's length, each word cut to that length (``w[:n]``), duplicates (ASCII
    case-insensitively) removed keeping the first, order kept. :func:`pick_excluding` then compares the
    original's word with exactly what is written, and its next word is a different one; without it a
    ``varchar(4)`` original ``Jule`` could come back as ``left('Jules', 4)``. ``words`` itself when
    nothing is cut (the output does not change)."""
    n = column.max_length
    if n is None or not cuts(column, natural_max):
        return words
    cut: dict[str, str] = {}
    for w in words:
        cut.setdefault(w[:n].lower(), w[:n])
    return tuple(cut.values())


def word_list_problems(
    name: str, words: tuple[str, ...], column: ColumnInfo, natural_max: int | None
) -> list[str]:
    """Planning-time error when the column's length leaves fewer than 2 distinct first words (the pick
    could then not move away from the original's word)."""
    if column.category != "string":
        return []
    cut = fit_words(words, column, natural_max)
    if len(cut) >= 2:
        return []
    return [
        f"transformer {name!r} cannot mask column {column.name} ({column.type_sql}): its words cut to "
        f"{column.max_length} characters leave {len(cut)} distinct word(s), so the output could be the original"
    ]


def zero_padded(number: sql.Composable, digits: int) -> sql.Composable:
    """``lpad(number::text, digits, '0')`` for 0 <= number < 10^digits, without lpad: the digits of
    ``10^digits + number`` after its leading 1."""
    return sql.SQL("substr(({} + {})::text, 2)").format(sql.Literal(10**digits), number)


# --------------------------------------------------------------------------------------------------
# Word lists (ASCII, fictional-sounding; embedded as SQL array literals)

FIRST_NAMES = (
    "Alex", "Andrea", "Ariel", "Avery", "Blake", "Cameron", "Camille", "Casey", "Charlie", "Dakota",
    "Dominique", "Drew", "Eden", "Elliot", "Emery", "Finley", "Frankie", "Gabriel", "Harper", "Hayden",
    "Jamie", "Jesse", "Jordan", "Jules", "Kai", "Kendall", "Lou", "Logan", "Maxime", "Morgan",
    "Noa", "Noel", "Parker", "Quinn", "Reese", "Riley", "River", "Robin", "Rowan", "Sacha",
    "Sage", "Sam", "Skyler", "Sol", "Stevie", "Taylor", "Teddy", "Toni", "Val", "Yael",
)  # fmt: skip
LAST_NAMES = (
    "Abbott", "Bishop", "Brooks", "Carver", "Dalton", "Ellis", "Fletcher", "Garner", "Hale", "Hollis",
    "Ingram", "Jarvis", "Keller", "Lambert", "Lowell", "Mercer", "Morrow", "Nash", "Norwood", "Oakley",
    "Palmer", "Prescott", "Quincy", "Radley", "Rowe", "Sawyer", "Sloane", "Tanner", "Thorne", "Underhill",
    "Vance", "Wade", "Warren", "Whitaker", "Winslow", "York", "Ashby", "Blackwood", "Crane", "Dorsey",
    "Everly", "Fairfax", "Greer", "Hawthorne", "Kendrick", "Langley", "Marlowe", "Pemberton", "Ridley", "Stroud",
)  # fmt: skip
CITIES = (
    "Ashford", "Bramble", "Brookvale", "Cedarton", "Clearwater", "Eastwick", "Elmstead", "Fairhaven",
    "Foxley", "Glenmoor", "Greenfield", "Harborview", "Hillcrest", "Kingsbridge", "Lakeside", "Maplewood",
    "Millbrook", "Northgate", "Oakridge", "Pinehurst", "Queensford", "Redcliff", "Riverside", "Rosedale",
    "Silverton", "Southport", "Stonehaven", "Sunnyvale", "Thornbury", "Westfield", "Willowby", "Woodhaven",
)  # fmt: skip
STREETS = (
    "Acacia", "Alder", "Beacon", "Birch", "Chestnut", "Clover", "Elm", "Fern", "Hazel", "Heather",
    "Juniper", "Laurel", "Linden", "Magnolia", "Maple", "Meadow", "Mill", "Orchard", "Poplar", "Rowan",
    "Spruce", "Sycamore", "Thistle", "Willow",
)  # fmt: skip
#: characters removed from a phone number before hashing (same digits -> same output)
PHONE_SEPARATORS = (" ", "-", ".", "(", ")", "/")

STREET_SUFFIXES = ("Street", "Road", "Lane", "Avenue", "Way", "Close", "Drive", "Place")
COMPANY_WORDS = (
    "Acorn", "Apex", "Arbor", "Beacon", "Bluebird", "Cascade", "Cobalt", "Crescent", "Ember", "Evergreen",
    "Falcon", "Harbor", "Horizon", "Juniper", "Keystone", "Lantern", "Meridian", "Northwind", "Orbit", "Pioneer",
    "Quartz", "Sequoia", "Summit", "Tidewater", "Vertex", "Willow",
)  # fmt: skip
COMPANY_SUFFIXES = ("Labs", "Works", "Partners", "Group", "Systems", "Studio", "Trading", "Holdings")


def _max_len(words: tuple[str, ...]) -> int:
    return max(len(w) for w in words)


# --------------------------------------------------------------------------------------------------
# Registry


class Transformer:
    """Base class. Subclasses set the class attributes and implement :meth:`expression`."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: column categories accepted ("string", "date", "number", "json", "inet", "other", "*" = any)
    categories: ClassVar[frozenset[str]] = frozenset({"string"})
    #: JSON Schema "properties" of the options (besides "transformer")
    options_schema: ClassVar[dict[str, Any]] = {}
    required_options: ClassVar[tuple[str, ...]] = ()
    #: output can keep distinct inputs distinct (up to keyed-hash collisions); whether it does for given
    #: options and column, and with how many bits, is :meth:`unique_bits` (see :func:`keeps_unique`)
    unique: ClassVar[bool] = False
    #: the options that make it keep distinct inputs distinct, when its default options do not
    unique_options: ClassVar[Mapping[str, Any] | None] = None
    #: output of a NULL input is NULL
    keeps_null: ClassVar[bool] = True
    #: output of an empty string is the empty string, on a string column (it holds nothing to mask):
    #: GoTrue's unused token columns hold '' under a unique index WHERE the token is not blank, and an
    #: app reads '' as "none" (a pending e-mail change). Applied around :meth:`expression` by the
    #: engines (:func:`keep_empty_sql`, the stream engine's equivalent)
    keeps_empty: ClassVar[bool] = False
    #: the same input, salt and options give the same output, in every table and run (every built-in
    #: is: keyed hashes and constants only; checked on PostgreSQL by tests/docs/test_transformer_guarantees.py)
    deterministic: ClassVar[bool] = True
    #: the output has the input's length (as text), for every input; no built-in does (same test)
    keeps_length: ClassVar[bool] = False
    #: smallest varchar(n) that can hold a useful output
    min_length: ClassVar[int] = 3

    def check(self, column: ColumnInfo, options: Mapping[str, Any]) -> list[str]:
        """Planning-time errors for this column (empty = fits)."""
        errors = []
        if "*" not in self.categories and column.category not in self.categories:
            errors.append(
                f"transformer {self.name!r} does not apply to type {column.type_sql} "
                f"(accepts {', '.join(sorted(self.categories))} columns)"
            )
            return errors
        if column.generated:
            errors.append("generated column: it cannot be written, it is recomputed from the masked values")
        if column.category == "string" and column.max_length is not None:
            need = self.required_length(column, options)
            if need is not None and column.max_length < need:
                # a domain's type_sql is its name: say the length it allows
                domain = f" (a domain of at most {column.max_length} characters)" if column.is_domain else ""
                errors.append(
                    f"transformer {self.name!r} needs at least {need} characters; column is {column.type_sql}{domain}"
                )
        return errors

    def required_length(self, column: ColumnInfo, options: Mapping[str, Any]) -> int | None:
        return self.min_length

    def schema_errors(self, where: str, options: Mapping[str, Any]) -> list[str]:
        """Errors of ``options`` against :attr:`options_schema` (types, ranges, required and unknown
        options), each prefixed by ``where`` (the rule's place in the rules file)."""
        from jsonschema import Draft202012Validator

        from scalingo_staging_sync.anonymize.rules import _path_str

        schema = {
            "type": "object",
            "properties": self.options_schema,
            "required": list(self.required_options),
            "additionalProperties": False,
        }
        errors = []
        for err in Draft202012Validator(schema).iter_errors(dict(options)):
            if err.validator == "additionalProperties":
                allowed = ", ".join(sorted(self.options_schema)) or "none"
                errors += [
                    f"{where}.{key}: unknown option of transformer {self.name!r} (options: {allowed})"
                    for key in sorted(set(err.instance) - set(self.options_schema))
                ]
            else:
                sub = _path_str(err.absolute_path) if err.absolute_path else ""
                errors.append(f"{where}{'.' + sub if sub else ''}: {err.message}")
        if not errors:
            errors += [f"{where}.{e}" for e in self.option_errors(options)]
        return errors

    def option_errors(self, options: Mapping[str, Any]) -> list[str]:
        """Errors in options that their JSON Schema cannot see (nested rules), as ``<option>...: why``;
        checked when the rules file is validated, before any database is looked at."""
        return []

    def depends_on(self, options: Mapping[str, Any]) -> list[str]:
        """Other columns whose new value this output is computed from."""
        return []

    def expression(self, src: sql.Composable, ctx: BuildContext) -> sql.Composable:
        raise NotImplementedError

    def skip_in_proof(self, original_text: str, options: Mapping[str, Any]) -> bool:
        """True when an original value is public by construction and may legitimately survive."""
        return False

    def unique_bits(self, column: ColumnInfo | None, options: Mapping[str, Any]) -> int | None:
        """Bits of keyed hash that tell distinct inputs apart in the output, or None when distinct
        inputs can give the same output by construction (word lists, a lower-cased input, ...).
        ``column`` (None: unknown) matters when the output is cut to the column's length."""
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "categories": sorted(self.categories),
            "unique": self.unique,
            "unique_bits": self.unique_bits(None, {}),
            "options": self.options_schema,
        }


_REGISTRY: dict[str, Transformer] = {}


def register_transformer(cls: type[Transformer]) -> type[Transformer]:
    """Class decorator adding a transformer to the registry (its ``name`` must be new)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", cls.name):
        raise ValueError(f"invalid transformer name {cls.name!r}")
    if cls.name in _REGISTRY:
        raise ValueError(f"transformer {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls()
    return cls


def get_transformer(name: str) -> Transformer:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown transformer {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None


def transformer_names() -> list[str]:
    return sorted(_REGISTRY)


def all_transformers() -> dict[str, Transformer]:
    return dict(_REGISTRY)


def options_of(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != "transformer"}


def options_text(options: Mapping[str, Any]) -> str:
    """Options as a rules file writes them: ``unique: true, length: 15``."""
    import json

    return ", ".join(f"{k}: {json.dumps(v)}" for k, v in options.items())


#: fewest keyed-hash bits for a transformer to count as keeping a unique index: with 64 bits, 10^8
#: distinct values collide with probability about 3e-4 (birthday bound n^2 / 2^65)
MIN_UNIQUE_BITS = 64


def unique_bits(
    name: str, options: Mapping[str, Any] | None = None, column: ColumnInfo | None = None
) -> int | None:
    """Bits that keep distinct inputs of transformer ``name`` distinct with these options (and this
    column's length, when given), or None when it does not keep them distinct at all."""
    return get_transformer(name).unique_bits(column, options_of(options or {}))


def keeps_unique(
    name: str,
    options: Mapping[str, Any] | None = None,
    column: ColumnInfo | None = None,
    *,
    min_bits: int = MIN_UNIQUE_BITS,
) -> bool:
    """Whether transformer ``name`` with ``options`` (a rule's column spec; ``transformer`` is ignored)
    may mask a column under a unique constraint or index: it keeps distinct inputs distinct with at
    least ``min_bits`` bits of keyed hash. ``hash`` with ``length: 8`` does not (32 bits), ``email``
    does unless ``case_insensitive: true``; word-list, date and constant transformers never do."""
    bits = unique_bits(name, options, column)
    return bits is not None and bits >= min_bits


# --------------------------------------------------------------------------------------------------
# Built-in transformers

_DOMAIN_RE = (
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
DEFAULT_EMAIL_DOMAIN = "example.com"


@register_transformer
class EmailTransformer(Transformer):
    name = "email"
    keeps_empty = True
    description = (
        "'u' || <16..32 hex of md5(key || value)> || '@' || domain. Distinct inputs stay distinct, "
        "including case variants (Bob@x / bob@x), so it keeps a unique index; the same address gives "
        "the same output in every table. Option case_insensitive: true hashes lower(value) instead "
        "(case variants give one output, so it does not keep uniqueness)."
    )
    options_schema = {
        "domain": {"type": "string", "pattern": _DOMAIN_RE, "description": "reserved domain (email_domain)"},
        "case_insensitive": {"type": "boolean", "description": "hash lower(value): not unique-preserving"},
    }
    unique = True
    MIN_HEX = 16

    def _domain(self, options: Mapping[str, Any]) -> str:
        return options.get("domain") or DEFAULT_EMAIL_DOMAIN

    def _hex_len(self, column: ColumnInfo | None, options: Mapping[str, Any]) -> int:
        if column is not None and column.max_length is not None:
            return max(0, min(32, column.max_length - 2 - len(self._domain(options))))
        return 32

    def required_length(self, column, options):
        return 2 + self.MIN_HEX + len(self._domain(options))

    def unique_bits(self, column, options):
        if options.get("case_insensitive"):
            return None
        return 4 * self._hex_len(column, options)

    def expression(self, src, ctx):
        domain = self._domain(ctx.options)
        hex_len = self._hex_len(ctx.column, ctx.options)
        value = as_text(src)
        if ctx.options.get("case_insensitive"):
            value = ascii_lower(value)
        h = keyed_md5("email", value, ctx.key)
        if hex_len < 32:
            h = sql.SQL("left({}, {})").format(h, sql.Literal(hex_len))
        return sql.SQL("'u' || {} || {}").format(h, sql.Literal("@" + domain))


@register_transformer
class PhoneTransformer(Transformer):
    name = "phone"
    keeps_empty = True
    description = (
        "prefix ('+999', an unassigned country code) || digits from a keyed hash; an original already "
        "of that shape is moved by a non-zero offset, so the output never equals it. Explicit digits must "
        "fit the column with the prefix."
    )
    options_schema = {
        "prefix": {"type": "string", "pattern": r"^[+0-9 ().-]{0,8}$"},
        "digits": {"type": "integer", "minimum": 6, "maximum": 15},
    }

    def _digits(self, column, options) -> int:
        prefix = options.get("prefix", "+999")
        digits = int(options.get("digits", 12))
        if column.max_length is not None:
            digits = min(digits, column.max_length - len(prefix))
        return digits

    def required_length(self, column, options):
        return len(options.get("prefix", "+999")) + 6

    def check(self, column, options):
        errors = super().check(column, options)
        prefix = options.get("prefix", "+999")
        digits = options.get("digits")
        if errors or not isinstance(digits, int) or isinstance(digits, bool) or column.max_length is None:
            return errors  # digits of the wrong type are the options schema's error
        if not isinstance(prefix, str):
            return errors
        if len(prefix) + digits > column.max_length:
            errors.append(
                f"option digits {options['digits']} with prefix {prefix!r} does not fit column {column.name} "
                f"({column.type_sql}), which would cut the digits to {column.max_length - len(prefix)}: "
                f"set digits to {column.max_length - len(prefix)} or less, or remove it"
            )
        return errors

    def expression(self, src, ctx):
        prefix = ctx.options.get("prefix", "+999")
        d = self._digits(ctx.column, ctx.options)
        modulus = 10**d
        text = as_text(src)
        norm = text
        for ch in PHONE_SEPARATORS:
            norm = sql.SQL("replace({}, {}, '')").format(norm, sql.Literal(ch))
        x = hex_int(keyed_md5("phone", norm, ctx.key), 1, 15)
        offset = sql.SQL("1 + {} % {}").format(x, sql.Literal(modulus - 1))  # 1 .. 10^d - 1
        # Only an original of the output's exact shape (prefix + d digits) can come back: it is moved
        # by the non-zero offset modulo 10^d. Every other value takes the cheap branch, whose result
        # is the same formula with 0 for the original number.
        shifted = sql.SQL("(CASE WHEN {} ~ {} THEN right({}, {})::bigint ELSE 0 END + {}) % {}").format(
            text,
            sql.Literal("^" + re.escape(prefix) + "[0-9]{" + str(d) + "}$"),
            text,
            sql.Literal(d),
            offset,
            sql.Literal(modulus),
        )
        return sql.SQL("{} || CASE WHEN length({}) = {} AND starts_with({}, {}) THEN {} ELSE {} END").format(
            sql.Literal(prefix),
            text,
            sql.Literal(len(prefix) + d),
            text,
            sql.Literal(prefix),
            zero_padded(shifted, d),
            zero_padded(offset, d),
        )


class _WordTransformer(Transformer):
    keeps_empty = True
    words: ClassVar[tuple[str, ...]]
    purpose: ClassVar[str]

    def expression(self, src, ctx):
        norm = ctx.let(normalized(src), "text")
        x = ctx.hash_int(self.purpose, norm)
        natural = _max_len(self.words)
        word = pick_excluding(fit_words(self.words, ctx.column, natural), x, nth_word(norm, 1), ctx.cached)
        return fit(word, ctx.column, natural)

    def check(self, column, options):
        return super().check(column, options) or word_list_problems(
            self.name, self.words, column, _max_len(self.words)
        )


@register_transformer
class FirstNameTransformer(_WordTransformer):
    name = "first_name"
    description = "a first name from a built-in list of 50, picked by keyed hash (never the original)."
    words = FIRST_NAMES
    purpose = "first_name"


@register_transformer
class LastNameTransformer(_WordTransformer):
    name = "last_name"
    description = "a last name from a built-in list of 50, picked by keyed hash (never the original)."
    words = LAST_NAMES
    purpose = "last_name"


@register_transformer
class CityTransformer(_WordTransformer):
    name = "city"
    description = "a fictional town name from a built-in list of 32, picked by keyed hash."
    words = CITIES
    purpose = "city"


@register_transformer
class FullNameTransformer(Transformer):
    name = "full_name"
    keeps_empty = True
    description = (
        "'<first> <last>' from the word lists by keyed hash of the value; with option from: a list of 1 "
        "to 4 columns of the same table ([first_name, last_name], [first_name, middle_name, last_name]) it "
        "is those columns' NEW (masked) values joined by spaces instead, so it stays consistent (a column "
        "cannot read itself, nor derived columns each other: refused when the rules file is loaded)."
    )
    options_schema = {"from": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4}}

    def depends_on(self, options):
        return list(options.get("from") or [])

    NATURAL = _max_len(FIRST_NAMES) + 1 + _max_len(LAST_NAMES)

    def check(self, column, options):
        errors = super().check(column, options)
        if errors or options.get("from"):
            return errors
        return word_list_problems(self.name, FIRST_NAMES, column, self.NATURAL)

    def expression(self, src, ctx):
        natural = self.NATURAL
        parts = ctx.options.get("from")
        if parts:
            pieces = [sql.SQL("({})::text").format(ctx.new(p)) for p in parts]
            joined = sql.SQL("CASE WHEN {} IS NULL THEN NULL ELSE concat_ws(' ', {}) END").format(
                src, sql.SQL(", ").join(pieces)
            )
            return fit(joined, ctx.column, None)
        norm = ctx.let(normalized(src), "text")
        x = ctx.hash_int("full_name", norm)
        first = pick_excluding(fit_words(FIRST_NAMES, ctx.column, natural), x, nth_word(norm, 1), ctx.cached)
        last = pick_excluding(LAST_NAMES, sql.SQL("({} >> 30)").format(x), nth_word(norm, 2), ctx.cached)
        return fit(sql.SQL("{} || ' ' || {}").format(first, last), ctx.column, natural)


@register_transformer
class AddressTransformer(Transformer):
    name = "address"
    keeps_empty = True
    description = "'<1..999> <Street> <Suffix>' by keyed hash; the street word differs from the original's."
    min_length = 5

    NATURAL = 3 + 1 + _max_len(STREETS) + 1 + _max_len(STREET_SUFFIXES)

    def expression(self, src, ctx):
        norm = ctx.let(normalized(src), "text")
        x = ctx.hash_int("address", norm)  # 60 bits: number, street and suffix from different bits
        street = pick_excluding(STREETS, sql.SQL("({} >> 20)").format(x), nth_word(norm, 2), ctx.cached)
        suffix = pick(STREET_SUFFIXES, sql.SQL("({} >> 40)").format(x))

        def line(number: sql.Composable) -> sql.Composable:
            return fit(
                sql.SQL("{} || ' ' || {} || ' ' || {}").format(number, street, suffix),
                ctx.column,
                self.NATURAL,
            )

        out = line(sql.SQL("(1 + {} % 999)::text").format(x))
        if not cuts(ctx.column, self.NATURAL):
            return out  # whole: its street differs from the original's second word, so it is not the original
        # Cut to varchar(n), the street may be cut too: left('12 Maple Road', 7) is the original '12 Mapl'
        # (whose word 'mapl' is no street, so the pick could not exclude it). An output equal to the
        # original as normalized() sees it (ASCII case-insensitively, spaces trimmed: what the word picks
        # exclude; it also covers an exact match, '12 Elm ' cut at 7 included, and a char(n) original read
        # back without its padding) takes the next house number instead. That one is never the original:
        # the two numbers a != b (1..999) followed by a space differ within their first
        # min(len(a), len(b)) + 1 <= 4 characters (at the first differing digit, or where the shorter
        # number's space faces a digit); those are digits and a space, which lower() keeps, and the
        # character after the number's space is the street's first letter, at position <= 5 <= n
        # (min_length 5), so a trailing trim never reaches them. Hence the alternative, lowered and
        # trimmed, differs from the output, lowered and trimmed, which equals the original's normalized
        # form. The guard costs one comparison per row, and nothing on columns that are not cut.
        out = ctx.let(out, "text")
        following = line(sql.SQL("(1 + ({} + 1) % 999)::text").format(x))
        return sql.SQL("CASE WHEN rtrim({}, ' ') = {} THEN {} ELSE {} END").format(
            ascii_lower(out), norm, following, out
        )


@register_transformer
class PostalCodeTransformer(Transformer):
    name = "postal_code"
    keeps_empty = True
    description = (
        "N digits (5 by default) from a keyed hash; an all-digit original of that length is moved by a "
        "non-zero offset modulo 10^N, so the output never equals it."
    )
    options_schema = {"digits": {"type": "integer", "minimum": 3, "maximum": 10}}

    def required_length(self, column, options):
        return int(options.get("digits", 5))

    def expression(self, src, ctx):
        d = int(ctx.options.get("digits", 5))
        modulus = 10**d
        text = as_text(src)
        trimmed = sql.SQL("btrim({})").format(text)
        x = hex_int(
            keyed_md5("postal_code", sql.SQL('upper({} COLLATE "C")').format(trimmed), ctx.key), 1, 15
        )
        offset = sql.SQL("1 + {} % {}").format(x, sql.Literal(modulus - 1))  # 1 .. 10^d - 1
        # an all-digit original of length d is moved by the offset; any other gets the offset itself
        # (octet_length first: the regex converts the whole value to wide characters)
        shifted = sql.SQL("({}::bigint + {}) % {}").format(trimmed, offset, sql.Literal(modulus))
        return sql.SQL("CASE WHEN octet_length({}) = {} AND {} ~ {} THEN {} ELSE {} END").format(
            trimmed,
            sql.Literal(d),
            trimmed,
            sql.Literal("^[0-9]{" + str(d) + "}$"),
            zero_padded(shifted, d),
            zero_padded(offset, d),
        )


@register_transformer
class IpTransformer(Transformer):
    name = "ip"
    description = (
        "an IP address of the same family from a keyed hash: IPv4 in 240.0.0.0/4 (reserved, never a "
        "host on the internet), IPv6 in 2001:db8::/32 (documentation); an inet keeps its prefix length. "
        "On text, a value with ':' is IPv6, any other IPv4; the same address gives the same output in "
        "inet and text columns. Never the original. Option unique: true (inet columns: a block list's "
        "unique address) keeps distinct addresses distinct: IPv4 through a keyed permutation of all "
        "2^32 addresses without a fixed point (the output can be any IPv4 address), IPv6 from 96 bits of "
        "keyed hash in 2001:db8::/32."
    )
    categories = frozenset({"string", "inet"})
    options_schema = {"unique": {"type": "boolean"}}
    unique = True
    unique_options = {"unique": True}
    #: the longest output: 2001:db8:: and 60 hash bits (2001:db8::fff:ffff:ffff:ffff)
    min_length = 29

    V4_BASE, V4_SIZE = "240.0.0.0", 2**28
    V6_BASE = "2001:db8::"
    #: Feistel rounds of the IPv4 permutation (16-bit halves; 4 rounds: Luby-Rackoff's strong PRP)
    V4_ROUNDS = 4

    def unique_bits(self, column, options):
        """``unique: true``: IPv4 is a permutation (no two addresses meet), IPv6 96 hash bits."""
        return 96 if options.get("unique") else None

    def check(self, column, options):
        errors = super().check(column, options)
        if not errors and options.get("unique") and column.category != "inet":
            errors.append(
                "option unique: true applies to inet columns (on text, spellings of one address are "
                "distinct values and one output); use hash to keep a text column's values distinct"
            )
        return errors

    def expression(self, src, ctx):
        if ctx.options.get("unique") and ctx.column.category == "inet":
            return self._unique(src, ctx)
        inet = ctx.column.base_type == "inet"
        # the address as text: host() of an inet (canonical, without its prefix length); a text value
        # trimmed and ASCII lower-cased (IPv6 hex digits)
        address = ctx.let(
            sql.SQL("host({})").format(src)
            if inet
            else ascii_lower(sql.SQL("btrim({})").format(as_text(src))),
            "text",
        )
        v6 = sql.SQL("family({}) = 6").format(src) if inet else sql.SQL("strpos({}, ':') > 0").format(address)
        x = ctx.hash_int("ip", address)

        def at(offset: sql.Composable) -> sql.Composable:
            return sql.SQL("CASE WHEN {} THEN {}::inet + {} ELSE {}::inet + ({}) % {} END").format(
                v6,
                sql.Literal(self.V6_BASE),
                offset,
                sql.Literal(self.V4_BASE),
                offset,
                sql.Literal(self.V4_SIZE),
            )

        out = ctx.let(at(x), "inet")
        # never the original: an address already in the output's range that the hash lands on takes
        # the next one (inside the range: modulo 2^28 for IPv4; x + 1 < 2^61 for IPv6)
        chosen = sql.SQL("CASE WHEN host({}) = {} THEN {} ELSE {} END").format(
            out, address, at(sql.SQL("({} + 1)").format(x)), out
        )
        if inet:
            return sql.SQL("set_masklen({}, masklen({}))").format(chosen, src)
        return sql.SQL("host({})").format(chosen)

    def _unique(self, src, ctx):
        """``unique: true`` on an inet: IPv4 is ``P^-1(P(x) + 1 mod 2^32)`` with ``P`` a keyed Feistel
        permutation: a bijection (so distinct addresses stay distinct) with no fixed point (never the
        original). IPv6 is 2001:db8: followed by 96 bits of keyed md5, the next 96 bits when those
        give the original. Each round is a subquery over the previous one's halves, so the SQL grows
        linearly with the rounds (nothing is repeated inline) and ``ctx.let`` is not needed."""
        x = sql.SQL("({} - '0.0.0.0'::inet)").format(sql.SQL("host({})::inet").format(src))
        sigma = self._feistel(self._feistel(x, ctx, inverse=False, plus_one=True), ctx, inverse=True)
        v4 = sql.SQL("('0.0.0.0'::inet + {})").format(sigma)
        h = keyed_md5("ip6", sql.SQL("host({})").format(src), ctx.key)

        def v6_from(hash_expr: sql.Composable, start: int) -> sql.Composable:
            groups = [
                sql.SQL("substr({}, {}, 4)").format(hash_expr, sql.Literal(start + 4 * i)) for i in range(6)
            ]
            return sql.SQL("({} || {})::inet").format(
                sql.Literal("2001:db8:"), sql.SQL(" || ':' || ").join(groups)
            )

        v6 = sql.SQL(
            "(SELECT CASE WHEN host(_sss_v6) = host({src}) THEN {alt} ELSE _sss_v6 END "
            "FROM (SELECT {first} OFFSET 0) AS _sss_t6(_sss_v6))"
        ).format(src=src, alt=v6_from(sql.SQL("md5({})").format(h), 1), first=v6_from(h, 1))
        chosen = sql.SQL("CASE WHEN family({}) = 6 THEN {} ELSE {} END").format(src, v6, v4)
        return sql.SQL("set_masklen({}, masklen({}))").format(chosen, src)

    def _feistel(self, x: sql.Composable, ctx, *, inverse: bool, plus_one: bool = False) -> sql.Composable:
        """The keyed Feistel permutation of the 32-bit ``x`` (bigint), or its inverse; ``plus_one``:
        the result plus one, modulo 2^32. Round ``i`` maps the halves ``(l, r)`` to ``(r, l # F_i(r))``,
        with ``F_i(v)`` the first 16 bits of ``md5(key || '|ip4:i|' || v)``; the inverse runs the rounds
        backwards, mapping ``(l, r)`` to ``(r # F_i(l), l)``."""
        rounds = range(self.V4_ROUNDS - 1, -1, -1) if inverse else range(self.V4_ROUNDS)
        l_col, r_col = sql.Identifier("_sss_l"), sql.Identifier("_sss_r")
        step = sql.SQL("(SELECT {x} >> 16 AS {l}, {x} & 65535 AS {r})").format(x=x, l=l_col, r=r_col)

        def f(i: int, v: sql.Composable) -> sql.Composable:
            return hex_int(keyed_md5(f"ip4:{i}", sql.SQL("{}::text").format(v), ctx.key), 1, 4)

        for n, i in enumerate(rounds):
            if inverse:
                new_l, new_r = sql.SQL("{} # {}").format(r_col, f(i, l_col)), l_col
            else:
                new_l, new_r = r_col, sql.SQL("{} # {}").format(l_col, f(i, r_col))
            step = sql.SQL("(SELECT {} AS {}, {} AS {} FROM {} AS {} OFFSET 0)").format(
                new_l, l_col, new_r, r_col, step, sql.Identifier(f"_sss_f{n}")
            )
        out = sql.SQL("({}::bigint << 16 | {})").format(l_col, r_col)
        if plus_one:
            out = sql.SQL("(({} + 1) % 4294967296)").format(out)
        return sql.SQL("(SELECT {} FROM {} AS _sss_fo)").format(out, step)


@register_transformer
class CompanyTransformer(Transformer):
    name = "company"
    keeps_empty = True
    description = (
        "'<Word> <Suffix>' from built-in lists by keyed hash; the first word differs from the original's."
    )

    NATURAL = _max_len(COMPANY_WORDS) + 1 + _max_len(COMPANY_SUFFIXES)

    def check(self, column, options):
        return super().check(column, options) or word_list_problems(
            self.name, COMPANY_WORDS, column, self.NATURAL
        )

    def expression(self, src, ctx):
        natural = self.NATURAL
        norm = ctx.let(normalized(src), "text")
        x = ctx.hash_int("company", norm)
        word = pick_excluding(fit_words(COMPANY_WORDS, ctx.column, natural), x, nth_word(norm, 1), ctx.cached)
        suffix = pick(COMPANY_SUFFIXES, sql.SQL("({} >> 30)").format(x))
        return fit(sql.SQL("{} || ' ' || {}").format(word, suffix), ctx.column, natural)


@register_transformer
class NullTransformer(Transformer):
    name = "null"
    description = "NULL. Rejected on a NOT NULL column."
    categories = frozenset({"*"})
    min_length = 0

    def check(self, column, options):
        errors = super().check(column, options)
        if column.not_null:
            errors.append(f"null into NOT NULL column {column.name} (use fixed, hash or another transformer)")
        return errors

    def required_length(self, column, options):
        return None

    def expression(self, src, ctx):
        return sql.SQL("NULL")


@register_transformer
class FixedTransformer(Transformer):
    name = "fixed"
    description = (
        "a constant value (option value), also for NULL inputs; cast to the column type at planning "
        "(from the archive alone: before the table's first row is masked)."
    )
    categories = frozenset({"*"})
    options_schema = {"value": {"type": ["string", "number", "boolean"]}}
    required_options = ("value",)
    keeps_null = False
    min_length = 0

    def required_length(self, column, options):
        return len(str(self._text(options)))

    @staticmethod
    def _text(options) -> str:
        value = options.get("value")
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def expression(self, src, ctx):
        return sql.SQL("CAST({} AS {})").format(
            sql.Literal(self._text(ctx.options)), sql.SQL(ctx.column.type_sql)
        )

    def skip_in_proof(self, original_text, options):
        return original_text == self._text(options)


@register_transformer
class HashTransformer(Transformer):
    name = "hash"
    keeps_empty = True
    description = (
        "hex of a keyed hash: sha256(convert_to(key || value, 'UTF8')) (built in since PG 11) or md5, "
        "cut to option length (default: 32, or the column length). Keeps a unique index only with "
        "at least 16 hex characters (64 bits): length 8 does not. An explicit length must fit the column "
        "(and md5's 32). Option encoding: base64url writes the hash in RFC 4648 base64url without "
        "padding (6 bits a character: 11 characters keep a unique index, for a varchar(11) to (15) "
        "column; at most 43 for sha256, 22 for md5)."
    )
    options_schema = {
        "length": {"type": "integer", "minimum": 8, "maximum": 64},
        "algorithm": {"enum": ["sha256", "md5"]},
        "encoding": {"enum": ["hex", "base64url"]},
    }
    unique = True
    min_length = 8

    @staticmethod
    def full_length(options) -> int:
        """The characters of the whole hash in the option's encoding."""
        sha = options.get("algorithm", "sha256") == "sha256"
        if options.get("encoding", "hex") == "base64url":
            return 43 if sha else 22
        return 64 if sha else 32

    def output_length(self, column, options) -> int:
        """The characters written: the option's length, cut to the column's and the hash's."""
        length = int(options.get("length", 32))
        if column is not None and column.max_length is not None:
            length = min(length, column.max_length)
        return min(length, self.full_length(options))

    def check(self, column, options):
        errors = super().check(column, options)
        length = options.get("length")
        if errors or not isinstance(length, int) or isinstance(length, bool):
            return errors  # a length of the wrong type is the options schema's error
        if length > self.full_length(options):
            full, encoding = self.full_length(options), options.get("encoding", "hex")
            algorithm = options.get("algorithm", "sha256")
            errors.append(
                f"option length {length} is more than {algorithm}'s {full} {encoding} characters: set length "
                f"to {full} or less" + (", or use algorithm sha256" if algorithm == "md5" else "")
            )
        elif column.category == "string" and column.max_length is not None and length > column.max_length:
            errors.append(
                f"option length {length} does not fit column {column.name} ({column.type_sql}), which would "
                f"cut the output to {column.max_length}: set length to {column.max_length} or less, or remove it"
            )
        return errors

    def unique_bits(self, column, options):
        length = self.output_length(column, options)
        if options.get("encoding", "hex") == "base64url":
            return min(6 * length, 256 if options.get("algorithm", "sha256") == "sha256" else 128)
        return 4 * length

    def expression(self, src, ctx):
        length = self.output_length(ctx.column, ctx.options)
        full = self.full_length(ctx.options)
        base64 = ctx.options.get("encoding", "hex") == "base64url"
        if ctx.options.get("algorithm", "sha256") == "md5":
            h = keyed_md5("hash", as_text(src), ctx.key)
            raw = sql.SQL("decode({}, 'hex')").format(h)
        else:
            raw = sql.SQL("sha256(convert_to({} || '|hash|' || {}, 'UTF8'))").format(ctx.key, as_text(src))
            h = sql.SQL("encode({}, 'hex')").format(raw)
        if base64:  # RFC 4648 base64url without padding (43 / 22 characters: no line break)
            h = sql.SQL("rtrim(translate(encode({}, 'base64'), '+/', '-_'), '=')").format(raw)
        return h if length == full else sql.SQL("left({}, {})").format(h, sql.Literal(length))


@register_transformer
class DateShiftTransformer(Transformer):
    name = "date_shift"
    description = (
        "date/timestamp moved by 1..max_days days (default 365), forward or back, by keyed hash of the "
        "value: never by 0. +-infinity are kept (they are not personal data)."
    )
    categories = frozenset({"date"})
    options_schema = {"max_days": {"type": "integer", "minimum": 1, "maximum": 36500}}
    min_length = 0

    def required_length(self, column, options):
        return None

    def expression(self, src, ctx):
        max_days = int(ctx.options.get("max_days", 365))
        x = ctx.hash_int("date_shift", as_text(src))
        # one hash read: v = x % 2M in 0..2M-1, (v + M + 1) % (2M + 1) skips M, minus M: -M..-1, 1..M
        days = sql.SQL("(({} % {} + {}) % {} - {})::int").format(
            x,
            sql.Literal(2 * max_days),
            sql.Literal(max_days + 1),
            sql.Literal(2 * max_days + 1),
            sql.Literal(max_days),
        )
        if ctx.column.base_type == "date":
            return sql.SQL("({} + {})").format(src, days)
        return sql.SQL("({} + make_interval(days => {}))").format(src, days)

    def skip_in_proof(self, original_text, options):
        return original_text in ("infinity", "-infinity")


@register_transformer
class Md5OfTransformer(Transformer):
    name = "md5_of"
    description = (
        "md5 of another column's NEW (masked) value (option column), for derived columns such as "
        "email_md5. The planner adds it by itself for <col>_md5 when <col> is masked."
    )
    options_schema = {"column": {"type": "string", "minLength": 1}}
    required_options = ("column",)
    min_length = 32

    def depends_on(self, options):
        return [options["column"]]

    def expression(self, src, ctx):
        return sql.SQL("md5(({})::text)").format(ctx.new(ctx.options["column"]))


# --------------------------------------------------------------------------------------------------
# JSON documents

#: an unquoted path segment: a key (any text but '.' and '*') or ``*`` (every element of an array); a key
#: holding either is written between double quotes (:func:`json_path_segments`)
_JSON_SEGMENT_RE = re.compile(r"[^.*]+|\*")
#: one path segment: a key between double quotes, a double quote inside doubled (the closing quote is
#: not followed by another, so '"a""' is not closed rather than "a" followed by a stray quote), or the
#: text up to the next '.'
_JSON_PATH_TOKEN_RE = re.compile(r'"((?:[^"]|"")*)"(?!")|([^.]*)')
#: JSON value types a path may point at to be masked (a missing path or a JSON null is left as it is)
_JSON_MASKABLE = ("string", "number", "boolean", "object", "array")


def json_path_segments(path: str) -> list[str]:
    """``"contact.emails.*"`` -> ``["contact", "emails", "*"]``; a key holding '.' is written between
    double quotes, a double quote inside doubled: ``'"owner.email".work'`` -> ``["owner.email",
    "work"]``. Raises ValueError naming the problem."""
    if not isinstance(path, str) or not path:
        raise ValueError("a path is a non-empty string such as contact.email or emails.*")
    segments: list[str] = []
    i, n = 0, len(path)
    while True:
        token = _JSON_PATH_TOKEN_RE.match(path, i)
        quoted, segment = token.groups()
        i = token.end()
        if quoted is not None:
            segment = quoted.replace('""', '"')
            if segment in ("", "*"):
                raise ValueError(f"path {path!r}: a quoted key is not empty and not '*'")
            if i < n and path[i] != ".":
                raise ValueError(f"path {path!r}: a quoted key ends at a '.' or at the end of the path")
        elif segment.startswith('"'):
            raise ValueError(f'path {path!r}: a quoted key is not closed (write "a.b".c)')
        elif not _JSON_SEGMENT_RE.fullmatch(segment):
            raise ValueError(
                f"path {path!r}: segments are keys or '*' (every element of an array) separated by '.' "
                f"(a key holding '.' between double quotes: \"a.b\"); found the segment {segment!r}"
            )
        segments.append(segment)
        if i >= n:
            break
        i += 1  # the '.'
        if i >= n:
            raise ValueError(f"path {path!r}: ends with '.'")
    if segments.count("*") > 2:
        raise ValueError(f"path {path!r}: at most two '*' segments")
    return segments


def json_path_text(segments: Sequence[str]) -> str:
    """The path text of ``segments`` (:func:`json_path_segments` reversed; ``*`` is every element of an
    array): a key holding '.', '*' or '"' is quoted."""
    return ".".join(
        s if s == "*" or not any(c in s for c in '.*"') else '"' + s.replace('"', '""') + '"'
        for s in segments
    )


def _holds_any_document(column: ColumnInfo) -> bool:
    """Whether a string column can hold any document the ``json`` transformer writes back: no length
    limit (varchar(n), char(n), a domain of at most n characters) and not ``name``."""
    return column.max_length is None and column.base_type in ("text", "varchar", "citext")


def _normalise_json_spec(spec: Any) -> dict[str, Any]:
    if spec is None:
        return {"transformer": "null"}
    if isinstance(spec, str):
        return {"transformer": spec}
    return dict(spec)


@register_transformer
class JsonTransformer(Transformer):
    name = "json"
    description = (
        "masks values inside a json/jsonb document: option paths maps a path (keys separated by '.', "
        "'*' for every element of an array: contact.email, phones.*, orders.*.address; a key holding '.' "
        "or '*' between double quotes, a quote in it doubled: '\"owner.email\".work') to a transformer "
        "of a text value (email, phone, first_name, hash, fixed, null, ...). The value at each path is "
        "masked as text and written back as a JSON string (null: JSON null); a missing path or a JSON "
        "null is left as it is, and so is '' under a transformer that keeps '' in a column; keys not "
        "listed keep their values. On a text column holding JSON documents (text, varchar without a "
        "length, citext) each value is read as a document: '' stays '', a document with nothing to mask "
        "keeps its text, a masked one is written in jsonb's normal form, and a value that is not JSON "
        "stops the load. On load like any transformer."
    )
    categories = frozenset({"json", "string"})
    #: '' in a text column holding JSON documents is no document: nothing to mask
    keeps_empty = True
    options_schema = {
        "paths": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {
                "oneOf": [
                    {"type": "null"},
                    {"type": "string", "minLength": 1},
                    {"type": "object", "required": ["transformer"]},
                ]
            },
        }
    }
    required_options = ("paths",)
    min_length = 0

    def option_errors(self, options: Mapping[str, Any]) -> list[str]:
        """Errors of the nested path rules (paths, transformers and their options), as ``<path>: ...``."""
        errors = []
        for path, raw in (options.get("paths") or {}).items():
            try:
                json_path_segments(path)
            except ValueError as exc:
                errors.append(f"paths.{path}: {exc}")
                continue
            spec = _normalise_json_spec(raw)
            try:
                inner = get_transformer(spec["transformer"])
            except KeyError as exc:
                errors.append(f"paths.{path}: {exc.args[0]}")
                continue
            if isinstance(inner, JsonTransformer):
                errors.append(f"paths.{path}: json inside json: list the nested paths instead (a.b.c)")
                continue
            inner_options = options_of(spec)
            if inner.depends_on(inner_options):
                errors.append(
                    f"paths.{path}: transformer {inner.name!r} reads other columns, which a JSON value "
                    "does not have; use a transformer of the value itself"
                )
            errors += inner.schema_errors(f"paths.{path}", inner_options)
            text = ColumnInfo(name=path, type_sql="text", base_type="text")
            errors += [f"paths.{path}: {e}" for e in inner.check(text, inner_options)]
        return errors

    def check(self, column, options):
        errors = super().check(column, options)
        if not errors and column.category == "string" and not _holds_any_document(column):
            errors.append(
                f"transformer 'json' reads each value of a text column as a JSON document and writes it back "
                f"in jsonb's normal form, which may be longer: not on {column.type_sql}; mask the column "
                "with another transformer (null, fixed, hash), or with a query"
            )
        return errors or self.option_errors(options)

    def expression(self, src, ctx):
        """The masked document of ``src``: :meth:`document` on a json/jsonb column; on a text column,
        each value read as a JSON document, and written back as text only where a path changed it (an
        unchanged document keeps its bytes; ``''`` is kept around this, by :func:`keep_empty_sql`)."""
        if ctx.column.category != "string":
            return self.document(src, ctx)
        doc, masked = sql.Identifier("_sss_src"), sql.Identifier("_sss_masked")
        return sql.SQL(
            "(SELECT CASE WHEN {masked} = {doc} THEN {src} ELSE ({masked})::text END "
            "FROM (SELECT ({src})::text::jsonb OFFSET 0) AS {t}({doc}), "
            "LATERAL (SELECT {document} OFFSET 0) AS {u}({masked}))"
        ).format(
            masked=masked,
            doc=doc,
            src=src,
            document=self.document(doc, ctx),
            t=sql.Identifier("_sss_s"),
            u=sql.Identifier("_sss_m"),
        )

    def document(self, src, ctx):
        """Each path is one step over the document as masked so far, so paths under the same array
        (``orders.*.email``, ``orders.*.phone``) both hold: ``(SELECT <step of d> FROM (SELECT <so far>
        OFFSET 0) AS t(d))`` names the document once per step (the SQL grows linearly with the paths, and
        ``OFFSET 0`` keeps the planner from copying it back into every place ``d`` is used). Every
        value is masked inline (no ``ctx.let``): inside these subqueries nothing may be hoisted into a
        trigger variable."""
        out = sql.SQL("({})::jsonb").format(src)
        for n, (path, raw) in enumerate(ctx.options["paths"].items()):
            doc = sql.Identifier(f"_sss_d{n}")
            step = self._apply(doc, json_path_segments(path), _normalise_json_spec(raw), ctx, path, f"{n}")
            out = sql.SQL("(SELECT {} FROM (SELECT {} OFFSET 0) AS {}({}))").format(
                step, out, sql.Identifier(f"_sss_t{n}"), doc
            )
        if ctx.column.base_type == "json":
            return sql.SQL("({})::json").format(out)
        return out  # jsonb (of a jsonb column, or of a text column's value)

    def _leaf(self, value: sql.Composable, spec, ctx, path: str) -> sql.Composable:
        """The masked JSON value of the JSON value ``value`` (jsonb), through the path's transformer."""
        inner = get_transformer(spec["transformer"])
        text = ColumnInfo(name=path, type_sql="text", base_type="text")
        sub = BuildContext(text, options_of(spec), key=ctx.key)  # inline: no let
        src = sql.SQL("({} #>> '{{}}')").format(value)
        masked = keep_empty_sql(inner, text, src, inner.expression(src, sub))  # '' at a path: as in a column
        return sql.SQL("coalesce(to_jsonb(({})::text), 'null'::jsonb)").format(masked)

    def _apply(self, doc, segments, spec, ctx, path, tag: str) -> sql.Composable:
        """``doc`` (a plain reference, free to repeat) with its value(s) at ``segments`` masked; a missing
        path, a JSON null, or a path through a value of another shape leaves ``doc`` as it is."""
        if "*" not in segments:
            at = sql.Literal(segments)
            value = sql.SQL("({} #> {}::text[])").format(doc, at)
            new = self._leaf(value, spec, ctx, path)
            replaced = (
                new if not segments else sql.SQL("jsonb_set({}, {}::text[], {}, false)").format(doc, at, new)
            )
            return sql.SQL("CASE WHEN jsonb_typeof({}) IN ({}) THEN {} ELSE {} END").format(
                value, sql.SQL(", ").join(sql.Literal(t) for t in _JSON_MASKABLE), replaced, doc
            )
        star = segments.index("*")
        prefix, rest = segments[:star], segments[star + 1 :]
        at = sql.Literal(prefix)
        array = sql.SQL("({} #> {}::text[])").format(doc, at)
        element, order, alias = (sql.Identifier(f"_sss_{k}{tag}") for k in ("e", "o", "a"))
        masked_element = self._apply(element, rest, spec, ctx, path, f"{tag}_")
        rebuilt = sql.SQL(
            "(SELECT coalesce(jsonb_agg({} ORDER BY {}), '[]'::jsonb) "
            "FROM jsonb_array_elements({}) WITH ORDINALITY AS {}({}, {}))"
        ).format(masked_element, order, array, alias, element, order)
        replaced = (
            rebuilt
            if not prefix
            else sql.SQL("jsonb_set({}, {}::text[], {}, false)").format(doc, at, rebuilt)
        )
        return sql.SQL("CASE WHEN jsonb_typeof({}) = 'array' THEN {} ELSE {} END").format(
            array, replaced, doc
        )

    def skip_in_proof(self, original_text, options):
        """A document in which no path holds a value has nothing to mask: it stays as it is."""
        import json as _json

        try:
            doc = _json.loads(original_text)
        except (TypeError, ValueError):
            return False
        return not any(
            _json_has(
                doc,
                json_path_segments(p),
                keeps_empty=get_transformer(_normalise_json_spec(raw)["transformer"]).keeps_empty,
            )
            for p, raw in (options.get("paths") or {}).items()
        )


def with_email_domain(spec: Mapping[str, Any], domain: str) -> dict[str, Any]:
    """A column spec with the rules file's ``email_domain`` as the default ``domain`` of every ``email``
    transformer in it, those of a ``json`` transformer's paths included (paths normalised to specs)."""
    out = dict(spec)
    if out.get("transformer") == "email":
        out.setdefault("domain", domain)
    elif out.get("transformer") == "json" and isinstance(out.get("paths"), Mapping):
        out["paths"] = {
            path: with_email_domain(_normalise_json_spec(raw), domain) for path, raw in out["paths"].items()
        }
    return out


def keep_empty_sql(transformer: Transformer, column: ColumnInfo, src: sql.Composable, expr: sql.Composable):
    """``expr`` (the masked value of ``src``), with an empty string kept empty when the transformer
    says so (:attr:`Transformer.keeps_empty`) and the column is a string one."""
    if not transformer.keeps_empty or column.category != "string":
        return expr
    return sql.SQL("CASE WHEN ({}) = '' THEN ({}) ELSE {} END").format(src, src, expr)


def json_values_at(value: Any, segments: Sequence[str]) -> Iterator[Any]:
    """The values of the parsed JSON ``value`` at ``segments`` (:func:`json_path_segments`; '*': every
    element of an array, a number: that element); a missing path gives none."""
    if not segments:
        yield value
        return
    head, rest = segments[0], segments[1:]
    if head == "*":
        if isinstance(value, list):
            for item in value:
                yield from json_values_at(item, rest)
    elif isinstance(value, dict):
        if head in value:
            yield from json_values_at(value[head], rest)
    elif isinstance(value, list) and head.isdigit() and int(head) < len(value):
        yield from json_values_at(value[int(head)], rest)


def _json_has(value: Any, segments: list[str], *, keeps_empty: bool = False) -> bool:
    """Whether ``value`` holds a value to mask at ``segments``: not null, nor '' when the path's
    transformer keeps '' (:attr:`Transformer.keeps_empty`)."""
    return any(v is not None and not (keeps_empty and v == "") for v in json_values_at(value, segments))
