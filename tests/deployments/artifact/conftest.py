"""Fixtures of the artifact tests: real artifacts written by the mender-artifact tool."""

from __future__ import annotations

import json
import os
import random

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.deployments.artifact.builders import FILE_DATE, MENDER_ARTIFACT, Tool


@pytest.fixture(scope="session")
def tool(tmp_path_factory: pytest.TempPathFactory) -> Tool:
    """mender-artifact in a working directory holding the files the tests pack."""
    assert MENDER_ARTIFACT, "mender-artifact is not installed (make e2e-deps installs it)"
    workdir = tmp_path_factory.mktemp("artifacts")
    rng = random.Random(7)
    files = {
        "hello.txt": b"hello, fleet\n",
        "noise.bin": rng.randbytes(150_000),
        "zeros.img": bytes(1_500_000),
        "rootfs.ext4": rng.randbytes(20_000),
        "meta.json": json.dumps({"board": "rpi4", "nested": {"n": 1}, "list": [1, 2]}).encode(),
        "augment-meta.json": json.dumps({"nested": {"m": 2}, "extra": True}).encode(),
        "big-meta.json": json.dumps({"blob": "x" * 300_000}).encode(),
    }
    for name, content in files.items():
        path = workdir / name
        path.write_bytes(content)
        os.utime(path, (FILE_DATE.timestamp(), FILE_DATE.timestamp()))
    key = ec.generate_private_key(ec.SECP256R1())
    (workdir / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return Tool(workdir=workdir, files=files)


@pytest.fixture(scope="session")
def single_file(tool: Tool) -> dict[str, bytes]:
    """The same small module-image artifact in each compression mender-artifact offers."""
    return {
        compression: tool.write(
            "module-image",
            "-T",
            "single-file",
            "-n",
            "release-1",
            "-t",
            "raspberrypi4",
            "-f",
            "hello.txt",
            "--compression",
            compression,
        )
        for compression in ("gzip", "lzma", "none")
    }
