"""Device public keys and auth-request signatures, for every supported key type."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa, x25519

from services.deviceauth.app.keys import (
    PublicKeyError,
    SignatureError,
    parse_public_key,
    verify_signature,
)
from tests.deviceauth.conftest import PrivateKey, public_pem, sign

KINDS = ["rsa2048", "rsa3072", "p224", "p256", "p384", "p521", "ed25519"]
BODY = b'{"id_data":"{\\"mac\\":\\"x\\"}","tenant_token":"","pubkey":"..."}\n'


class TestParsePublicKey:
    @pytest.mark.parametrize("kind", KINDS)
    def test_supported(self, kind: str, device_key: Callable[[str], PrivateKey]) -> None:
        pem = public_pem(device_key(kind))
        _, normalized = parse_public_key(pem)
        assert normalized == pem

    def test_normalizes_framing(self, device_key: Callable[[str], PrivateKey]) -> None:
        pem = public_pem(device_key("p256"))
        messy = "leading text\n" + pem.replace("\n", "\r\n", 1) + "trailing"
        assert parse_public_key(messy)[1] == pem

    def test_pkcs1_rsa_refused(self, device_key: Callable[[str], PrivateKey]) -> None:
        key = device_key("rsa2048")
        assert isinstance(key, rsa.RSAPrivateKey)
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        )
        with pytest.raises(PublicKeyError, match="cannot decode public key"):
            parse_public_key(pem.decode())

    @pytest.mark.parametrize(
        "make",
        [
            lambda: ec.generate_private_key(ec.SECP256K1()),
            lambda: x25519.X25519PrivateKey.generate(),
            lambda: ed448.Ed448PrivateKey.generate(),
        ],
    )
    def test_unsupported_types(self, make: Callable[[], PrivateKey]) -> None:
        with pytest.raises(PublicKeyError, match="unsupported"):
            parse_public_key(public_pem(make()))

    def test_dsa_refused(self, device_key: Callable[[str], PrivateKey]) -> None:
        with pytest.raises(PublicKeyError, match="unsupported public key type"):
            parse_public_key(public_pem(device_key("dsa")))

    @pytest.mark.parametrize(
        "pem",
        [
            "",
            "not a key",
            "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "-----BEGIN PUBLIC KEY-----\nÄÖÜ\n-----END PUBLIC KEY-----\n",
        ],
    )
    def test_malformed(self, pem: str) -> None:
        with pytest.raises(PublicKeyError, match="cannot decode public key"):
            parse_public_key(pem)


class TestVerifySignature:
    @pytest.mark.parametrize("kind", KINDS)
    def test_valid(self, kind: str, device_key: Callable[[str], PrivateKey]) -> None:
        key = device_key(kind)
        public, _ = parse_public_key(public_pem(key))
        verify_signature(public, sign(key, BODY), BODY)

    @pytest.mark.parametrize("kind", KINDS)
    def test_other_body(self, kind: str, device_key: Callable[[str], PrivateKey]) -> None:
        key = device_key(kind)
        public, _ = parse_public_key(public_pem(key))
        with pytest.raises(SignatureError):
            verify_signature(public, sign(key, BODY), BODY.rstrip(b"\n"))

    def test_other_key(self, device_key: Callable[[str], PrivateKey]) -> None:
        public, _ = parse_public_key(public_pem(device_key("p256")))
        with pytest.raises(SignatureError):
            verify_signature(public, sign(device_key("p384"), BODY), BODY)

    def test_ed25519_is_not_prehashed(self, device_key: Callable[[str], PrivateKey]) -> None:
        import hashlib

        key = device_key("ed25519")
        public, _ = parse_public_key(public_pem(key))
        with pytest.raises(SignatureError):
            verify_signature(public, sign(key, hashlib.sha256(BODY).digest()), BODY)

    def test_wrapped_base64(self, device_key: Callable[[str], PrivateKey]) -> None:
        key = device_key("rsa2048")
        public, _ = parse_public_key(public_pem(key))
        signature = sign(key, BODY)
        wrapped = "\n".join(signature[i : i + 76] for i in range(0, len(signature), 76))
        verify_signature(public, wrapped, BODY)

    @pytest.mark.parametrize("signature", ["", "***", "Zm9vYmFyYmF6", "Zm9v!", "Zg"])
    def test_malformed(self, signature: str, device_key: Callable[[str], PrivateKey]) -> None:
        public, _ = parse_public_key(public_pem(device_key("p256")))
        with pytest.raises(SignatureError):
            verify_signature(public, signature, BODY)

    def test_ecdsa_raw_r_s_refused(self, device_key: Callable[[str], PrivateKey]) -> None:
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        key = device_key("p256")
        public, _ = parse_public_key(public_pem(key))
        r, s = decode_dss_signature(base64.b64decode(sign(key, BODY)))
        raw = base64.b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).decode()
        with pytest.raises(SignatureError):
            verify_signature(public, raw, BODY)
