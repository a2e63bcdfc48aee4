"""The operator examples of the docs use arguments the operators have: every keyword passed to an
operator (or to its `.partial()` / `.expand()`) in a python block of the README or docs/ is a parameter of that
operator or of Airflow's BaseOperator. A renamed or removed argument makes this test name the page."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _operator_params(cls) -> set[str]:
    from airflow.models.baseoperator import BaseOperator

    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names |= set(inspect.signature(klass.__init__).parameters)
        if klass is BaseOperator:
            break
    from airflow.sdk import BaseOperator as SdkBaseOperator

    names |= set(inspect.signature(SdkBaseOperator.__init__).parameters)
    return names - {"self", "args", "kwargs"}


def _calls(code: str, operators: dict):
    """(operator name, keyword) of every call of an operator, its .partial() or its .expand()."""
    for node in ast.walk(ast.parse(code)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = None
        if isinstance(func, ast.Name) and func.id in operators:
            name = func.id
        elif isinstance(func, ast.Attribute) and func.attr in ("partial", "expand"):
            target = func.value
            while isinstance(target, ast.Call) and isinstance(target.func, ast.Attribute):
                target = target.func.value  # X.partial(...).expand(...)
            if isinstance(target, ast.Name) and target.id in operators:
                name = target.id
        if name:
            for kw in node.keywords:
                if kw.arg is not None:
                    yield name, kw.arg


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_operator_keywords_in_docs_exist(page):
    import scalingo_staging_sync.operators as ops

    operators = {name: getattr(ops, name) for name in ops.__all__}
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    problems = []
    for code in blocks:
        for name, keyword in _calls(code, operators):
            if keyword not in _operator_params(operators[name]):
                problems.append(f"{name}({keyword}=...)")
    assert not problems, f"{page.relative_to(REPO)} passes arguments the operators do not have: {problems}"


def test_the_checker_sees_partial_and_expand():
    code = "X.partial(task_id='a', bogus=1).expand(plan=[])\nX(task_id='b')\n"
    assert sorted(_calls(code, {"X": object})) == [
        ("X", "bogus"),
        ("X", "plan"),
        ("X", "task_id"),
        ("X", "task_id"),
    ]
