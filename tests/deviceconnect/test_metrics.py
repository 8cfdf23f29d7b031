"""deviceconnect's `/metrics`: the devices connected to the instance and their sessions."""

from __future__ import annotations

import uuid

from tests.deviceconnect.conftest import Running
from tests.deviceconnect.test_api_sessions import start_shell, user_ws
from tests.toolkit import Scrape, eventually

_DEVICES = "fleetport_deviceconnect_devices"
_SESSIONS = "fleetport_deviceconnect_sessions"


async def _scrape(dc: Running) -> Scrape:
    return Scrape.of(await dc.client.get("/metrics"))


class TestConnectionMetrics:
    async def test_devices_and_sessions(self, dc: Running) -> None:
        before = await _scrape(dc)
        device_id = str(uuid.uuid4())
        async with dc.device(device_id):

            async def connected() -> Scrape | None:
                page = await _scrape(dc)
                return page if page.value(_DEVICES) == before.value(_DEVICES) + 1 else None

            await eventually(connected, what="the device counted")
            async with user_ws(dc, device_id) as ws:
                await start_shell(ws)
                page = await _scrape(dc)
                assert page.value(_SESSIONS) == before.value(_SESSIONS) + 1

            async def session_ended() -> bool:
                return (await _scrape(dc)).value(_SESSIONS) == before.value(_SESSIONS)

            await eventually(session_ended, what="the session no longer counted")

        async def disconnected() -> bool:
            return (await _scrape(dc)).value(_DEVICES) == before.value(_DEVICES)

        await eventually(disconnected, what="the device no longer counted")
