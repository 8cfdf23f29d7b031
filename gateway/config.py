"""The gateway's settings, read from `GATEWAY_*` environment variables.

Every upstream has an address setting (`GATEWAY_<SERVICE>_ADDR`, e.g.
`GATEWAY_DEVICEAUTH_ADDR=http://127.0.0.1:9002`); an unset or empty address means the service
is not deployed and its routes answer 503.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Final

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["UPSTREAMS", "Settings"]

# The services the gateway can route to; each has a `<name>_addr` setting.
UPSTREAMS: Final = (
    "useradm",
    "deviceauth",
    "inventory",
    "deployments",
    "deviceconfig",
    "deviceconnect",
    "auditlogs",
    "devicemonitor",
    "iot_manager",
)

Addr = str | None
Seconds = Annotated[float, Field(gt=0)]
Networks = tuple[IPv4Network | IPv6Network, ...]


class Settings(BaseSettings):
    """Listening address, upstream addresses, token checks and timeouts."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", frozen=True)

    listen_host: str = "127.0.0.1"
    listen_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    # The private listener of the gateway's Prometheus metrics (`/metrics`, any path): off
    # unless a port is set; on the loopback interface unless a host is set.
    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    # Development mode logs the route table at start-up.
    dev_mode: bool = False
    log_level: str = "INFO"

    useradm_addr: Addr = None
    deviceauth_addr: Addr = None
    inventory_addr: Addr = None
    deployments_addr: Addr = None
    deviceconfig_addr: Addr = None
    deviceconnect_addr: Addr = None
    auditlogs_addr: Addr = None
    devicemonitor_addr: Addr = None
    iot_manager_addr: Addr = None
    # Mender's web UI (its `gui` image): served under /ui/, and / redirects there.
    ui_addr: Addr = None

    # HTTPS and WSS: the certificate chain and its private key, PEM files. Unset: plain HTTP
    # (for a gateway behind a proxy that terminates TLS).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Proxies in front of the gateway whose `X-Forwarded-Proto`, `-Host` and `-For` describe
    # the client: addresses or networks, separated by commas or spaces. Those headers from
    # anyone else are dropped.
    trusted_proxies: Annotated[Networks, NoDecode] = ()

    # Tokens whose signature was found good, remembered until they expire (the least
    # recently used go first beyond this number).
    token_cache_size: Annotated[int, Field(ge=1)] = 100_000
    # A token signed by no known key makes the gateway read the issuer's keys again (they
    # may have rotated), at most this often per issuer (seconds).
    key_refetch_interval: Seconds = 5.0
    # How often the tokens let through are reported to their issuers (a device's check-in
    # time, a personal access token's last use); each token at most once a minute.
    token_use_report_interval: Seconds = 5.0
    # NATS server on which deviceauth and useradm publish revocations (e.g.
    # `nats://nats:4222`); unset: revocations are read from the issuers' feed alone.
    nats_uri: str | None = None

    # Establishing a TCP connection to an upstream.
    connect_timeout: Seconds = 3.0
    # The longest silence while waiting for upstream bytes (headers or body); there is no
    # total timeout, so multi-GB transfers are only bounded by this idle time.
    read_timeout: Seconds = 600.0
    # One read of an issuer's keys or revocations (a long poll is held longer); also how
    # long start-up waits for the first full read.
    verify_timeout: Seconds = 10.0
    # Open connections to all upstreams together; 0 = no limit.
    upstream_connection_limit: Annotated[int, Field(ge=0)] = 0
    # The largest websocket message relayed in either direction.
    ws_max_message_size: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024

    # Per client address: sustained requests per second (0 = no limit) and burst size.
    rate_limit_per_second: Annotated[float, Field(ge=0)] = 0.0
    rate_limit_burst: Annotated[int, Field(ge=1)] = 100

    @field_validator(
        "useradm_addr",
        "deviceauth_addr",
        "inventory_addr",
        "deployments_addr",
        "deviceconfig_addr",
        "deviceconnect_addr",
        "auditlogs_addr",
        "devicemonitor_addr",
        "iot_manager_addr",
        "ui_addr",
    )
    @classmethod
    def _normalise_addr(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        addr = value.strip().rstrip("/")
        scheme, sep, rest = addr.partition("://")
        if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
            raise ValueError(f"expected http(s)://host:port without a path, got {value!r}")
        return addr

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        networks = []
        for item in value.replace(",", " ").split():
            try:
                networks.append(ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is no IP address or network") from None
        return tuple(networks)

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        pair = (self.tls_cert_file, self.tls_key_file)
        if (pair[0] is None) != (pair[1] is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        for path in pair:
            if path is not None and not path.is_file():
                raise ValueError(f"{path} is not a readable file")
        return self

    def upstream_addr(self, upstream: str) -> str | None:
        """The base URL of an upstream service, or None when it is not deployed."""
        addr: str | None = getattr(self, f"{upstream}_addr")
        return addr
