"""The image's recipe: built from the lockfile as installed packages, small, unprivileged,
with PID 1 forwarding signals (Docker is not available to build it here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).parents[2]
DOCKERFILE: Final = (ROOT / "deploy" / "Dockerfile").read_text()
IGNORED: Final = [
    line.strip()
    for line in (ROOT / ".dockerignore").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


def _instructions(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


class TestImage:
    def test_installed_from_the_lockfile_not_linked_to_the_sources(self) -> None:
        syncs = [r for r in _instructions("RUN") if "uv sync" in r]
        assert syncs
        for command in syncs:
            assert "--frozen" in command
            assert "--no-dev" in command
            assert "--no-editable" in command
        assert "UV_COMPILE_BYTECODE=1" in " ".join(_instructions("ENV"))

    def test_the_same_uv_as_the_makefile(self) -> None:
        pinned = re.search(r"UV_VERSION := (\S+)", (ROOT / "Makefile").read_text())
        assert pinned is not None
        assert f"ghcr.io/astral-sh/uv:{pinned.group(1)} " in DOCKERFILE

    def test_runs_unprivileged_with_a_signal_forwarding_init(self) -> None:
        assert _instructions("USER") == ["10001:10001"]
        assert _instructions("ENTRYPOINT") == ['["tini", "--", "python", "-m"]']
        assert _instructions("CMD") == ['["gateway"]']
        [check] = _instructions("HEALTHCHECK")
        assert "python -m common.core.healthcheck" in check

    def test_only_the_runtime_is_shipped(self) -> None:
        stages = DOCKERFILE.split("\nFROM ")
        final = stages[-1]
        assert "COPY --from=build /app/venv /app/venv" in final
        assert "COPY common" not in final
        assert "uv" not in final.replace("/app/venv", "")

    def test_the_build_context_leaves_out_state_and_secrets(self) -> None:
        assert IGNORED[0] == "*"  # everything, except what is named back in
        included = {line[1:].rstrip("/") for line in IGNORED if line.startswith("!")}
        assert included == {
            "pyproject.toml",
            "uv.lock",
            "README.md",
            "common",
            "gateway",
            "services",
        }
        for name in (".venv", ".git", ".tools", ".fleetport", "**/*.pem", "**/*.key"):
            assert name in IGNORED, name
