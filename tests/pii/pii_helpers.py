"""Shared by the PII tests (tests/pii/): the Chinook customer columns the shipped rules mask. A plain
module (pytest puts tests/pii/ on sys.path for the test modules in it)."""

from __future__ import annotations

#: Chinook's customer columns that carry personal data, as the masked columns of a plan name them
CUSTOMER_MASKED = [
    f"public.customer.{c}"
    for c in (
        "first_name",
        "last_name",
        "company",
        "address",
        "city",
        "country",
        "postal_code",
        "phone",
        "fax",
        "email",
    )
]
