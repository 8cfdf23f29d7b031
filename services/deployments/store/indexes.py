"""Indexes of the deployments database, created at start-up (idempotent).

Mender keeps one database per tenant; here every index leads with `tenant_id` instead.
Uniqueness rules: an artifact name may not repeat with an overlapping `depends` combination
(`meta_artifact.depends_idx` holds one canonical string per combination), an active
deployment may not repeat its constructor, and a device has at most one live device
deployment per deployment (`slot` is "" while live, the document id once history-deleted).
"""

from __future__ import annotations

from typing import Final

from pymongo import ASCENDING, DESCENDING, IndexModel

from common.core.outbox import OUTBOX_INDEXES

__all__ = [
    "ARTIFACTS",
    "DEPLOYMENTS",
    "DEPLOYMENT_STATS",
    "DEVICE_DEPLOYMENTS",
    "INDEXES",
    "JOBS",
    "LAST_STATUS",
    "LIMITS",
    "LOGS",
    "RELEASES",
    "SETTINGS",
    "STATS_BY_STATUS",
    "UPLOADS",
]

ARTIFACTS: Final = "images"
DEPLOYMENTS: Final = "deployments"
# Hot counters of a deployment, apart from its (large, multikey-indexed) device list so that
# the frequent `$inc`s touch a small document with no array index.
DEPLOYMENT_STATS: Final = "deployment_stats"
DEVICE_DEPLOYMENTS: Final = "devices"
LOGS: Final = "devices.logs"
LAST_STATUS: Final = "devices_last_status"
RELEASES: Final = "releases"
LIMITS: Final = "limits"
SETTINGS: Final = "settings"
UPLOADS: Final = "uploads"
JOBS: Final = "generate_jobs"
# Named leases on periodic work that one replica at a time does (the storage sweep).
LOCKS: Final = "locks"
# The unfinished deployments of every tenant (recounted at start-up). Queries spanning
# tenants name their index: the embedded server's planner only picks one by itself for
# equality on the tenant.
STATS_BY_STATUS: Final = "status_tenant_id"

_T: Final = ("tenant_id", ASCENDING)
# Every lookup by id also names the tenant; this index serves that pair directly. The
# embedded server's planner only picks an index covering every condition of a query, so the
# compare-and-set lookups (`_id` plus a state field) get their own indexes too.
_BY_ID: Final = IndexModel([_T, ("_id", ASCENDING)], name="tenant_id")


def _by_id_and(field: str) -> IndexModel:
    return IndexModel([_T, ("_id", ASCENDING), (field, ASCENDING)], name=f"tenant_id_{field}")


INDEXES: Final[dict[str, list[IndexModel]]] = {
    ARTIFACTS: [
        _BY_ID,
        IndexModel(
            [_T, ("meta_artifact.name", ASCENDING), ("meta_artifact.depends_idx", ASCENDING)],
            unique=True,
            name="artifactNameDepends",
        ),
        IndexModel([_T, ("meta_artifact.device_types_compatible", ASCENDING)]),
        IndexModel([_T, ("meta.description", ASCENDING)]),
        IndexModel(
            [_T, ("meta_artifact.provides_idx.key", ASCENDING)],
            name="artifact_provides",
        ),
        IndexModel([_T, ("modified", ASCENDING)]),
    ],
    DEPLOYMENTS: [
        _BY_ID,
        _by_id_and("status"),
        IndexModel([_T, ("created", DESCENDING)], name="deploymentCreated"),
        IndexModel([_T, ("search_tokens", ASCENDING)], name="deploymentSearch"),
        IndexModel([_T, ("name", ASCENDING), ("created", ASCENDING)], name="deployment_name"),
        IndexModel([_T, ("artifact_name", ASCENDING), ("active", ASCENDING)]),
        IndexModel([_T, ("artifacts", ASCENDING), ("active", ASCENDING)]),
        # The device lists of a tenant's active deployments (the idle-poll snapshot).
        IndexModel([_T, ("active", ASCENDING)], name="tenant_id_active"),
        # The `next` lookup: active deployments listing a device, oldest first.
        IndexModel(
            [_T, ("device_list", ASCENDING), ("created", ASCENDING)],
            name="active_device_list_created",
            partialFilterExpression={"active": True},
        ),
        IndexModel(
            [_T, ("constructor_checksum", ASCENDING)],
            name="deployment_constructor_checksum",
            unique=True,
            partialFilterExpression={"active": True},
        ),
    ],
    DEPLOYMENT_STATS: [
        _BY_ID,
        _by_id_and("room"),
        _by_id_and("status"),
        IndexModel([("status", ASCENDING), _T], name=STATS_BY_STATUS),
    ],
    DEVICE_DEPLOYMENTS: [
        _BY_ID,
        _by_id_and("status"),
        IndexModel(
            [_T, ("deviceid", ASCENDING), ("status", ASCENDING), ("created", ASCENDING)],
            name="deviceIdWithStatusByCreated",
        ),
        IndexModel(
            [_T, ("deploymentid", ASCENDING), ("deviceid", ASCENDING), ("slot", ASCENDING)],
            name="devicesDeploymentId",
            unique=True,
        ),
        IndexModel(
            [_T, ("deploymentid", ASCENDING), ("status", ASCENDING), ("deviceid", ASCENDING)],
            name="deploymentid_status_deviceid",
        ),
        IndexModel(
            [_T, ("active", ASCENDING), ("deviceid", ASCENDING), ("created", ASCENDING)],
            name="active_deviceid_created",
        ),
    ],
    LOGS: [
        IndexModel(
            [_T, ("deploymentid", ASCENDING), ("deviceid", ASCENDING)],
            name="devices_logs",
            unique=True,
        )
    ],
    LAST_STATUS: [IndexModel([_T, ("device_id", ASCENDING)], unique=True)],
    RELEASES: [
        IndexModel([_T, ("name", ASCENDING)], unique=True, name="release_name"),
        IndexModel([_T, ("name", ASCENDING), ("artifacts.id", ASCENDING)]),
        IndexModel([_T, ("tags", ASCENDING)], name="release_tags"),
        IndexModel([_T, ("modified", ASCENDING)]),
        IndexModel([_T, ("artifacts_count", ASCENDING)], name="release_artifacts_count"),
        IndexModel([_T, ("artifacts.update_types", ASCENDING)], name="release_update_types"),
    ],
    LIMITS: [IndexModel([_T, ("name", ASCENDING)], unique=True)],
    SETTINGS: [IndexModel([_T], unique=True)],
    UPLOADS: [
        _BY_ID,
        _by_id_and("state"),
        IndexModel([_T, ("key", ASCENDING)], unique=True),
        IndexModel([_T, ("state", ASCENDING)]),
    ],
    JOBS: [_BY_ID, IndexModel([_T, ("state", ASCENDING)])],
    LOCKS: [_BY_ID],
    **OUTBOX_INDEXES,
}
