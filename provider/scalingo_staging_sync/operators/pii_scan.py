"""PiiScanOperator: the gate before promotion. Thin adapter over :mod:`scalingo_staging_sync.pii.scanner`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from scalingo_staging_sync.hooks.postgres import DEFAULT_STAGING_CONN_ID, pg_target_from_connection
from scalingo_staging_sync.operators._base import (
    as_bool,
    as_int,
    as_list,
    as_mapping,
    as_str,
    maps_sync_errors,
)
from scalingo_staging_sync.pii import DEFAULT_SAMPLE_ROWS

XCOM_KEY = "pii_scan"


class PiiScanOperator(BaseOperator):
    """Scan the restored database for personal data that no rule masks; fail before promotion.

    :param postgres_conn_id: postgres connection of the staging server (default ``staging_db``).
    :param database: database to scan instead of the connection's (templated; e.g. the scratch db).
    :param masked_columns: ``["schema.table.column", ...]`` masked by the plan (templated).
    :param allow: ``pii_scan.allow`` of the rules file: ``"schema.table.column"``, ``"schema.table.*"``
        or ``{"column": ..., "reason": ...}`` (templated).
    :param on_unmasked: ``"fail"`` (default): raise, naming every unmasked column; ``"warn"``: log only.
    :param extra_patterns: ``pii_scan.patterns`` of the rules file: ``{"names": [...], "content": [...]}``.
    :param sample_rows: rows sampled per table for content detection (default 1000).
    :param schemas: schemas to scan (default: every user schema).
    :param enabled: ``pii_scan.enabled`` of the rules file (templated); False skips the scan and returns
        ``{"enabled": False}`` (the verification still runs).
    :param excluded_tables: tables whose data was not restored (the archive plan's ``excluded_tables``,
        templated): the scan checks they are empty and does not flag their columns.
    :param conditional: ``{table: condition}`` of conditional rules (the plan task's ``conditional``,
        templated): the rows outside a condition are sampled and fail the gate unless allow-listed.
    :param large_objects: True when the rules keep large objects (``large_objects: keep``, templated):
        their content goes through the content detector.
    :param partially_masked: ``{"schema.table.column": [json path, ...]}`` of the columns a ``json`` rule
        masks (the plan task's ``partially_masked``, templated): the rest of their documents goes
        through the content detectors, and a match fails the gate unless allow-listed.
    :param anonymize_results: the masking tasks' results (templated; those ``verify_anonymization``
        reads): their proofs' phrases of sampled originals are looked for in every sampled column, and a
        column holding copies of them (an e-mail address, or two names, of people a rule masks) fails
        the gate unless allow-listed (finding ``copy.masked_originals``). None (default): not checked.
    :param salt_variable: Airflow Variable of the salt the phrases were hashed with (with
        ``anonymize_results``).

    Returns (XCom ``return_value``; when the gate fails, XCom key ``pii_scan`` instead) the report dict:
    counts, ``unmasked`` column names and ``findings`` (column, reasons, severity, sample counts,
    status). Sampled values are never stored, returned or logged.
    """

    template_fields: Sequence[str] = (
        "database",
        "masked_columns",
        "allow",
        "on_unmasked",
        "schemas",
        "extra_patterns",
        "sample_rows",
        "enabled",
        "excluded_tables",
        "conditional",
        "large_objects",
        "partially_masked",
        "anonymize_results",
    )
    ui_color = "#f9d5e5"

    def __init__(
        self,
        *,
        postgres_conn_id: str = DEFAULT_STAGING_CONN_ID,
        database: str | None = None,
        masked_columns: list[str] | str | None = None,
        allow: list[Any] | None = None,
        on_unmasked: str = "fail",
        extra_patterns: dict[str, Any] | None = None,
        sample_rows: int = DEFAULT_SAMPLE_ROWS,
        schemas: list[str] | None = None,
        enabled: Any = True,
        excluded_tables: Any = None,
        conditional: Any = None,
        large_objects: Any = False,
        partially_masked: Any = None,
        anonymize_results: Any = None,
        salt_variable: str = "scalingo_staging_sync_salt",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_unmasked not in ("fail", "warn") and "{{" not in str(on_unmasked):
            raise ValueError(f"on_unmasked must be 'fail' or 'warn', got {on_unmasked!r}")
        self.postgres_conn_id = postgres_conn_id
        self.database = database
        self.masked_columns = masked_columns
        self.allow = allow
        self.on_unmasked = on_unmasked
        self.extra_patterns = extra_patterns
        self.sample_rows = sample_rows
        self.schemas = schemas
        self.enabled = enabled
        self.excluded_tables = excluded_tables
        self.conditional = conditional
        self.large_objects = large_objects
        self.partially_masked = partially_masked
        self.anonymize_results = anonymize_results
        self.salt_variable = salt_variable

    def _copies(self) -> Any:
        """The :class:`~scalingo_staging_sync.pii.scanner.CopyIndex` of ``anonymize_results``, or None."""
        from scalingo_staging_sync.operators._base import as_mapping_list

        raw = self.anonymize_results
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "null")):
            return None
        results = as_mapping_list(self.anonymize_results, "anonymize_results")
        if not any((r.get("proof") or {}).get("phrases") for r in results):
            return None
        from scalingo_staging_sync.operators.verify import get_salt
        from scalingo_staging_sync.pii.scanner import CopyIndex

        return CopyIndex.from_results(results, get_salt(self.salt_variable))

    @maps_sync_errors
    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from scalingo_staging_sync.pii.scanner import UnmaskedPiiError, enforce, scan_target

        if not as_bool(self.enabled, "enabled"):
            self.log.warning("PII scan disabled by the rules file (pii_scan.enabled: false)")
            return {"enabled": False, "counts": {}, "unmasked": [], "findings": []}
        on_unmasked = as_str(self.on_unmasked, default="fail")
        if on_unmasked not in ("fail", "warn"):
            raise ValueError(f"on_unmasked must be 'fail' or 'warn', got {on_unmasked!r}")
        sample_rows = as_int(self.sample_rows, "sample_rows", default=DEFAULT_SAMPLE_ROWS)
        target = pg_target_from_connection(self.postgres_conn_id, as_str(self.database))
        copies = self._copies()
        self.log.info(
            "PII scan of %s (sample_rows=%d%s)",
            target.describe(),
            sample_rows,
            f"; copies of {len(copies.emails)} e-mail(s) and {len(copies.names)} name(s) of sampled people"
            if copies
            else "",
        )
        report = scan_target(
            target,
            schemas=[str(s) for s in as_list(self.schemas, "schemas")] or None,
            masked_columns=[str(c) for c in as_list(self.masked_columns, "masked_columns")],
            allow=as_list(self.allow, "allow"),
            extra_patterns=as_mapping(self.extra_patterns, "extra_patterns"),
            sample_rows=sample_rows,
            excluded_tables=[str(t) for t in as_list(self.excluded_tables, "excluded_tables")],
            conditional={
                str(k): str(v) for k, v in (as_mapping(self.conditional, "conditional") or {}).items()
            },
            large_objects=as_bool(self.large_objects, "large_objects"),
            partially_masked={
                str(k): [str(p) for p in as_list(v, "partially_masked")]
                for k, v in (as_mapping(self.partially_masked, "partially_masked") or {}).items()
            },
            copies=copies,
        )
        result = report.to_dict()
        result["enabled"] = True
        result["on_unmasked"] = on_unmasked
        if report.unknown_masked:
            self.log.warning("Masked columns not found in the database: %s", ", ".join(report.unknown_masked))
        try:
            enforce(report, on_unmasked)
        except UnmaskedPiiError as exc:  # deterministic: retrying cannot help
            # a failed task has no return_value: the findings go under XCOM_KEY for the audit report
            context["ti"].xcom_push(key=XCOM_KEY, value=result)
            raise AirflowFailException(str(exc)) from None
        return result
