"""JWT helpers: RS256 and EdDSA round trips, and the forgeries the verifier must refuse."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import pytest

from common.core.tokens import (
    TokenExpired,
    TokenInvalid,
    TokenVerifier,
    generate_key_file,
    load_signing_key,
    write_secret_file,
)


def _claims(**extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"jti": str(uuid.uuid4()), "sub": "user-1", "iat": now, "exp": now + 60, **extra}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(params=["rsa", "ed25519"])
def key_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "private.id.7.pem"
    generate_key_file(path, request.param)
    return path


class TestSigning:
    def test_round_trip(self, key_path: Path) -> None:
        key = load_signing_key(key_path, with_kid=True)
        token = key.sign(_claims())
        header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
        assert header["kid"] == 7  # an integer, as Mender's useradm writes it
        assert header["alg"] == key.algorithm
        assert TokenVerifier([key]).verify(token)["sub"] == "user-1"

    def test_key_file_is_private_and_kept(self, key_path: Path) -> None:
        before = key_path.read_bytes()
        generate_key_file(key_path)
        assert key_path.read_bytes() == before
        assert key_path.stat().st_mode & 0o077 == 0

    def test_key_file_is_whole_and_leaves_no_temporary(self, tmp_path: Path) -> None:
        path = tmp_path / "keys" / "deviceauth.pem"
        generate_key_file(path)
        assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert load_signing_key(path).algorithm == "RS256"
        assert sorted(p.name for p in path.parent.iterdir()) == ["deviceauth.pem"]

    def test_secret_file_keeps_the_first_content(self, tmp_path: Path) -> None:
        path = tmp_path / "presign.secret"
        write_secret_file(path, b"first")
        write_secret_file(path, b"second")
        assert path.read_bytes() == b"first"
        assert path.stat().st_mode & 0o777 == 0o600
        assert [p.name for p in tmp_path.iterdir()] == ["presign.secret"]

    def test_kid_defaults_to_zero(self, tmp_path: Path) -> None:
        path = tmp_path / "useradm.pem"
        generate_key_file(path)
        assert load_signing_key(path, with_kid=True).kid == 0
        assert load_signing_key(path).kid is None


class TestForgeries:
    def test_expired(self, key_path: Path) -> None:
        key = load_signing_key(key_path)
        token = key.sign(_claims(exp=int(time.time()) - 5))
        with pytest.raises(TokenExpired):
            TokenVerifier([key]).verify(token)

    def test_tampered_payload(self, key_path: Path) -> None:
        key = load_signing_key(key_path)
        header, _, sig = key.sign(_claims()).split(".")
        forged = _b64(json.dumps(_claims(sub="admin")).encode())
        with pytest.raises(TokenInvalid):
            TokenVerifier([key]).verify(f"{header}.{forged}.{sig}")

    def test_alg_none(self, key_path: Path) -> None:
        key = load_signing_key(key_path)
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(_claims()).encode())
        with pytest.raises(TokenInvalid):
            TokenVerifier([key]).verify(f"{header}.{payload}.")

    def test_hs256_with_public_key(self, tmp_path: Path) -> None:
        path = tmp_path / "k.pem"
        generate_key_file(path, "rsa")
        key = load_signing_key(path)
        from cryptography.hazmat.primitives import serialization

        public_pem = key.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(_claims()).encode())
        import hashlib
        import hmac

        sig = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        with pytest.raises(TokenInvalid):
            TokenVerifier([key]).verify(f"{header}.{payload}.{_b64(sig)}")

    def test_other_key(self, tmp_path: Path, key_path: Path) -> None:
        other_path = tmp_path / "other.pem"
        generate_key_file(other_path)
        token = load_signing_key(other_path).sign(_claims())
        with pytest.raises(TokenInvalid):
            TokenVerifier([load_signing_key(key_path)]).verify(token)

    @pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "....", "ey.ey.ey"])
    def test_garbage(self, key_path: Path, token: str) -> None:
        with pytest.raises(TokenInvalid):
            TokenVerifier([load_signing_key(key_path)]).verify(token)

    def test_missing_required_claims(self, key_path: Path) -> None:
        key = load_signing_key(key_path)
        claims = _claims()
        del claims["jti"]
        with pytest.raises(TokenInvalid):
            TokenVerifier([key]).verify(key.sign(claims))

    def test_issuer_checked(self, key_path: Path) -> None:
        key = load_signing_key(key_path)
        token = key.sign(_claims(iss="someone-else"))
        with pytest.raises(TokenInvalid):
            TokenVerifier([key], issuer="Mender").verify(token)


class TestKeySelection:
    def test_key_id_picks_the_key_and_optional_expiry(self, tmp_path: Path) -> None:
        generate_key_file(tmp_path / "private.id.1.pem")
        generate_key_file(tmp_path / "private.id.2.pem", "ed25519")
        one = load_signing_key(tmp_path / "private.id.1.pem", with_kid=True)
        two = load_signing_key(tmp_path / "private.id.2.pem", with_kid=True)
        verifier = TokenVerifier([one, two], require=("sub", "jti"))
        claims = _claims()
        del claims["exp"]  # a token that never expires
        assert verifier.verify(two.sign(claims))["sub"] == "user-1"
        with pytest.raises(TokenInvalid, match="unknown key id"):
            TokenVerifier([one]).verify(two.sign(_claims()))

    def test_fallback_key(self, tmp_path: Path) -> None:
        generate_key_file(tmp_path / "new.pem")
        generate_key_file(tmp_path / "old.pem")
        new, old = load_signing_key(tmp_path / "new.pem"), load_signing_key(tmp_path / "old.pem")
        assert TokenVerifier([new], fallback=[old]).verify(old.sign(_claims()))["sub"] == "user-1"

    def test_oversized_token(self, key_path: Path) -> None:
        with pytest.raises(TokenInvalid, match="too long"):
            TokenVerifier([load_signing_key(key_path)]).verify("a" * 9000)
