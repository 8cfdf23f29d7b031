"""Wire-only request and response models of deviceauth."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_serializer,
)

from common.core.errors import BadRequest, UnsupportedMediaType
from services.deviceauth.models import AuthSet, Device

__all__ = [
    "AuthSetOut",
    "CountOut",
    "DeviceFilter",
    "DeviceOut",
    "ExternalDeviceIn",
    "LimitBody",
    "NewTenantIn",
    "PreAuthIn",
    "StatusBody",
    "UpdateDeviceAuthIn",
]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AuthSetOut(BaseModel):
    """An authentication set as the management API shows it."""

    id: str
    device_id: str
    identity_data: dict[str, Any]
    pubkey: str
    status: str
    ts: datetime

    @classmethod
    def of(cls, auth_set: AuthSet) -> AuthSetOut:
        """Render a domain auth set."""
        return cls(
            id=auth_set.id,
            device_id=auth_set.device_id,
            identity_data=auth_set.identity_data,
            pubkey=auth_set.pubkey,
            status=auth_set.status.value,
            ts=auth_set.ts,
        )


class DeviceOut(BaseModel):
    """A device as the management API shows it (`check_in_time` only once known)."""

    id: str
    identity_data: dict[str, Any]
    status: str
    decommissioning: bool
    created_ts: datetime
    updated_ts: datetime
    check_in_time: datetime | None = None
    auth_sets: list[AuthSetOut]

    @model_serializer(mode="wrap")
    def _omit_unknown_check_in(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if data.get("check_in_time") is None:
            data.pop("check_in_time", None)
        return data

    @classmethod
    def of(cls, device: Device) -> DeviceOut:
        """Render a domain device with its auth sets."""
        return cls(
            id=device.id,
            identity_data=device.identity_data,
            status=device.status.value,
            decommissioning=device.decommissioning,
            created_ts=device.created_ts,
            updated_ts=device.updated_ts,
            check_in_time=device.check_in_time,
            auth_sets=[AuthSetOut.of(a) for a in device.auth_sets],
        )


class CountOut(BaseModel):
    """A number of items."""

    count: int


class LimitBody(_In):
    """A limit value (0 = unlimited)."""

    limit: StrictInt


class StatusBody(_In):
    """An admission status."""

    status: StrictStr


class PreAuthIn(_In):
    """A preauthorization: identity data and public key, `force` to add a key."""

    identity_data: dict[str, Any]
    pubkey: StrictStr
    force: StrictBool = False


class UpdateDeviceAuthIn(_In):
    """Internal update of a device's bookkeeping."""

    provisioned: StrictBool | None = None


class ExternalDeviceIn(_In):
    """A device's identity at an external provider."""

    id: StrictStr
    name: StrictStr
    provider: StrictStr
    id_data: StrictStr | None = None


class NewTenantIn(_In):
    """A tenant to provision."""

    tenant_id: StrictStr


class DeviceFilter(_In):
    """The body of a device search: statuses and ids, each a string or a list of strings."""

    status: StrictStr | list[StrictStr] | None = None
    id: StrictStr | list[StrictStr] | None = None

    @property
    def statuses(self) -> list[str]:
        """The requested statuses."""
        return [self.status] if isinstance(self.status, str) else list(self.status or [])

    @property
    def ids(self) -> list[str]:
        """The requested device ids."""
        return [self.id] if isinstance(self.id, str) else list(self.id or [])

    @classmethod
    def from_body(cls, content_type: str, body: bytes) -> DeviceFilter:
        """Parse a JSON (or form-encoded) search body."""
        media = content_type.split(";", 1)[0].strip().lower()
        if media == "application/x-www-form-urlencoded":
            try:
                form = parse_qs(body.decode("utf-8"), strict_parsing=bool(body))
            except (UnicodeDecodeError, ValueError) as exc:
                raise BadRequest(f"api: malformed query parameters: {exc}") from None
            return cls(status=form.get("status"), id=form.get("id"))
        if media not in ("", "application/json"):
            raise UnsupportedMediaType(f"Content-Type '{content_type}' not supported")
        try:
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise ValueError("the body must be a JSON object")
            return cls.model_validate(doc)
        except (ValueError, RecursionError) as exc:
            message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise BadRequest(f"api: malformed request body: {message}") from None
