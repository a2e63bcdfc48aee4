"""Keyed fingerprints of original values, for residual-value proofs without storing PII.

The anonymizer records ``fingerprint(salt, original)`` for a sample of rows; the verifier recomputes
it on the values found after masking. Equal fingerprints at the same key mean the original survived.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import zlib
from collections.abc import Container, Iterable, Sequence

ALGORITHM = "hmac-sha256/128"
#: the session's text output styles when fingerprinted values are read (those pg_dump sets, so an
#: archive's text of a value is what the server prints; TimeZone that of Scalingo's servers and of the
#: masking sessions), whatever the staging role or server sets
TEXT_STYLES = {"DateStyle": "ISO", "IntervalStyle": "postgres", "extra_float_digits": "3", "TimeZone": "UTC"}


def fingerprint(salt: str, value: str) -> str:
    """Hex HMAC-SHA256 of ``value`` (its PostgreSQL text form) under ``salt``, truncated to 128 bits."""
    return hmac.new(salt.encode("utf-8"), value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


# --------------------------------------------------------------------------------------------------
# Copies of masked values elsewhere: phrases of the sampled originals
#
# The proof of a masked table also carries keyed hashes of *phrases* of its sampled originals: each
# e-mail address, each name of two to four words, and each pair of one-word names of one row in both
# orders ("jean dupont", "dupont jean"), lower-cased, with the punctuation around words removed. The
# PII scan hashes the word sequences of the columns it samples with the same key: a match is an
# original of a masked column copied into a column no rule masks (Django's admin log keeps
# "Jean Dupont" in object_repr, an audit trail or a note names the customer). Hashes only: no value
# leaves the database in the clear.

PHRASE_ALGORITHM = "blake2b-64/phrases-v2"
#: transformers whose originals identify a person and are compared elsewhere
PHRASE_TRANSFORMERS = frozenset({"email", "first_name", "last_name", "full_name"})
MAX_PHRASE_WORDS = 4
_PUNCTUATION = "<>()[]{}\"'`,;:!?*«»“”‘’„"
_EMAIL_RE = re.compile(r"[^\s@<>()\[\]{}\"',;:]+@[^\s@<>()\[\]{}\"',;:]+\.[^\s@<>()\[\]{}\"',;:.]+")


def phrase_key(salt: str) -> bytes:
    """The key of phrase hashes, derived from the salt (blake2b keys are at most 64 bytes)."""
    return hashlib.sha256(b"scalingo-staging-sync phrases|" + salt.encode("utf-8")).digest()


def phrase_hash(key: bytes, phrase: str) -> str:
    return hashlib.blake2b(phrase.encode("utf-8"), key=key, digest_size=8).hexdigest()


def words(text: str) -> list[str]:
    """Lower-cased words of ``text``, split on white space, the punctuation around each removed."""
    out = []
    for raw in text.casefold().split():
        word = raw.strip(_PUNCTUATION).rstrip(".")
        if word:
            out.append(word)
    return out


def _is_email(word: str) -> bool:
    local, _, domain = word.partition("@")
    return bool(local) and "." in domain and len(word) >= 6


#: the longest run of words looked up: a name of four words is up to six once its hyphens split it
#: ("marie-claire de saint-exupéry")
MAX_SPLIT_WORDS = 6
_SIZES = list(range(2, MAX_SPLIT_WORDS + 1))
#: what separates the words of a slug, a handle, a file name or a URL ("jean-dupont", "@jean_dupont",
#: "cv-jean-dupont.pdf", "/users/jean.dupont")
_SLUG_SPLIT = re.compile(r"[\W_]+")


#: letters NFKD does not decompose, written in ASCII as Rails' ``parameterize`` and Django's
#: ``slugify`` (with unidecode) write them
_FOLDED = str.maketrans({"ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "æ": "ae", "œ": "oe", "ı": "i"})


def _ascii_folded(text: str) -> str:
    """``text`` (lower-cased) without its accents ("hélène dupré" -> "helene dupre", "łukasiewicz" ->
    "lukasiewicz"), as a slug writes it."""
    import unicodedata

    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLDED))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def name_forms(phrase: str) -> set[str]:
    """A name phrase (lower-cased words joined by spaces) and the forms a slug, a handle or a file
    name gives it: words split at hyphens, dots and underscores ("jean-pierre dupont" -> "jean pierre
    dupont"), accents removed ("hélène dupré" -> "helene dupre")."""
    split = " ".join(w for w in _SLUG_SPLIT.split(phrase) if w)
    return {form for p in (phrase, split) for form in (p, _ascii_folded(p)) if form}


def row_phrases(values: list[str]) -> tuple[set[str], set[str]]:
    """(e-mails, names) of one sampled row's originals (the values of its person columns); each name
    also in its :func:`name_forms`."""
    emails: set[str] = set()
    names: set[str] = set()
    single: list[str] = []
    for value in values:
        ws = words(value)
        if len(ws) == 1 and _is_email(ws[0]):
            emails.update(_EMAIL_RE.findall(ws[0]))
        elif len(ws) == 1 and any(ch.isalpha() for ch in ws[0]) and "@" not in ws[0]:
            single.append(ws[0])
        elif 2 <= len(ws) <= MAX_PHRASE_WORDS and any(ch.isalpha() for w in ws for ch in w):
            names.add(" ".join(ws))
    single = list(dict.fromkeys(single))[:4]
    for a in single:
        for b in single:
            if a != b:
                names.add(f"{a} {b}")
    return emails, {form for n in names if len(n) >= 5 for form in name_forms(n)}


def first_word_tag(key: bytes, word: str) -> int:
    """16 bits of a cheap keyed checksum of a word: the scan hashes the runs of words that start with
    a word whose tag is one of the names' first words' (about 1 in 160 words for 400 names), instead
    of every run. 16 bits tell nothing of a word without the key, and little with it."""
    return zlib.crc32(word.encode("utf-8"), int.from_bytes(key[:4], "big")) & 0xFFFF


def run_lengths(lengths: Iterable[int] | None) -> list[int] | None:
    """The numbers of words of the names looked for that a run can have (two to
    :data:`MAX_SPLIT_WORDS`), sorted; None stays None (every length)."""
    return None if lengths is None else sorted({n for n in lengths if 2 <= n <= MAX_SPLIT_WORDS})


def text_phrases(
    text: str, firsts: Container[int] | None = None, key: bytes = b"", lengths: Sequence[int] | None = None
) -> list[tuple[str, bool]]:
    """The phrases of a sampled value that a masked original could be: ``(phrase, is_email)`` for
    each e-mail address and each run of two to :data:`MAX_SPLIT_WORDS` words, the words split at any
    separator (white space, punctuation, a slug's "jean-dupont", a file name's "cv_jean_dupont.pdf");
    with ``firsts``, only the runs whose first word's :func:`first_word_tag` under ``key`` is in it;
    with ``lengths`` (:func:`run_lengths`), only runs of those numbers of words (the names')."""
    lowered = text.casefold()
    out = [(m, True) for m in _EMAIL_RE.findall(lowered)] if "@" in lowered else []
    seq = [w for w in _SLUG_SPLIT.split(lowered) if w]
    sizes = _SIZES if lengths is None else lengths
    seed = int.from_bytes(key[:4], "big")  # first_word_tag, inlined: this loop sees every word sampled
    crc32 = zlib.crc32
    for i in range(len(seq) - 1):
        if firsts is not None and (crc32(seq[i].encode("utf-8"), seed) & 0xFFFF) not in firsts:
            continue
        out += [(" ".join(seq[i : i + n]), False) for n in sizes if i + n <= len(seq)]
    return out
