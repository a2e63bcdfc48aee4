from __future__ import annotations

import pytest

from scalingo_staging_sync import safety


def test_production_app_names_are_refused_case_insensitively():
    r = safety.check_target_app_not_production("My-PROD-app", safety.DEFAULT_PRODUCTION_PATTERNS)
    assert not r.passed and "My-PROD-app" in r.detail
    assert safety.check_target_app_not_production("my-staging", safety.DEFAULT_PRODUCTION_PATTERNS).passed


def test_missing_values_fail_closed():
    assert not safety.check_target_app_not_production(None, ["prod"]).passed
    assert not safety.check_target_host_not_production("", ["prod"]).passed
    assert not safety.check_target_is_not_source(None, "staging", "host").passed


def test_target_host_containing_source_resource_id_is_refused():
    r = safety.check_target_is_not_source(
        "shop", "shop-staging", "shop-4553.postgresql.a.osc-fr1.scalingo-dbs.com", ["shop-4553"]
    )
    assert not r.passed and "shop-4553" in r.detail
    assert not safety.check_target_is_not_source("shop", "SHOP", "h", []).passed
    assert safety.check_target_is_not_source(
        "shop", "shop-staging", "staging-99.example", ["shop-4553"]
    ).passed


def test_confirmation_only_for_manual_runs_when_required():
    assert safety.check_confirmation(False, True, None, "st").passed
    assert safety.check_confirmation(True, False, None, "st").passed
    assert not safety.check_confirmation(True, True, None, "st").passed
    assert not safety.check_confirmation(True, True, "other", "st").passed
    assert safety.check_confirmation(True, True, "st", "st").passed


def test_enforce_names_every_failed_check():
    results = [
        safety.check_target_app_not_production("prod-x", ["prod"]),
        safety.check_confirmation(True, True, "nope", "prod-x"),
        safety.check_target_host_not_production("db.staging", ["prod"]),
    ]
    with pytest.raises(safety.SafetyCheckFailed) as err:
        safety.enforce(results)
    assert "target_app_not_production" in str(err.value) and "manual_run_confirmed" in str(err.value)
    assert len(err.value.failed) == 2


def test_bad_pattern_is_reported_with_its_value():
    with pytest.raises(ValueError, match=r"\(\[unclosed"):
        safety.check_target_app_not_production("x", ["([unclosed"])
