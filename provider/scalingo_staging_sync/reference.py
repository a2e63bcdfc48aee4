"""Reference text generated from the code itself: the transformer registry, the strategy presets and the
rules JSON Schema. Used by ``scalingo-staging-sync transformers`` and by ``docs/rules.md``, whose
reference section is rewritten with ``python -m scalingo_staging_sync.reference docs/rules.md``, and the
settings table of ``docs/connections-and-configuration.md`` the same way
(``tests/docs/test_rules_reference.py`` fails when a committed page is stale). No Airflow here.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BEGIN_MARKER = "<!-- BEGIN GENERATED REFERENCE: python -m scalingo_staging_sync.reference docs/rules.md -->"
END_MARKER = "<!-- END GENERATED REFERENCE -->"  # see begin_marker() / end_marker() for the other sections


def transformer_guarantees(transformer: Any) -> dict[str, Any]:
    """What a transformer promises, read from its registry attributes (declared on
    :class:`~scalingo_staging_sync.anonymize.transformers.Transformer`; tests/docs/test_transformer_guarantees.py
    runs every built-in transformer's SQL on PostgreSQL and fails when a claim is wrong).

    * ``deterministic``: the same input (and salt) gives the same output, in every table;
    * ``unique``: distinct inputs stay distinct (safe under a UNIQUE index); ``unique_bits``: with how
      many hash bits, when the registry says (default options);
    * ``keeps_null``: NULL stays NULL;
    * ``keeps_empty``: an empty string stays empty on a string column (nothing to mask);
    * ``keeps_length``: the output has the input's length, for every input;
    * ``fits_column``: outputs are cut or sized to ``varchar(n)``; ``min_length`` is the smallest n.
    """
    from scalingo_staging_sync.anonymize.transformers import ColumnInfo, options_text

    if transformer.required_options:  # its length depends on the options (a fixed value's length...)
        need = transformer.min_length
    else:
        need = transformer.required_length(ColumnInfo("column", "text", "text"), {})
    bits = None
    if callable(getattr(transformer, "unique_bits", None)):  # how many hash bits keep values apart
        bits = transformer.unique_bits(None, {})
    return {
        "deterministic": bool(transformer.deterministic),
        "unique_bits": bits,
        "unique": bool(transformer.unique),
        "unique_with": options_text(transformer.unique_options) if transformer.unique_options else None,
        "keeps_null": bool(transformer.keeps_null),
        "keeps_empty": bool(transformer.keeps_empty),
        "keeps_length": bool(transformer.keeps_length),
        "fits_column": True,
        "min_length": int(need or 0),
    }


def unique_label(g: Mapping[str, Any]) -> str:
    """The *unique* column of a transformer's guarantees: ``yes (128 bits)``, ``with unique: true``
    (only with that option), ``no``."""
    if not g["unique"]:
        return "no"
    if g.get("unique_bits"):
        return f"yes ({g['unique_bits']} bits)"
    return f"with {g['unique_with']}" if g.get("unique_with") else "yes"


def _option_text(name: str, schema: Mapping[str, Any], required: bool) -> str:
    kind = schema.get("type") or ("enum" if "enum" in schema else "any")
    if isinstance(kind, list):
        kind = "|".join(kind)
    parts = [kind]
    if "enum" in schema:
        parts = ["|".join(map(str, schema["enum"]))]
    if "minimum" in schema or "maximum" in schema:
        parts.append(f"{schema.get('minimum', '')}..{schema.get('maximum', '')}")
    if "default" in schema:
        parts.append(f"default {json.dumps(schema['default'])}")
    if required:
        parts.append("required")
    return f"`{name}` ({', '.join(parts)})"


def transformers_info() -> list[dict[str, Any]]:
    """Every registered transformer: name, description, accepted column kinds, options, guarantees."""
    from scalingo_staging_sync.anonymize.transformers import all_transformers

    out = []
    for name, t in sorted(all_transformers().items()):
        out.append(
            {
                "name": name,
                "description": t.description,
                "accepts": sorted(t.categories),
                "options": {
                    key: {**schema, "required": key in t.required_options}
                    for key, schema in t.options_schema.items()
                },
                "guarantees": transformer_guarantees(t),
            }
        )
    return out


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def transformers_markdown() -> str:
    rows = [
        "| transformer | output | accepts | options | deterministic | unique | keeps NULL | keeps '' | keeps length | min varchar(n) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for info in transformers_info():
        g = info["guarantees"]
        options = ", ".join(_option_text(k, v, v["required"]) for k, v in info["options"].items()) or "–"
        options = options.replace("|", "\\|")
        desc = info["description"].replace("|", "\\|")
        accepts = "any" if info["accepts"] == ["*"] else ", ".join(info["accepts"])
        rows.append(
            f"| `{info['name']}` | {desc} | {accepts} | {options} | {_yes(g['deterministic'])} | "
            f"{unique_label(g)} | {_yes(g['keeps_null'])} | {_yes(g['keeps_empty'])} | {_yes(g['keeps_length'])} | {g['min_length']} |"
        )
    return "\n".join(rows)


def strategies_markdown() -> str:
    from scalingo_staging_sync.anonymize.strategies import BUILTIN_STRATEGIES

    rows = ["| strategy | what it masks | columns (when present) -> transformer |", "|---|---|---|"]
    for name, preset in sorted(BUILTIN_STRATEGIES.items()):
        cols = []
        for pc in preset.columns:
            spec = dict(pc.spec)
            text = spec.pop("transformer")
            if spec:
                text += " " + json.dumps(spec, sort_keys=True)
            if pc.not_null_fallback:
                text += f" (NOT NULL: {pc.not_null_fallback['transformer']})"
            cols.append(f"`{pc.column}` -> {text}")
        rows.append(f"| `{name}` | {preset.description} | {'; '.join(cols)} |")
    return "\n".join(rows)


def _schema_type(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "oneOf" in schema:
        return " or ".join(_schema_type(s, defs) for s in schema["oneOf"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array" and "items" in schema:
        return f"array of {_schema_type(schema['items'], defs)}"
    return str(kind)


def schema_markdown() -> str:
    from scalingo_staging_sync.anonymize.rules import rules_schema

    schema = rules_schema()
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    rows = ["| key | type | default | required |", "|---|---|---|---|"]

    def add(prefix: str, props: Mapping[str, Any], req: set[str]) -> None:
        for key, sub in props.items():
            default = json.dumps(sub["default"]) if "default" in sub else "–"
            rows.append(f"| `{prefix}{key}` | {_schema_type(sub, defs)} | {default} | {_yes(key in req)} |")
            if sub.get("type") == "object" and "properties" in sub:
                add(f"{prefix}{key}.", sub["properties"], set(sub.get("required", [])))

    add("", schema["properties"], required)
    table_rule = defs.get("table_rule", {})
    if "properties" in table_rule:
        rows.append("")
        rows.append("Each `anonymization_tables` entry:")
        rows.append("")
        rows.append("| key | type | required |")
        rows.append("|---|---|---|")
        for key, sub in table_rule["properties"].items():
            rows.append(
                f"| `{key}` | {_schema_type(sub, defs)} | {_yes(key in table_rule.get('required', []))} |"
            )
    return "\n".join(rows)


def rules_reference_markdown() -> str:
    """The generated part of ``docs/rules.md`` (between the markers)."""
    return "\n".join(
        [
            "### Transformer reference",
            "",
            "Read from the transformer registry (`anonymize/transformers.py`). *deterministic* (the same input",
            "and salt give the same output), *keeps ''* (an empty string stays empty on a string column: it",
            'holds nothing to mask, and an app may read it as "none") and *keeps length* (the output has the',
            "input's length, for every input) are what each transformer declares, checked by running every",
            "built-in's SQL, as the engines wrap it, on PostgreSQL",
            "(`tests/docs/test_transformer_guarantees.py`). Every output is cut or sized to `varchar(n)` and a",
            "column shorter than *min varchar(n)* is rejected at planning time.",
            "",
            transformers_markdown(),
            "",
            "### Strategy reference",
            "",
            "Built-in presets (`anonymize/strategies.py`); a preset masks the listed columns that the table has.",
            "",
            strategies_markdown(),
            "",
            "### Rules file keys",
            "",
            "From the JSON Schema shipped in the package (`scalingo-staging-sync schema` prints it).",
            "",
            schema_markdown(),
        ]
    )


def _markdown_text(text: str) -> str:
    """Plain text made safe in a Markdown table cell: ``|``, ``*``, ``<`` and ``>`` escaped."""
    return re.sub(r"([|*<>])", r"\\\1", text)


def configuration_markdown() -> str:
    """The settings table of ``docs/connections-and-configuration.md``: the provider's Airflow config
    section (``scalingo_staging_sync.config.OPTIONS``)."""
    from scalingo_staging_sync import config

    section = config.SECTION
    rows = [
        f"Set them in `airflow.cfg` under `[{section}]`, as `AIRFLOW__{section.upper()}__<KEY>`, or through",
        "the environment variable of the second column (the older way, still read). A DAG param or the rules",
        "file, when they set the same thing, win.",
        "",
        "| key | environment variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for key, (legacy, default, description) in config.OPTIONS.items():
        env = f"`{legacy}`" if legacy else "–"
        shown = f"`{default}`" if default is not None else "–"
        rows.append(f"| `{key}` | {env} | {shown} | {_markdown_text(description)} |")
    return "\n".join(rows)


#: generated sections: name -> text; a page holds any of them between its markers
SECTIONS = {"REFERENCE": rules_reference_markdown, "CONFIGURATION": configuration_markdown}


def begin_marker(name: str) -> str:
    page = "docs/rules.md" if name == "REFERENCE" else "docs/connections-and-configuration.md"
    return f"<!-- BEGIN GENERATED {name}: python -m scalingo_staging_sync.reference {page} -->"


def end_marker(name: str) -> str:
    return f"<!-- END GENERATED {name} -->"


def render_page(page: str) -> str:
    """``page`` with the text between each pair of markers replaced by the current generated text."""
    found = False
    for name, render in SECTIONS.items():
        begin, end = begin_marker(name), end_marker(name)
        if begin not in page or end not in page:
            continue
        found = True
        head, rest = page.split(begin, 1)
        _old, tail = rest.split(end, 1)
        page = f"{head}{begin}\n{render()}\n{end}{tail}"
    if not found:
        raise ValueError(
            "the page has no generated section: add a pair of lines such as "
            f"{begin_marker('REFERENCE')} and {end_marker('REFERENCE')}"
        )
    return page


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m scalingo_staging_sync.reference PAGE.md", file=sys.stderr)
        return 2
    path = Path(args[0])
    old = path.read_text("utf-8")
    new = render_page(old)
    if new != old:
        path.write_text(new, "utf-8")
        print(f"{path}: reference updated")
    else:
        print(f"{path}: reference already up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
