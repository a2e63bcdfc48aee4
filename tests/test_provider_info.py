"""The provider registers with Airflow under its canonical distribution name."""

from __future__ import annotations

from importlib.metadata import distribution, entry_points

from packaging.utils import canonicalize_name

import scalingo_staging_sync


def test_package_name_is_the_canonical_distribution_name():
    info = scalingo_staging_sync.get_provider_info()
    dist = distribution("airflow-provider-scalingo-staging-sync")
    assert info["package-name"] == canonicalize_name(dist.metadata["Name"])
    assert info["versions"][0] == dist.version


def test_entry_point_points_at_get_provider_info():
    eps = [
        ep
        for ep in entry_points(group="apache_airflow_provider")
        if ep.value.startswith("scalingo_staging_sync")
    ]
    assert len(eps) == 1
    assert eps[0].load() is scalingo_staging_sync.get_provider_info


def test_connection_type_declares_ui_fields():
    (conn,) = scalingo_staging_sync.get_provider_info()["connection-types"]
    assert conn["connection-type"] == "scalingo"
    assert set(conn["conn-fields"]) == {"region", "auth_url", "api_url", "db_api_url"}
    assert conn["conn-fields"]["region"]["schema"]["default"] == "osc-fr1"


def test_embedded_servers_answer(staging_pg):
    assert staging_pg.execute("SHOW server_version_num")[0][0].startswith(str(staging_pg.version))
