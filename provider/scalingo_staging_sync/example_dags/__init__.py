"""The reference DAG, shipped with the package.

Use it without cloning the repository: copy ``scalingo_staging_sync.py`` of this folder (it is two
lines calling :func:`~scalingo_staging_sync.example_dags.reference.build_reference_dag`) into your
``dags/`` folder, or ``scalingo-staging-sync init DIR``. ``rules.example.yaml`` is a starter rules file.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
REFERENCE_DAG_FILE = FOLDER / "scalingo_staging_sync.py"
EXAMPLE_RULES_FILE = FOLDER / "rules.example.yaml"
