"""Token checks through a real gateway against a verifier stub we control."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid

import httpx

from tests.gateway.conftest import GatewayFactory, RunningGateway
from tests.gateway.stubs import DEVICE_VERIFY, USER_VERIFY, VerifierControl, make_token
from tests.toolkit import ManualClock, assert_error

DEVICE_PATH = "/api/devices/v1/inventory/device/attributes"
USER_PATH = "/api/management/v1/useradm/users"
LOGOUT = "/api/management/v1/useradm/auth/logout"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _forwarded(response: httpx.Response) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        out.setdefault(name, []).append(value)
    return out


class TestMissingOrMalformed:
    async def test_missing_header(self, gw: RunningGateway, verifier: VerifierControl) -> None:
        for path in (DEVICE_PATH, USER_PATH):
            r = await gw.client.get(path)
            assert assert_error(r, 401) == "Authorization not present in header"
        assert verifier.calls == []

    async def test_empty_bearer(self, gw: RunningGateway, verifier: VerifierControl) -> None:
        r = await gw.client.get(DEVICE_PATH, headers={"Authorization": "Bearer"})
        assert assert_error(r, 401) == "Authorization not present in header"
        assert verifier.calls == []

    async def test_basic_credentials_on_a_token_route(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        r = await gw.client.get(USER_PATH, auth=("admin@example.com", "secret-password"))
        assert assert_error(r, 401) == "Authorization not present in header"
        assert verifier.calls == []

    async def test_malformed_tokens(self, gw: RunningGateway, verifier: VerifierControl) -> None:
        good = make_token()
        header, payload, _ = good.split(".")
        for bad in ("garbage", "a.b", f"{header}.{payload}.", f"{header}.!!!.sig", "x" * 9000):
            r = await gw.client.get(DEVICE_PATH, headers=_bearer(bad))
            assert assert_error(r, 401) == "malformed token"
        no_exp = make_token(extra={"exp": None})
        r = await gw.client.get(USER_PATH, headers=_bearer(no_exp))
        assert assert_error(r, 401) == "malformed token"
        assert verifier.calls == []


class TestVerifierCall:
    async def test_device_routes_ask_deviceauth(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        token = make_token()
        r = await gw.client.put(
            f"{DEVICE_PATH}?a=1",
            headers={**_bearer(token), "X-MEN-RequestID": "req-123"},
            json=[{"name": "x", "value": 1}],
        )
        assert r.status_code == 200
        [call] = verifier.calls
        assert call["path"] == DEVICE_VERIFY
        assert call["method"] == "GET"
        assert call["authorization"] == f"Bearer {token}"
        assert call["x-forwarded-uri"] == f"{DEVICE_PATH}?a=1"
        assert call["x-forwarded-method"] == "PUT"
        assert call["x-forwarded-host"] == gw.url.removeprefix("http://")
        assert call["x-forwarded-proto"] == "http"
        assert call["x-forwarded-for"] == "127.0.0.1"
        assert call["x-men-requestid"] == "req-123"

    async def test_user_routes_ask_useradm(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        token = make_token(device=False)
        r = await gw.client.get(USER_PATH, headers=_bearer(token))
        assert r.status_code == 200
        assert [c["path"] for c in verifier.calls] == [USER_VERIFY]
        assert _forwarded(r)["authorization"] == [f"Bearer {token}"]

    async def test_refusals_are_relayed(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        for status in (401, 403):
            verifier.status = status
            verifier.body = b'{"error":"token verification failed","request_id":"r"}'
            verifier.headers = [(b"content-type", b"application/json; charset=utf-8")]
            r = await gw.client.get(DEVICE_PATH, headers=_bearer(make_token()))
            assert r.status_code == status
            assert r.content == verifier.body
            assert r.headers["content-type"] == "application/json; charset=utf-8"
            assert r.headers["X-MEN-RequestID"]

    async def test_too_many_requests_keeps_retry_after(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        verifier.status = 429
        verifier.body = b'{"error":"too many requests","request_id":"r"}'
        verifier.headers = [(b"retry-after", b"17"), (b"content-type", b"application/json")]
        r = await gw.client.get(USER_PATH, headers=_bearer(make_token(device=False)))
        assert r.status_code == 429
        assert r.headers["retry-after"] == "17"
        assert r.json()["error"] == "too many requests"

    async def test_rbac_headers_come_from_the_verifier_only(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        verifier.headers = [(b"x-men-rbac-inventory-groups", b"lab")]
        r = await gw.client.get(
            USER_PATH,
            headers={
                **_bearer(make_token(device=False)),
                "X-MEN-RBAC-Inventory-Groups": "everything",
                "X-MEN-RBAC-Releases-Tags": "forged",
            },
        )
        forwarded = _forwarded(r)
        assert forwarded["x-men-rbac-inventory-groups"] == ["lab"]
        assert "x-men-rbac-releases-tags" not in forwarded

    async def test_public_routes_skip_the_verifier(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        verifier.status = 401
        r = await gw.client.post(
            "/api/management/v1/useradm/auth/login", auth=("a@b.io", "password1")
        )
        assert r.status_code == 200
        assert _forwarded(r)["authorization"][0].startswith("Basic ")
        r = await gw.client.post(
            "/api/devices/v1/authentication/auth_requests",
            headers={"Authorization": "Bearer", "X-MEN-Signature": "c2ln"},
            content=b'{"id_data":"{}"}\n',
        )
        assert r.status_code == 200
        assert _forwarded(r)["x-men-signature"] == ["c2ln"]
        r = await gw.client.get("/api/devices/v1/deployments/download/configuration/a/b/c")
        assert r.status_code == 200
        assert verifier.calls == []

    async def test_jwt_cookie_on_management_routes(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        token = make_token(device=False)
        r = await gw.client.get(USER_PATH, headers={"Cookie": f"theme=dark; JWT={token}"})
        assert r.status_code == 200
        assert verifier.calls[0]["authorization"] == f"Bearer {token}"
        assert _forwarded(r)["authorization"] == [f"Bearer {token}"]

    async def test_jwt_cookie_is_not_a_device_credential(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        r = await gw.client.get(DEVICE_PATH, headers={"Cookie": f"JWT={make_token()}"})
        assert assert_error(r, 401) == "Authorization not present in header"
        assert verifier.calls == []


class TestCache:
    async def test_hit_does_not_ask_again(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        token = make_token()
        for _ in range(5):
            r = await gw.client.get(DEVICE_PATH, headers=_bearer(token))
            assert r.status_code == 200
        assert len(verifier.calls) == 1

    async def test_parallel_requests_share_one_verification(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        verifier.delay = 0.2
        token = make_token()
        responses = await asyncio.gather(
            *(gw.client.get(DEVICE_PATH, headers=_bearer(token)) for _ in range(10))
        )
        assert [r.status_code for r in responses] == [200] * 10
        assert len(verifier.calls) == 1

    async def test_device_and_user_caches_are_separate(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        token = make_token()
        assert (await gw.client.get(DEVICE_PATH, headers=_bearer(token))).status_code == 200
        verifier.status = 401
        r = await gw.client.get(USER_PATH, headers=_bearer(token))
        assert r.status_code == 401
        assert [c["path"] for c in verifier.calls] == [DEVICE_VERIFY, USER_VERIFY]

    async def test_refusals_are_not_cached(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        token = make_token()
        verifier.status = 401
        for _ in range(3):
            assert (await gw.client.get(DEVICE_PATH, headers=_bearer(token))).status_code == 401
        verifier.status = 200
        assert (await gw.client.get(DEVICE_PATH, headers=_bearer(token))).status_code == 200
        assert len(verifier.calls) == 4

    async def test_entries_expire_after_the_ttl(
        self, gateway_factory: GatewayFactory, verifier: VerifierControl, clock: ManualClock
    ) -> None:
        async with gateway_factory(token_cache_ttl=3, clock=clock) as gw:
            token = make_token(exp=clock.time() + 3600)
            for _ in range(2):
                assert (await gw.client.get(DEVICE_PATH, headers=_bearer(token))).status_code == 200
            clock.advance(2.9)
            assert (await gw.client.get(DEVICE_PATH, headers=_bearer(token))).status_code == 200
            assert len(verifier.calls) == 1
            clock.advance(0.2)
            verifier.status = 401
            r = await gw.client.get(DEVICE_PATH, headers=_bearer(token))
            assert r.status_code == 401
            assert len(verifier.calls) == 2

    async def test_token_expiry_caps_the_ttl(
        self, gateway_factory: GatewayFactory, verifier: VerifierControl, clock: ManualClock
    ) -> None:
        async with gateway_factory(token_cache_ttl=60, clock=clock) as gw:
            token = make_token(exp=clock.time() + 5)
            assert (await gw.client.get(DEVICE_PATH, headers=_bearer(token))).status_code == 200
            clock.advance(4.9)
            assert (await gw.client.get(DEVICE_PATH, headers=_bearer(token))).status_code == 200
            assert len(verifier.calls) == 1
            clock.advance(0.2)
            verifier.status = 403
            r = await gw.client.get(DEVICE_PATH, headers=_bearer(token))
            assert r.status_code == 403
            assert len(verifier.calls) == 2

    async def test_zero_ttl_asks_every_time(
        self, gateway_factory: GatewayFactory, verifier: VerifierControl
    ) -> None:
        async with gateway_factory(token_cache_ttl=0) as gw:
            token = make_token()
            for _ in range(3):
                await gw.client.get(DEVICE_PATH, headers=_bearer(token))
            assert len(verifier.calls) == 3


class TestLogout:
    async def test_logout_evicts_the_token(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        token = make_token(device=False)
        assert (await gw.client.get(USER_PATH, headers=_bearer(token))).status_code == 200
        assert (await gw.client.get(USER_PATH, headers=_bearer(token))).status_code == 200
        assert len(verifier.calls) == 1
        r = await gw.client.post(f"{LOGOUT}?status=202", headers=_bearer(token))
        assert r.status_code == 202
        assert len(verifier.calls) == 1  # the logout itself was served from the cache
        # useradm deleted the token: it must be asked again, and its refusal reaches us.
        verifier.status = 401
        r = await gw.client.get(USER_PATH, headers=_bearer(token))
        assert r.status_code == 401
        assert len(verifier.calls) == 2

    async def test_failed_logout_keeps_the_token(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        token = make_token(device=False)
        await gw.client.get(USER_PATH, headers=_bearer(token))
        r = await gw.client.post(f"{LOGOUT}?status=500", headers=_bearer(token))
        assert r.status_code == 500
        await gw.client.get(USER_PATH, headers=_bearer(token))
        assert len(verifier.calls) == 1

    async def test_logout_of_another_token_keeps_this_one(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        mine, other = make_token(device=False), make_token(device=False)
        await gw.client.get(USER_PATH, headers=_bearer(mine))
        await gw.client.post(f"{LOGOUT}?status=202", headers=_bearer(other))
        await gw.client.get(USER_PATH, headers=_bearer(mine))
        assert [c["authorization"] for c in verifier.calls] == [
            f"Bearer {mine}",
            f"Bearer {other}",
        ]

    async def test_logout_needs_a_token(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        r = await gw.client.post(LOGOUT)
        assert assert_error(r, 401) == "Authorization not present in header"


class TestRateLimit:
    async def test_per_client_limit(
        self, gateway_factory: GatewayFactory, verifier: VerifierControl
    ) -> None:
        async with gateway_factory(rate_limit_per_second=0.5, rate_limit_burst=2) as gw:
            login = "/api/management/v1/useradm/auth/login"
            assert (await gw.client.post(login)).status_code == 200
            assert (await gw.client.post(login)).status_code == 200
            r = await gw.client.post(login)
            assert assert_error(r, 429) == "too many requests"
            assert r.headers["retry-after"] == "2"
            # The limit is checked before the token, so it spares the verifier too.
            r = await gw.client.get(DEVICE_PATH, headers=_bearer(make_token()))
            assert r.status_code == 429
            assert verifier.calls == []
            assert (await gw.client.get("/status")).status_code == 204


class TestDeviceRevocation:
    """Changing a device through deviceauth's management API drops its cached tokens."""

    async def _cache(self, gw: RunningGateway, token: str) -> None:
        assert (await gw.client.get(DEVICE_PATH, headers=_bearer(token))).status_code == 200

    async def test_decommission_drops_the_devices_tokens(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        device = str(uuid.uuid4())
        first, second = make_token(sub=device), make_token(sub=device)
        bystander = make_token()
        for token in (first, second, bystander):
            await self._cache(gw, token)
        admin = make_token(device=False)
        r = await gw.client.delete(
            f"/api/management/v2/devauth/devices/{device}?status=202", headers=_bearer(admin)
        )
        assert r.status_code == 202
        calls = len(verifier.calls)
        verifier.status = 401
        for token in (first, second):
            r = await gw.client.get(DEVICE_PATH, headers=_bearer(token))
            assert r.status_code == 401
        assert len(verifier.calls) == calls + 2
        verifier.status = 200
        await self._cache(gw, bystander)  # still served from the cache
        assert len(verifier.calls) == calls + 2

    async def test_token_revocation_drops_that_token(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        token = make_token()
        await self._cache(gw, token)
        jti = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["jti"]
        admin = make_token(device=False)
        r = await gw.client.delete(
            f"/api/management/v2/devauth/tokens/{jti}?status=202", headers=_bearer(admin)
        )
        assert r.status_code == 202
        calls = len(verifier.calls)
        verifier.status = 401
        assert (await gw.client.get(DEVICE_PATH, headers=_bearer(token))).status_code == 401
        # No longer served from the cache: deviceauth was asked about it again.
        assert [c["path"] for c in verifier.calls[calls:]] == [DEVICE_VERIFY]

    async def test_reads_and_failures_keep_the_cache(
        self, gw: RunningGateway, verifier: VerifierControl
    ) -> None:
        device = str(uuid.uuid4())
        token = make_token(sub=device)
        await self._cache(gw, token)
        admin = make_token(device=False)
        path = f"/api/management/v2/devauth/devices/{device}"
        await gw.client.get(path, headers=_bearer(admin))
        await gw.client.delete(f"{path}?status=404", headers=_bearer(admin))
        calls = len(verifier.calls)
        await self._cache(gw, token)
        assert len(verifier.calls) == calls
