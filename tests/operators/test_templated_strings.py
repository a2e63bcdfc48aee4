"""Every operator's templated fields, rendered as strings (render_template_as_native_obj off), read back
as the values they stand for, through the one shared coercion helper (operators/_base.py)."""

from __future__ import annotations

import importlib
import inspect
import re

import jinja2
import pytest

from scalingo_staging_sync.operators import _EXPORTS
from scalingo_staging_sync.operators._base import (
    CoercionError,
    as_bool,
    as_float,
    as_int,
    as_list,
    as_mapping,
    as_mapping_list,
    as_str,
)

BOOL = (False, as_bool)
INT = (2, as_int)
FLOAT = (0.5, as_float)
LIST = (["public.a", "b.c"], as_list)
MAPPING = ({"k": 1, "n": [1, 2]}, as_mapping)
STR = ("value", as_str)
MAPPINGS = ([{"table": "public.a", "rows": 1}], as_mapping_list)

KINDS = {
    **dict.fromkeys(
        ("maintenance", "keep_previous", "enabled", "verified", "dry_run", "large_objects", "check_stats")
        + ("materialized_view_data",),
        BOOL,
    ),
    **dict.fromkeys(("jobs", "retry_attempts", "parallel_connections", "sample_rows"), INT),
    **dict.fromkeys(("retry_base_delay_s", "statement_timeout_s"), FLOAT),
    **dict.fromkeys(
        ("exclude_tables", "exclude_data", "only_data", "masked_columns", "allow", "schemas", "seeds")
        + ("commands", "phases", "excluded_tables"),
        LIST,
    ),
    **dict.fromkeys(
        ("extra_patterns", "params_override", "settings", "preflight", "restore", "pii", "verification")
        + ("promotion", "cleanup", "restore_rows", "stored_dump", "archive_plan", "conditional")
        + ("partially_masked",),
        MAPPING,
    ),
    **dict.fromkeys(("anonymize_results", "tables", "plan"), MAPPINGS),
    **dict.fromkeys(
        (
            "dump_path",
            "database",
            "mode",
            "pg_bin_dir",
            "target_app",
            "rules_file",
            "app",
            "addon_id",
            "postgres_conn_id",
        )
        + ("download_dir", "download_conn_id", "email_domain", "on_unmasked", "audit_dir", "masking_engine"),
        STR,
    ),
}
#: (operator, field) whose kind differs from the field name's usual one
OVERRIDES = {
    ("AuditReportOperator", "backup"): MAPPING,
    ("ScalingoBackupOperator", "backup"): STR,
    # the restore sections' plan is the archive plan (one mapping), not a list of plan items
    ("PgRestoreOperator", "plan"): MAPPING,
    ("MaskedDataLoadOperator", "plan"): MAPPING,
    # a restore without a plan: the large-object policy ("drop" / "keep"), not the PII scan's flag
    ("PgRestoreOperator", "large_objects"): ("keep", as_str),
    ("MaskedDataLoadOperator", "large_objects"): ("keep", as_str),
}
#: fields read through a helper other than as_*: the dump reference goes through local_dump
READERS = {"dump_path": r"local_dump\(self\.dump_path|as_str\(self\.dump_path"}

CASES = []
for name, module in sorted(_EXPORTS.items()):
    cls = getattr(importlib.import_module(module), name)
    for field in cls.template_fields:
        CASES.append(pytest.param(name, cls, field, id=f"{name}.{field}"))


def _render_as_string(value):
    """What Airflow's non-native Jinja rendering gives for ``{{ value }}``."""
    return jinja2.Environment().from_string("{{ value }}").render(value=value)


@pytest.mark.parametrize(("name", "cls", "field"), CASES)
def test_templated_field_rendered_as_a_string_reads_back_the_same(name, cls, field):
    native, reader = OVERRIDES.get((name, field)) or KINDS[field]
    rendered = _render_as_string(native)
    assert isinstance(rendered, str)
    assert reader(rendered, field) == reader(native, field) == native
    # and the operator reads that field through the shared helper
    source = "".join(
        inspect.getsource(c) for c in cls.__mro__ if c.__module__.startswith("scalingo_staging_sync")
    )
    # (``task.``: the rendered copy of the operator, where a callable bound to it reads its fields)
    pattern = READERS.get(field) or rf"{reader.__name__}\(\s*(?:self|task)\.{field}\b"
    assert re.search(pattern, source), f"{name} does not read {field} through {reader.__name__}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("False", False),
        ("false", False),
        ("0", False),
        ("None", False),
        ("", False),
        ("True", True),
        ("1", True),
    ],
)
def test_bool_from_strings(text, expected):
    assert as_bool(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("['a']", ["a"]),
        ('["a", "b"]', ["a", "b"]),
        ("a,b", ["a", "b"]),
        (" a , b ,", ["a", "b"]),
        ("a", ["a"]),
        ("None", []),
        ("", []),
        ("[]", []),
        (("x",), ["x"]),
    ],
)
def test_list_from_strings(text, expected):
    assert as_list(text) == expected


def test_numbers_and_mappings_from_strings():
    assert as_int("0") == 0 and as_int("3") == 3 and as_int("None") is None and as_int("2.0") == 2
    assert as_float("1.5") == 1.5 and as_float("") is None
    assert as_mapping("{'a': None}") == {"a": None} and as_mapping('{"a": true}') == {"a": True}
    assert as_mapping("None") is None


@pytest.mark.parametrize(
    ("reader", "value"),
    [(as_bool, "maybe"), (as_int, "2.5"), (as_int, "x"), (as_mapping, "[1]"), (as_list, "[1")],
)
def test_bad_values_are_refused_with_the_field_name(reader, value):
    with pytest.raises(CoercionError, match="the_field"):
        reader(value, "the_field")


REQUIRED = {
    "PgRestoreOperator": {"dump_path": "x"},
    "MaskedDataLoadOperator": {"dump_path": "x"},
    "PrepareMaskingOperator": {"plan": {}, "dump_path": "x"},
    "FinishMaskingOperator": {"prepared": {}},
    "AnonymizeTableOperator": {"plan": {}},
    "PlanAnonymizationOperator": {"rules_file": "r"},
    "DryRunStopOperator": {"dry_run": False},
    "ScalingoBackupOperator": {"app": "a"},
}


@pytest.mark.parametrize("name", sorted(_EXPORTS))
def test_every_templated_field_is_an_attribute_and_the_docstring_names_the_xcom_result(name):
    cls = getattr(importlib.import_module(_EXPORTS[name]), name)
    op = cls(task_id=f"probe_{name.lower()}", **REQUIRED.get(name, {}))
    for field in cls.template_fields:
        assert hasattr(op, field), f"{name}.{field} is templated but never set"
    assert "XCom" in (cls.__doc__ or ""), f"{name}'s docstring does not name its XCom result"


def test_an_argument_the_code_refuses_fails_the_task_at_once():
    """A plain ValueError is an argument the code refused (``mode="bogus"``): no retry can fix it, so it
    fails the task at once (AirflowFailException), naming the value; a ValueError subclass raised while
    reading an answer (a JSON decoding error) keeps its retries."""
    import json

    from airflow.sdk.exceptions import AirflowFailException

    from scalingo_staging_sync.operators import StagingCleanupOperator
    from scalingo_staging_sync.operators._base import sync_errors

    with pytest.raises(AirflowFailException, match="unknown mode 'bogus'"):
        StagingCleanupOperator(task_id="cleanup", mode="bogus").execute({})
    with pytest.raises(json.JSONDecodeError), sync_errors():
        json.loads("{cut")


@pytest.mark.parametrize("given", [None, "None", ""])
def test_verification_given_nothing_refuses_instead_of_passing(given):
    """A misspelt task id in the results template renders None: a verification of nothing would pass.
    It fails at once and says what to give ([] when no table is masked)."""
    from airflow.sdk.exceptions import AirflowFailException

    from scalingo_staging_sync.operators import ResidualVerificationOperator

    op = ResidualVerificationOperator(task_id="verify", anonymize_results=given)
    with pytest.raises(
        AirflowFailException, match=r"anonymize_results is empty.*or \[\] when no table is masked"
    ):
        op.execute({})
