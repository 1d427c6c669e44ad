"""The schema migration of the zero-downtime mode, run once per upgrade by a pre-upgrade hook Job
(templates/migration-job.yaml) before the pods roll, never in the pods.

What the upstream chart's migration init container runs (mlflow.backendStore.databaseMigration):
MLflow's bounded connection retry, then its table creation and alembic upgrade to the head of the
image's MLflow. Safe to run again: a schema at head is left as it is.

When the database's Service does not resolve there is no database yet: a first install, where Argo
CD runs the hook (a PreSync hook, before every sync) ahead of the Cluster. Nothing to migrate; exit
0, and the servers create the empty schema as MLflow does on its first start.
"""

from __future__ import annotations

import os
import socket
import sys

host, driver = os.environ["PGHOST"], os.environ.get("DATABASE_DRIVER", "psycopg2")
try:
    socket.getaddrinfo(host, None)
except socket.gaierror as error:
    print(f"{host} does not resolve ({error}): no database yet, nothing to migrate", flush=True)
    sys.exit(0)

from mlflow.store.db import utils  # imported only once there is a database to migrate

engine = utils.create_sqlalchemy_engine_with_retry(f"postgresql+{driver}://")
before = utils._get_schema_version(engine)
utils._initialize_tables(engine)
print(f"schema {before or 'empty'} -> {utils._get_schema_version(engine)}", flush=True)
