"""The archive's inventory and the plan made from it, before the first write to staging.

* :func:`build_inventory` (``inventory.build``): every table, column, hierarchy, key and data-carrying
  entry of an archive, read from the archive alone (TOC + DDL parsed with pglast).
* :func:`plan_from_archive` (``inventory.plan``): the rules checked against that inventory, each
  data-carrying entry classified (masked / excluded / scanned / dropped) and the plan items.
"""

from scalingo_staging_sync.inventory.build import build_inventory
from scalingo_staging_sync.inventory.model import (
    Column,
    DataEntry,
    Inventory,
    InventoryError,
    Table,
    UniqueKey,
)
from scalingo_staging_sync.inventory.plan import ArchivePlan, Classified, classify, plan_from_archive

__all__ = [
    "ArchivePlan",
    "Classified",
    "Column",
    "DataEntry",
    "Inventory",
    "InventoryError",
    "Table",
    "UniqueKey",
    "build_inventory",
    "classify",
    "plan_from_archive",
]
