"""Reference Airflow DAG: refresh a Scalingo staging database from a production backup, anonymized.

Wiring only, in :func:`scalingo_staging_sync.example_dags.reference.build_reference_dag` (shipped with
the package as ``scalingo_staging_sync.example_dags``). Parsing reads no file, opens no connection and
calls no network; it only lists the configured rules folder for the trigger form.
"""

from scalingo_staging_sync.example_dags.reference import build_reference_dag

dag = build_reference_dag()
