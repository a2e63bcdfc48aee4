"""Nothing in the rules file is accepted and then ignored: every key of the rules JSON schema (top level
and one level down) changes the run settings, or, for anonymization_tables, the plan; and every run
setting that a rules key feeds is read by the reference DAG's wiring or its gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import scalingo_staging_sync
from scalingo_staging_sync.anonymize.rules import load_rules
from scalingo_staging_sync.settings import RunSettings

PACKAGE = Path(scalingo_staging_sync.__file__).resolve().parent
SCHEMA = json.loads((PACKAGE / "anonymize" / "rules.schema.json").read_text())
BASE = {"source_app": "shop-prod-app"}

#: a non-default value for every key path of the schema (a new key without an entry fails the test)
CHANGED = {
    "source_app": "other-app",
    "target_app": "shop-staging",
    "anonymization_tables": [
        {"table": "customer", "columns": {"email": "email"}, "translation": "Customers"}
    ],
    "exclude_tables": ["invoice_line"],
    "large_objects": "keep",
    "pii_scan": {"enabled": False},
    "pii_scan.enabled": False,
    "pii_scan.on_unmasked": "warn",
    "pii_scan.sample_rows": 7,
    "pii_scan.allow": ["public.artist.name"],
    "pii_scan.patterns": {"names": [{"pattern": "nickname", "category": "name"}]},
    "retry": {"attempts": 9},
    "retry.attempts": 9,
    "retry.base_delay_s": 0.25,
    "verification": {"enabled": False},
    "verification.enabled": False,
    "parallel_connections": 1,
    "audit_dir": "/var/audit",
    "download_dir": "s3://bucket/backups",
    "seeds": ["seeds/demo.sql"],
    "post_sync_commands": ["rake db:migrate"],
    "production_patterns": {"apps": ["live"]},
    "production_patterns.apps": ["live"],
    "production_patterns.hosts": ["live-db"],
    "require_confirmation": True,
    "slack_conn_id": "slack_ops",
    "slack_channel": "#staging",
    "email_domain": "example.org",
    "restore": {"mode": "swap"},
    "restore.mode": "swap",
    "restore.keep_previous": False,
    "restore.jobs": 3,
    "restore.maintenance": True,
}


def key_paths() -> list[str]:
    paths = []
    for key, node in SCHEMA["properties"].items():
        paths.append(key)
        if key != "anonymization_tables":
            paths.extend(f"{key}.{sub}" for sub in (node.get("properties") or {}))
    return paths


def _settings(tmp_path: Path, data: dict) -> dict:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(data))
    rules = load_rules(path)
    out = RunSettings.build(params={}, rules=rules, config={}, run_id="r", rules_path=path, now=0.0).to_json()
    return out


def _with(path: str, value) -> dict:
    data = json.loads(json.dumps(BASE))
    if "." in path:
        top, sub = path.split(".", 1)
        data.setdefault(top, {})[sub] = value
    else:
        data[path] = value
    return data


@pytest.mark.parametrize("path", key_paths())
def test_every_rules_key_has_an_effect(path, tmp_path):
    assert path in CHANGED, f"rules key {path!r} has no test value: give it one and make it have an effect"
    baseline = _settings(tmp_path, BASE)
    changed = _settings(tmp_path, _with(path, CHANGED[path]))
    differing = sorted(k for k in baseline if baseline[k] != changed[k] and k not in ("rules_sha256",))
    if path == "anonymization_tables":
        rules = load_rules(tmp_path / "rules.yaml")
        assert [r.table for r in rules.anonymization_tables] == ["customer"]  # what the planner plans
        assert differing == ["translations"]
        return
    assert differing, f"rules key {path!r} changes no run setting"
    # and each setting it changes is read by the reference DAG's wiring or its gate/preflight
    sources = "".join(
        (PACKAGE / p).read_text()
        for p in ("example_dags/reference.py", "operators/gate.py", "preflight.py", "settings.py")
    )
    wiring = "".join(
        (PACKAGE / p).read_text()
        for p in ("example_dags/reference.py", "operators/gate.py", "operators/audit.py")
    )
    for key in differing:
        used = (
            any(
                form in wiring
                for form in (f'setting("{key}")', f"'{key}'", f'settings.get("{key}")', f'field="{key}"')
            )
            or f"settings.{key}" in sources
        )
        assert used, f"run setting {key!r} (from rules key {path!r}) is not read by any step"
