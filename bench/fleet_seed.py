"""A large fleet seeded directly, for the fleet benchmark (`fleet_bench.py --devices N`).

Enrolling 100,000 devices through the API takes hours on a small machine, so the devices
beyond those the benchmark enrolls and drives are written in bulk, 1,000 per `insert_many`:

- in deviceauth, an accepted device and its accepted auth set each, laid out by
  deviceauth's own store (`services.deviceauth.store.mongo`);
- in inventory, the first seeded device is written through inventory's internal API as
  deviceauth's outbox provisions a device (its identity, plus the 15 inventory attributes a
  device reports, and the status `accepted`); every other seeded device is a copy of that
  document with its own id, attribute values and search keywords (inventory's
  own `keywords`), since writing each through the API costs the embedded database tens of
  milliseconds.

Seeded devices hold an Ed25519 key each, or, for the RSA share, one of a pool of RSA-2048
public keys (they never authenticate, so their keys are only stored, not used).
"""

from __future__ import annotations

import copy
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
from devices import device_key, identity_of
from fleet_load import inventory_attributes
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from common.core.mongo import TenantCollection
from services.deviceauth.app.iddata import canonical_identity, identity_key
from services.deviceauth.models import AuthSet, AuthStatus, Device, DeviceStatus
from services.deviceauth.store.indexes import AUTH_SETS, DEVICES
from services.deviceauth.store.mongo import _auth_set_doc, _device_doc
from services.inventory.store.documents import attribute_key, keywords
from services.inventory.store.indexes import DEVICES as INVENTORY_DEVICES
from tests.toolkit.devices import public_key_pem

_BATCH: Final = 1000
_RSA_POOL: Final = 64
_INVENTORY: Final = "/api/internal/v1/inventory/tenants/"


def _inventory_report(index: int) -> list[dict[str, str]]:
    """A seeded device's inventory: its identity and what it would report."""
    mac = identity_of(index)["mac"]
    reported = inventory_attributes(index)
    return [{"name": "mac", "value": mac, "scope": "identity"}] + [
        {"name": k, "value": v, "scope": "inventory"} for k, v in reported.items()
    ]


def _records(indices: range, rsa_share: float) -> tuple[list[Any], list[Any]]:
    """deviceauth's documents of the seeded devices: (devices, auth sets)."""
    rsa_every = round(1 / rsa_share) if rsa_share > 0 else 0
    pool = [public_key_pem(device_key("rsa")) for _ in range(_RSA_POOL if rsa_every else 0)]
    now = datetime.now(UTC)
    devices, auth_sets = [], []
    for index in indices:
        id_data = canonical_identity(identity_of(index))
        sha = identity_key(id_data)
        device_id = str(uuid.uuid4())
        if rsa_every and index % rsa_every == 0:
            pubkey = pool[index % len(pool)]
        else:
            pubkey = public_key_pem(device_key("ed25519"))
        device = Device(
            id=device_id,
            id_data=id_data,
            id_data_sha256=sha,
            status=DeviceStatus.ACCEPTED,
            created_ts=now,
            updated_ts=now,
            provisioned=True,
            revision=2,
        )
        auth_set = AuthSet(
            id=str(uuid.uuid4()),
            device_id=device_id,
            id_data=id_data,
            id_data_sha256=sha,
            pubkey=pubkey,
            status=AuthStatus.ACCEPTED,
            ts=now,
        )
        devices.append(_device_doc(device))
        auth_sets.append(_auth_set_doc(auth_set))
    return devices, auth_sets


def _inventory_copy(template: dict[str, Any], device_id: str, index: int) -> dict[str, Any]:
    """The template's inventory document made device `index`'s: its id, values, keywords."""
    doc = copy.deepcopy(template)
    doc["_id"] = device_id
    attributes = doc["attributes"]
    for attribute in _inventory_report(index):
        attributes[attribute_key(attribute["scope"], attribute["name"])]["value"] = attribute[
            "value"
        ]
    doc["text"] = keywords(device_id, attributes)
    return doc


async def _seed_inventory(
    db: AsyncDatabase[dict[str, Any]], inventory_url: str, devices: list[Any], indices: range
) -> None:
    """The first device through inventory's internal API, the others copied from it."""
    first = devices[0]["_id"]
    async with aiohttp.ClientSession() as http:
        url = f"{inventory_url}{_INVENTORY}/device/{first}/attributes"
        async with http.patch(url, json=_inventory_report(indices[0])) as response:
            if response.status != 200:
                raise RuntimeError(f"inventory answered {response.status}")
        url = f"{inventory_url}{_INVENTORY}/devices/status/accepted"
        async with http.post(url, json=[{"id": first, "revision": 2}]) as response:
            if response.status != 200:
                raise RuntimeError(f"inventory statuses answered {response.status}")
    collection = db[INVENTORY_DEVICES]
    template = await collection.find_one({"_id": first})
    if template is None:
        raise RuntimeError("inventory did not store the first seeded device")
    pairs = list(zip(indices, devices, strict=True))[1:]
    for start in range(0, len(pairs), _BATCH):
        batch = pairs[start : start + _BATCH]
        await collection.insert_many([_inventory_copy(template, d["_id"], i) for i, d in batch])


async def seed(mongo_url: str, inventory_url: str, indices: range, rsa_share: float) -> float:
    """Seed the devices numbered `indices` (see the module's docstring); the seconds taken."""
    started = time.monotonic()
    devices, auth_sets = _records(indices, rsa_share)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        db = client["deviceauth"]
        for name, docs in ((DEVICES, devices), (AUTH_SETS, auth_sets)):
            collection = TenantCollection(db[name], "")
            for first in range(0, len(docs), _BATCH):
                await collection.insert_many(docs[first : first + _BATCH])
        print(f"  deviceauth seeded in {time.monotonic() - started:.0f} s", flush=True)
        await _seed_inventory(client["inventory"], inventory_url, devices, indices)
    finally:
        await client.close()
    return time.monotonic() - started
