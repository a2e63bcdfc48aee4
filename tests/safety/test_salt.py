"""The salt rules: present, >= 32 bytes, >= 16 distinct characters, not a known placeholder -- and no
salt-like example in the repository's docs or YAML files is accepted (so the placeholder list cannot go
stale)."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest

from scalingo_staging_sync.anonymize import salt as saltmod

REPO = Path(__file__).resolve().parents[2]
_SKIP_DIRS = {".git", ".venv", "node_modules", "results", "__pycache__"}

#: how a salt value is written in docs / compose / rules examples
_EXAMPLE_PATTERNS = [
    # ${SCALINGO_STAGING_SYNC_SALT:-fallback} / ${..._SALT-fallback}
    re.compile(r"\$\{[A-Z0-9_]*SALT[A-Z0-9_]*:?-([^}]+)\}"),
    # AIRFLOW_VAR_..._SALT=value, SALT: value, "salt": "value"
    re.compile(r"""(?i)["']?[A-Z0-9_]*salt[A-Z0-9_]*["']?\s*[:=]\s*["']?([^\s"'`,}]+)"""),
    # airflow variables set scalingo_staging_sync_salt value
    re.compile(r"""(?i)variables\s+set\s+\S*salt\S*\s+["']?([^\s"'`]+)"""),
    # --salt value / --salt=value
    re.compile(r"""--salt[= ]["']?([^\s"'`]+)"""),
]


def _repo_files() -> list[Path]:
    out = []
    for path in REPO.rglob("*"):
        if any(part in _SKIP_DIRS for part in path.relative_to(REPO).parts):
            continue
        if path.is_file() and path.suffix in (".md", ".yaml", ".yml") or path.name.endswith(".env.example"):
            out.append(path)
    return out


def _literal(value: str) -> str | None:
    """A literal example value, or None for references and commands ($VAR, $(openssl ...), {{ }})."""
    value = value.strip().strip("\"'`")
    if not value or value.startswith(("$", "{{", "(")) or value in ("null", "~", "true", "false"):
        return None
    if value.startswith("<") and not value.endswith(">"):
        return None  # "<long" of "<long random secret>": the whole phrase is in the list
    return value


def salt_examples() -> list[tuple[str, str]]:
    found = []
    for path in _repo_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            if "salt" not in line.lower():
                continue
            for pattern in _EXAMPLE_PATTERNS:
                for match in pattern.finditer(line):
                    value = _literal(match.group(1))
                    if value:
                        found.append((str(path.relative_to(REPO)), value))
    return found


def test_the_repository_has_salt_examples_to_check():
    # the compose fallback, or at least the README's `airflow variables set` line, is seen by the scan
    assert (REPO / "README.md").is_file()
    files = {str(p.relative_to(REPO)) for p in _repo_files()}
    assert "README.md" in files and "docker-compose.yaml" in files


def test_no_salt_example_in_the_docs_is_accepted():
    accepted = [(where, value) for where, value in salt_examples() if saltmod.salt_problem(value) is None]
    assert not accepted, (
        f"salt-like examples in the docs would be accepted as salts: {accepted}; add them to "
        "scalingo_staging_sync.anonymize.salt.KNOWN_PLACEHOLDERS"
    )


def test_the_scan_finds_compose_style_and_variable_examples(tmp_path, monkeypatch):
    lines = [
        "AIRFLOW_VAR_SCALINGO_STAGING_SYNC_SALT: ${SCALINGO_STAGING_SYNC_SALT:-my-documented-example-salt-0123456789}",
        "export AIRFLOW_VAR_SCALINGO_STAGING_SYNC_SALT=another-example-value-abcdefghijklmnop",
        'airflow variables set scalingo_staging_sync_salt "$(openssl rand -base64 48)"',
        "SALT: ${SCALINGO_STAGING_SYNC_SALT:?set a real salt}",
    ]
    found = []
    for line in lines:
        for pattern in _EXAMPLE_PATTERNS:
            found += [v for m in pattern.finditer(line) if (v := _literal(m.group(1)))]
    assert "my-documented-example-salt-0123456789" in found
    assert "another-example-value-abcdefghijklmnop" in found
    assert not any("openssl" in v for v in found)


def test_compose_placeholder_is_refused_as_a_placeholder():
    problem = saltmod.salt_problem("change-me-to-a-long-random-secret")
    assert problem and "known placeholder" in problem
    # also inside a longer value, and whatever the case
    assert "placeholder" in saltmod.salt_problem("CHANGE-ME-TO-A-LONG-RANDOM-SECRET-xyz0123456789QWERTY")
    with pytest.raises(saltmod.SaltError, match="placeholder.*openssl rand"):
        saltmod.check_salt("change-me-to-a-long-random-secret")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "no anonymization salt"),
        ("", "no anonymization salt"),
        ("   ", "no anonymization salt"),
        ("Ab1!Cd2@Ef3#Gh4$Ij5%Kl6^", "bytes"),  # 24 bytes
        ("ab" * 20, "different characters"),
        ("0123456789abcde" * 3, "different characters"),  # 15 distinct
    ],
)
def test_weak_salts_are_refused_with_the_reason_and_the_fix(value, reason):
    with pytest.raises(saltmod.SaltError) as err:
        saltmod.check_salt(value)
    message = str(err.value)
    assert reason in message and saltmod.SALT_VARIABLE in message
    if value and value.strip():
        assert value not in message  # never echoes the secret


def test_random_salts_pass():
    for _ in range(20):
        value = secrets.token_urlsafe(48)
        assert saltmod.check_salt(value) == value
    # exactly at the limits: 32 bytes, 16 distinct characters
    assert saltmod.salt_problem("0123456789abcdef" * 2) is None
    # multi-byte characters count in bytes
    assert saltmod.salt_problem("é" * 8 + "abcdefghijklmnop") is None
