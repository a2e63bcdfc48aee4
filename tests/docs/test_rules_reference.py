"""docs/rules.md stays true: its generated reference matches the registry and the schema (regenerate with
`python -m scalingo_staging_sync.reference docs/rules.md`), its hand-written settings table names exactly
the schema's keys, and the benchmark commands the docs quote use options the scripts have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scalingo_staging_sync.anonymize.rules import rules_schema
from scalingo_staging_sync.anonymize.strategies import BUILTIN_STRATEGIES
from scalingo_staging_sync.anonymize.transformers import all_transformers
from scalingo_staging_sync.reference import (
    BEGIN_MARKER,
    END_MARKER,
    configuration_markdown,
    main,
    render_page,
    rules_reference_markdown,
)

REPO = Path(__file__).resolve().parents[2]
RULES_PAGE = REPO / "docs" / "rules.md"


CONFIG_PAGE = REPO / "docs" / "connections-and-configuration.md"


@pytest.mark.parametrize("page", [RULES_PAGE, CONFIG_PAGE], ids=lambda p: p.name)
def test_generated_sections_are_fresh(page):
    text = page.read_text()
    assert render_page(text) == text, (
        f"docs/{page.name} is stale: run `python -m scalingo_staging_sync.reference docs/{page.name}` and commit it"
    )


def test_configuration_table_names_variables_the_code_reads():
    code = "\n".join(
        p.read_text() for p in [*(REPO / "provider").rglob("*.py"), *(REPO / "dags").rglob("*.py")]
    )
    code = code.replace((REPO / "provider/scalingo_staging_sync/reference.py").read_text(), "")
    for name in re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", configuration_markdown(), re.M) + re.findall(
        r"\| `(SCALINGO_STAGING_SYNC_[A-Z_]+)` \|", configuration_markdown()
    ):
        assert f'"{name}"' in code, f"{name} is documented but no code reads it"


def test_reference_covers_every_transformer_strategy_and_key():
    reference = rules_reference_markdown()
    for name in all_transformers():
        assert f"| `{name}` |" in reference
    for name in BUILTIN_STRATEGIES:
        assert f"| `{name}` |" in reference
    for key in rules_schema()["properties"]:
        assert f"| `{key}` |" in reference


def test_staleness_is_detected_and_fixed_by_the_script(tmp_path):
    page = tmp_path / "rules.md"
    page.write_text(f"# Rules\n\n{BEGIN_MARKER}\n| `old` | table |\n{END_MARKER}\n\nAfter.\n")
    assert render_page(page.read_text()) != page.read_text()
    assert main([str(page)]) == 0
    text = page.read_text()
    assert render_page(text) == text and "| `old` |" not in text and text.endswith("After.\n")
    with pytest.raises(ValueError, match="no generated section"):
        render_page("# no markers\n")


def test_settings_table_names_exactly_the_schema_keys():
    section = RULES_PAGE.read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    named = set()
    for row in re.findall(r"^\| (`[^|]+)\|", section, re.M):
        named |= set(re.findall(r"`([a-z_]+)`", row))
    assert named == set(rules_schema()["properties"])


BENCH_RE = re.compile(r"benchmarks/(\w+\.py)((?: --?[\w-]+(?: [\w.]+)?| \[--[\w-]+\])*)")


def test_benchmark_commands_in_the_docs_use_real_options():
    seen = 0
    for page in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        for script, args in BENCH_RE.findall(page.read_text()):
            source = (REPO / "benchmarks" / script).read_text()
            for option in re.findall(r"--[\w-]+", args):
                assert f'"{option}"' in source, f"{page.name}: benchmarks/{script} has no {option}"
            seen += 1
    assert seen >= 4
