"""The deployments data store on MongoDB: one store per kind of record, on one database.

Only the modules of this package import pymongo and bson. Each store implements one
Protocol of `services.deployments.store`; `MongoStore` composes them into the `DataStore`
the use-cases are given.
"""

from __future__ import annotations

from services.deployments.store import DataStore
from services.deployments.store.artifacts import MongoArtifactStore
from services.deployments.store.deployments import MongoDeploymentStore
from services.deployments.store.device_deployments import MongoDeviceDeploymentStore
from services.deployments.store.jobs import MongoJobStore
from services.deployments.store.releases import MongoReleaseStore

__all__ = ["MongoStore"]


class MongoStore(
    MongoArtifactStore,
    MongoReleaseStore,
    MongoDeploymentStore,
    MongoDeviceDeploymentStore,
    MongoJobStore,
    DataStore,
):
    """Every deployments store on one database; every query is tenant-scoped.

    The deployment and device deployment stores share one `DeploymentCounters` base, so
    one instance orders the counter transactions of both.
    """
