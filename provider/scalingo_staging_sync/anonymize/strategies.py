"""Strategies: named sets of column rules.

* **Built-in presets** port the gem's five strategies onto the transformers. A preset applies to the
  columns of its list that the table has (the plan item lists which); derived columns are computed
  from the NEW values (``full_name`` from the masked first/last names, ``email_md5`` from the masked
  e-mail), fixing the gem's old-row leak. A ``null`` rule on a NOT NULL column falls back to the
  preset's declared alternative instead of failing the load.
* **Custom strategies**: Python functions returning SQL built with :mod:`psycopg.sql`, registered with
  ``@register_strategy("name")`` or through the entry point group ``scalingo_staging_sync.strategies``
  (entry point name = strategy name, object = the function). They always run in place (UPDATE).

A custom function receives a :class:`StrategyContext` and returns either a mapping
``{column: sql expression}`` (the engine builds ``UPDATE <table> SET ... WHERE (<condition>)``) or a
whole statement, which must then include ``ctx.where`` when the rule has a condition (checked: a
statement that ignores the condition is rejected at planning time, never patched by regex).

    from psycopg import sql
    from scalingo_staging_sync.anonymize.strategies import register_strategy

    @register_strategy("tokens", columns=["token"])
    def tokens(ctx):
        return {"token": ctx.mask("token", "hash", length=40)}
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from scalingo_staging_sync.anonymize.transformers import (
    KEY_SQL,
    BuildContext,
    ColumnInfo,
    get_transformer,
    keep_empty_sql,
)
from scalingo_staging_sync.errors import SyncError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "scalingo_staging_sync.strategies"


class StrategyError(SyncError, ValueError):
    pass


# --------------------------------------------------------------------------------------------------
# Built-in presets


@dataclass(frozen=True)
class PresetColumn:
    column: str
    spec: Mapping[str, Any]
    #: used instead of ``spec`` when the column is NOT NULL and ``spec`` is the null transformer
    not_null_fallback: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    columns: tuple[PresetColumn, ...]


def _c(
    name: str, transformer: str, fallback: Mapping[str, Any] | None = None, /, **options: Any
) -> PresetColumn:
    return PresetColumn(name, {"transformer": transformer, **options}, fallback)


_ADDRESS = (
    _c("address_line1", "address"),
    _c("address_line2", "null", {"transformer": "fixed", "value": ""}),
    _c("address", "address"),
    _c("city", "city"),
    _c("postal_code", "postal_code"),
    _c("zip_code", "postal_code"),
)

BUILTIN_STRATEGIES: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "user_anonymization",
            "Users: e-mail, names (full_name rebuilt from the masked names), payment and address data, birth "
            "data and third-party ids.",
            (
                _c("email", "email"),
                _c("email_md5", "md5_of", column="email"),
                _c("first_name", "first_name"),
                _c("last_name", "last_name"),
                _c("full_name", "full_name", **{"from": ["first_name", "last_name"]}),
                _c("phone", "phone"),
                _c("credit_card_last_4", "fixed", value="0000"),
                _c("iban_last4", "fixed", value="0000"),
                _c("stripe_customer_id", "null", {"transformer": "hash", "length": 18}),
                *_ADDRESS,
                _c("birth_date", "null", {"transformer": "date_shift"}),
                _c("birth_place", "null", {"transformer": "city"}),
                _c("billing_extra", "null", {"transformer": "fixed", "value": ""}),
                _c("zendesk_user_id", "null", {"transformer": "hash", "length": 16}),
            ),
        ),
        Preset(
            "phone_anonymization",
            "Phone numbers: keyed-hash numbers under the +999 prefix (no LPAD truncation, no one-number-per-user "
            "collisions).",
            (
                _c("number", "phone"),
                _c("phone", "phone"),
                _c("phone_number", "phone"),
                _c("mobile", "phone"),
                _c("fax", "phone"),
            ),
        ),
        Preset(
            "payment_anonymization",
            "Payment methods: card/IBAN last digits set to 0000, provider ids hashed.",
            (
                _c("card_last4", "fixed", value="0000"),
                _c("card_last_4", "fixed", value="0000"),
                _c("credit_card_last_4", "fixed", value="0000"),
                _c("iban_last4", "fixed", value="0000"),
                _c("stripe_customer_id", "null", {"transformer": "hash", "length": 18}),
            ),
        ),
        Preset(
            "email_anonymization",
            "E-mails on the reserved domain (no pgcrypto needed); email_md5 rebuilt from the masked e-mail.",
            (_c("email", "email"), _c("email_md5", "md5_of", column="email")),
        ),
        Preset(
            "address_anonymization",
            "Postal addresses: street line, second line, city and postal code.",
            _ADDRESS,
        ),
    )
}


def resolve_preset(
    preset: Preset, columns: Mapping[str, ColumnInfo]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The preset's rules for the columns the table has, and notes (fallbacks, skipped derived)."""
    out: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for pc in preset.columns:
        info = columns.get(pc.column)
        if info is None or info.generated:
            continue
        spec = dict(pc.spec)
        if spec["transformer"] == "null" and info.not_null and pc.not_null_fallback:
            notes.append(
                f"{pc.column} is NOT NULL: {preset.name} uses {pc.not_null_fallback['transformer']} instead of null"
            )
            spec = dict(pc.not_null_fallback)
        out[pc.column] = spec
    # derived rules whose sources are absent degrade to a plain transformer / are dropped
    for col, spec in list(out.items()):
        if spec["transformer"] == "md5_of" and spec["column"] not in out:
            notes.append(
                f"{col}: source column {spec['column']} not masked by {preset.name}; hashed on its own"
            )
            out[col] = {"transformer": "hash", "algorithm": "md5", "length": 32}
        if spec["transformer"] == "full_name" and spec.get("from"):
            present = [c for c in spec["from"] if c in out]
            if len(present) != len(spec["from"]):
                out[col] = {"transformer": "full_name"}
    return out, notes


# --------------------------------------------------------------------------------------------------
# Custom strategies


@dataclass
class StrategyContext:
    """What a custom strategy function gets. Build SQL with :mod:`psycopg.sql` only."""

    schema: str
    name: str
    columns: Mapping[str, ColumnInfo]
    condition: str | None = None
    email_domain: str = "example.com"
    #: True when the table's inheritance children are masked by their own plan items: an UPDATE of
    #: the table must then be ``UPDATE ONLY`` (PostgreSQL's UPDATE on a parent reaches its children)
    only: bool = False
    _where_used: bool = field(default=False, repr=False)
    _target_used: bool = field(default=False, repr=False)

    @property
    def table(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def update_target(self) -> sql.Composable:
        """The table as the target of a whole ``UPDATE`` statement: ``ONLY schema.name`` when its
        inheritance children are masked by their own plan items (:attr:`only`), else ``schema.name``.
        Write ``UPDATE {ctx.update_target} SET ...`` in a whole-statement strategy."""
        self._target_used = True
        return sql.SQL("ONLY {}").format(self.table) if self.only else self.table

    @property
    def key(self) -> sql.Composable:
        """SQL expression of the secret key (``current_setting('scalingo_staging_sync.key')``)."""
        return KEY_SQL

    @property
    def where(self) -> sql.Composable:
        """``WHERE (<condition>)`` (empty without a condition). Put it in a whole-statement result."""
        self._where_used = True
        if not self.condition:
            return sql.SQL("")
        return sql.SQL("WHERE (\n{}\n)").format(sql.SQL(self.condition))

    @property
    def condition_sql(self) -> sql.Composable:
        """``(<condition>)`` or ``TRUE``, to combine with your own predicates."""
        self._where_used = True
        return sql.SQL("(\n{}\n)").format(sql.SQL(self.condition)) if self.condition else sql.SQL("TRUE")

    def mask(self, column: str, transformer: str, **options: Any) -> sql.Composable:
        """The expression of a built-in transformer over the column's current value."""
        if column not in self.columns:
            raise StrategyError(f"no column {column!r} in {self.schema}.{self.name}")
        t = get_transformer(transformer)
        if transformer == "email":
            options.setdefault("domain", self.email_domain)
        src = sql.Identifier(column)
        return keep_empty_sql(
            t, self.columns[column], src, t.expression(src, BuildContext(self.columns[column], options))
        )


@dataclass(frozen=True)
class CustomStrategy:
    name: str
    func: Callable[[StrategyContext], Any]
    columns: tuple[str, ...] | None = None
    description: str = ""


_custom: dict[str, CustomStrategy] = {}
_lock = threading.Lock()
_entry_points_loaded = False


def register_strategy(
    name: str,
    *,
    columns: list[str] | tuple[str, ...] | None = None,
    description: str = "",
    replace: bool = False,
) -> Callable[[Callable], Callable]:
    """Decorator registering a custom strategy. ``columns`` declares the columns a whole-statement
    strategy masks (for the plan, the PII scan and the residual proof). Built-in names are reserved."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
        raise StrategyError(f"invalid strategy name {name!r}")

    def decorator(func: Callable) -> Callable:
        with _lock:
            if name in BUILTIN_STRATEGIES:
                raise StrategyError(f"{name!r} is a built-in strategy; choose another name")
            if name in _custom and not replace and _custom[name].func is not func:
                raise StrategyError(f"strategy {name!r} is already registered")
            _custom[name] = CustomStrategy(
                name, func, tuple(columns) if columns else None, description or (func.__doc__ or "").strip()
            )
        return func

    return decorator


def unregister_strategy(name: str) -> None:
    with _lock:
        _custom.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not hide the others; reported by name
            log.error("cannot load strategy entry point %s (%s): %s", ep.name, ep.value, exc)
            continue
        if callable(obj) and ep.name not in _custom and ep.name not in BUILTIN_STRATEGIES:
            register_strategy(ep.name, columns=getattr(obj, "strategy_columns", None))(obj)


def strategy_exists(name: str) -> bool:
    _load_entry_points()
    return name in BUILTIN_STRATEGIES or name in _custom


def strategy_names() -> list[str]:
    _load_entry_points()
    return sorted({*BUILTIN_STRATEGIES, *_custom})


def get_builtin(name: str) -> Preset | None:
    return BUILTIN_STRATEGIES.get(name)


def get_custom(name: str) -> CustomStrategy | None:
    _load_entry_points()
    return _custom.get(name)


def build_custom_statement(
    strategy: CustomStrategy, ctx: StrategyContext
) -> tuple[sql.Composable, list[str]]:
    """Run a custom strategy: (statement, masked columns). Condition handling is structural."""
    from scalingo_staging_sync.anonymize.sql import update_statement

    result = strategy.func(ctx)
    if isinstance(result, Mapping):
        if not result:
            raise StrategyError(f"custom strategy {strategy.name!r} returned no column")
        for col, expr in result.items():
            if col not in ctx.columns:
                raise StrategyError(f"custom strategy {strategy.name!r} sets unknown column {col!r}")
            if not isinstance(expr, sql.Composable):
                raise StrategyError(
                    f"custom strategy {strategy.name!r}: {col} must be a psycopg sql expression"
                )
        return update_statement(ctx.schema, ctx.name, dict(result), ctx.condition, only=ctx.only), list(
            result
        )
    if isinstance(result, sql.Composable):
        if ctx.condition and not ctx._where_used:
            raise StrategyError(
                f"custom strategy {strategy.name!r} returns a whole statement that ignores the condition: "
                "include ctx.where (or ctx.condition_sql)"
            )
        if ctx.only and not ctx._target_used:
            raise StrategyError(
                f"custom strategy {strategy.name!r} returns a whole statement for {ctx.schema}.{ctx.name}, "
                "whose inheritance children are masked by their own plan items: an UPDATE of the parent "
                "would reach their rows and mask them twice. Write the statement's target as "
                "ctx.update_target (UPDATE ONLY), or return a mapping of column expressions"
            )
        return result, list(strategy.columns or ())
    raise StrategyError(
        f"custom strategy {strategy.name!r} must return a psycopg sql.Composable or a mapping of them, "
        f"not {type(result).__name__} (plain strings are refused: build SQL with psycopg.sql)"
    )
