"""ResidualVerificationOperator: thin adapter over :mod:`scalingo_staging_sync.verification`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from scalingo_staging_sync.hooks.postgres import DEFAULT_STAGING_CONN_ID, pg_target_from_connection
from scalingo_staging_sync.operators._base import (
    as_bool,
    as_mapping,
    as_mapping_list,
    as_str,
    maps_sync_errors,
)

SALT_VARIABLE = "scalingo_staging_sync_salt"


def get_salt(variable: str = SALT_VARIABLE) -> str:
    """The anonymization salt from the Airflow Variable (masked in logs as soon as it is read)."""
    from airflow.sdk import Variable

    from scalingo_staging_sync.secrets import mask_secret

    salt = Variable.get(variable, default=None)
    if not salt:
        raise ValueError(
            f"Airflow Variable {variable!r} is not set: residual-value verification needs the anonymization "
            f"salt. Set it with `airflow variables set {variable} <long random secret>` or the environment "
            f"variable AIRFLOW_VAR_{variable.upper()}."
        )
    mask_secret(salt)
    return salt


class ResidualVerificationOperator(BaseOperator):
    """Fail (before promotion) when a sampled original value survived anonymization or row counts differ.

    :param anonymize_results: the AnonymizeTableOperator mapped tasks' results (``anonymize.output``)
        or a list of those dicts (templated).
    :param postgres_conn_id: postgres connection of the staging server (default ``staging_db``).
    :param database: database to verify instead of the connection's (templated; the scratch db).
    :param restore_rows: optional ``{"schema.table": rows}`` from the restore, compared with count(*).
    :param salt_variable: Airflow Variable holding the salt (default ``scalingo_staging_sync_salt``).
    :param enabled: ``verification.enabled`` of the rules file; False skips (returns ``{"enabled": False}``).
    :param check_stats: also look for the sampled originals in ``pg_stats`` (default True).

    XCom ``return_value``: the verification report (``passed``, ``tables``: per table ``rows``,
    ``residuals``, ...); on failure, key ``verification`` holds it.
    """

    template_fields: Sequence[str] = (
        "anonymize_results",
        "database",
        "restore_rows",
        "enabled",
        "check_stats",
    )
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        anonymize_results: Any = None,
        postgres_conn_id: str = DEFAULT_STAGING_CONN_ID,
        database: str | None = None,
        restore_rows: dict[str, int] | None = None,
        salt_variable: str = SALT_VARIABLE,
        enabled: bool = True,
        check_stats: Any = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.anonymize_results = anonymize_results
        self.postgres_conn_id = postgres_conn_id
        self.database = database
        self.restore_rows = restore_rows
        self.salt_variable = salt_variable
        self.enabled = enabled
        self.check_stats = check_stats

    @maps_sync_errors
    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from scalingo_staging_sync.verification import ResidualValueError, verify_residuals

        if not as_bool(self.enabled, "enabled"):
            self.log.warning("residual-value verification is disabled (verification.enabled: false)")
            return {"enabled": False, "passed": None, "tables": []}
        raw = self.anonymize_results
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "null")):
            # a verification given nothing passes: a misspelt task id in the template must not
            raise ValueError(
                "ResidualVerificationOperator: anonymize_results is empty (None): give the masking tasks' "
                "results (e.g. \"{{ ti.xcom_pull(task_ids='anonymize_table') }}\", or the task's .output), "
                "or [] when no table is masked"
            )
        results = as_mapping_list(self.anonymize_results, "anonymize_results")
        salt = get_salt(self.salt_variable)
        target = pg_target_from_connection(self.postgres_conn_id, as_str(self.database))
        self.log.info("verifying %d anonymized table(s) on %s", len(results), target.describe())
        try:
            return verify_residuals(
                target,
                results,
                salt,
                as_mapping(self.restore_rows, "restore_rows") or None,
                check_stats=as_bool(self.check_stats, "check_stats"),
            )
        except ResidualValueError as exc:
            context["ti"].xcom_push(key="verification", value=exc.report.to_dict())
            raise AirflowFailException(str(exc)) from None
