# Airflow 3.3 image with this provider and PostgreSQL 17 client tools (pg_restore >= the dump's server).
ARG AIRFLOW_VERSION=3.3.2
FROM apache/airflow:${AIRFLOW_VERSION}-python3.11

USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && install -d /usr/share/postgresql-common/pgdg \
 && curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc \
 && . /etc/os-release \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-17 \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

USER airflow
COPY --chown=airflow:0 pyproject.toml README.md /opt/scalingo-staging-sync/
COPY --chown=airflow:0 provider /opt/scalingo-staging-sync/provider
ARG AIRFLOW_VERSION
# [stream]: DuckDB and pyarrow, the stream masking engine (masking_engine auto uses it)
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" "/opt/scalingo-staging-sync[stream]"
