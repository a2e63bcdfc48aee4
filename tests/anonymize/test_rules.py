"""Rules file: schema, defaults, normalisation, error messages naming the entry and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalingo_staging_sync.anonymize.rules import (
    RULES_ENV,
    Rules,
    RulesError,
    load_rules,
    parse_rules_text,
    resolve_rules_path,
    rules_schema,
    validate_rules_dict,
)

ISSUE_EXAMPLE = """
source_app: my-production-app
anonymization_tables:
  - table: users                  # or public.users
    strategy: user_anonymization  # built-in or registered strategy
    condition: "created_at < now() - interval '1 year'"   # optional WHERE
  - table: customers
    columns:                      # column -> transformer, by name or with options
      email: email
      contact_name: full_name
      notes: null
      company: {transformer: fixed, value: "ACME"}
  - table: api_keys
    query: "UPDATE api_keys SET key = md5(random()::text)"
exclude_tables: [audit_logs]
pii_scan: {on_unmasked: fail, allow: ["public.products.product_name", "public.categories.*"]}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        parse_rules_text(text)
    return info.value.errors


def test_issue_example_loads_with_defaults(tmp_path: Path):
    path = tmp_path / "rules.yml"
    path.write_text(ISSUE_EXAMPLE)
    rules = load_rules(path)
    assert isinstance(rules, Rules)
    assert rules.source_app == "my-production-app"
    users, customers, api_keys = rules.anonymization_tables
    assert users.strategy == "user_anonymization" and users.condition.startswith("created_at")
    assert customers.columns == {
        "email": {"transformer": "email"},
        "contact_name": {"transformer": "full_name"},
        "notes": {"transformer": "null"},  # YAML null -> the null transformer
        "company": {"transformer": "fixed", "value": "ACME"},
    }
    assert api_keys.query.startswith("UPDATE")
    assert rules.exclude_tables == ("audit_logs",)
    assert rules.pii_scan.on_unmasked == "fail" and rules.pii_scan.sample_rows == 1000
    assert rules.pii_scan["allow"] == ("public.products.product_name", "public.categories.*")
    # defaults of every other setting (CONTRACTS)
    assert rules.retry.attempts == 3 and rules.retry.base_delay_s == 1.0
    assert rules.verification.enabled is True
    assert rules.parallel_connections == 3
    assert rules.audit_dir is None and rules.seeds == () and rules.post_sync_commands == ()
    assert rules.production_patterns.apps == ("prod", "production")
    assert rules.production_patterns.hosts == ("prod", "production")
    assert rules.require_confirmation is False
    assert rules.slack_conn_id is None and rules.slack_channel is None
    assert rules.email_domain == "example.com"
    assert rules.restore.mode == "auto" and rules.restore.keep_previous is True
    assert rules.restore.jobs is None and rules.restore.maintenance is False
    assert rules.path == str(path.resolve()) and len(rules.sha256) == 64
    assert rules.table_rule("public.customers") is customers
    assert rules.raw["source_app"] == "my-production-app"
    json.dumps(rules.to_dict())  # serialisable


def test_all_settings_accepted():
    rules = parse_rules_text(
        """
        source_app: prod-app
        target_app: staging-app
        anonymization_tables: []
        retry: {attempts: 5, base_delay_s: 0.5}
        verification: {enabled: false}
        parallel_connections: 6
        audit_dir: /var/audit
        seeds: [seeds/demo.sql]
        post_sync_commands: ["bundle exec rake demo:setup"]
        production_patterns: {apps: ["-prd$"], hosts: ["db-prod"]}
        require_confirmation: true
        slack_conn_id: slack_default
        slack_channel: "#ops"
        email_domain: demo.example.org
        restore: {mode: swap, keep_previous: false, jobs: 4, maintenance: true}
        pii_scan:
          enabled: true
          on_unmasked: warn
          sample_rows: 50
          allow: [{column: public.products.name, reason: catalogue data}]
          patterns:
            names: [{pattern: "^siret$", category: company_id, severity: low}]
            content: [{name: fr_siret, regex: "^[0-9]{14}$", severity: medium}]
        """.replace("\n        ", "\n")
    )
    assert rules.target_app == "staging-app" and rules.retry.attempts == 5
    assert rules.restore.mode == "swap" and rules.restore.jobs == 4
    assert rules.email_domain == "demo.example.org"
    assert rules.pii_scan.patterns["content"][0]["name"] == "fr_siret"
    assert rules.seed_paths()[0].name == "demo.sql"


def test_schema_is_shipped_in_the_package():
    schema = rules_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert "anonymization_tables" in schema["properties"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("anonymization_tables: []", "(top level): 'source_app' is a required property"),
        ("source_app: a\nunknown_key: 1", "unknown_key: unknown key"),
        (
            "source_app: a\nanonymization_tables: [{table: t}]",
            "anonymization_tables[0]: needs one of strategy, columns or query",
        ),
        (
            "source_app: a\nanonymization_tables: [{table: t, strategy: user_anonymization, query: 'UPDATE t SET a = 1'}]",
            "anonymization_tables[0]: query cannot be combined with strategy or columns (found strategy, query)",
        ),
        (
            "source_app: a\nanonymization_tables: [{table: t, colums: {a: email}}]",
            "anonymization_tables[0].colums: unknown key",
        ),
        (
            "source_app: a\npii_scan: {on_unmasked: ignore}",
            "pii_scan.on_unmasked: 'ignore' is not one of ['fail', 'warn']",
        ),
        ("source_app: a\nretry: {attempts: 0}", "retry.attempts: 0 is less than the minimum of 1"),
        ("source_app: a\nemail_domain: 'not a domain'", "email_domain: 'not a domain' does not match"),
        (
            "source_app: a\nanonymization_tables: [{table: t, columns: {a: 3}}]",
            "anonymization_tables[0].columns.a: must be a transformer name, null",
        ),
    ],
)
def test_schema_errors_name_the_key(text, expected):
    errors = errors_of(text)
    assert any(e.startswith(expected) for e in errors), errors


def test_semantic_errors_are_collected_together():
    errors = errors_of(
        """
source_app: a
exclude_tables: [audit_logs]
anonymization_tables:
  - table: users
    columns: {email: emial, phone: {transformer: phone, digitz: 3}, company: {transformer: fixed}}
  - table: users
    strategy: no_such_strategy
  - table: audit_logs
    columns: {x: null}
  - table: orders
    query: "UPDATE orders SET a = 1"
    condition: "id > 3"
  - table: things
    columns: {a: email}
    condition: "1 = 1); DROP TABLE things; --"
"""
    )
    joined = "\n".join(errors)
    assert "anonymization_tables[0].columns.email: unknown transformer 'emial'" in joined
    assert "anonymization_tables[0].columns.phone.digitz: unknown option of transformer 'phone'" in joined
    assert "anonymization_tables[0].columns.company: 'value' is a required property" in joined
    assert (
        "anonymization_tables[1].table: public.users is already configured by anonymization_tables[0]"
        in joined
    )
    assert "anonymization_tables[1].strategy: unknown strategy 'no_such_strategy'" in joined
    assert "anonymization_tables[2].table: public.audit_logs is also in exclude_tables" in joined
    assert "anonymization_tables[3].condition: not allowed with query" in joined
    assert (
        "anonymization_tables[4].condition: a condition is one boolean expression; ';' is not allowed"
        in joined
    )
    assert len(errors) >= 8


def test_condition_semicolon_inside_literal_is_fine():
    rules = parse_rules_text(
        "source_app: a\nanonymization_tables: [{table: t, columns: {a: email}, condition: \"note <> 'a;b'\"}]"
    )
    assert rules.anonymization_tables[0].condition == "note <> 'a;b'"


def test_not_yaml_mapping():
    assert errors_of("- a\n- b")[0].startswith("(top level): the rules file must be a mapping")
    assert errors_of("source_app: [unclosed")[0].startswith("(top level): not valid YAML")


def test_rules_path_from_param_else_env(monkeypatch, tmp_path):
    monkeypatch.delenv(RULES_ENV, raising=False)
    with pytest.raises(RulesError, match="rules_file") as info:
        resolve_rules_path(None)
    # every way to name one, the config option first
    assert "set [scalingo_staging_sync] rules_file (env AIRFLOW__SCALINGO_STAGING_SYNC__RULES_FILE)" in str(
        info.value
    )
    assert "[scalingo_staging_sync] rules_folder" in str(info.value) and RULES_ENV in str(info.value)
    monkeypatch.setenv(RULES_ENV, str(tmp_path / "env.yml"))
    assert resolve_rules_path(None) == tmp_path / "env.yml"
    assert resolve_rules_path(str(tmp_path / "param.yml")) == tmp_path / "param.yml"


def test_missing_file_is_a_rules_error(tmp_path):
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "nope.yml")


def test_validate_rules_dict_direct():
    rules = validate_rules_dict(
        {"source_app": "a", "anonymization_tables": [{"table": "x.y", "columns": {"c": None}}]}
    )
    assert rules.anonymization_tables[0].schema_name == ("x", "y")
    assert rules.anonymization_tables[0].where == "anonymization_tables[0]"


def test_derived_column_cycles_are_refused_when_the_rules_load(tmp_path):
    """md5_of and full_name's from read other columns' masked values: a column reading itself, or derived
    columns reading each other (the rule's own columns or those of its built-in strategy), are refused
    when the file is loaded, before a run starts, not when the SQL is built mid-run."""
    text = """
source_app: a
anonymization_tables:
  - table: users
    columns:
      email_md5: {transformer: md5_of, column: email_md5}
  - table: people
    columns:
      a: {transformer: md5_of, column: b}
      b: {transformer: full_name, from: [c, x]}
      c: {transformer: md5_of, column: a}
      x: first_name
  - table: customers
    strategy: user_anonymization
    columns:
      first_name: {transformer: md5_of, column: full_name}
"""
    path = tmp_path / "rules.yml"
    path.write_text(text)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    errors = info.value.errors
    assert len(errors) == 3, errors
    assert errors[0].startswith(
        "anonymization_tables[0].columns.email_md5: column email_md5 of public.users derives from itself "
        "(email_md5: md5_of column: email_md5)"
    )
    assert "read another column, or mask the column's own value" in errors[0]
    assert errors[1].startswith(
        "anonymization_tables[1].columns.a: derived columns of public.people form a cycle: a -> b -> c -> a "
        "(each reads the masked value of the next: a: md5_of column: b; b: full_name from: [c, x]; "
        "c: md5_of column: a)"
    )
    assert "make one of these columns mask its own value (e.g. {transformer: hash})" in errors[1]
    assert errors[2].startswith(
        "anonymization_tables[2].columns.first_name: derived columns of public.customers form a cycle: "
        "first_name -> full_name -> first_name (each reads the masked value of the next: first_name: md5_of "
        "column: full_name; full_name: full_name from: [first_name, last_name] (from strategy "
        "user_anonymization))"
    )


def test_derived_columns_without_a_cycle_load():
    rules = parse_rules_text(
        """
source_app: a
anonymization_tables:
  - table: users
    strategy: user_anonymization
    columns:
      full_name: {transformer: full_name, from: [first_name, middle_name, last_name, email_md5]}
      middle_name: first_name
      email_hash: {transformer: md5_of, column: email_md5}
  - table: people
    columns:
      a: {transformer: md5_of, column: not_masked}
"""
    )
    assert rules.anonymization_tables[0].columns["email_hash"]["column"] == "email_md5"


def test_derived_cycles_helper():
    from scalingo_staging_sync.anonymize.rules import derived_cycles

    md5 = lambda col: {"transformer": "md5_of", "column": col}  # noqa: E731
    assert derived_cycles({"a": md5("b"), "b": {"transformer": "email"}}) == []
    assert derived_cycles({"a": md5("a")}) == [["a", "a"]]
    # one cycle per group of columns reading each other, the shortest way back to its first column
    specs = {
        "a": md5("b"),
        "b": {"transformer": "full_name", "from": ["c", "a"]},
        "c": md5("a"),
        "d": md5("d"),
    }
    assert derived_cycles(specs) == [["a", "b", "a"], ["d", "d"]]


def test_invalid_pii_scan_patterns_are_refused_with_their_key(tmp_path):
    """pii_scan.patterns are compiled when the rules load (as the scan compiles them), not late in a run
    with a bare re.error naming no key."""
    path = tmp_path / "rules.yml"
    path.write_text(
        """
source_app: a
pii_scan:
  patterns:
    names:
      - {pattern: siren}
      - {pattern: "user(", category: custom}
    content:
      - {name: fine, regex: "\\\\bFR\\\\d{11}\\\\b"}
      - {name: broken, regex: "[a-"}
"""
    )
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert info.value.errors == [
        "pii_scan.patterns.names[1].pattern: 'user(' is not a valid regular expression (missing ), "
        "unterminated subpattern at position 4); fix the regex (a literal special character is escaped: "
        "\\(, \\.), or write a token sequence of letters, digits and _ only",
        "pii_scan.patterns.content[1].regex: '[a-' is not a valid regular expression (unterminated "
        "character set at position 0); fix the regex (a literal special character is escaped: \\(, \\.)",
    ]


def test_valid_pii_scan_patterns_load():
    rules = parse_rules_text(
        "source_app: a\npii_scan: {patterns: {names: [{pattern: loyalty_card}, {pattern: '^x_.*_id$'}], "
        "content: [{name: siren, regex: '\\b\\d{9}\\b'}]}}"
    )
    assert rules.pii_scan.patterns["names"][1]["pattern"] == "^x_.*_id$"


def test_condition_that_is_not_one_sql_expression_is_refused_when_the_rules_load(tmp_path):
    """The condition is parsed (pglast, syntax only: the columns are checked when planning) when the
    rules load, as docs/cli.md says validate does, not only by plan."""
    path = tmp_path / "rules.yml"
    path.write_text(
        """
source_app: a
anonymization_tables:
  - table: emp
    columns: {email: email}
    condition: "emp_id >"
  - table: emp2
    columns: {email: email}
    condition: "emp_id = 1 AND AND x"
  - table: emp3
    columns: {email: email}
    condition: |
      created_at < now() - interval '1 year'
      AND note <> 'a;b' AND no_such_column IS NULL
"""
    )
    with pytest.raises(RulesError) as info:
        load_rules(path)
    fix = (
        "; write one expression over the table's columns, as after WHERE (created_at < now() - interval "
        "'1 year')"
    )
    assert info.value.errors == [
        "anonymization_tables[0].condition: does not parse as an SQL boolean expression: syntax error at the "
        "end of the condition (it is incomplete)" + fix,
        "anonymization_tables[1].condition: does not parse as an SQL boolean expression: syntax error at or "
        "near \"AND\" at character 16 of the condition ('AND x')" + fix,
    ]
