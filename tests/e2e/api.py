"""The server's public API as the end-to-end and integration tests use it (sync httpx).

`ManagementApi` wraps the management endpoints a test needs (device admission, inventory,
deployments, device configuration) with condition polling; `RawDevice` speaks the device API
by hand (signed auth requests with its own key), so a test can hold a device JWT and check
what the gateway does with it after the device is rejected or decommissioned.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.toolkit import wait_until
from tests.toolkit.devices import AUTH_REQUESTS, public_key_pem, signed_auth_request

__all__ = [
    "DEPLOYMENTS",
    "DEVAUTH",
    "DEVICECONFIG",
    "DEVICE_CONFIGURATION",
    "INVENTORY_V1",
    "INVENTORY_V2",
    "ManagementApi",
    "RawDevice",
    "accepted_device",
    "attribute_map",
    "public_pem",
    "same_key",
    "unique_identity",
]

DEVAUTH: Final = "/api/management/v2/devauth"
INVENTORY_V1: Final = "/api/management/v1/inventory"
INVENTORY_V2: Final = "/api/management/v2/inventory"
DEPLOYMENTS: Final = "/api/management/v1/deployments"
DEVICECONFIG: Final = "/api/management/v1/deviceconfig/configurations/device"
DEVICE_CONFIGURATION: Final = "/api/devices/v1/deviceconfig/configuration"
USERS: Final = "/api/management/v1/useradm/users"
DEVICE_INVENTORY: Final = "/api/devices/v1/inventory/device/attributes"
DEVICE_NEXT: Final = "/api/devices/v2/deployments/device/deployments/next"
DEVICE_NEXT_V1: Final = "/api/devices/v1/deployments/device/deployments/next"

_HTTP_TIMEOUT: Final = 30.0
_POLL_INTERVAL: Final = 1.0
_PER_PAGE: Final = 500


def unique_identity(prefix: str) -> dict[str, str]:
    """A `mac` + `serial` identity no other test uses."""
    raw = secrets.token_bytes(5)
    mac = "02:" + ":".join(f"{b:02x}" for b in raw)
    return {"mac": mac, "serial": f"{prefix}-{uuid.uuid4().hex[:10]}"}


def public_pem(private_pem: bytes) -> str:
    """The SubjectPublicKeyInfo PEM of a private key PEM."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def same_key(pem_a: str, pem_b: str) -> bool:
    """Whether two public key PEMs hold the same key (whatever their line layout)."""
    der = [
        serialization.load_pem_public_key(p.encode()).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for p in (pem_a, pem_b)
    ]
    return der[0] == der[1]


def attribute_map(device: Mapping[str, Any]) -> dict[tuple[str, str], Any]:
    """An inventory device's attributes keyed by (scope, name)."""
    return {(a["scope"], a["name"]): a["value"] for a in device.get("attributes") or []}


def _check(response: httpx.Response, *expected: int) -> httpx.Response:
    if response.status_code not in expected:
        raise AssertionError(
            f"{response.request.method} {response.request.url.path}: expected "
            f"{' or '.join(map(str, expected))}, got {response.status_code}: {response.text[:500]}"
        )
    return response


class ManagementApi:
    """A user's view of the management API through the gateway."""

    def __init__(self, base_url: str, token: str) -> None:
        """Talk to `base_url` with the user JWT `token`."""
        self.base_url = base_url
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=_HTTP_TIMEOUT,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self.http.close()

    # --- deviceauth ----------------------------------------------------------------------

    def devauth_devices(self, *, status: str | None = None) -> list[dict[str, Any]]:
        """Every device deviceauth knows (all pages), optionally of one status."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            params: dict[str, str | int] = {"page": page, "per_page": _PER_PAGE}
            if status is not None:
                params["status"] = status
            batch = _check(self.http.get(f"{DEVAUTH}/devices", params=params), 200).json()
            found.extend(batch)
            if len(batch) < _PER_PAGE:
                return found
            page += 1

    def devauth_device(self, device_id: str) -> dict[str, Any] | None:
        """One device of deviceauth, or None when it does not exist (404)."""
        response = _check(self.http.get(f"{DEVAUTH}/devices/{device_id}"), 200, 404)
        return response.json() if response.status_code == 200 else None

    def find_device(self, identity: Mapping[str, str]) -> dict[str, Any] | None:
        """The deviceauth device whose identity data is exactly `identity`."""
        matches = [d for d in self.devauth_devices() if d.get("identity_data") == dict(identity)]
        assert len(matches) <= 1, f"several devices with identity {identity}: {matches}"
        return matches[0] if matches else None

    def wait_for_device(
        self, identity: Mapping[str, str], *, status: str | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Wait until deviceauth has a device with `identity` (and `status`, if given)."""

        def probe() -> dict[str, Any] | None:
            device = self.find_device(identity)
            if device is None or (status is not None and device["status"] != status):
                return None
            return device

        return wait_until(
            probe,
            timeout=timeout,
            interval=_POLL_INTERVAL,
            what=f"device {identity} with status {status or 'any'} in deviceauth",
            details=lambda: f"last seen: {self.find_device(identity)}",
        )

    def set_auth_status(self, device_id: str, auth_id: str, status: str) -> None:
        """Accept or reject one auth set."""
        _check(
            self.http.put(
                f"{DEVAUTH}/devices/{device_id}/auth/{auth_id}/status", json={"status": status}
            ),
            204,
        )

    def accept(self, device: Mapping[str, Any]) -> None:
        """Accept the device's (only) auth set."""
        auth_sets = device["auth_sets"]
        assert len(auth_sets) == 1, f"expected one auth set: {auth_sets}"
        self.set_auth_status(device["id"], auth_sets[0]["id"], "accepted")

    def preauthorize(self, identity: Mapping[str, str], pubkey: str) -> str:
        """Preauthorize an identity with a public key; the new device's id."""
        response = _check(
            self.http.post(
                f"{DEVAUTH}/devices", json={"identity_data": dict(identity), "pubkey": pubkey}
            ),
            201,
        )
        return response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]

    def decommission(self, device_id: str) -> httpx.Response:
        """Decommission a device (the response is returned for timing and status checks)."""
        return _check(self.http.delete(f"{DEVAUTH}/devices/{device_id}"), 202, 204)

    # --- inventory -----------------------------------------------------------------------

    def inventory_device(self, device_id: str) -> dict[str, Any] | None:
        """One inventory device, or None (404)."""
        response = _check(self.http.get(f"{INVENTORY_V1}/devices/{device_id}"), 200, 404)
        return response.json() if response.status_code == 200 else None

    def inventory_devices(self, **query: str) -> list[dict[str, Any]]:
        """`GET /devices` of inventory v1 with filter parameters (first 500)."""
        params = {"per_page": str(_PER_PAGE), **query}
        return list(_check(self.http.get(f"{INVENTORY_V1}/devices", params=params), 200).json())

    def search(self, filters: Sequence[Mapping[str, Any]], **body: Any) -> list[dict[str, Any]]:
        """`POST /filters/search` of inventory v2."""
        payload = {"filters": list(filters), "per_page": _PER_PAGE, **body}
        response = _check(self.http.post(f"{INVENTORY_V2}/filters/search", json=payload), 200)
        return list(response.json())

    def wait_for_attributes(
        self, device_id: str, expected: Mapping[tuple[str, str], Any], *, timeout: float = 30.0
    ) -> dict[tuple[str, str], Any]:
        """Wait until the device's inventory holds every (scope, name) → value of `expected`."""
        seen: dict[tuple[str, str], Any] = {}

        def probe() -> dict[tuple[str, str], Any] | None:
            nonlocal seen
            device = self.inventory_device(device_id)
            seen = attribute_map(device) if device is not None else {}
            if all(seen.get(key) == value for key, value in expected.items()):
                return seen
            return None

        return wait_until(
            probe,
            timeout=timeout,
            interval=_POLL_INTERVAL,
            what=f"inventory attributes {dict(expected)} of {device_id}",
            details=lambda: f"last seen: {seen}",
        )

    def wait_gone_from_inventory(self, device_id: str, *, timeout: float = 30.0) -> None:
        """Wait until inventory no longer has the device."""
        wait_until(
            lambda: self.inventory_device(device_id) is None,
            timeout=timeout,
            interval=_POLL_INTERVAL,
            what=f"device {device_id} removed from inventory",
            details=lambda: f"still there: {self.inventory_device(device_id)}",
        )

    def set_group(self, device_id: str, group: str) -> None:
        """Put a device in a static group."""
        _check(
            self.http.put(f"{INVENTORY_V1}/devices/{device_id}/group", json={"group": group}),
            204,
        )

    # --- deployments ---------------------------------------------------------------------

    def artifacts(self) -> list[dict[str, Any]]:
        """The artifacts list."""
        return list(_check(self.http.get(f"{DEPLOYMENTS}/artifacts"), 200).json())

    def artifact_named(self, name: str) -> dict[str, Any]:
        """The (single) artifact with this name."""
        matches = [a for a in self.artifacts() if a["name"] == name]
        assert len(matches) == 1, f"artifacts named {name}: {matches}"
        return matches[0]

    def generate_artifact(
        self, *, name: str, device_type: str, filename: str, dest_dir: str, content: bytes
    ) -> str:
        """Have the server build a single-file artifact in the background; its id."""
        form = {
            "name": name,
            "device_types_compatible": device_type,
            "type": "single_file",
            "args": json.dumps({"filename": filename, "dest_dir": dest_dir}),
        }
        response = _check(
            self.http.post(
                f"{DEPLOYMENTS}/artifacts/generate", data=form, files={"file": (filename, content)}
            ),
            201,
        )
        return response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]

    def wait_for_artifact(self, name: str, *, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until an artifact with this name is listed; the artifact."""
        return wait_until(
            lambda: next((a for a in self.artifacts() if a["name"] == name), None),
            timeout=timeout,
            interval=_POLL_INTERVAL,
            what=f"artifact {name} listed",
        )

    def create_deployment(self, name: str, artifact_name: str, devices: Iterable[str]) -> str:
        """Deploy an artifact to a list of devices; the deployment's id."""
        body = {"name": name, "artifact_name": artifact_name, "devices": list(devices)}
        response = _check(self.http.post(f"{DEPLOYMENTS}/deployments", json=body), 201)
        return response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]

    def create_group_deployment(self, group: str, name: str, artifact_name: str) -> str:
        """Deploy an artifact to a static group; the deployment's id."""
        body = {"name": name, "artifact_name": artifact_name}
        response = _check(
            self.http.post(f"{DEPLOYMENTS}/deployments/group/{group}", json=body), 201
        )
        return response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        """One deployment."""
        return dict(_check(self.http.get(f"{DEPLOYMENTS}/deployments/{deployment_id}"), 200).json())

    def statistics(self, deployment_id: str) -> dict[str, int]:
        """Per-status device counts of a deployment."""
        url = f"{DEPLOYMENTS}/deployments/{deployment_id}/statistics"
        return dict(_check(self.http.get(url), 200).json())

    def deployment_devices(self, deployment_id: str) -> list[dict[str, Any]]:
        """The device-deployments of a deployment."""
        url = f"{DEPLOYMENTS}/deployments/{deployment_id}/devices"
        return list(_check(self.http.get(url), 200).json())

    def device_log(self, deployment_id: str, device_id: str) -> str:
        """The deployment log a device uploaded."""
        url = f"{DEPLOYMENTS}/deployments/{deployment_id}/devices/{device_id}/log"
        return _check(self.http.get(url), 200).text

    def abort(self, deployment_id: str) -> None:
        """Abort a deployment."""
        url = f"{DEPLOYMENTS}/deployments/{deployment_id}/status"
        _check(self.http.put(url, json={"status": "aborted"}), 204)

    def wait_for_statistics(
        self, deployment_id: str, expected: Mapping[str, int], *, timeout: float = 60.0
    ) -> dict[str, int]:
        """Wait until the deployment's statistics show every count of `expected`."""
        seen: dict[str, int] = {}

        def probe() -> dict[str, int] | None:
            nonlocal seen
            seen = self.statistics(deployment_id)
            return seen if all(seen.get(k) == v for k, v in expected.items()) else None

        return wait_until(
            probe,
            timeout=timeout,
            interval=_POLL_INTERVAL,
            what=f"statistics {dict(expected)} of deployment {deployment_id}",
            details=lambda: f"last seen: {seen}",
        )

    def wait_finished(self, deployment_id: str, *, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the deployment's status is `finished`; the deployment."""

        def probe() -> dict[str, Any] | None:
            deployment = self.deployment(deployment_id)
            return deployment if deployment["status"] == "finished" else None

        return wait_until(
            probe,
            timeout=timeout,
            interval=_POLL_INTERVAL,
            what=f"deployment {deployment_id} finished",
            details=lambda: f"last seen: {self.deployment(deployment_id)}",
        )

    # --- deviceconfig --------------------------------------------------------------------

    def device_configuration(self, device_id: str) -> dict[str, Any] | None:
        """A device's desired and reported configuration, or None (404)."""
        response = _check(self.http.get(f"{DEVICECONFIG}/{device_id}"), 200, 404)
        return response.json() if response.status_code == 200 else None

    def wait_for_configuration(
        self, device_id: str, *, timeout: float = 30.0, **expected: Any
    ) -> dict[str, Any]:
        """Wait until the device is known to deviceconfig with the `expected` fields."""
        seen: dict[str, Any] | None = None

        def probe() -> dict[str, Any] | None:
            nonlocal seen
            seen = self.device_configuration(device_id)
            if seen is None or any(seen.get(k) != v for k, v in expected.items()):
                return None
            return seen

        return wait_until(
            probe,
            timeout=timeout,
            what=f"configuration {expected} of {device_id} in deviceconfig",
            details=lambda: f"last seen: {seen}",
        )

    def set_configuration(self, device_id: str, configuration: Mapping[str, str]) -> None:
        """Set a device's desired configuration."""
        _check(self.http.put(f"{DEVICECONFIG}/{device_id}", json=dict(configuration)), 204)

    def deploy_configuration(self, device_id: str, *, retries: int = 0) -> str:
        """Deploy a device's desired configuration; the deployment's id."""
        response = _check(
            self.http.post(f"{DEVICECONFIG}/{device_id}/deploy", json={"retries": retries}), 200
        )
        deployment_id: str = response.json()["deployment_id"]
        return deployment_id


class RawDevice:
    """A device speaking the device API by hand, with an Ed25519 key."""

    def __init__(self, base_url: str, identity: Mapping[str, str]) -> None:
        """A device with `identity`, talking to the gateway at `base_url`."""
        self.identity = dict(identity)
        self._key = ed25519.Ed25519PrivateKey.generate()
        self.pubkey = public_key_pem(self._key)
        self.http = httpx.Client(base_url=base_url, timeout=_HTTP_TIMEOUT)
        self.token: str | None = None

    def close(self) -> None:
        """Release the connection pool."""
        self.http.close()

    def auth_request(self) -> httpx.Response:
        """Send one signed auth request, exactly as the client lays it out."""
        body, headers = signed_auth_request(self._key, self.identity)
        response = self.http.post(AUTH_REQUESTS, content=body, headers=headers)
        if response.status_code == 200:
            self.token = response.text
        return response

    def _auth(self) -> dict[str, str]:
        assert self.token is not None, "the device has no token yet"
        return {"Authorization": f"Bearer {self.token}"}

    def put_inventory(self, attributes: Mapping[str, str]) -> httpx.Response:
        """Report inventory attributes with the device's current token."""
        body = [{"name": k, "value": v} for k, v in attributes.items()]
        return self.http.put(DEVICE_INVENTORY, json=body, headers=self._auth())

    def next_deployment(
        self, *, artifact_name: str = "raw-initial", device_type: str = "raw-device"
    ) -> httpx.Response:
        """Ask for a deployment with the device's current token."""
        body = {"device_provides": {"artifact_name": artifact_name, "device_type": device_type}}
        return self.http.post(DEVICE_NEXT, json=body, headers=self._auth())

    def get_configuration(self) -> httpx.Response:
        """Read the device's desired configuration."""
        return self.http.get(DEVICE_CONFIGURATION, headers=self._auth())

    def report_configuration(self, configuration: Mapping[str, str]) -> httpx.Response:
        """Report the configuration the device applied."""
        return self.http.put(DEVICE_CONFIGURATION, json=dict(configuration), headers=self._auth())

    def check_next(
        self, *, artifact_name: str = "raw-initial", device_type: str = "raw-device"
    ) -> httpx.Response:
        """Ask for a deployment the read-only v1 way (`GET next` with query parameters)."""
        params = {"artifact_name": artifact_name, "device_type": device_type}
        return self.http.get(DEVICE_NEXT_V1, params=params, headers=self._auth())


@contextlib.contextmanager
def accepted_device(
    api: ManagementApi, base_url: str, prefix: str
) -> Iterator[tuple[RawDevice, str]]:
    """A new device, accepted through the management API and holding a token; and its id."""
    raw = RawDevice(base_url, unique_identity(prefix))
    try:
        assert raw.auth_request().status_code == 401
        pending = api.wait_for_device(raw.identity, status="pending")
        api.accept(pending)
        assert raw.auth_request().status_code == 200
        yield raw, pending["id"]
    finally:
        raw.close()
