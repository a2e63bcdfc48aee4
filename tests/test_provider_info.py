"""The provider registers with Airflow under its canonical distribution name."""

from __future__ import annotations

from importlib.metadata import distribution, entry_points
from pathlib import Path

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


def test_every_data_file_of_the_package_is_in_its_package_data():
    """A file the package reads at run time but the wheel leaves out (the sandbox's Chinook dump, its
    rules) works from the checkout only: each non-Python file under the package must match a
    ``[tool.setuptools.package-data]`` pattern."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = root / "provider" / "scalingo_staging_sync"
    shipped = {p for pattern in patterns["scalingo_staging_sync"] for p in package.glob(pattern)}
    data = {
        p
        for p in package.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    assert data, "no data file found: the test looks in the wrong place"
    assert not sorted(str(p.relative_to(package)) for p in data - shipped)


def test_the_packaged_chinook_rules_are_the_checkouts():
    """The sandbox's rules when no checkout is around: a copy of config/anonymization.yaml."""
    from scalingo_staging_sync.testing.sandbox import PACKAGED_RULES_FILE

    root = Path(__file__).resolve().parents[1]
    assert PACKAGED_RULES_FILE.read_bytes() == (root / "config" / "anonymization.yaml").read_bytes()
