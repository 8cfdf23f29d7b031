"""The fleet benchmark's devices and load: enrollment through the API, a mix of requests
(Mender's default, or a heavier one), sent closed-loop or paced (see `fleet_bench.py`)."""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import json
import random
import time
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from devices import device_key, identity_of, register_device

from tests.toolkit.devices import (
    AUTH_REQUESTS,
    DEVICE_INVENTORY,
    NEXT_V2,
    DeviceKey,
    signed_auth_request,
)

ADMIN: Final = ("bench@example.com", "correct-horse-battery")
LOGIN: Final = "/api/management/v1/useradm/auth/login"
INVENTORY_DEVICES: Final = "/api/management/v1/inventory/devices"
POLL: Final = b'{"device_provides": {"device_type": "bench", "artifact_name": "bench-1"}}'
KINDS: Final = ("next", "inventory", "auth")
# The mixes, each as one cycle of requests. `mender`: the Mender client's default intervals,
# a poll every 1,800 s, an inventory report every 28,800 s and a new token when the last
# one expires after 604,800 s (deviceauth's default), so 336 polls, 21 reports and one
# renewal (93.9 %, 5.9 %, 0.3 %). `heavy`: 16 polls, 3 reports and one renewal in 20, far
# more reports and renewals than a default fleet sends.
MIXES: Final = {
    "mender": ("next",) * 336 + ("inventory",) * 21 + ("auth",),
    "heavy": ("next",) * 16 + ("inventory",) * 3 + ("auth",),
}
# What Fleetport answers each kind with; the limit answers everything 204.
EXPECTED: Final = {"next": 204, "inventory": 200, "auth": 200}
_TIMEOUT: Final = aiohttp.ClientTimeout(total=60)
# Connections the paced load may open: beyond them requests wait in the client, still
# charged from their scheduled time.
_PACED_CONNECTIONS: Final = 512


# --------------------------------------------------------------------------- devices


@dataclass
class Device:
    """A simulated device: its key, its signed auth request, its current token."""

    index: int
    key: DeviceKey
    auth_body: bytes = b""
    auth_headers: dict[str, str] = field(default_factory=dict)
    token: str = ""
    reports: int = 0

    def __post_init__(self) -> None:
        # The client signs the same request every time: sign it once.
        self.auth_body, self.auth_headers = signed_auth_request(self.key, identity_of(self.index))

    def attributes(self) -> bytes:
        """An inventory report: 15 attributes, the free space changing once in ten reports."""
        self.reports += 1
        values = inventory_attributes(self.index, self.reports // 10)
        return json.dumps([{"name": k, "value": v} for k, v in values.items()]).encode()


def inventory_attributes(index: int, generation: int = 0) -> dict[str, str]:
    """The 15 inventory attributes device number `index` reports; `generation` is how often
    its free space has changed (the only one that changes)."""
    mac = identity_of(index)["mac"]
    return {
        "device_type": "bench",
        "artifact_name": "bench-1",
        "rootfs-image.version": "bench-1",
        "mender_client_version": "4.0.4",
        "hostname": f"bench-{index}",
        "mac_eth0": mac,
        "ipv4_eth0": "10." + mac[6:14].replace(":", ".") + "/8",
        "network_interfaces": "eth0",
        "kernel": "Linux version 6.1.0-bench",
        "os": "Bench Linux 1.0",
        "cpu_model": "ARMv7 Processor rev 4 (v7l)",
        "mem_total_kB": "1012356",
        "rootfs_type": "ext4",
        "bootloader_integration": "uboot",
        "rootfs_free_kB": str(4_000_000 - generation),
    }


def new_devices(count: int, rsa_share: float) -> list[Device]:
    """The fleet's devices with new keys: every `1 / rsa_share`-th one RSA-2048."""
    rsa_every = round(1 / rsa_share) if rsa_share > 0 else 0
    kinds = ("rsa" if rsa_every and i % rsa_every == 0 else "ed25519" for i in range(count))
    return [Device(i, device_key(kind)) for i, kind in enumerate(kinds)]


async def _admin(session: aiohttp.ClientSession, base: str) -> str:
    basic = base64.b64encode(":".join(ADMIN).encode()).decode()
    async with session.post(base + LOGIN, headers={"Authorization": f"Basic {basic}"}) as response:
        if response.status != 200:
            raise RuntimeError(f"login answered {response.status}")
        return await response.text()


async def _in_inventory(session: aiohttp.ClientSession, base: str, admin: str) -> int:
    headers = {"Authorization": f"Bearer {admin}"}
    params = {"per_page": "1"}
    async with session.get(base + INVENTORY_DEVICES, params=params, headers=headers) as response:
        return int(response.headers.get("X-Total-Count", "0"))


async def enroll(
    base: str, devices: list[Device], concurrency: int, fleet: int, provision_wait: float
) -> tuple[float, str]:
    """Preauthorize and authenticate every device through the API, wait (at most
    `provision_wait` seconds) until inventory has the whole `fleet` (these and any seeded),
    then have each report its inventory and poll once. The seconds the authentications
    took, and how long provisioning in inventory took (or how far it got)."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=_TIMEOUT) as session:
        admin = await _admin(session, base)
        started = time.monotonic()
        queue = iter(devices)

        async def worker() -> None:
            for device in queue:
                _, device.token = await register_device(
                    session, base, admin, device.index, device.key
                )
                if device.index % 500 == 499:
                    print(f"  {device.index + 1} authenticated", flush=True)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        authenticated = time.monotonic()
        while (have := await _in_inventory(session, base, admin)) < fleet:
            waited = time.monotonic() - authenticated
            if waited > provision_wait:
                break
            print(f"  inventory has {have} of {fleet} devices", flush=True)
            await asyncio.sleep(5)
        waited = time.monotonic() - authenticated
        provisioned = (
            f"inventory had all {fleet:,} devices {waited:,.0f} s after the last authentication"
            if have >= fleet
            else f"inventory had {have:,} of {fleet:,} devices {waited:,.0f} s after the last "
            "authentication (deviceauth's outbox behind; the devices' first reports created "
            "the rest)"
        )
        print(f"  {provisioned}", flush=True)
        queue = iter(devices)

        async def first_contact() -> None:
            for device in queue:
                for kind in ("inventory", "next"):
                    status = await _send(session, base, kind, device, limit=False)
                    if status != EXPECTED[kind]:
                        raise RuntimeError(f"first {kind} of device {device.index}: {status}")

        await asyncio.gather(*(first_contact() for _ in range(concurrency)))
    return authenticated - started, provisioned


# --------------------------------------------------------------------------- load


async def _send(
    session: aiohttp.ClientSession, base: str, kind: str, device: Device, *, limit: bool
) -> int:
    """One request of the mix from `device`; its status. A renewed token replaces the old
    one, as the client's does."""
    bearer = {"Authorization": f"Bearer {device.token}"}
    json_type = {"Content-Type": "application/json"}
    if kind == "next":
        request = session.post(base + NEXT_V2, data=POLL, headers={**bearer, **json_type})
    elif kind == "inventory":
        body = device.attributes()
        request = session.put(base + DEVICE_INVENTORY, data=body, headers={**bearer, **json_type})
    else:
        headers = {**device.auth_headers, **bearer} if limit else device.auth_headers
        request = session.post(base + AUTH_REQUESTS, data=device.auth_body, headers=headers)
    async with request as response:
        body = await response.read()
    if kind == "auth" and response.status == 200 and not limit:
        device.token = body.decode()
    return response.status


@dataclass
class Tally:
    """What one run saw: latencies (s) and statuses by kind of request."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    statuses: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    seconds: float = 0.0
    # The run's start on the event loop's clock, and each request's latency by the second
    # of the run it was sent (or scheduled) in.
    started: float = 0.0
    by_second: dict[int, list[float]] = field(default_factory=lambda: collections.defaultdict(list))

    def add(self, kind: str, status: str, latency: float, sent: float) -> None:
        self.latencies[kind].append(latency)
        self.statuses[kind, status] += 1
        self.by_second[int(sent - self.started)].append(latency)

    @property
    def requests(self) -> int:
        return sum(len(values) for values in self.latencies.values())


class Mix:
    """Which request comes next and from which device: the mix's cycle in a shuffled order,
    a device drawn at random (seeded, so runs are comparable)."""

    def __init__(self, devices: list[Device], seed: int, name: str = "mender") -> None:
        self.devices = devices
        self.random = random.Random(seed)
        cycle = list(MIXES[name])
        self.random.shuffle(cycle)
        self.kinds = itertools.cycle(cycle)

    def next(self) -> tuple[str, Device]:
        return next(self.kinds), self.devices[self.random.randrange(len(self.devices))]


async def _timed(
    session: aiohttp.ClientSession, base: str, kind: str, device: Device, limit: bool
) -> str:
    """The status of one request as a label: the code, or the transport error's name."""
    try:
        status = await _send(session, base, kind, device, limit=limit)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__
    return str(status)


async def closed_loop(
    base: str, mix: Mix, connections: int, seconds: float, *, limit: bool
) -> Tally:
    """`connections` requests in flight for `seconds`."""
    tally = Tally()
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=_TIMEOUT) as session:
        started = tally.started = loop.time()
        deadline = started + seconds

        async def worker() -> None:
            while loop.time() < deadline:
                kind, device = mix.next()
                sent = loop.time()
                status = await _timed(session, base, kind, device, limit)
                tally.add(kind, status, loop.time() - sent, sent)

        await asyncio.gather(*(worker() for _ in range(connections)))
        tally.seconds = loop.time() - started
    return tally


async def paced(base: str, mix: Mix, rate: float, seconds: float, *, limit: bool) -> Tally:
    """`rate` requests/s for `seconds`, each sent at its scheduled time; latency from then."""
    tally = Tally()
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=_PACED_CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector, timeout=_TIMEOUT) as session:
        started = tally.started = loop.time() + 0.05
        in_flight: set[asyncio.Task[None]] = set()

        async def one(kind: str, device: Device, scheduled: float) -> None:
            status = await _timed(session, base, kind, device, limit)
            tally.add(kind, status, loop.time() - scheduled, scheduled)

        for i in range(int(rate * seconds)):
            scheduled = started + i / rate
            # Sleeping 0 when behind still lets the requests in flight make progress.
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            task = asyncio.create_task(one(*mix.next(), scheduled))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)
        tally.seconds = loop.time() - started
    return tally


def percentiles(ordered: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max of sorted latencies in seconds, in milliseconds."""
    if not ordered:
        return 0.0, 0.0, 0.0
    p50, p99 = (ordered[min(len(ordered) - 1, int(len(ordered) * q))] for q in (0.5, 0.99))
    return p50 * 1000, p99 * 1000, ordered[-1] * 1000
