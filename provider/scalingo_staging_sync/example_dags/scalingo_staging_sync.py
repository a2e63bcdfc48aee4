"""Reference Airflow DAG: refresh a Scalingo staging database from a production backup, anonymized.

Copy this file into your ``dags/`` folder. The wiring is in
:func:`scalingo_staging_sync.example_dags.reference.build_reference_dag`.
"""

from scalingo_staging_sync.example_dags.reference import build_reference_dag

dag = build_reference_dag()
