"""Unit tests of the token checks, the cache, the rate limiter and the settings."""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from gateway.auth import (
    Denial,
    Grant,
    TokenCache,
    TokenGate,
    VerifierUnavailable,
    token_expiry,
)
from gateway.config import Settings
from gateway.headers import bearer_token, cookie_token
from gateway.ratelimit import RateLimiter
from gateway.routes import AuthMode
from tests.gateway.stubs import make_token
from tests.toolkit import ManualClock


class FakeVerifier:
    """Answers with a queued verdict and records what it was asked."""

    def __init__(self) -> None:
        self.verdict: Grant | Denial = Grant()
        self.calls: list[tuple[AuthMode, str]] = []
        self.gate: asyncio.Event | None = None

    async def verify(
        self, mode: AuthMode, token: str, forwarded: Sequence[tuple[str, str]]
    ) -> Grant | Denial:
        self.calls.append((mode, token))
        if self.gate is not None:
            await self.gate.wait()
        return self.verdict


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _jwt(header: bytes, payload: bytes, signature: str) -> str:
    return f"{_b64(header)}.{_b64(payload)}.{signature}"


class TestTokenExpiry:
    def test_valid(self) -> None:
        assert token_expiry(make_token(exp=1234)) == 1234.0

    def test_float_exp(self) -> None:
        token = _jwt(b"{}", b'{"exp": 12.5}', "sig")
        assert token_expiry(token) == 12.5

    @pytest.mark.parametrize(
        "token",
        [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            _jwt(b"{}", b'{"exp": 1}', ""),  # alg none style: empty signature
            _jwt(b"{}", b'{"exp": "soon"}', "sig"),
            _jwt(b"{}", b'{"exp": true}', "sig"),
            _jwt(b"{}", b"[1, 2]", "sig"),
            _jwt(b"[]", b'{"exp": 1}', "sig"),
            _jwt(b"not json", b'{"exp": 1}', "sig"),
            _jwt(b"{}", b'{"exp": 1}', "si g"),
            _jwt(b"{}", b'{"exp": 1}', "sig+/="),
            "x" * 9000,
            make_token()[:-3] + "\u00e9sig",
        ],
    )
    def test_malformed(self, token: str) -> None:
        assert token_expiry(token) is None

    def test_no_expiry(self) -> None:
        assert token_expiry(_jwt(b"{}", b'{"sub": "u"}', "sig")) == math.inf


class TestTokenCache:
    def _cache(self, clock: ManualClock, *, ttl: float = 3.0, size: int = 10) -> TokenCache:
        return TokenCache(
            ttl=ttl, max_size=size, horizon=5.0, clock=clock.monotonic, wall_clock=clock.time
        )

    def test_hit_within_ttl_then_expiry(self) -> None:
        clock = ManualClock()
        cache = self._cache(clock)
        grant = Grant()
        cache.put("t", grant, exp=clock.time() + 3600, started=clock.monotonic())
        clock.advance(2.9)
        assert cache.get("t") is grant
        clock.advance(0.2)
        assert cache.get("t") is None
        assert len(cache) == 0

    def test_exp_caps_the_lifetime(self) -> None:
        clock = ManualClock()
        cache = self._cache(clock)
        cache.put("t", Grant(), exp=clock.time() + 1, started=clock.monotonic())
        clock.advance(0.9)
        assert cache.get("t") is not None
        clock.advance(0.2)
        assert cache.get("t") is None

    def test_expired_token_is_not_cached(self) -> None:
        clock = ManualClock()
        cache = self._cache(clock)
        cache.put("t", Grant(), exp=clock.time() - 1, started=clock.monotonic())
        assert cache.get("t") is None

    def test_zero_ttl_disables_the_cache(self) -> None:
        clock = ManualClock()
        cache = self._cache(clock, ttl=0)
        cache.put("t", Grant(), exp=clock.time() + 60, started=clock.monotonic())
        assert cache.get("t") is None

    def test_bounded_least_recently_used_go_first(self) -> None:
        clock = ManualClock()
        cache = self._cache(clock, size=3)
        for name in "abc":
            cache.put(name, Grant(), exp=clock.time() + 60, started=clock.monotonic())
        assert cache.get("a") is not None  # a is now the most recently used
        cache.put("d", Grant(), exp=clock.time() + 60, started=clock.monotonic())
        assert len(cache) == 3
        assert cache.get("b") is None
        assert all(cache.get(n) is not None for n in "acd")

    def test_end_session_evicts(self) -> None:
        clock = ManualClock()
        cache = self._cache(clock)
        cache.put("t", Grant(), exp=clock.time() + 60, started=clock.monotonic())
        cache.end_session("t")
        assert cache.get("t") is None

    def test_verification_in_flight_at_logout_is_not_cached(self) -> None:
        clock = ManualClock()
        cache = self._cache(clock)
        started = clock.monotonic()
        clock.advance(0.1)
        cache.end_session("t")
        clock.advance(0.1)
        cache.put("t", Grant(), exp=clock.time() + 60, started=started)
        assert cache.get("t") is None
        # A verification that starts after the logout may cache again.
        cache.put("t", Grant(), exp=clock.time() + 60, started=clock.monotonic())
        assert cache.get("t") is not None

    def test_ended_sessions_are_forgotten_after_the_horizon(self) -> None:
        clock = ManualClock()
        cache = self._cache(clock, size=2)
        for i in range(5):
            cache.end_session(f"t{i}")
        assert len(cache._ended) == 2
        clock.advance(10)
        cache.end_session("late")
        assert list(cache._ended) == ["late"]


class TestTokenGate:
    def _gate(self, clock: ManualClock, verifier: FakeVerifier, ttl: float = 3.0) -> TokenGate:
        return TokenGate(
            verifier,
            ttl=ttl,
            max_size=100,
            horizon=5.0,
            clock=clock.monotonic,
            wall_clock=clock.time,
        )

    async def test_missing_token_is_refused_without_asking(self) -> None:
        verifier = FakeVerifier()
        verdict = await self._gate(ManualClock(), verifier).check(AuthMode.DEVICE, "", [])
        assert verdict == Denial(401, "Authorization not present in header")
        assert verifier.calls == []

    async def test_malformed_token_is_refused_without_asking(self) -> None:
        verifier = FakeVerifier()
        verdict = await self._gate(ManualClock(), verifier).check(AuthMode.USER, "a.b", [])
        assert verdict == Denial(401, "malformed token")
        assert verifier.calls == []

    async def test_positive_answers_are_cached_per_mode(self) -> None:
        clock, verifier = ManualClock(), FakeVerifier()
        gate = self._gate(clock, verifier)
        token = make_token(exp=clock.time() + 3600)
        for _ in range(3):
            assert isinstance(await gate.check(AuthMode.DEVICE, token, []), Grant)
        assert verifier.calls == [(AuthMode.DEVICE, token)]
        # A device token accepted by deviceauth is not thereby accepted as a user token.
        await gate.check(AuthMode.USER, token, [])
        assert verifier.calls[-1] == (AuthMode.USER, token)

    async def test_negative_answers_are_not_cached(self) -> None:
        clock, verifier = ManualClock(), FakeVerifier()
        verifier.verdict = Denial(401, body=b"{}")
        gate = self._gate(clock, verifier)
        token = make_token(exp=clock.time() + 3600)
        for _ in range(3):
            assert isinstance(await gate.check(AuthMode.DEVICE, token, []), Denial)
        assert len(verifier.calls) == 3

    async def test_logout_during_verification(self) -> None:
        clock, verifier = ManualClock(), FakeVerifier()
        verifier.gate = asyncio.Event()
        gate = self._gate(clock, verifier)
        token = make_token(exp=clock.time() + 3600)
        pending = asyncio.create_task(gate.check(AuthMode.USER, token, []))
        await asyncio.sleep(0)
        clock.advance(0.01)
        gate.end_session(token)
        verifier.gate.set()
        assert isinstance(await pending, Grant)
        verifier.gate = None
        await gate.check(AuthMode.USER, token, [])
        assert len(verifier.calls) == 2


class TestConcurrentChecks:
    def _gate(self, verifier: FakeVerifier) -> TokenGate:
        clock = ManualClock()
        return TokenGate(
            verifier,
            ttl=3.0,
            max_size=100,
            horizon=5.0,
            clock=clock.monotonic,
            wall_clock=clock.time,
        )

    async def _run_five(self, gate: TokenGate, verifier: FakeVerifier, token: str) -> list[object]:
        verifier.gate = asyncio.Event()
        tasks = [asyncio.create_task(gate.check(AuthMode.DEVICE, token, [])) for _ in range(5)]
        await asyncio.sleep(0)
        verifier.gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    async def test_one_verification_for_parallel_requests(self) -> None:
        verifier = FakeVerifier()
        gate = self._gate(verifier)
        results = await self._run_five(gate, verifier, make_token())
        assert all(isinstance(r, Grant) for r in results)
        assert len(verifier.calls) == 1

    async def test_refusal_is_not_shared(self) -> None:
        verifier = FakeVerifier()
        verifier.verdict = Denial(429, body=b"{}")
        gate = self._gate(verifier)
        results = await self._run_five(gate, verifier, make_token())
        assert all(isinstance(r, Denial) for r in results)
        assert len(verifier.calls) == 5

    async def test_unavailable_verifier_fails_everyone(self) -> None:
        class Down(FakeVerifier):
            async def verify(
                self, mode: AuthMode, token: str, forwarded: Sequence[tuple[str, str]]
            ) -> Grant | Denial:
                self.calls.append((mode, token))
                assert self.gate is not None
                await self.gate.wait()
                raise VerifierUnavailable(502, "deviceauth did not answer the token check")

        verifier = Down()
        gate = self._gate(verifier)
        results = await self._run_five(gate, verifier, make_token())
        assert all(isinstance(r, VerifierUnavailable) for r in results)
        assert len(verifier.calls) == 1

    async def test_cancelled_verification_lets_the_others_ask(self) -> None:
        verifier = FakeVerifier()
        verifier.gate = asyncio.Event()
        gate = self._gate(verifier)
        token = make_token()
        leader = asyncio.create_task(gate.check(AuthMode.DEVICE, token, []))
        await asyncio.sleep(0)
        follower = asyncio.create_task(gate.check(AuthMode.DEVICE, token, []))
        await asyncio.sleep(0)
        leader.cancel()
        await asyncio.sleep(0)
        verifier.gate.set()
        assert isinstance(await follower, Grant)
        assert leader.cancelled()
        assert len(verifier.calls) == 2


class TestRateLimiter:
    def test_burst_then_refill(self) -> None:
        clock = ManualClock()
        limiter = RateLimiter(rate=2.0, burst=3, clock=clock.monotonic)
        assert [limiter.retry_after("a") for _ in range(3)] == [0, 0, 0]
        assert limiter.retry_after("a") == 1
        assert limiter.retry_after("b") == 0
        clock.advance(0.5)
        assert limiter.retry_after("a") == 0

    def test_slow_rate_retry_after(self) -> None:
        clock = ManualClock()
        limiter = RateLimiter(rate=0.1, burst=1, clock=clock.monotonic)
        assert limiter.retry_after("a") == 0
        assert limiter.retry_after("a") == 10

    def test_bounded(self) -> None:
        limiter = RateLimiter(rate=1.0, burst=1, max_keys=5)
        for i in range(50):
            limiter.retry_after(str(i))
        assert len(limiter._buckets) == 5


class TestHeaderHelpers:
    @pytest.mark.parametrize(
        ("header", "token"),
        [
            ("Bearer abc", "abc"),
            ("bearer  abc ", "abc"),
            ("Bearer", ""),
            ("Bearer ", ""),
            ("Basic dXNlcjpwdw==", ""),
            ("", ""),
        ],
    )
    def test_bearer_token(self, header: str, token: str) -> None:
        assert bearer_token(header) == token

    @pytest.mark.parametrize(
        ("cookie", "token"),
        [
            ("JWT=abc", "abc"),
            ("a=1; JWT=abc; b=2", "abc"),
            ('JWT="abc"', "abc"),
            ("jwt=abc", ""),
            ("XJWT=abc", ""),
            ("", ""),
        ],
    )
    def test_cookie_token(self, cookie: str, token: str) -> None:
        assert cookie_token(cookie) == token


class TestSettings:
    def test_defaults(self) -> None:
        settings = Settings()
        assert settings.listen_port == 8080
        assert settings.token_cache_ttl == 3.0
        assert settings.upstream_addr("deviceauth") is None

    def test_from_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GATEWAY_DEVICEAUTH_ADDR", "http://127.0.0.1:9002/")
        monkeypatch.setenv("GATEWAY_IOT_MANAGER_ADDR", "")
        monkeypatch.setenv("GATEWAY_LISTEN_PORT", "9999")
        settings = Settings()
        assert settings.upstream_addr("deviceauth") == "http://127.0.0.1:9002"
        assert settings.upstream_addr("iot_manager") is None
        assert settings.listen_port == 9999

    @pytest.mark.parametrize(
        "addr", ["127.0.0.1:9000", "ftp://host", "http://", "http://host/path", "http:/x"]
    )
    def test_bad_addresses(self, addr: str) -> None:
        with pytest.raises(ValidationError):
            Settings(useradm_addr=addr)

    def test_bounds(self) -> None:
        with pytest.raises(ValidationError):
            Settings(token_cache_ttl=-1)
        with pytest.raises(ValidationError):
            Settings(connect_timeout=0)
