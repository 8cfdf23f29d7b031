"""Many idle device connections on one instance: each is tracked, none is lost."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from pymongo import AsyncMongoClient
from websockets.asyncio.client import connect

from common.core.mongo import Document
from tests.deviceconnect.conftest import DEVICE_WS, ServeFactory
from tests.deviceconnect.fakes import device_token
from tests.deviceconnect.test_api_connect import status_of
from tests.toolkit import eventually

COUNT = 1000


async def test_a_thousand_idle_devices(
    serve_with: ServeFactory, mongo: AsyncMongoClient[Document], db_name: str
) -> None:
    devices = mongo[db_name]["devices"]
    async with serve_with() as dc, contextlib.AsyncExitStack() as stack:
        ids = [str(uuid.uuid4()) for _ in range(COUNT)]
        url = dc.ws_url + DEVICE_WS

        async def open_one(device_id: str) -> None:
            headers = {"Authorization": f"Bearer {device_token(device_id)}"}
            await stack.enter_async_context(connect(url, additional_headers=headers))

        for start in range(0, COUNT, 100):
            await asyncio.gather(*(open_one(d) for d in ids[start : start + 100]))

        async def all_connected() -> bool:
            return await devices.count_documents({"status": "connected"}) == COUNT

        await eventually(all_connected, within=60)
        assert await status_of(dc, ids[0]) == "connected"
        assert await status_of(dc, ids[-1]) == "connected"
        await stack.aclose()

        async def none_connected() -> bool:
            return await devices.count_documents({"status": "disconnected"}) == COUNT

        await eventually(none_connected, within=60)
        assert await devices.count_documents({"version": 1}) == COUNT
