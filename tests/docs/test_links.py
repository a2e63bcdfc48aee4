"""Link checker over README.md, CHANGELOG.md and docs/ (no network): every relative link points to a file
that exists, every #anchor to a heading of its page (GitHub's slugs), and every test a page names
(`tests/x.py::test_name`) and every repository path it quotes exist."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted([REPO / "README.md", REPO / "CHANGELOG.md", *(REPO / "docs").glob("*.md")])

LINK_RE = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE_RE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def prose(text: str) -> str:
    """The page without fenced code blocks and inline code (links there are not links)."""
    text = FENCE_RE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces to dashes."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE_RE.sub("", path.read_text()), re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def links(path: Path) -> list[str]:
    return LINK_RE.findall(prose(path.read_text()))


def test_slugs_follow_github():
    assert slug("Which hash") == "which-hash"
    assert slug("`scalingo_default` (type `scalingo`)") == "scalingo_default-type-scalingo"
    assert slug("1. Staging never holds unmasked production data after a run") == (
        "1-staging-never-holds-unmasked-production-data-after-a-run"
    )


def test_every_page_is_checked_and_linked_from_the_readme():
    readme_targets = {urlparse(t).path for t in links(REPO / "README.md")}
    for page in PAGES:
        if page.parent.name == "docs":
            assert f"docs/{page.name}" in readme_targets, f"{page.name} is not linked from the README"


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_relative_links_and_anchors_resolve(page):
    problems = []
    for target in links(page):
        url = urlparse(target)
        if url.scheme in ("http", "https", "mailto"):
            assert url.netloc or url.scheme == "mailto", target
            continue
        assert not url.scheme, f"{page.name}: unexpected link scheme in {target}"
        dest = (page.parent / unquote(url.path)).resolve() if url.path else page
        if not dest.exists():
            problems.append(
                f"{target}: {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest} does not exist"
            )
            continue
        if url.fragment and dest.suffix == ".md" and url.fragment not in anchors(dest):
            problems.append(f"{target}: no heading #{url.fragment} in {dest.name}")
    assert not problems, f"{page.relative_to(REPO)}:\n" + "\n".join(problems)


TEST_REF_RE = re.compile(r"(tests/[\w/]+\.py)::(test_\w+)")
PATH_RE = re.compile(r"`((?:benchmarks|config|dags|docs|tests|provider)/[\w./-]+)`")


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_named_tests_and_paths_exist(page):
    text = page.read_text()
    problems = []
    for path, name in TEST_REF_RE.findall(text):
        file = REPO / path
        if not file.is_file():
            problems.append(f"{path} does not exist")
        elif not re.search(rf"^(?:async )?def {name}\(", file.read_text(), re.M):
            problems.append(f"{path} has no {name}")
    for path in PATH_RE.findall(text):
        if any(ch in path for ch in "<>*"):
            continue
        if not (REPO / path).exists():
            problems.append(f"{path} does not exist")
    assert not problems, f"{page.relative_to(REPO)}:\n" + "\n".join(problems)


def test_the_link_checker_catches_broken_links(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n")
    page.write_text(
        "[ok](other.md#a-section) [bad anchor](other.md#nope) [missing](gone.md) `[code](x.md)`\n"
        "```\n[in code](also-gone.md)\n```\n"
    )
    found = links(page)
    assert found == ["other.md#a-section", "other.md#nope", "gone.md"]
    assert "a-section" in anchors(tmp_path / "other.md") and "nope" not in anchors(tmp_path / "other.md")


BLOCK_RE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_code_blocks_are_balanced_and_parse(page):
    """Fences pair up; python blocks compile, json blocks load, yaml blocks load without duplicate keys
    (and the rules examples validate)."""
    import json

    from scalingo_staging_sync.anonymize.rules import validate_rules_dict
    from scalingo_staging_sync.anonymize.yaml_loader import load_yaml

    text = page.read_text()
    fences = re.findall(r"^ *```", text, re.M)
    assert len(fences) % 2 == 0, f"{page.name}: unbalanced ``` fences"
    for indent, lang, body in BLOCK_RE.findall(text):
        body = "\n".join(line[len(indent) :] for line in body.splitlines())
        if lang == "python":
            compile(body, f"{page.name} example", "exec")
        elif lang == "json":
            json.loads(body)
        elif lang == "yaml":
            data = load_yaml(body)
            if isinstance(data, dict) and "source_app" in data:
                validate_rules_dict(data)
