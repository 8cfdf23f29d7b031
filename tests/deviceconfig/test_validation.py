"""Mender's limits on configurations, on every write: the device's report, the user's
desired configuration and the internal merge. A refused write changes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.deviceconfig.conftest import (
    DEVICE_API,
    INTERNAL,
    MANAGEMENT,
    device_headers,
    user_headers,
)
from tests.toolkit import assert_error

Write = Callable[[Any], Awaitable[httpx.Response]]

DEVICE = "3f3b6c2e-6a57-4b1e-8f0e-2d5c0a9d1e01"
BEFORE = {"kept": "as it was"}


@pytest.fixture(params=["device report", "desired", "internal merge"])
async def write(request: pytest.FixtureRequest, client: httpx.AsyncClient) -> Write:
    """One of the three writes of a configuration, on a device that already has `BEFORE`."""
    kind: str = request.param
    if kind == "device report":
        url, method, headers = DEVICE_API, "PUT", device_headers(DEVICE)
    elif kind == "desired":
        url, method, headers = f"{MANAGEMENT}/{DEVICE}", "PUT", user_headers()
    else:
        url, method, headers = f"{INTERNAL}/tenants//configurations/device/{DEVICE}", "PATCH", {}

    async def send(body: Any) -> httpx.Response:
        if isinstance(body, bytes):
            return await client.request(
                method, url, content=body, headers={**headers, "Content-Type": "application/json"}
            )
        return await client.request(method, url, json=body, headers=headers)

    assert (await send(BEFORE)).status_code == 204
    return send


async def _unchanged(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{MANAGEMENT}/{DEVICE}", headers=user_headers())
    assert response.status_code == 200
    body = response.json()
    assert BEFORE in (body["configured"], body["reported"])


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (1234, "number"),
        (1.5, "number"),
        (None, "null"),
        (False, "boolean"),
        ({}, "object"),
        ([], "array"),
    ],
)
async def test_values_must_be_strings(
    write: Write, client: httpx.AsyncClient, value: Any, kind: str
) -> None:
    response = await write({"key": "value", "another-key": value})
    assert_error(
        response,
        400,
        f'invalid request body: value of "another-key": invalid type: {kind}; '
        "values must be strings.",
    )
    await _unchanged(client)


async def test_blank_key(write: Write, client: httpx.AsyncClient) -> None:
    assert_error(await write({"": "value"}), 400, "invalid request body: key: cannot be blank.")
    await _unchanged(client)


async def test_key_too_long(write: Write, client: httpx.AsyncClient) -> None:
    response = await write({"k" * 4097: "value"})
    assert_error(
        response,
        400,
        f'invalid request body: key "{"k" * 64}…": the length must be no more than 4096 bytes.',
    )
    await _unchanged(client)


async def test_value_too_long_in_bytes(write: Write, client: httpx.AsyncClient) -> None:
    # 2049 two-byte characters: 4098 bytes.
    response = await write({"motd": "é" * 2049})
    assert_error(
        response,
        400,
        'invalid request body: value of "motd": the length must be no more than 4096 bytes.',
    )
    await _unchanged(client)


async def test_longest_key_and_value(write: Write, client: httpx.AsyncClient) -> None:
    longest = {"k" * 4096: "é" * 2048}
    assert (await write(longest)).status_code == 204
    response = await client.get(f"{MANAGEMENT}/{DEVICE}", headers=user_headers())
    body = response.json()
    assert longest.items() <= {**body["configured"], **body["reported"]}.items()


async def test_at_most_a_hundred_keys(write: Write, client: httpx.AsyncClient) -> None:
    response = await write({f"key-{i}": str(i) for i in range(101)})
    assert_error(
        response, 400, "invalid request body: too many configuration attributes, maximum is 100"
    )
    await _unchanged(client)
    assert (await write({f"key-{i}": str(i) for i in range(99)})).status_code == 204


async def test_not_an_object(write: Write, client: httpx.AsyncClient) -> None:
    response = await write([{"key": "a", "value": "b"}])
    assert_error(response, 400, "invalid request: Input should be a valid dictionary")
    await _unchanged(client)


async def test_not_json(write: Write, client: httpx.AsyncClient) -> None:
    response = await write(b'{"key": ')
    assert response.status_code == 400
    assert response.json()["error"].startswith("failed to decode request body: ")
    await _unchanged(client)
