"""Unit tests of the revocation state, key handling, the rate limiter and the settings."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pydantic import ValidationError

from common.core.tokens import (
    SigningKey,
    TokenExpired,
    TokenInvalid,
    TokenVerifier,
    UnknownKey,
    public_jwk,
    verifying_key_from_jwk,
)
from gateway.config import Settings
from gateway.headers import bearer_token, cookie_token
from gateway.issuers import RevocationState
from gateway.ratelimit import RateLimiter
from tests.toolkit import ManualClock


class TestRevocationState:
    def test_refuses_tokens_issued_before(self) -> None:
        state = RevocationState()
        state.apply([{"key": "jti:a", "not_before": 100, "expires": 2**40}])
        assert state.refuses(["jti:a", "tenant:"], 99)
        assert not state.refuses(["jti:a", "tenant:"], 100)
        assert not state.refuses(["jti:b", "tenant:"], 10)

    def test_merging_keeps_the_latest(self) -> None:
        state = RevocationState()
        entries = [
            {"key": "tenant:t", "not_before": 200, "expires": 2**40},
            {"key": "tenant:t", "not_before": 100, "expires": 2**40},
        ]
        state.apply(entries)
        state.apply(entries[:1])  # again, and out of order: the same state
        assert state.refuses(["tenant:t"], 150)
        assert len(state) == 1

    def test_malformed_entries_are_skipped(self) -> None:
        state = RevocationState()
        state.apply(
            [
                {"key": 5, "not_before": 1, "expires": 1},
                {"key": "k", "not_before": "x", "expires": 1},
            ]
        )
        assert len(state) == 0

    def test_bounded_by_expiry(self) -> None:
        clock = ManualClock()
        state = RevocationState(wall_clock=clock.time)
        now = int(clock.time())
        state.apply([{"key": f"jti:{i}", "not_before": now, "expires": now + 10} for i in range(5)])
        state.apply([{"key": "jti:long", "not_before": now, "expires": now + 3600}])
        assert len(state) == 6
        clock.advance(120)
        state.apply([])
        assert len(state) == 1
        assert state.refuses(["jti:long"], now - 1)


class TestKeys:
    @pytest.mark.parametrize("kind", ["rsa", "ed25519"])
    def test_jwk_round_trip(self, kind: str) -> None:
        private = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "rsa"
            else ed25519.Ed25519PrivateKey.generate()
        )
        key = SigningKey(private, kid=3)
        jwk = public_jwk(key.verifying(fallback=True))
        assert jwk["kid"] == "3"
        assert jwk["alg"] == key.algorithm
        assert "d" not in jwk  # nothing private
        read = verifying_key_from_jwk(jwk)
        assert (read.kid, read.fallback, read.algorithm) == (3, True, key.algorithm)
        token = key.sign({"sub": "s", "jti": "j", "exp": int(time.time()) + 60})
        assert TokenVerifier([read]).verify(token)["sub"] == "s"

    @pytest.mark.parametrize(
        "jwk",
        [
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "RSA", "n": "x"},
            {"kty": "OKP", "crv": "X25519", "x": "AAAA"},
            {"kty": "RSA", "kid": "abc"},
        ],
    )
    def test_bad_jwks(self, jwk: dict[str, str]) -> None:
        with pytest.raises(ValueError):  # noqa: PT011 (each a different reason)
            verifying_key_from_jwk(jwk)

    def test_verifier_errors(self) -> None:
        key = SigningKey(ed25519.Ed25519PrivateKey.generate(), kid=0)
        verifier = TokenVerifier([key.verifying()])
        expired = key.sign({"sub": "s", "jti": "j", "exp": int(time.time()) - 5})
        with pytest.raises(TokenExpired):
            verifier.verify(expired)
        other = SigningKey(ed25519.Ed25519PrivateKey.generate(), kid=1)
        with pytest.raises(UnknownKey):
            verifier.verify(other.sign({"sub": "s", "jti": "j", "exp": int(time.time()) + 5}))
        no_jti = key.sign({"sub": "s", "exp": int(time.time()) + 5})
        with pytest.raises(TokenInvalid) as caught:
            verifier.verify(no_jti)
        assert not isinstance(caught.value, UnknownKey)

    def test_issued_ahead_is_accepted(self) -> None:
        # An issuer dates a token up to a second ahead when a revocation was just made.
        key = SigningKey(ed25519.Ed25519PrivateKey.generate(), kid=0)
        now = int(time.time())
        token = key.sign({"sub": "s", "jti": "j", "iat": now + 1, "exp": now + 60})
        assert TokenVerifier([key.verifying()]).verify(token)["iat"] == now + 1


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
        assert settings.nats_uri is None
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
            Settings(key_refetch_interval=0)
        with pytest.raises(ValidationError):
            Settings(connect_timeout=0)
