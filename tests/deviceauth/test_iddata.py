"""Canonical identity data: byte-for-byte what Go's `json.Marshal` makes of the object."""

from __future__ import annotations

import hashlib

import pytest

from services.deviceauth.app.iddata import (
    IdentityDataError,
    canonical_identity,
    canonical_identity_text,
    identity_key,
)

# Each expected text was worked out from the rules of Go's encoding/json (Go ≥ 1.22):
# map keys sorted bytewise, no spaces, numbers decoded as float64 and written in the
# shortest form ('e' notation below 1e-6 and from 1e21, "e-07" shortened to "e-7"),
# HTML characters and line/paragraph separators escaped, \b and \f written short, other
# control characters as \u00XX, everything else kept as UTF-8.
GO_OUTPUTS = [
    ('{"mac":"00:11:22:33:44:55"}', '{"mac":"00:11:22:33:44:55"}'),
    ('{ "b" : 1,\n\t"a" : 2 }', '{"a":2,"b":1}'),
    ('{"x":"a<b>c&d"}', '{"x":"a\\u003cb\\u003ec\\u0026d"}'),
    ('{"name":"Zürich ☃"}', '{"name":"Zürich ☃"}'),
    ('{"name":"Z\\u00fcrich \\u2603"}', '{"name":"Zürich ☃"}'),
    ('{"s":"a\\u2028b\\u2029c"}', '{"s":"a\\u2028b\\u2029c"}'),
    (
        '{"s":"\\u0001\\t\\n\\r\\b\\f\\u001f\\u007f"}',
        '{"s":"\\u0001\\t\\n\\r\\b\\f\\u001f\x7f"}',
    ),
    ('{"s":"\\"\\\\\\/"}', '{"s":"\\"\\\\/"}'),
    (
        '{"a":1.0,"b":1e2,"c":-0.0,"d":1.5e-7,"e":1e21,"f":123456789012345678901234,'
        '"g":0.1,"h":1E-6,"i":1e-10,"j":-2.5e+30,"k":1e20}',
        '{"a":1,"b":100,"c":-0,"d":1.5e-7,"e":1e+21,"f":1.2345678901234569e+23,'
        '"g":0.1,"h":0.000001,"i":1e-10,"j":-2.5e+30,"k":100000000000000000000}',
    ),
    ('{"n":9007199254740993}', '{"n":9007199254740992}'),
    (
        '{"z":{"y":[{"b":true,"a":null}],"x":false}}',
        '{"z":{"x":false,"y":[{"a":null,"b":true}]}}',
    ),
    ('{"a":1,"a":2}', '{"a":2}'),
    ('{"s":"\\ud800x"}', '{"s":"\ufffdx"}'),
    ('{"b":1,"B":2,"é":3,"a":4}', '{"B":2,"a":4,"b":1,"é":3}'),
    ("{}", "{}"),
    ('  {"list":[3,"2",[1]]}  ', '{"list":[3,"2",[1]]}'),
]


class TestCanonicalIdentityText:
    @pytest.mark.parametrize(("given", "expected"), GO_OUTPUTS)
    def test_matches_go(self, given: str, expected: str) -> None:
        assert canonical_identity_text(given) == expected

    def test_same_identity_same_key(self) -> None:
        spellings = [
            '{"mac":"02:00","serial":"<1>"}',
            '{"serial":"\\u003c1\\u003e", "mac":"02:00"}',
            '{\n  "mac": "02:00",\n  "serial": "<1>"\n}',
        ]
        keys = {identity_key(canonical_identity_text(s)) for s in spellings}
        assert len(keys) == 1

    def test_key_is_sha256_hex(self) -> None:
        text = '{"mac":"00:11:22:33:44:55"}'
        assert identity_key(text) == hashlib.sha256(text.encode()).hexdigest()

    @pytest.mark.parametrize(
        "given",
        [
            "",
            "nope",
            "[]",
            "null",
            '"text"',
            "42",
            '{"a":1} x',
            '{"a":NaN}',
            '{"a":Infinity}',
            '{"a":1e400}',
            '{"a":' + "1" * 400 + "}",
            "[" * 50000 + "]" * 50000,
            '{"a":' + "[" * 50000 + "]" * 50000 + "}",
        ],
    )
    def test_refused(self, given: str) -> None:
        with pytest.raises(IdentityDataError):
            canonical_identity_text(given)


class TestCanonicalIdentity:
    def test_object_matches_text(self) -> None:
        data = {"sn": "<x>", "mac": "02", "n": 1.0, "big": 10**20, "nested": {"b": [2], "a": 1}}
        assert canonical_identity(data) == (
            '{"big":100000000000000000000,"mac":"02","n":1,'
            '"nested":{"a":1,"b":[2]},"sn":"\\u003cx\\u003e"}'
        )

    def test_integers_become_float64(self) -> None:
        assert canonical_identity({"n": 2**53 + 1}) == '{"n":9007199254740992}'

    @pytest.mark.parametrize(
        "data",
        [{"n": 10**400}, {"n": float("nan")}, {"n": float("inf")}, {"n": {1, 2}}, {1: "a"}],
    )
    def test_refused(self, data: dict[object, object]) -> None:
        with pytest.raises(IdentityDataError):
            canonical_identity(data)  # type: ignore[arg-type]
