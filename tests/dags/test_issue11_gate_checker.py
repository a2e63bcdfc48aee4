"""The gate's download checker: a callable or an import path, called with the download connection; a
checker that raises (storage.probe_writable) or says no refuses a URL download directory, with its reason."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from scalingo_staging_sync.preflight import check_download_dir

URL = "s3://staging-dumps/runs/manual__1"


def _checker(gate_arg, conn_id="s3_dumps"):
    from scalingo_staging_sync.operators.gate import SafetyGateOperator

    gate = SafetyGateOperator(task_id="safety_gate", download_checker=gate_arg)
    return gate._download_checker(SimpleNamespace(download_conn_id=conn_id))


def test_a_checker_that_returns_nothing_passes_and_gets_the_connection():
    seen = []

    def probe(url, conn_id):
        seen.append((url, conn_id))

    check = check_download_dir(URL, _checker(probe))
    assert check.passed and "s3_dumps" in check.detail and "probe" in check.detail
    assert seen == [(URL, "s3_dumps")]


def test_a_checker_that_raises_or_says_no_refuses_with_its_reason():
    from scalingo_staging_sync.preflight import PreflightResult

    def denied(url, conn_id):
        raise PermissionError(f"cannot write a probe object under {url}: AccessDenied")

    result = PreflightResult()
    check = result.run("download_dir_writable", lambda: check_download_dir(URL, _checker(denied)))
    assert not check.passed and "AccessDenied" in check.detail and URL in check.detail
    refused = check_download_dir(URL, _checker("operator:eq"))  # import path; eq(url, conn) is False
    assert not refused.passed and "not writable" in refused.detail


def test_a_bad_import_path_is_refused_with_the_expected_form():
    from scalingo_staging_sync.operators.gate import GateConfigError

    with pytest.raises(GateConfigError, match="package.module:function"):
        _checker("no_such_module_xyz:probe")


def test_without_a_checker_a_url_is_reported_not_checked_and_a_local_dir_is_probed(tmp_path, monkeypatch):
    from scalingo_staging_sync import storage

    monkeypatch.delattr(storage, "probe_writable", raising=False)
    assert _checker(None) is None
    check = check_download_dir(URL, None)
    assert check.passed and "not checked" in check.detail
    (tmp_path / "file").write_text("x")
    assert not check_download_dir(str(tmp_path / "file" / "sub"), None).passed
