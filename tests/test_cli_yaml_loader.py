"""The rules files' YAML loader: duplicate keys refused (with both lines), merge keys allowed, and JSON
paths of rules errors mapped back to file lines (what `scalingo-staging-sync validate` prints)."""

from __future__ import annotations

import pytest
import yaml

from scalingo_staging_sync.anonymize.yaml_loader import (
    DuplicateKeyError,
    compose,
    duplicate_keys,
    error_path,
    line_of,
    load_yaml,
    split_path,
)

DOC = """\
source_app: a
anonymization_tables:
  - table: users
    columns:
      email: email
  - table: orders
    columns:
      note: null
      note: {transformer: fixed, value: x}
pii_scan:
  allow:
    - column: public.a.b
      reason: r
"""


def test_duplicates_are_found_at_every_depth_with_both_lines():
    found = duplicate_keys(compose(DOC))
    assert [(d.path, d.line, d.first_line) for d in found] == [("anonymization_tables[1].columns.note", 9, 8)]
    with pytest.raises(DuplicateKeyError, match=r"duplicate key 'note' \(first defined on line 8\)") as err:
        load_yaml(DOC)
    assert isinstance(err.value, yaml.YAMLError) and err.value.problem_mark.line + 1 == 9


def test_top_level_duplicates_and_merge_keys():
    assert [d.line for d in duplicate_keys(compose("a: 1\nb: 2\na: 3\n"))] == [3]
    merged = "base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n"
    assert duplicate_keys(compose(merged)) == []
    assert load_yaml(merged)["other"] == {"x": 1, "y": 2}
    assert load_yaml("") is None and duplicate_keys(compose("")) == []


def test_paths_map_to_lines():
    root = compose(DOC)
    assert split_path("anonymization_tables[1].columns.note") == [
        "anonymization_tables",
        1,
        "columns",
        "note",
    ]
    assert split_path("(top level)") == []
    assert line_of(root, "anonymization_tables[0].columns.email") == 5
    assert line_of(root, "anonymization_tables[1]") == 6
    assert line_of(root, "pii_scan.allow[0]") == 12
    assert line_of(root, "anonymization_tables[0].columns.missing") == 4  # deepest existing node
    assert line_of(root, "anonymization_tables[7]") == 2
    assert line_of(root, "(top level)") == 1
    assert (
        error_path("anonymization_tables[3].columns.emial: unknown option")
        == "anonymization_tables[3].columns.emial"
    )
    assert error_path("(top level): the rules file must be a mapping") == "(top level)"
