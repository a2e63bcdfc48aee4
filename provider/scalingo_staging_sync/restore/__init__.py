"""Restore core (no airflow import): dump inspection, pg_restore by section, scratch/in-place targets.

Modules: ``pgtools`` (client tools and versions), ``dump`` (header, integrity, keys, extensions),
``toc`` (``pg_restore -l`` entries, ``-L`` lists), ``copytext`` (pg_restore's COPY text),
``loader`` (the data section with ``COPY ... FREEZE``), ``runner`` (``run_pg_restore``,
``stream_table_copy``), ``targets`` (swap / in_place preparation, promote, cleanup), ``plain``
(plain-SQL dumps through psql), ``api`` (``restore()``: the phases end to end).
"""
