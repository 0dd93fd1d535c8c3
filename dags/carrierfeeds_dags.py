"""One Airflow DAG per feeds/*.yaml. Thin on purpose: the DAGs are built in carrierfeeds.airflow."""

from carrierfeeds.airflow import build_dags

globals().update(build_dags())
