"""What deviceconnect costs: idle device websockets, terminal and file throughput, the NATS hop.

    uv run python bench/deviceconnect_bench.py                     # everything (~3 min)
    uv run python bench/deviceconnect_bench.py --idle 5000 --skip-gateway --skip-nats

Three parts, each starting the processes it measures (state in a temporary directory):

- idle: one deviceconnect process (`python -m services.deviceconnect`) on the embedded
  database; the bench opens `--idle` device websockets to it directly (well-formed unsigned
  device tokens: behind the gateway, services only decode them) and keeps them open, then
  reads the process's resident memory (`VmRSS`) before and after, and checks that every
  device is recorded `connected`. Then every device drops its websocket and connects
  again, as after a network outage: the second round writes over known devices. Each round
  reports the database's and deviceconnect's CPU per device.
- gateway: the whole stack (`common.launcher.Stack`: every service and the gateway, each its
  own process); an admin logs in, a device is preauthorized and authenticates with a signed
  request, and a simulated mender-connect holds its websocket through the gateway. A user
  session through the gateway then receives `--terminal-mib` of terminal output (4 KiB
  shell frames, recorded by the server), and `--file-mib` are downloaded and uploaded with
  the HTTP routes mender-cli uses (4 KiB acknowledged chunks, as mender-connect sends and
  reads them). The RSS of deviceconnect and of the gateway is sampled during each transfer.
- nats: two deviceconnect processes on one database and the NATS server at `--nats`; the
  device is connected to the first; the same terminal session is run with the user on the
  first (local) and on the second (frames cross NATS): round-trip latency of a keystroke
  echo and terminal throughput, side by side.

Results go to `bench/results/deviceconnect.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from pymongo import AsyncMongoClient

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devices import create_admin, register_device  # noqa: E402
from procstats import cpu_seconds, machine, rss_kib  # noqa: E402

from common.localstack.embedded import EmbeddedMongo, free_port  # noqa: E402
from common.localstack.launcher import Stack  # noqa: E402
from services.deviceconnect.app.protocol import (  # noqa: E402
    CONTROL,
    FILE_TRANSFER,
    SHELL,
    Frame,
    decode,
    encode,
    pack_body,
)

RESULTS: Final = ROOT / "bench" / "results" / "deviceconnect.md"
DEVICE_WS: Final = "/api/devices/v1/deviceconnect/connect"
MGMT: Final = "/api/management/v1/deviceconnect"
LOGIN: Final = "/api/management/v1/useradm/auth/login"
ADMIN: Final = ("bench@example.com", "bench-password-1")
MIB: Final = 1024 * 1024
CHUNK: Final = 4096


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _token(claims: dict[str, Any]) -> str:
    return f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(claims)}.c2ln"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _ws(url: str) -> str:
    return "ws" + url.removeprefix("http")


class Sampler:
    """Samples the RSS of some processes every 50 ms while running."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self.before = {name: rss_kib(pid) for name, pid in pids.items()}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], rss_kib(pid))
            await asyncio.sleep(0.05)

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[Sampler]:
        """Sample during the block."""
        self._task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def rows(self) -> list[str]:
        """`| process | before | peak | growth |` rows in MiB."""
        return [
            f"| {name} | {self.before[name] / 1024:.1f} | {self.peak[name] / 1024:.1f} | "
            f"{(self.peak[name] - self.before[name]) / 1024:+.1f} |"
            for name in self.pids
        ]


# --------------------------------------------------------------------------- the device


@dataclass
class SimulatedDevice:
    """mender-connect's answers: a shell that echoes or floods, file transfer of a virtual file."""

    ws: aiohttp.ClientWebSocketResponse
    file_size: int
    uploaded: int = 0
    _acks: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    _streams: set[asyncio.Task[None]] = field(default_factory=set)

    async def send(self, frame: Frame) -> None:
        await self.ws.send_bytes(encode(frame))

    async def serve(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                break
            frame = decode(message.data)
            await self._answer(frame)

    async def _answer(self, frame: Frame) -> None:
        sid = frame.sid
        if frame.proto == CONTROL and frame.typ == "open":
            body = pack_body({"version": 1, "protocols": [SHELL, FILE_TRANSFER]})
            await self.send(Frame(CONTROL, "accept", sid, body=body))
        elif frame.proto == SHELL and frame.typ == "new":
            await self.send(Frame(SHELL, "new", sid, {"status": 1}, b"Shell started"))
        elif frame.proto == SHELL and frame.typ == "shell":
            if frame.body.startswith(b"flood "):
                size = int(frame.body.split()[1])
                block = b"x" * CHUNK
                for _ in range(size // CHUNK):
                    await self.send(Frame(SHELL, "shell", sid, {"status": 1}, block))
                await self.send(Frame(SHELL, "shell", sid, {"status": 1}, b"done"))
            else:
                await self.send(Frame(SHELL, "shell", sid, {"status": 1}, frame.body))
        elif frame.proto == FILE_TRANSFER:
            await self._file(frame)

    async def _file(self, frame: Frame) -> None:
        sid = frame.sid
        if frame.typ == "stat":
            info = {"path": "/bench", "size": self.file_size, "mode": 0o644, "uid": 0, "gid": 0}
            await self.send(Frame(FILE_TRANSFER, "file_info", sid, body=pack_body(info)))
        elif frame.typ == "get_file":
            task = asyncio.create_task(self._stream(sid))
            self._streams.add(task)
            task.add_done_callback(self._streams.discard)
        elif frame.typ == "ack" and "offset" in frame.props:
            self._acks.put_nowait(int(frame.props["offset"]))
        elif frame.typ == "put_file":
            self.uploaded = 0
            await self.send(Frame(FILE_TRANSFER, "ack", sid, {"offset": 0}))
        elif frame.typ == "file_chunk":
            self.uploaded += len(frame.body)
            # As mender-connect: an ack for (at most) every ten chunks, and for the last one.
            if not frame.body or (frame.props["offset"] // CHUNK) % 10 == 9:
                await self.send(Frame(FILE_TRANSFER, "ack", sid, dict(frame.props)))

    async def _stream(self, sid: str) -> None:
        block = os.urandom(CHUNK)
        acked = 0
        offset = 0
        while offset < self.file_size:
            while offset - acked >= 20 * CHUNK:
                acked = await self._acks.get()
            await self.send(Frame(FILE_TRANSFER, "file_chunk", sid, {"offset": offset}, block))
            offset += CHUNK
        await self.send(Frame(FILE_TRANSFER, "file_chunk", sid, {"offset": offset}))


# --------------------------------------------------------------------------- measurements


async def _user_session(
    session: aiohttp.ClientSession, base: str, device_id: str, token: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(
        _ws(base) + f"{MGMT}/devices/{device_id}/connect", headers=_bearer(token), max_msg_size=0
    )
    await ws.send_bytes(encode(Frame(SHELL, "new", props={"terminal_width": 80})))
    while decode(await ws.receive_bytes()).typ != "new":
        pass
    return ws


async def terminal_throughput(ws: aiohttp.ClientWebSocketResponse, mib: int) -> float:
    """MiB/s of terminal output the user receives."""
    started = time.perf_counter()
    await ws.send_bytes(encode(Frame(SHELL, "shell", body=f"flood {mib * MIB}".encode())))
    received = 0
    while True:
        frame = decode(await ws.receive_bytes())
        if frame.body == b"done":
            break
        received += len(frame.body)
    return received / MIB / (time.perf_counter() - started)


async def echo_latency(ws: aiohttp.ClientWebSocketResponse, rounds: int) -> list[float]:
    """Milliseconds from a keystroke to its echo, `rounds` times."""
    times = []
    for i in range(rounds):
        started = time.perf_counter()
        await ws.send_bytes(encode(Frame(SHELL, "shell", body=f"k{i}".encode())))
        while decode(await ws.receive_bytes()).body != f"k{i}".encode():
            pass
        times.append((time.perf_counter() - started) * 1000)
    return times


async def _connect_device(
    session: aiohttp.ClientSession, base: str, token: str, file_size: int
) -> tuple[SimulatedDevice, asyncio.Task[None]]:
    ws = await session.ws_connect(_ws(base) + DEVICE_WS, headers=_bearer(token), max_msg_size=0)
    device = SimulatedDevice(ws, file_size)
    return device, asyncio.create_task(device.serve())


async def _wait(probe: Callable[[], Any], what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not await probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached in {within} s")
        await asyncio.sleep(0.2)


# --------------------------------------------------------------------------- idle


async def _drain(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for _ in ws:
        pass


def _stop(service: subprocess.Popen[bytes]) -> None:
    service.terminate()
    try:
        service.wait(10)
    except subprocess.TimeoutExpired:
        service.kill()
        service.wait()


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a deviceconnect process, its output going to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.deviceconnect"], env=env, stdout=out, stderr=out
        )


async def idle_part(count: int, work: Path) -> list[str]:
    """Hold `count` idle device websockets on one instance; RSS per connection."""
    database = EmbeddedMongo(work / "idle-db", log=work / "idle-db.log")
    database.start()
    port = free_port()
    env = {
        **os.environ,
        "DEVICECONNECT_MONGO_URL": database.url,
        "DEVICECONNECT_LISTEN_PORT": str(port),
        "DEVICECONNECT_DEV_MODE": "true",
        "DEVICECONNECT_LOG_LEVEL": "WARNING",
    }
    service = _spawn(env, work / "idle-deviceconnect.log")
    base = f"http://127.0.0.1:{port}"
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:

            async def healthy() -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(base + "/api/internal/v1/deviceconnect/health") as r:
                        return r.status == 204
                return False

            await _wait(healthy, "deviceconnect healthy")
            await asyncio.sleep(1)
            before = rss_kib(service.pid)
            database_pid = database.pid
            assert database_pid is not None
            readers: list[asyncio.Task[None]] = []
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(database.url)
            devices = client["deviceconnect"]["devices"]
            tokens = [
                _token({"sub": str(uuid.uuid4()), "mender.device": True}) for _ in range(count)
            ]

            async def open_one(token: str) -> None:
                ws = await session.ws_connect(
                    _ws(base) + DEVICE_WS, headers=_bearer(token), heartbeat=None
                )
                sockets.append(ws)
                # Reading answers the server's keep-alive pings, as a live device does.
                readers.append(asyncio.create_task(_drain(ws)))

            async def recorded(status: str) -> bool:
                found = await devices.count_documents({"status": status})
                print(f"idle: {found} recorded {status}", flush=True)
                return found == count

            async def connect_all() -> tuple[float, float, float, float]:
                """Open every device's websocket; seconds to open and to record them all,
                and the CPU seconds of the database and of deviceconnect until then."""
                cpu_before = cpu_seconds(database_pid), cpu_seconds(service.pid)
                started = time.perf_counter()
                for start in range(0, count, 200):
                    await asyncio.gather(*(open_one(t) for t in tokens[start : start + 200]))
                opened = time.perf_counter() - started
                await _wait(functools.partial(recorded, "connected"), "connected", within=900)
                return (
                    opened,
                    time.perf_counter() - started,
                    cpu_seconds(database_pid) - cpu_before[0],
                    cpu_seconds(service.pid) - cpu_before[1],
                )

            rounds = [("first connection", await connect_all())]
            await asyncio.sleep(2)
            after = rss_kib(service.pid)
            # Every device drops its connection and comes back, as after a network outage:
            # now each one is known.
            for ws in sockets:
                await ws.close()
            sockets.clear()
            await _wait(functools.partial(recorded, "disconnected"), "disconnected", within=300)
            rounds.append(("reconnection", await connect_all()))
            await client.close()
            for ws in sockets:
                await ws.close()
            for reader in readers:
                reader.cancel()
    finally:
        _stop(service)
        database.stop()
    per = (after - before) / count
    return [
        "## Idle device websockets on one instance",
        "",
        f"{count} device websockets opened 200 at a time and held open until all are recorded "
        "`connected`; then every one is closed and opened again.",
        "",
        "| round | opened in | all recorded in | database CPU per device | deviceconnect CPU "
        "per device |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {name} | {opened:.1f} s | {took:.1f} s | {db_cpu / count * 1000:.2f} ms | "
            f"{svc_cpu / count * 1000:.2f} ms |"
            for name, (opened, took, db_cpu, svc_cpu) in rounds
        ),
        "",
        "| RSS before | RSS with the connections | per connection |",
        "| --- | --- | --- |",
        f"| {before / 1024:.1f} MiB | {after / 1024:.1f} MiB | {per:.1f} KiB |",
        "",
    ]


# --------------------------------------------------------------------------- gateway


async def gateway_part(terminal_mib: int, file_mib: int, work: Path) -> list[str]:
    """Terminal and file throughput through the gateway, with RSS of the processes."""
    stack = Stack(
        state_dir=work / "stack",
        gateway_port=free_port(),
        extra_env={"DEVICECONNECT_RECORDING_MAX_SIZE": str(4 * terminal_mib * MIB)},
    )
    stack.start()
    try:
        create_admin(stack, ADMIN)
        pids = stack.pids()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            auth = aiohttp.BasicAuth(*ADMIN)
            async with session.post(stack.url + LOGIN, auth=auth) as response:
                admin = await response.text()
            device_id, device_token = await register_device(session, stack.url, admin, 1)
            device, serving = await _connect_device(
                session, stack.url, device_token, file_mib * MIB
            )

            async def connected() -> bool:
                url = f"{stack.url}{MGMT}/devices/{device_id}"
                async with session.get(url, headers=_bearer(admin)) as response:
                    return response.status == 200 and (await response.json())["status"] == (
                        "connected"
                    )

            await _wait(connected, "device connected through the gateway")
            watched = {"deviceconnect": pids["deviceconnect"], "gateway": pids["gateway"]}
            lines = ["## Through the gateway", ""]

            ws = await _user_session(session, stack.url, device_id, admin)
            await terminal_throughput(ws, 1)  # warm-up
            sampler = Sampler(watched)
            async with sampler.sampling():
                rate = await terminal_throughput(ws, terminal_mib)
            await ws.close()
            lines += [
                f"Terminal: {terminal_mib} MiB of output in 4 KiB frames, recorded: "
                f"**{rate:.1f} MiB/s**.",
                "",
                "| process | RSS before (MiB) | peak (MiB) | growth |",
                "| --- | --- | --- | --- |",
                *sampler.rows(),
                "",
            ]

            sampler = Sampler(watched)
            url = f"{stack.url}{MGMT}/devices/{device_id}/download"
            async with sampler.sampling():
                started = time.perf_counter()
                received = 0
                async with session.get(
                    url, params={"path": "/bench"}, headers=_bearer(admin)
                ) as response:
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        received += len(chunk)
                down = received / MIB / (time.perf_counter() - started)
            assert received == file_mib * MIB, received
            lines += [
                f"Download of {file_mib} MiB (`GET …/download`): **{down:.1f} MiB/s**.",
                "",
                "| process | RSS before (MiB) | peak (MiB) | growth |",
                "| --- | --- | --- | --- |",
                *sampler.rows(),
                "",
            ]

            async def body() -> AsyncIterator[bytes]:
                block = os.urandom(64 * 1024)
                for _ in range(file_mib * 16):
                    yield block

            sampler = Sampler(watched)
            async with sampler.sampling():
                form = aiohttp.FormData()
                form.add_field("path", "/tmp/bench")
                form.add_field("file", body(), filename="bench.bin")
                started = time.perf_counter()
                async with session.put(
                    f"{stack.url}{MGMT}/devices/{device_id}/upload",
                    data=form,
                    headers=_bearer(admin),
                ) as response:
                    if response.status != 201:
                        raise RuntimeError(f"upload: {response.status} {await response.text()}")
                up = file_mib / (time.perf_counter() - started)
            assert device.uploaded == file_mib * MIB, device.uploaded
            lines += [
                f"Upload of {file_mib} MiB (`PUT …/upload`, multipart, chunked): "
                f"**{up:.1f} MiB/s**.",
                "",
                "| process | RSS before (MiB) | peak (MiB) | growth |",
                "| --- | --- | --- | --- |",
                *sampler.rows(),
                "",
            ]
            await device.ws.close()
            serving.cancel()
    finally:
        stack.stop()
    return lines


# --------------------------------------------------------------------------- nats


async def nats_part(nats_uri: str, terminal_mib: int, rounds: int, work: Path) -> list[str]:
    """Local versus cross-instance sessions: echo latency and terminal throughput."""
    database = EmbeddedMongo(work / "nats-db", log=work / "nats-db.log")
    database.start()
    ports = [free_port(), free_port()]
    services = []
    for index, port in enumerate(ports):
        env = {
            **os.environ,
            "DEVICECONNECT_MONGO_URL": database.url,
            "DEVICECONNECT_LISTEN_PORT": str(port),
            "DEVICECONNECT_DEV_MODE": "true",
            "DEVICECONNECT_NATS_URI": nats_uri,
            "DEVICECONNECT_RECORDING_MAX_SIZE": str(4 * terminal_mib * MIB),
            "DEVICECONNECT_LOG_LEVEL": "WARNING",
        }
        services.append(_spawn(env, work / f"nats-deviceconnect-{index}.log"))
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    results: dict[str, tuple[list[float], float]] = {}
    try:
        async with aiohttp.ClientSession() as session:
            for base in bases:

                async def healthy(base: str = base) -> bool:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(
                            base + "/api/internal/v1/deviceconnect/health"
                        ) as response:
                            return response.status == 204
                    return False

                await _wait(healthy, "deviceconnect healthy")
            device_id = str(uuid.uuid4())
            device_token = _token({"sub": device_id, "mender.device": True})
            user = _token({"sub": "bench-user", "mender.user": True})
            device, serving = await _connect_device(session, bases[0], device_token, 0)
            await asyncio.sleep(0.5)
            for label, base in (
                ("local (user on the device's instance)", bases[0]),
                ("across NATS (user on the other instance)", bases[1]),
            ):
                ws = await _user_session(session, base, device_id, user)
                await echo_latency(ws, 20)
                latency = await echo_latency(ws, rounds)
                await terminal_throughput(ws, 1)
                rate = await terminal_throughput(ws, terminal_mib)
                results[label] = (latency, rate)
                await ws.close()
            await device.ws.close()
            serving.cancel()
    finally:
        for service in services:
            _stop(service)
        database.stop()
    lines = [
        "## The hop between instances (NATS)",
        "",
        f"The device on one instance; the user on the same one or on the other. Echo of a "
        f"keystroke ({rounds} rounds, after 20 of warm-up) and {terminal_mib} MiB of terminal "
        "output in 4 KiB frames; direct to the instances, no gateway.",
        "",
        "| user | echo p50 (ms) | echo p99 (ms) | terminal (MiB/s) |",
        "| --- | --- | --- | --- |",
    ]
    for label, (latency, rate) in results.items():
        p99 = statistics.quantiles(latency, n=100)[98]
        lines.append(f"| {label} | {statistics.median(latency):.2f} | {p99:.2f} | {rate:.1f} |")
    return [*lines, ""]


async def main() -> None:
    """Run the selected parts and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=int, default=5000, help="idle device websockets")
    parser.add_argument("--terminal-mib", type=int, default=32)
    parser.add_argument("--file-mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=500, help="echo round trips")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--skip-gateway", action="store_true")
    parser.add_argument("--skip-nats", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    lines = ["# deviceconnect", "", *machine(), ""]
    with tempfile.TemporaryDirectory(prefix="fp-dcbench-") as tmp:
        work = Path(tmp)
        if not args.skip_idle:
            lines += await idle_part(args.idle, work)
            print("\n".join(lines), flush=True)
        if not args.skip_gateway:
            lines += await gateway_part(args.terminal_mib, args.file_mib, work)
            print("\n".join(lines), flush=True)
        if not args.skip_nats:
            lines += await nats_part(args.nats, args.terminal_mib, args.rounds, work)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines).rstrip() + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
