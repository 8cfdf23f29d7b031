"""Azure IoT Hub through its REST API: device identities and twins, with SAS tokens."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

import httpx

from services.iot_manager.clients.cloud import CloudConflict, CloudError, CloudRegistry
from services.iot_manager.clients.outbound import OutboundClient
from services.iot_manager.models import ConnectionString, DeviceState

__all__ = ["API_VERSION", "IoTHub"]

API_VERSION: Final = "2021-04-12"
_TOKEN_LIFETIME: Final = timedelta(minutes=5)
# Bookkeeping the hub adds to twin properties; not part of a device's state.
_METADATA: Final = ("$metadata", "$version")


def _status(enabled: bool) -> str:
    return "enabled" if enabled else "disabled"


def _properties(values: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (values or {}).items() if k not in _METADATA}


class IoTHub:
    """Azure IoT Hub's device registry (over the guarded outbound client)."""

    def __init__(self, outbound: OutboundClient) -> None:
        self._outbound = outbound

    def registry(self, connection_string: ConnectionString) -> CloudRegistry:
        """The registry of the hub a connection string names."""
        return _HubRegistry(self._outbound, connection_string)


class _HubRegistry:
    """One hub's devices and twins."""

    def __init__(self, outbound: OutboundClient, connection_string: ConnectionString) -> None:
        self._outbound = outbound
        self._cs = connection_string

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        etag: str | None = None,
        ok: Collection[int] = (200,),
    ) -> httpx.Response:
        headers = {
            "Authorization": self._cs.authorization(datetime.now(UTC) + _TOKEN_LIFETIME),
            # Through a gateway, the request still names the hub itself.
            "Host": self._cs.host_name,
        }
        if etag is not None:
            headers["If-Match"] = etag
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(body).encode()
        url = f"https://{self._cs.endpoint}/{path}?api-version={API_VERSION}"
        try:
            response = await self._outbound.request(method, url, content=content, headers=headers)
        except httpx.HTTPError as exc:
            raise CloudError(f"IoT Hub {method} /{path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code not in ok:
            raise CloudError(
                f"IoT Hub {method} /{path} answered {response.status_code}: {response.text[:200]}",
                status=response.status_code,
            )
        return response

    async def _device(self, device_id: str) -> dict[str, Any] | None:
        response = await self._call("GET", _device_path(device_id), ok=(200, 404))
        return None if response.status_code == 404 else dict(response.json())

    async def provision(self, device_id: str, *, enabled: bool) -> None:
        """Create the device (or update an existing one), enabled or disabled."""
        await self.set_enabled(device_id, enabled=enabled)
        await self._call("PATCH", _twin_path(device_id), body={"tags": {"mender": True}})

    async def set_enabled(self, device_id: str, *, enabled: bool) -> None:
        """Enable or disable the device (creating it when it is missing)."""
        status = _status(enabled)
        device = await self._device(device_id)
        if device is None:
            body = {"deviceId": device_id, "status": status}
            await self._call("PUT", _device_path(device_id), body=body)
        elif device.get("status") != status:
            etag = f'"{device.pop("etag", "")}"'
            body = {**device, "status": status}
            await self._call("PUT", _device_path(device_id), body=body, etag=etag)

    async def remove(self, device_id: str) -> None:
        """Delete the device and its credentials (nothing to do when it is missing)."""
        await self._call("DELETE", _device_path(device_id), etag="*", ok=(200, 204, 404))

    async def get_state(self, device_id: str) -> DeviceState:
        """The device twin's desired and reported properties."""
        response = await self._call("GET", _twin_path(device_id), ok=(200, 404))
        if response.status_code == 404:
            return DeviceState()
        properties = response.json().get("properties", {})
        return DeviceState(
            desired=_properties(properties.get("desired")),
            reported=_properties(properties.get("reported")),
        )

    async def set_desired(self, device_id: str, desired: Mapping[str, Any]) -> DeviceState:
        """Replace the twin's desired properties (CloudConflict on a concurrent change)."""
        twin = (await self._call("GET", _twin_path(device_id))).json()
        body = {"tags": twin.get("tags") or {}, "properties": {"desired": dict(desired)}}
        try:
            await self._call(
                "PUT", _twin_path(device_id), body=body, etag=f'"{twin.get("etag", "")}"'
            )
        except CloudError as exc:
            if exc.status == 412:
                raise CloudConflict(str(exc), status=409) from exc
            raise
        return await self.get_state(device_id)


def _device_path(device_id: str) -> str:
    return f"devices/{quote(device_id, safe='')}"


def _twin_path(device_id: str) -> str:
    return f"twins/{quote(device_id, safe='')}"
