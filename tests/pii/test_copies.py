"""Copies of masked originals in columns no rule masks: the proofs' phrases of sampled originals (names
and e-mail addresses of the people a rule masks) looked for by the PII scan in every sampled column,
on real PostgreSQL. Django's admin log keeps "Jean Dupont" in ``object_repr``; a note or an audit trail
names the customer: no name detector or content pattern can see that, the originals can."""

from __future__ import annotations

import json

import pytest
from pg_helpers import new_database

from scalingo_staging_sync.anonymize.executor import build_proof
from scalingo_staging_sync.fingerprint import row_phrases, text_phrases
from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.pii.scanner import COPY_DETECTOR, CopyIndex, UnmaskedPiiError, enforce, scan_target

SALT = "copies-test-salt-0123456789abcdefghij"

PEOPLE = [
    (1, "Philomena", "Wrightsonbury", "philomena.w@zoo-mail.test"),
    (2, "Aurelio", "Castellamonte", "aurelio.c@zoo-mail.test"),
    (3, "Zénobie", "Ørsted-Łukasiewicz", "Zenobie.O@Zoo-Mail.test"),
    (4, "Bartholomew", "Quennell", "bart.q@zoo-mail.test"),
]

SCHEMA = """
CREATE TABLE people (id int PRIMARY KEY, first_name text, last_name text, email text, bio text);
CREATE TABLE admin_log (id int PRIMARY KEY, object_repr varchar(200), change_message text);
CREATE TABLE notes (id int PRIMARY KEY, body text);
CREATE TABLE mailings (id int PRIMARY KEY, sent_to text);
CREATE TABLE reviewed (id int PRIMARY KEY, label text);
CREATE TABLE orders (id int PRIMARY KEY, doc jsonb);
INSERT INTO admin_log VALUES
  (1, 'Philomena Wrightsonbury', '[]'), (2, 'Castellamonte, Aurelio', '[]'), (3, 'Order #12', '[]');
-- one name alone could be a coincidence (a namesake): not enough
INSERT INTO notes VALUES (1, 'Met Bartholomew Quennell at the fair'), (2, 'nothing to say');
-- one e-mail address is (case-insensitively)
INSERT INTO mailings VALUES (1, 'newsletter sent to <ZENOBIE.O@zoo-mail.test>, bounced');
INSERT INTO reviewed VALUES (1, 'Philomena Wrightsonbury'), (2, 'Aurelio Castellamonte');
-- a json rule masks the doc's e-mail; the name left under another key is a copy
INSERT INTO orders VALUES (1, '{"email": "u1@example.com", "shipping": "Aurelio Castellamonte"}'),
                          (2, '{"email": "u2@example.com", "shipping": "Philomena Wrightsonbury"}');
"""


def test_phrases_of_originals_and_of_sampled_text():
    emails, names = row_phrases(["Jean", "Dupont", "Jean.Dupont@Example.COM", "Jean Pierre"])
    assert emails == {"jean.dupont@example.com"}
    assert names == {"jean dupont", "dupont jean", "jean pierre"}  # both orders of the one-word names
    assert row_phrases(["x", "Li"]) == (set(), set())  # too short to tell anyone apart
    found = dict(text_phrases("Changed «Jean Dupont» (mailto:jean.dupont@example.com)."))
    assert found["jean.dupont@example.com"] is True and found["jean dupont"] is False  # quotes dropped
    assert ("jean dupont", False) in text_phrases('{"name": "Jean Dupont", "n": 3}')


def test_names_in_the_forms_slugs_and_file_names_give_them():
    """friendly_id's ``users.slug`` ("helene-dupre"), a handle ("@jean_dupont"), an upload's file name
    ("cv-jean-dupont.pdf") hold a masked person's name: words split at any separator, accents dropped."""
    _, names = row_phrases(["Hélène", "Dupré-Martin"])
    assert {
        "hélène dupré-martin",
        "hélène dupré martin",
        "helene dupre martin",
        "helene dupre-martin",
    } <= names
    for text in ("/users/helene-dupre-martin", "@helene_dupre_martin", "CV Hélène Dupré-Martin.pdf"):
        assert "helene dupre martin" in dict(text_phrases(text)) or "hélène dupré martin" in dict(
            text_phrases(text)
        ), text
    assert ("jean dupont", False) in text_phrases("cv-jean-dupont.pdf")


def test_the_scan_finds_masked_names_in_slugs_handles_and_file_names(staging_pg16):
    pg = staging_pg16
    with new_database(pg, "copies_slugs") as name:
        pg.execute(
            "CREATE TABLE people (id int PRIMARY KEY, first_name text, last_name text, email text, bio text);"
            "CREATE TABLE profiles (id int PRIMARY KEY, slug text, handle text, upload text);"
            "INSERT INTO profiles VALUES (1, 'philomena-wrightsonbury', '@aurelio_castellamonte', 'a.png'),"
            " (2, 'zenobie-orsted-lukasiewicz', NULL, 'cv-bartholomew-quennell.pdf'), (3, 'order-12', NULL, 'b.png');",
            name,
        )
        target = PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname=name)
        report = scan_target(
            target,
            masked_columns=[f"public.people.{c}" for c in ("first_name", "last_name", "email", "bio")],
            copies=CopyIndex.from_results(_proof_results(PEOPLE), SALT),
        )
        by_column = {f.qualified_name: f for f in report.unmasked}
        slug = next(r for r in by_column["public.profiles.slug"].reasons if r["detector"] == COPY_DETECTOR)
        assert slug["names"] == 2  # Philomena's, and Zénobie Ørsted-Łukasiewicz's without its accents
        assert "public.profiles.handle" not in by_column  # one name alone: a namesake is possible
        assert "public.profiles.upload" not in by_column


def _proof_results(rows):
    item = {
        "schema": "public",
        "name": "people",
        "masked_columns": ["first_name", "last_name", "email", "bio"],
        "columns": {
            "first_name": {"transformer": "first_name"},
            "last_name": {"transformer": "last_name"},
            "email": {"transformer": "email"},
            "bio": {"transformer": "null"},  # not a person's name or address: not compared
        },
    }
    sample = [
        {"id": str(i), "first_name": f, "last_name": la, "email": e, "bio": "Paris"} for i, f, la, e in rows
    ]
    return [{"table": "public.people", "proof": build_proof(item, SALT, ["id"], sample)}]


def test_the_scan_finds_copies_of_masked_originals(staging_pg16):
    pg = staging_pg16
    with new_database(pg, "copies") as name:
        pg.execute(SCHEMA, name)
        pg.execute(
            "INSERT INTO people SELECT i, 'Alex', 'Nash', 'u' || i || '@example.com', NULL FROM generate_series(1, 4) i",
            name,
        )  # already masked: the originals are only in the proofs
        results = _proof_results(PEOPLE)
        proof = results[0]["proof"]
        assert proof["phrases"]["columns"] == ["first_name", "last_name", "email"]
        assert len(proof["phrases"]["emails"]) == 4 and "Wrightsonbury" not in str(proof)  # hashes only
        copies = CopyIndex.from_results(results, SALT)
        target = PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname=name)
        report = scan_target(
            target,
            masked_columns=[f"public.people.{c}" for c in ("first_name", "last_name", "email", "bio")]
            + ["public.orders.doc"],
            partially_masked={"public.orders.doc": ["email"]},
            allow=[{"column": "public.reviewed.label", "reason": "reviewed by hand"}],
            copies=copies,
        )
        by_column = {f.qualified_name: f for f in report.findings}
        log = by_column["public.admin_log.object_repr"]
        assert log.status == "unmasked" and log.severity == "high"
        reason = next(r for r in log.reasons if r["detector"] == COPY_DETECTOR)
        assert reason["names"] == 2 and reason["emails"] == 0 and reason["tables"] == ["public.people"]
        assert "copies of the names or e-mail addresses of the people of public.people" in log.reason
        assert by_column["public.mailings.sent_to"].status == "unmasked"
        assert "public.notes.body" not in by_column  # one name: a namesake is possible
        assert "public.admin_log.change_message" not in by_column
        assert by_column["public.reviewed.label"].status == "allowed"
        assert by_column["public.orders.doc"].status == "unmasked"  # what the json rule left
        assert {f.qualified_name for f in report.unmasked} == {
            "public.admin_log.object_repr",
            "public.mailings.sent_to",
            "public.orders.doc",
        }

        with pytest.raises(UnmaskedPiiError) as failed:
            enforce(report, "fail")
        message = str(failed.value)
        assert (
            "public.admin_log.object_repr holds the names or e-mail addresses of people of public.people"
            in message
        )
        assert "mask it too, with null, fixed or hash when it is free text" in message
        assert "public.mailings.sent_to holds" not in message  # an e-mail found by its content too

        # without the proofs' phrases, none of these columns is a finding: no detector sees names
        plain = scan_target(
            target,
            masked_columns=[f"public.people.{c}" for c in ("first_name", "last_name", "email", "bio")]
            + ["public.orders.doc"],
            partially_masked={"public.orders.doc": ["email"]},
            allow=[{"column": "public.reviewed.label", "reason": "reviewed by hand"}],
        )
        assert {f.qualified_name for f in plain.unmasked} == {"public.mailings.sent_to"}  # an e-mail


def test_a_proof_without_person_columns_carries_no_phrases():
    item = {"masked_columns": ["token"], "columns": {"token": {"transformer": "hash"}}}
    proof = build_proof(item, SALT, ["id"], [{"id": "1", "token": "Jean Dupont"}])
    assert "phrases" not in proof
    assert CopyIndex.from_results([{"table": "t", "proof": proof}], SALT) is None


def test_names_masked_inside_json_documents_are_looked_for_elsewhere(staging_pg16):
    """pretix keeps an attendee's name only in ``name_parts`` (jsonb, masked by a json rule) and copies
    it into an invoice's address block: the proof's phrases now hold the values at the paths a json
    rule masks as names or e-mail addresses, so the copy is found."""
    item = {
        "schema": "public",
        "name": "orderposition",
        "masked_columns": ["attendee_name_parts"],
        "columns": {
            "attendee_name_parts": {
                "transformer": "json",
                "paths": {"given_name": "first_name", "family_name": "last_name", "_scheme": "null"},
            }
        },
    }
    sample = [
        {
            "id": str(i),
            "attendee_name_parts": json.dumps(
                {"_scheme": "given_family", "given_name": f, "family_name": la}
            ),
        }
        for i, f, la, _ in PEOPLE
    ]
    proof = build_proof(item, SALT, ["id"], sample)
    assert proof["phrases"]["columns"] == ["attendee_name_parts"] and len(proof["phrases"]["names"]) >= 4
    pg = staging_pg16
    with new_database(pg, "copies_json") as name:
        pg.execute(
            "CREATE TABLE orderposition (id int PRIMARY KEY, attendee_name_parts jsonb);"
            "CREATE TABLE invoice (id int PRIMARY KEY, invoice_to text);"
            "INSERT INTO invoice VALUES (1, E'ACME GmbH\\nPhilomena Wrightsonbury\\nHauptstr. 1'),"
            " (2, E'Aurelio Castellamonte\\n12 rue de la Paix\\nParis'), (3, 'Order #12');",
            name,
        )
        target = PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname=name)
        report = scan_target(
            target,
            masked_columns=["public.orderposition.attendee_name_parts"],
            copies=CopyIndex.from_results([{"table": "public.orderposition", "proof": proof}], SALT),
        )
        assert [f.qualified_name for f in report.unmasked] == ["public.invoice.invoice_to"]


def test_a_bare_name_in_a_change_log_is_no_persons_to_look_for():
    """Chatwoot's ``audits.audited_changes`` hold the names of inboxes, teams and macros under ``name``;
    masked as full names by the suggested json rule, they made the gate flag every team's and macro's
    name as copies of people's. A bare ``name`` in a table of changes is masked but not looked for; a
    user's name there, and a ``name`` in any other table's documents, still are."""
    spec = {"transformer": "json", "paths": {"name": "full_name", "user.name": "full_name"}}
    sample = [
        {"id": "1", "doc": json.dumps({"name": "Support Team", "user": {"name": "Philomena Wrightsonbury"}})}
    ]

    def names(table):
        item = {"schema": "public", "name": table, "masked_columns": ["doc"], "columns": {"doc": spec}}
        proof = build_proof(item, SALT, ["id"], sample)
        index = CopyIndex.from_results([{"table": f"public.{table}", "proof": proof}], SALT)
        return {text for text in ("Support Team", "Philomena Wrightsonbury") if index.matches([text])[1]}

    assert names("audits") == names("versions") == {"Philomena Wrightsonbury"}
    assert names("profiles") == {"Support Team", "Philomena Wrightsonbury"}
