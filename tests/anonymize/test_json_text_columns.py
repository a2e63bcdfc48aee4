"""The ``json`` transformer on text columns holding JSON documents (a Rails ``serialize``/``store`` column,
Synapse's ``event_json.json``): each value is read as a document and masked at its paths, on load (the
masking trigger, planned from the archive) and in place, with the same bytes either way, on PostgreSQL 16
and 18. NULL and '' are kept, a document with nothing to mask keeps its exact text, a masked one is
written in jsonb's normal form; a value that is not JSON stops the load with an error that quotes no
value; a column with a length limit is refused when planning."""

from __future__ import annotations

import json

import pytest
from pg_helpers import new_database

from scalingo_staging_sync.anonymize.executor import AnonymizationError, run_table_plan
from scalingo_staging_sync.anonymize.planner import PlanError, plan_anonymization
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.restore.runner import run_pg_restore

from .conftest import (
    SALT,
    anonymize,
    assert_in_place_gives,
    assert_verified,
    execute,
    rows_without,
    rules_from,
    target_of,
)

# the documents' own spacing and key order are kept where nothing is masked; escapes of every kind
EVENTS = r"""
CREATE DOMAIN document_text AS text CHECK (VALUE <> 'forbidden');
CREATE TABLE event_json (id int PRIMARY KEY, body text NOT NULL, extra varchar, meta document_text);
INSERT INTO event_json (id, body, extra) VALUES
 (1, '{"sender": "@julie.martin:example.org", "content": {"body": "Salut Élodie\tça va ?\nà+ \\o/", "msgtype": "m.text"}, "origin_server_ts": 1700000000000}',
     '{ "email" :  "julie.martin@corp.test" ,"plan":"pro"}'),
 (2, '{"type":   "m.room.create",  "content": {"creator": "x"}}', ''),
 (3, '', NULL),
 (4, '[{"email": "ann@corp.test"}, {"email": "bob@corp.test", "n": 1.50}]', 'null'),
 (5, '"just a string"', '{"email": null}'),
 (6, '{"content": {"body": ""}, "sender": "@zoé:example.org"}', '{"email": "carl@corp.test", "a": {"b": [1, 2]}}');
UPDATE event_json SET meta = extra WHERE id IN (1, 6);  -- a domain over text
"""
RULES = """
source_app: p
email_domain: staging.test
anonymization_tables:
  - table: event_json
    columns:
      body:
        transformer: json
        paths: {sender: hash, content.body: "null", "*.email": email}
      extra:
        transformer: json
        paths: {email: email}
      meta:
        transformer: json
        paths: {email: email}
"""
ORIGINALS = ["julie", "Élodie", "ann@corp", "bob@corp", "carl@corp", "zoé"]


def _check_masked(target):
    rows = rows_without(target, "SELECT id, body, extra, meta FROM event_json ORDER BY id", ORIGINALS)
    by_id = {r[0]: r[1:3] for r in rows}
    meta = {r[0]: r[3] for r in rows}
    assert meta[1] == by_id[1][1] and meta[6] == by_id[6][1]  # the same rule, the same masked document
    first = json.loads(by_id[1][0])
    assert first["content"] == {"body": None, "msgtype": "m.text"} and len(first["sender"]) == 32
    assert first["origin_server_ts"] == 1700000000000
    assert json.loads(by_id[1][1]) == {"email": json.loads(by_id[1][1])["email"], "plan": "pro"}
    assert json.loads(by_id[1][1])["email"].endswith("@staging.test")
    # nothing to mask: the exact bytes (spacing, key order), '' and NULL, scalars, JSON null
    assert by_id[2] == ('{"type":   "m.room.create",  "content": {"creator": "x"}}', "")
    assert by_id[3] == ("", None)
    assert by_id[5] == ('"just a string"', '{"email": null}')
    assert by_id[4][1] == "null"
    people = json.loads(by_id[4][0])
    assert [p["email"].endswith("@staging.test") for p in people] == [True, True]
    assert people[1]["n"] == 1.50
    # '' at a path is what '' in a column is (`null` clears it, `hash` would keep it)
    sixth = json.loads(by_id[6][0])
    assert sixth["content"] == {"body": None} and len(sixth["sender"]) == 32
    assert json.loads(by_id[6][1])["a"] == {"b": [1, 2]}
    # the column stays text
    assert execute(target, "SELECT pg_typeof(body)::text FROM event_json LIMIT 1") == [("text",)]
    return rows


@pytest.fixture
def archive(prod_pg, tmp_path):
    with new_database(prod_pg, "jsontext") as source:
        prod_pg.execute(EVENTS, source)
        yield prod_pg.pg_dump(source, tmp_path / "events.pgsql")


def test_text_documents_masked_on_load_and_in_place_identically(db_any, archive):
    pg, target = db_any
    tools = find_pg_tools(pg.bin_dir)
    run_pg_restore(archive, target, section="pre-data", tools=tools)
    (item,) = plan_anonymization(target, rules_from(RULES), dump_path=str(archive), tools=tools)
    assert item["mode"] == "on_load"
    result = run_table_plan(
        item, target, SALT, dump_path=str(archive), tools=tools, email_domain="staging.test"
    )
    assert_verified(target, result)
    assert_in_place_gives(pg, EVENTS, RULES, _check_masked, _check_masked(target))


def test_the_stream_engine_leaves_a_text_document_to_the_trigger():
    pytest.importorskip("duckdb")
    from scalingo_staging_sync.anonymize.stream import StreamUnsupported, select_list
    from scalingo_staging_sync.anonymize.transformers import ColumnInfo

    column = ColumnInfo("body", "text", "text")
    with pytest.raises(StreamUnsupported, match="json"):
        select_list(
            {"body": {"transformer": "json", "paths": {"a": "email"}}}, {"body": column}, ["id", "body"]
        )


def test_a_value_that_is_not_json_stops_the_load_without_quoting_it(db, prod_pg, tmp_path):
    """On load and in place: the error names the table, says what to do, and quotes no value."""
    pg, target = db
    tools = find_pg_tools(pg.bin_dir)
    setup = """CREATE TABLE prefs (id int PRIMARY KEY, data text);
    INSERT INTO prefs VALUES (1, '{"email": "a@corp.test"}'),
      (2, E'--- !ruby/hash:ActiveSupport::HashWithIndifferentAccess\\nemail: jo.secret@corp.test');"""
    rules = "source_app: p\nanonymization_tables:\n  - table: prefs\n    columns:\n      data: {transformer: json, paths: {email: email}}\n"
    with new_database(prod_pg, "notjson") as source:
        prod_pg.execute(setup, source)
        dump = prod_pg.pg_dump(source, tmp_path / "prefs.pgsql")
    run_pg_restore(dump, target, section="pre-data", tools=tools)
    (item,) = plan_anonymization(target, rules_from(rules), dump_path=str(dump), tools=tools)
    with pytest.raises(AnonymizationError) as on_load:
        run_table_plan(item, target, SALT, dump_path=str(dump), tools=tools)
    assert execute(target, "SELECT count(*) FROM prefs") == [(0,)]  # nothing of it was kept

    with new_database(pg, "notjsonip") as name:
        other = target_of(pg, name)
        execute(other, setup)
        with pytest.raises(AnonymizationError) as in_place:
            anonymize(other, rules)
    assert "(COPY data line 2)" in str(on_load.value)  # the line of the data, below the trigger's context
    for err in (on_load, in_place):
        message = str(err.value)
        assert "prefs" in message and "22P02" in message and "JSON document" in message, message
        assert "ruby" not in message and "secret" not in message and "a@corp" not in message, message


@pytest.mark.parametrize("column_type", ["varchar(255)", "char(200)", "name"])
def test_a_text_column_with_a_length_limit_is_refused(db, column_type):
    _pg, target = db
    execute(target, f"CREATE TABLE settings (id int PRIMARY KEY, doc {column_type})")
    rules = "source_app: p\nanonymization_tables:\n  - table: settings\n    columns:\n      doc: {transformer: json, paths: {email: email}}\n"
    with pytest.raises(
        PlanError, match=r"transformer 'json' reads each value of a text column as a JSON document"
    ):
        anonymize(target, rules)


def test_the_pii_scan_judges_what_a_json_rule_leaves_in_text(db):
    """The scan strips the masked paths from a text column's documents too: an e-mail address under a
    key the rule does not list fails the gate, the masked ones do not."""
    from scalingo_staging_sync.pii.scanner import (
        masked_columns_from_plan,
        partially_masked_from_plan,
        scan_target,
    )

    _pg, target = db
    execute(
        target,
        """CREATE TABLE prefs (id int PRIMARY KEY, data text);
        INSERT INTO prefs SELECT i, json_build_object('email', 'user' || i || '@corp.test', 'theme', 'dark')::text
        FROM generate_series(1, 50) i""",
    )
    rules = "source_app: p\nanonymization_tables:\n  - table: prefs\n    columns:\n      data: {transformer: json, paths: {email: email}}\n"
    items = plan_anonymization(target, rules_from(rules))
    anonymize(target, rules)
    kwargs = {
        "masked_columns": masked_columns_from_plan(items),
        "partially_masked": partially_masked_from_plan(items),
    }
    assert kwargs["partially_masked"] == {"public.prefs.data": ["email"]}
    assert scan_target(target, **kwargs).passed
    execute(
        target, """UPDATE prefs SET data = '{"email": "u@staging.test", "backup": "jo.martin@corp.test"}'"""
    )
    report = scan_target(target, **kwargs)
    assert [f.qualified_name for f in report.unmasked] == ["public.prefs.data"]
