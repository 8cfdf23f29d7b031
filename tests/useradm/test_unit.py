"""Unit tests: the key ring, input rules, and the auth use-cases over an in-memory store."""

from __future__ import annotations

import base64
import hmac
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from common.core.errors import ServiceError
from common.core.outbox import Effect
from common.core.pages import Page
from common.core.tokens import SigningKey, TokenExpired, TokenInvalid
from services.useradm.app import AuthApp, KeyRing, PasswordHasher, PlansApp, TokenPolicy, errors
from services.useradm.app.users import check_password, normalize_email
from services.useradm.models import Plan, PlanFeatures, StoredToken, User

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_ED = ed25519.Ed25519PrivateKey.generate()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"jti": "j1", "sub": "u1", "iss": "test", "iat": now, "exp": now + 60, **overrides}


class TestKeyRing:
    def test_rsa_and_ed25519_round_trip(self) -> None:
        for key in (SigningKey(_RSA, kid=1), SigningKey(_ED, kid=2)):
            ring = KeyRing(key)
            assert ring.verify(ring.sign(_claims()))["sub"] == "u1"

    def test_no_expiry_is_accepted(self) -> None:
        ring = KeyRing(SigningKey(_RSA, kid=1))
        claims = _claims()
        del claims["exp"]
        assert "exp" not in ring.verify(ring.sign(claims))

    @pytest.mark.parametrize("missing", ["sub", "jti", "iss"])
    def test_required_claims(self, missing: str) -> None:
        ring = KeyRing(SigningKey(_RSA, kid=1))
        claims = _claims()
        del claims[missing]
        with pytest.raises(TokenInvalid):
            ring.verify(ring.sign(claims))

    def test_expired(self) -> None:
        ring = KeyRing(SigningKey(_RSA, kid=1))
        with pytest.raises(TokenExpired):
            ring.verify(ring.sign(_claims(exp=int(time.time()) - 10)))

    def test_kid_selects_the_key(self) -> None:
        old, new = SigningKey(_RSA, kid=1), SigningKey(_ED, kid=2)
        ring = KeyRing(new, others=[old])
        assert ring.verify(old.sign(_claims()))["sub"] == "u1"
        with pytest.raises(TokenInvalid, match="unknown key id"):
            ring.verify(SigningKey(_RSA, kid=3).sign(_claims()))
        # The right key id with another key's signature.
        with pytest.raises(TokenInvalid):
            ring.verify(SigningKey(_RSA, kid=2).sign(_claims()))

    @pytest.mark.parametrize("kid", ["1", True, 1.0, None])
    def test_kid_must_be_an_integer(self, kid: object) -> None:
        ring = KeyRing(SigningKey(_RSA, kid=1))
        token = SigningKey(_RSA, kid=1).sign(_claims())
        _head, body, sig = token.split(".")
        header = {"alg": "RS256", "typ": "JWT", "kid": kid}
        forged = f"{_b64(json.dumps(header).encode())}.{body}.{sig}"
        with pytest.raises(TokenInvalid):
            ring.verify(forged)

    def test_missing_kid_means_zero(self) -> None:
        ring = KeyRing(SigningKey(_RSA, kid=0))
        assert ring.verify(SigningKey(_RSA).sign(_claims()))["sub"] == "u1"

    def test_fallback_key(self) -> None:
        fallback = SigningKey(_ED, kid=0)
        ring = KeyRing(SigningKey(_RSA, kid=1), fallback=fallback)
        # Tokens of the fallback key verify under its own kid and under the current one.
        assert ring.verify(fallback.sign(_claims()))["sub"] == "u1"
        assert ring.verify(SigningKey(_ED, kid=1).sign(_claims()))["sub"] == "u1"

    def test_alg_none_and_hs256_with_public_key(self) -> None:
        key = SigningKey(_RSA, kid=1)
        ring = KeyRing(key)
        body = _b64(json.dumps(_claims()).encode())
        none_head = _b64(json.dumps({"alg": "none", "kid": 1}).encode())
        with pytest.raises(TokenInvalid):
            ring.verify(f"{none_head}.{body}.")
        pem = key.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        hs_head = _b64(json.dumps({"alg": "HS256", "kid": 1}).encode())
        mac = hmac.new(pem, f"{hs_head}.{body}".encode(), "sha256").digest()
        with pytest.raises(TokenInvalid):
            ring.verify(f"{hs_head}.{body}.{_b64(mac)}")

    def test_rs256_header_on_an_ed25519_key(self) -> None:
        ring = KeyRing(SigningKey(_ED, kid=1))
        with pytest.raises(TokenInvalid):
            ring.verify(SigningKey(_RSA, kid=1).sign(_claims()))


class TestInputRules:
    @pytest.mark.parametrize(
        ("raw", "normalized"),
        [
            ("Admin@Example.COM", "admin@example.com"),
            ("a.b+c@sub.example.io", "a.b+c@sub.example.io"),
        ],
    )
    def test_valid_emails(self, raw: str, normalized: str) -> None:
        assert normalize_email(raw) == normalized

    @pytest.mark.parametrize(
        "raw",
        ["", "plain", "a@", "@b.com", "a b@c.com", "a@b..com", "a@-b.com", "ä@b.com", "a@b.com\n"],
    )
    def test_invalid_emails(self, raw: str) -> None:
        with pytest.raises(errors.InvalidEmail):
            normalize_email(raw)

    @pytest.mark.parametrize("password", ["", "seven77", "é" * 37])
    def test_invalid_passwords(self, password: str) -> None:
        with pytest.raises(errors.InvalidPassword):
            check_password(password)

    def test_valid_password(self) -> None:
        check_password("eight888")
        check_password("é" * 36)


class _MemoryStore:
    """Just enough of the store for the auth use-cases."""

    def __init__(self) -> None:
        self.effects: list[Effect] = []
        self.users: dict[str, User] = {}
        self.tokens: dict[str, StoredToken] = {}
        self.touched: list[datetime] = []

    async def get_user_by_email(self, tenant_id: str, email: str) -> User | None:
        return next((u for u in self.users.values() if u.email == email), None)

    async def user_exists(self, tenant_id: str, user_id: str) -> bool:
        return user_id in self.users

    async def insert_token(
        self, tenant_id: str, token: StoredToken, *, effects: Sequence[Effect] = ()
    ) -> None:
        self.tokens[token.id] = token
        self.effects.extend(effects)

    async def trim_sessions(self, tenant_id: str, user_id: str, *, keep: int, current: str) -> int:
        return 0

    async def set_login_ts(self, tenant_id: str, user_id: str, when: datetime) -> None:
        self.users[user_id] = self.users[user_id].model_copy(update={"login_ts": when})

    async def get_token(self, tenant_id: str, token_id: str) -> StoredToken | None:
        return self.tokens.get(token_id)

    async def touch_token(self, tenant_id: str, token_id: str, when: datetime) -> None:
        self.touched.append(when)
        self.tokens[token_id] = self.tokens[token_id].model_copy(update={"last_used": when})

    async def count_personal_tokens(self, tenant_id: str, user_id: str) -> int:
        return sum(1 for t in self.tokens.values() if t.subject == user_id and t.personal)


@pytest.fixture
async def auth() -> tuple[AuthApp, _MemoryStore]:
    """The auth use-cases over a store holding one user (`a@example.com`)."""
    store = _MemoryStore()
    hasher = PasswordHasher(cost=4)
    now = datetime.now(UTC)
    store.users["u1"] = User(
        id="u1",
        email="a@example.com",
        password_hash=await hasher.hash("secret-pass"),
        created_ts=now,
        updated_ts=now,
    )
    policy = TokenPolicy(
        issuer="test", expiration=timedelta(hours=1), sessions_per_user=0, tokens_per_user=1
    )
    # The memory store has only what the auth use-cases call.
    app = AuthApp(store, hasher, KeyRing(SigningKey(_RSA, kid=1)), policy)  # type: ignore[arg-type]
    return app, store


_FORWARDED: dict[str, str] = {"forwarded_uri": "/api/management/v1/x", "forwarded_method": "GET"}


class TestAuthApp:
    async def test_login_then_verify(self, auth: tuple[AuthApp, _MemoryStore]) -> None:
        app, store = auth
        token = await app.login(email="A@EXAMPLE.com", password="secret-pass")
        await app.verify(token, **_FORWARDED)
        assert store.users["u1"].login_ts is not None
        assert store.touched == []  # login tokens have no last_used

    async def test_login_refused(self, auth: tuple[AuthApp, _MemoryStore]) -> None:
        app, _ = auth
        for email, password in (
            ("a@example.com", "wrong-pass"),
            ("", "secret-pass"),
            ("b@x.io", "x"),
        ):
            with pytest.raises(errors.InvalidCredentials):
                await app.login(email=email, password=password)

    async def test_personal_token_limit_and_last_used(
        self, auth: tuple[AuthApp, _MemoryStore]
    ) -> None:
        app, store = auth
        pat = await app.issue_personal_token("", "u1", name="ci", expires_in=0)
        with pytest.raises(errors.TooManyTokens):
            await app.issue_personal_token("", "u1", name="cd", expires_in=0)
        await app.verify(pat, **_FORWARDED)
        await app.verify(pat, **_FORWARDED)
        assert len(store.touched) == 1
        # Issued without an operator named (not through the management API): no audit event.
        assert store.effects == []

    async def test_errors_carry_their_status(self, auth: tuple[AuthApp, _MemoryStore]) -> None:
        app, _ = auth
        cases: list[tuple[str, dict[str, str], int, str]] = [
            ("garbage", _FORWARDED, 401, "invalid jwt"),
            (
                await app.login(email="a@example.com", password="secret-pass"),
                {"forwarded_uri": "", "forwarded_method": "GET"},
                400,
                "can't parse service name from original uri ''",
            ),
        ]
        for token, forwarded, status, message in cases:
            with pytest.raises(ServiceError) as caught:
                await app.verify(token, **forwarded)
            assert caught.value.status_code == status
            assert caught.value.message == message


class TestPlansApp:
    def test_one_plan_is_the_binding(self) -> None:
        plan = Plan(name="os", display_name="Open source", features=PlanFeatures(terminal=True))
        plans = PlansApp((plan,))
        assert plans.plan_binding().plan == plan
        assert plans.list_plans(Page(page=1, per_page=20)) == [plan]
        assert plans.list_plans(Page(page=2, per_page=20)) == []

    def test_paging(self) -> None:
        many = tuple(Plan(name=f"p{i}", display_name=f"P{i}") for i in range(5))
        plans = PlansApp(many)
        assert [p.name for p in plans.list_plans(Page(page=2, per_page=2))] == ["p2", "p3"]
        assert plans.plan_binding().plan.name == ""
