"""Copies of names: what the separator-split word runs cost the PII scan, per sampled value.

Since 2026-12-05 the scan looks for the masked people's names in the words of every sampled value split
at any separator (a slug "jean-dupont", a file name "cv_jean_dupont.pdf"), in runs of up to six words
of the numbers of words of the names looked for, up to six (``fingerprint.text_phrases``), where it
split at white space only and looked at runs of two to four words.
This times both on the same values, side by side in one process (the earlier form is reproduced here
as it was), each phrase hashed as ``CopyIndex.matches`` hashes it, and prints the CPU time per value
and how many phrases each hashed.

    PYTHONPATH=provider .venv/bin/python benchmarks/phrases_bench.py [--values 50000] [--repeat 5]

The values mix what a scan samples in an application's text columns: JSON documents (an analytics
event, an audit trail), YAML (PaperTrail's ``object``), free text with names and e-mail addresses,
user agents, URLs with slugs and file names. The index holds 400 names, as a masking proof of a
table of people does.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import zlib
from collections.abc import Container

from scalingo_staging_sync.fingerprint import first_word_tag, phrase_hash, run_lengths, text_phrases

FIRST = ["jean", "marie", "pierre", "sophie", "lucas", "emma", "hugo", "léa", "thomas", "chloé"]
LAST = ["dupont", "martin", "bernard", "petit", "durand", "leroy", "moreau", "simon", "laurent", "lefèvre"]
_PUNCTUATION = "<>()[]{}\"'`,;:!?*«»“”‘’„"


def _earlier(text: str, firsts: Container[int] | None, key: bytes) -> list[tuple[str, bool]]:
    """``text_phrases`` as it was before 2026-12-05: words split at white space, runs of two to four."""
    import re

    email_re = re.compile(r"[^\s@<>()\[\]{}\"',;:]+@[^\s@<>()\[\]{}\"',;:]+\.[^\s@<>()\[\]{}\"',;:.]+")
    lowered = text.casefold()
    out = [(m, True) for m in email_re.findall(lowered)] if "@" in lowered else []
    ws = []
    for raw in lowered.split():
        word = raw.strip(_PUNCTUATION).rstrip(".")
        if word:
            ws.append(word)
    seed = int.from_bytes(key[:4], "big")
    for i in range(len(ws) - 1):
        if firsts is not None and (zlib.crc32(ws[i].encode("utf-8"), seed) & 0xFFFF) not in firsts:
            continue
        out += [(" ".join(ws[i : i + n]), False) for n in range(2, 5) if i + n <= len(ws)]
    return out


def sample_values(count: int, rnd: random.Random) -> list[str]:
    values = []
    for i in range(count):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        kind = i % 5
        if kind == 0:
            values.append(json.dumps({"name": "$view", "url": f"https://shop.example/users/{first}-{last}-{i}",
                                      "query": f"{first.title()} {last.title()}", "n": i}))  # fmt: skip
        elif kind == 1:
            values.append(f"---\nid: {i}\nemail: {first}.{last}{i}@mail.example\nfirst_name: {first.title()}\n"
                          f"updated_at: 2026-11-0{i % 9 + 1} 10:00:00.000000 Z\n")  # fmt: skip
        elif kind == 2:
            values.append(f"Merci {first.title()} {last.title()}, votre commande R{i:09d} est partie. "
                          "Écrivez-nous à support@shop.example si besoin.")  # fmt: skip
        elif kind == 3:
            values.append(
                f"Mozilla/5.0 (X11; Linux x86_64; rv:1{i % 30}.0) Gecko/20100101 Firefox/1{i % 30}.0"
            )
        else:
            values.append(f"uploads/{i % 97}/cv-{first}-{last}-{i}.pdf")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--values", type=int, default=50000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rnd = random.Random(5)
    key = bytes(range(32))
    names = [f"{rnd.choice(FIRST)} {rnd.choice(LAST)}" for _ in range(400)]
    firsts = {first_word_tag(key, n.split(" ", 1)[0]) for n in names}
    sizes = run_lengths(n.count(" ") + 1 for n in names)  # as CopyIndex.matches passes them
    values = sample_values(args.values, rnd)
    forms = {
        "earlier (white space, 2-4 words)": _earlier,
        "shipped (any separator, the names' lengths)": lambda v, f, k: text_phrases(v, f, k, sizes),
    }
    times: dict[str, list[float]] = {name: [] for name in forms}
    found: dict[str, int] = {}
    for _ in range(args.repeat):
        for name, func in forms.items():  # alternated within each round
            started = time.process_time()
            found[name] = sum(
                1 for v in values for phrase, _ in func(v, firsts, key) if phrase_hash(key, phrase)
            )
            times[name].append(time.process_time() - started)
    base = statistics.median(times[next(iter(forms))])
    for name in forms:
        median = statistics.median(times[name])
        print(
            f"{name:<44} {median * 1e6 / len(values):6.2f} us per value  x{median / base:.2f}  "
            f"{found[name]} phrases hashed"
        )


if __name__ == "__main__":
    main()
