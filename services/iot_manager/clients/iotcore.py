"""AWS IoT Core: a device is a thing with one certificate; its state is the thing's shadow.

A device is enabled when its certificate is active, disabled when it is inactive (as
Mender does). Desired state is replaced by updating the shadow with the new values and
nulls for the old ones that went away, conditional on the shadow's version.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Literal

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from services.iot_manager.clients.cloud import CloudConflict, CloudError, CloudRegistry
from services.iot_manager.models import AWSKeys, DeviceState

if TYPE_CHECKING:
    from types_aiobotocore_iot import IoTClient
    from types_aiobotocore_iot_data import IoTDataPlaneClient

__all__ = ["IoTCore"]

_DATA_ENDPOINT: Final = "iot:Data-ATS"
_NOT_FOUND: Final = "ResourceNotFoundException"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _replacement(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The shadow update that turns `old` into `new` (removed keys become null)."""
    update: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(before, Mapping) and isinstance(value, Mapping):
            update[key] = _replacement(before, value)
        else:
            update[key] = value
    return update


class IoTCore:
    """AWS IoT Core's registry and device shadows, through aioboto3."""

    def __init__(self, *, endpoint_url: str | None, timeout: float) -> None:
        self._session = aioboto3.Session()
        self._endpoint_url = endpoint_url
        self._config = AioConfig(
            connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2}
        )

    def registry(self, keys: AWSKeys) -> CloudRegistry:
        """The registry the keys reach, in their region."""
        return _CoreRegistry(self, keys)

    @asynccontextmanager
    async def iot(self, keys: AWSKeys) -> AsyncIterator[IoTClient]:
        """A client of the registry (things, certificates, policies)."""
        async with self._client("iot", keys, self._endpoint_url) as client:
            yield client

    @asynccontextmanager
    async def data(self, keys: AWSKeys) -> AsyncIterator[IoTDataPlaneClient]:
        """A client of the device shadows, at the account's data endpoint."""
        endpoint = self._endpoint_url
        if endpoint is None:
            async with self.iot(keys) as iot:
                found = await iot.describe_endpoint(endpointType=_DATA_ENDPOINT)
            endpoint = f"https://{found['endpointAddress']}"
        async with self._client("iot-data", keys, endpoint) as client:
            yield client

    @asynccontextmanager
    async def _client(
        self, service: str, keys: AWSKeys, endpoint: str | None
    ) -> AsyncIterator[Any]:
        """A client of one service; any AWS failure inside the block becomes a CloudError."""
        try:
            async with self._session.client(
                service,  # type: ignore[call-overload]
                region_name=keys.region,
                aws_access_key_id=keys.access_key_id,
                aws_secret_access_key=keys.secret_access_key,
                endpoint_url=endpoint,
                config=self._config,
            ) as client:
                yield client
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise CloudError(
                f"AWS IoT: {error.get('Code', '')}: {error.get('Message', exc)}", status=status
            ) from exc
        except (BotoCoreError, aiohttp.ClientError) as exc:
            raise CloudError(f"AWS IoT: {type(exc).__name__}: {exc}") from exc


class _CoreRegistry:
    """The things and shadows of one account and region."""

    def __init__(self, core: IoTCore, keys: AWSKeys) -> None:
        self._core = core
        self._keys = keys

    async def provision(self, device_id: str, *, enabled: bool) -> None:
        """Create the thing with an active (or inactive) certificate, or update it."""
        await self.set_enabled(device_id, enabled=enabled)

    async def set_enabled(self, device_id: str, *, enabled: bool) -> None:
        """Activate or deactivate the thing's certificates (creating what is missing)."""
        status: Literal["ACTIVE", "INACTIVE"] = "ACTIVE" if enabled else "INACTIVE"
        async with self._core.iot(self._keys) as iot:
            principals = await _principals(iot, device_id)
            if principals is None:
                await iot.create_thing(thingName=device_id)
            if not principals:
                cert = await iot.create_keys_and_certificate(setAsActive=enabled)
                await iot.attach_thing_principal(
                    thingName=device_id, principal=cert["certificateArn"]
                )
                principals = [cert["certificateArn"]]
            for arn in principals:
                # Idempotent: a step that failed before is done now.
                await iot.attach_policy(policyName=self._keys.device_policy_name, target=arn)
                cert_id = arn.rsplit("/", 1)[-1]
                found = await iot.describe_certificate(certificateId=cert_id)
                if found["certificateDescription"].get("status") != status:
                    await iot.update_certificate(certificateId=cert_id, newStatus=status)

    async def remove(self, device_id: str) -> None:
        """Detach, deactivate and delete the thing's certificates, then the thing."""
        async with self._core.iot(self._keys) as iot:
            principals = await _principals(iot, device_id)
            if principals is None:
                return
            for arn in principals:
                cert_id = arn.rsplit("/", 1)[-1]
                await iot.detach_thing_principal(thingName=device_id, principal=arn)
                await iot.update_certificate(certificateId=cert_id, newStatus="INACTIVE")
                await iot.delete_certificate(certificateId=cert_id, forceDelete=True)
            try:
                await iot.delete_thing(thingName=device_id)
            except ClientError as exc:
                if _code(exc) == _NOT_FOUND:
                    return
                if _code(exc) == "InvalidRequestException" and principals:
                    # Detaching is asynchronous in AWS: the next attempt finds none left.
                    raise CloudError(f"AWS IoT: certificates still detaching: {exc}") from exc
                raise

    async def get_state(self, device_id: str) -> DeviceState:
        """The shadow's desired and reported state (empty without a shadow)."""
        async with self._core.data(self._keys) as data:
            return (await _shadow(data, device_id))[0]

    async def set_desired(self, device_id: str, desired: Mapping[str, Any]) -> DeviceState:
        """Replace the shadow's desired state (CloudConflict on a concurrent change)."""
        async with self._core.data(self._keys) as data:
            current, version = await _shadow(data, device_id)
            update = _replacement(current.desired, desired)
            payload: dict[str, Any] = {"state": {"desired": update or None}}
            if version is not None:
                payload["version"] = version
            try:
                await data.update_thing_shadow(
                    thingName=device_id, payload=json.dumps(payload).encode()
                )
            except ClientError as exc:
                if _code(exc) == "ConflictException":
                    raise CloudConflict(f"AWS IoT: {exc}", status=409) from exc
                raise
            return (await _shadow(data, device_id))[0]


async def _principals(iot: IoTClient, device_id: str) -> list[str] | None:
    """The certificates attached to a thing; None when there is no such thing."""
    try:
        found = await iot.list_thing_principals(thingName=device_id)
    except ClientError as exc:
        if _code(exc) == _NOT_FOUND:
            return None
        raise
    return list(found.get("principals", []))


async def _shadow(data: IoTDataPlaneClient, device_id: str) -> tuple[DeviceState, int | None]:
    """A thing's shadow state and version (empty and None when it has no shadow)."""
    try:
        found = await data.get_thing_shadow(thingName=device_id)
    except ClientError as exc:
        if _code(exc) == _NOT_FOUND:
            return DeviceState(), None
        raise
    document = json.loads(await found["payload"].read())
    state = document.get("state", {})
    return (
        DeviceState(desired=state.get("desired") or {}, reported=state.get("reported") or {}),
        document.get("version"),
    )
