"""Domain models of iot-manager: integrations and their credentials, devices, events."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal
from urllib.parse import quote_plus

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "MAX_DESCRIPTION_LENGTH",
    "AWSCredentials",
    "AWSKeys",
    "AuthSet",
    "ConnectionString",
    "Credentials",
    "DeliveryStatus",
    "Device",
    "DeviceEvent",
    "DeviceState",
    "Event",
    "EventType",
    "HTTPCredentials",
    "Integration",
    "Provider",
    "SASCredentials",
    "WebhookTarget",
    "compatible",
    "enabled_for",
    "rfc3339",
]

MAX_DESCRIPTION_LENGTH: Final = 1024
_MAX_SECRET_LENGTH: Final = 64
_MAX_CONNECTION_STRING: Final = 4096
_HEX: Final = re.compile(r"[0-9a-fA-F]*")
# Device statuses that keep a device enabled in a cloud registry.
_ENABLED: Final = frozenset({"accepted", "preauthorized"})


def rfc3339(when: datetime) -> str:
    """A time as RFC 3339 in UTC (`…Z`)."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Provider(StrEnum):
    """Where an integration sends the device lifecycle."""

    IOT_HUB = "iot-hub"
    IOT_CORE = "iot-core"
    WEBHOOK = "webhook"


class WebhookTarget(_Model):
    """Where a webhook posts events, and the optional secret that signs them."""

    url: Annotated[str, Field(min_length=1)]
    secret: str | None = None

    @field_validator("secret")
    @classmethod
    def _hex_secret(cls, value: str | None) -> str | None:
        if not value:
            return None  # an empty secret means an unsigned webhook
        if len(value) > _MAX_SECRET_LENGTH or len(value) % 2 or not _HEX.fullmatch(value):
            raise ValueError(
                "the secret must be a hexadecimal string (0-9, a-f) of an even number of "
                f"at most {_MAX_SECRET_LENGTH} characters"
            )
        return value


class AWSKeys(_Model):
    """An AWS access key, the region of the IoT Core registry and the devices' policy."""

    access_key_id: Annotated[str, Field(min_length=1)]
    secret_access_key: Annotated[str, Field(min_length=1)]
    region: Annotated[str, Field(min_length=1)]
    device_policy_name: Annotated[str, Field(min_length=1)]


class ConnectionString(_Model):
    """An Azure IoT Hub connection string (`HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`)."""

    host_name: str
    key: bytes
    key_name: str = ""
    device_id: str = ""
    module_id: str = ""
    gateway_host_name: str = ""

    @classmethod
    def parse(cls, text: str) -> ConnectionString:
        """Parse and check a connection string; ValueError says what is wrong."""
        if len(text) > _MAX_CONNECTION_STRING:
            raise ValueError(
                f"the connection string can be no longer than {_MAX_CONNECTION_STRING} characters"
            )
        fields: dict[str, Any] = {}
        for part in filter(None, text.split(";")):
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError("invalid connection string format")
            if name not in _CS_FIELDS:
                raise ValueError(f"invalid connection string key: {name}")
            if name == "SharedAccessKey":
                try:
                    fields["key"] = base64.b64decode(value, validate=True)
                except binascii.Error:
                    raise ValueError("SharedAccessKey is not valid base64") from None
            else:
                fields[_CS_FIELDS[name]] = value
        if not fields.get("host_name"):
            raise ValueError("HostName is missing")
        if not fields.get("key"):
            raise ValueError("SharedAccessKey is missing")
        if not fields.get("key_name") and not fields.get("device_id"):
            raise ValueError("one of 'DeviceId' or 'SharedAccessKeyName' must be set")
        return cls(**fields)

    def render(self, *, masked: bool = False) -> str:
        """The connection string; `masked` hides all but the first bytes of the key."""
        key = base64.b64encode(self.key).decode()
        if masked:
            key = base64.b64encode(self.key[:3]).decode() + "...<omitted>"
        values = {
            "HostName": self.host_name,
            "GatewayHostName": self.gateway_host_name,
            "SharedAccessKeyName": self.key_name,
            "DeviceId": self.device_id,
            "ModuleId": self.module_id,
            "SharedAccessKey": key,
        }
        return ";".join(f"{name}={value}" for name, value in values.items() if value)

    @property
    def endpoint(self) -> str:
        """The host (and port) requests go to: the gateway when there is one."""
        return self.gateway_host_name or self.host_name

    def authorization(self, expires: datetime) -> str:
        """A shared access signature for the hub, valid until `expires`."""
        resource = quote_plus(self.host_name)
        expiry = int(expires.timestamp())
        digest = hmac.new(self.key, f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()
        signature = quote_plus(base64.b64encode(digest).decode())
        token = f"SharedAccessSignature sr={resource}&sig={signature}&se={expiry}"
        if self.key_name:
            token += f"&skn={self.key_name}"
        return token


_CS_FIELDS: Final = {
    "HostName": "host_name",
    "GatewayHostName": "gateway_host_name",
    "SharedAccessKeyName": "key_name",
    "SharedAccessKey": "key",
    "DeviceId": "device_id",
    "ModuleId": "module_id",
}


class HTTPCredentials(_Model):
    """Credentials of a webhook."""

    type: Literal["http"] = "http"
    http: WebhookTarget


class AWSCredentials(_Model):
    """Credentials of an AWS IoT Core integration."""

    type: Literal["aws"] = "aws"
    aws: AWSKeys


class SASCredentials(_Model):
    """Credentials of an Azure IoT Hub integration."""

    type: Literal["sas"] = "sas"
    connection_string: ConnectionString

    @field_validator("connection_string", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return ConnectionString.parse(value) if isinstance(value, str) else value


Credentials = Annotated[
    HTTPCredentials | AWSCredentials | SASCredentials, Field(discriminator="type")
]

_CREDENTIAL_TYPES: Final = {
    Provider.WEBHOOK: "http",
    Provider.IOT_CORE: "aws",
    Provider.IOT_HUB: "sas",
}


def compatible(provider: Provider, credentials: Credentials) -> bool:
    """Whether the credentials are of the kind the provider uses."""
    return _CREDENTIAL_TYPES[provider] == credentials.type


class Integration(_Model):
    """A tenant's integration: a provider and the credentials to reach it."""

    id: str
    provider: Provider
    credentials: Credentials
    description: str = ""


class EventType(StrEnum):
    """What happened to a device."""

    PROVISIONED = "device-provisioned"
    DECOMMISSIONED = "device-decommissioned"
    STATUS_CHANGED = "device-status-changed"


class AuthSet(_Model):
    """An authentication set of a device, as deviceauth describes it."""

    id: str = ""
    device_id: str = ""
    identity_data: dict[str, Any] = Field(default_factory=dict)
    pubkey: str = ""
    status: str = ""
    ts: datetime | None = None

    def wire(self) -> dict[str, Any]:
        """The JSON form (Mender's fields, `ts` only when known)."""
        doc: dict[str, Any] = {
            "id": self.id,
            "device_id": self.device_id,
            "identity_data": self.identity_data,
            "pubkey": self.pubkey,
            "status": self.status,
        }
        if self.ts is not None:
            doc["ts"] = rfc3339(self.ts)
        return doc


class DeviceEvent(_Model):
    """The device an event is about: its id, and more depending on the event."""

    id: str
    status: str | None = None
    auth_sets: tuple[AuthSet, ...] = ()
    created_ts: datetime | None = None

    def wire(self) -> dict[str, Any]:
        """The JSON form: the id and whatever else the event carries."""
        doc: dict[str, Any] = {"id": self.id}
        if self.status is not None:
            doc["status"] = self.status
        if self.auth_sets:
            doc["auth_sets"] = [auth_set.wire() for auth_set in self.auth_sets]
        if self.created_ts is not None:
            doc["created_ts"] = rfc3339(self.created_ts)
        return doc


class DeliveryStatus(_Model):
    """The outcome of one attempt to deliver an event to an integration."""

    integration_id: str
    success: bool
    status_code: int | None = None
    error: str | None = None


class Event(_Model):
    """A device lifecycle event and its deliveries (the latest attempt first)."""

    id: str
    type: EventType
    data: DeviceEvent
    time: datetime
    # The integrations it is delivered to.
    integration_ids: tuple[str, ...] = ()
    delivery_statuses: tuple[DeliveryStatus, ...] = ()


class Device(_Model):
    """A device and the cloud integrations it was provisioned to."""

    id: str
    integration_ids: tuple[str, ...] = ()


class DeviceState(_Model):
    """The desired and reported state of a device in a cloud registry."""

    desired: dict[str, Any] = Field(default_factory=dict)
    reported: dict[str, Any] = Field(default_factory=dict)


def enabled_for(status: str | None) -> bool:
    """Whether a device with this deviceauth status is enabled in a cloud registry."""
    return status in _ENABLED
