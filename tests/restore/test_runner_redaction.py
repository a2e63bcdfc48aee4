"""pg_restore failures raise a RestoreError whose text holds no row: the server's DETAIL (``Failing row
contains (...)``), COPY data lines and the failed command are cut (``pgerrors.redact_server_text``).
Real pg_restore into real PostgreSQL."""

from __future__ import annotations

import pytest

from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.restore.errors import RestoreError
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.restore.runner import run_pg_restore

SECRET = "ottilie.secret-row@prod-only.test"


def test_a_failed_data_load_names_no_value(staging_pg16, tmp_path):
    pg = staging_pg16
    pg.create_database("redact_src")
    pg.create_database("redact_dst")
    try:
        with pg.connect("redact_src") as conn:
            conn.execute("CREATE TABLE contacts (id int PRIMARY KEY, email text)")
            conn.execute("INSERT INTO contacts VALUES (1, %s)", (SECRET,))
            conn.commit()
        dump = pg.pg_dump("redact_src", tmp_path / "src.pgsql")
        # the target's column has another type: the server's primary message quotes the value
        # (invalid input syntax for type integer: "..."), its CONTEXT the COPY line
        pg.execute("CREATE TABLE contacts (id int PRIMARY KEY, email integer)", "redact_dst")
        target = PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname="redact_dst")
        with pytest.raises(RestoreError) as info:
            run_pg_restore(dump, target, section="data", jobs=1, tools=find_pg_tools(str(pg.bin_dir)))
        text = str(info.value)
        assert "contacts" in text and "invalid input syntax for type integer" in text  # what failed
        assert "line 1, column email" in text  # where, without the value
        assert SECRET not in text and "ottilie" not in text
        assert "Failing row" not in text
    finally:
        pg.drop_database("redact_src")
        pg.drop_database("redact_dst")
