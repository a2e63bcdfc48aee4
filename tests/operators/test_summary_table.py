"""docs/operators.md's summary table names every parameter of each operator, and only those, with the
templated ones (``template_fields``) in italics and no other: read from the operators' real signatures."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "operators.md"


def _rows() -> dict[str, str]:
    rows = {}
    for line in PAGE.read_text().split("## Summary", 1)[1].splitlines():
        match = re.match(r"\| `(\w+)`[^|]*\| ([^|]*) \|", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def _own_params(cls) -> set[str]:
    """The parameters the provider's classes declare (not Airflow's base classes'); an operator that takes
    only ``**kwargs`` declares its template fields."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("scalingo_staging_sync."):
            continue
        if "__init__" in vars(klass):
            names |= set(inspect.signature(klass.__init__).parameters) - {"self", "args", "kwargs"}
    return names or set(cls.template_fields)


def test_every_operator_has_a_row():
    import scalingo_staging_sync.operators as ops

    assert sorted(_rows()) == sorted(ops.__all__)


@pytest.mark.parametrize("name", sorted(_rows()))
def test_row_names_every_parameter_and_marks_the_templated_ones(name):
    import scalingo_staging_sync.operators as ops

    cls = getattr(ops, name)
    cell = _rows()[name]
    same_as = re.match(r"those of `(\w+)`", cell)
    if same_as:  # "those of `PgRestoreOperator` (`section` is `data`)": a subclass taking **kwargs
        other = getattr(ops, same_as.group(1))
        # parameters of its own, after the parent's: each named (templated ones in italics)
        rest = cell[same_as.end() :]
        extra, extra_templated = (
            set(re.findall(r"`(\w+)`", rest)) - {"section", "data"},
            set(re.findall(r"\*`(\w+)`\*", rest)),
        )
        assert issubclass(cls, other) and _own_params(cls) == _own_params(other) | extra
        assert set(cls.template_fields) == set(other.template_fields) | extra_templated
        return
    documented = set(re.findall(r"`(\w+)`", cell))
    italic = set(re.findall(r"\*`(\w+)`\*", cell))
    params = _own_params(cls)
    assert documented == params, (
        f"missing {sorted(params - documented)}, not parameters {sorted(documented - params)}"
    )
    templated = set(cls.template_fields) & params
    assert italic == templated, (
        f"italic but not templated {sorted(italic - templated)}, templated but not italic {sorted(templated - italic)}"
    )
