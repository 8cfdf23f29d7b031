"""The service registry: every service package declares itself, and only real settings."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from common.core.servicespec import ServiceSpec
from common.localstack.registry import discover
from gateway.config import Settings as GatewaySettings

REPO = Path(__file__).parents[2]
SERVICES = discover()


def _settings_fields(svc: ServiceSpec) -> tuple[str, dict[str, object]]:
    """The env prefix of a service's settings and the defaults of its fields."""
    settings = importlib.import_module(f"{svc.module}.config").Settings
    defaults = {name: field.default for name, field in settings.model_fields.items()}
    return settings.model_config["env_prefix"], defaults


def _package(root: Path, declarations: dict[str, str | None]) -> str:
    """A package of service packages under `root`; None: a package without a declaration."""
    name = f"fake_services_{uuid.uuid4().hex}"
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    (root / name / "helpers.py").write_text("")  # a plain module is no service
    for service, source in declarations.items():
        (root / name / service).mkdir()
        (root / name / service / "__init__.py").write_text("")
        if source is not None:
            (root / name / service / "service.py").write_text(source)
    return name


def _declaring(name: str) -> str:
    return (
        "from common.core.servicespec import ServiceSpec\n"
        f"SERVICE = ServiceSpec(name={name!r}, env_prefix='X_', internal_name='x', database='x')\n"
    )


class TestThisCheckout:
    def test_every_service_package_is_found(self) -> None:
        packages = sorted(
            p.name for p in (REPO / "services").iterdir() if (p / "__init__.py").exists()
        )
        assert [svc.name for svc in SERVICES] == packages
        assert {"useradm", "deviceauth", "inventory", "deployments"} <= set(packages)

    @pytest.mark.parametrize("svc", SERVICES, ids=lambda s: s.name)
    def test_the_declaration_is_what_the_settings_read(self, svc: ServiceSpec) -> None:
        prefix, fields = _settings_fields(svc)
        assert prefix == svc.env_prefix
        assert fields["mongo_db"] == svc.database
        for peer in svc.peers:
            assert f"{peer}_addr" in fields, f"{svc.name} has no setting for its peer {peer}"
        for name in svc.local_env:
            assert name.lower() in fields, f"{svc.name} has no setting {name}"

    @pytest.mark.parametrize("svc", SERVICES, ids=lambda s: s.name)
    def test_the_gateway_can_route_to_it(self, svc: ServiceSpec) -> None:
        assert f"{svc.name}_addr" in GatewaySettings.model_fields

    def test_reading_the_declarations_loads_no_web_framework(self) -> None:
        code = (
            "import json, sys\n"
            "import common.localstack.launcher\n"
            "from common.localstack.registry import discover\n"
            "names = [s.name for s in discover()]\n"
            "heavy = [m for m in ('fastapi', 'starlette', 'uvicorn', 'pydantic')\n"
            "         if m in sys.modules]\n"
            "print(json.dumps({'names': names, 'heavy': heavy}))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
        )
        assert json.loads(result.stdout) == {"names": [s.name for s in SERVICES], "heavy": []}


class TestDiscovery:
    def test_declared_services_by_name(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.syspath_prepend(str(tmp_path))
        package = _package(tmp_path, {"beta": _declaring("beta"), "alpha": _declaring("alpha")})
        found = discover(package)
        assert [svc.name for svc in found] == ["alpha", "beta"]
        assert found[0] == ServiceSpec(
            name="alpha", env_prefix="X_", internal_name="x", database="x"
        )
        assert found[0].health_path == "/api/internal/v1/x/health"

    def test_a_package_without_declaration(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.syspath_prepend(str(tmp_path))
        package = _package(tmp_path, {"alpha": _declaring("alpha"), "beta": None})
        with pytest.raises(RuntimeError, match=rf"^{package}\.beta has no service\.py"):
            discover(package)

    def test_a_declaration_under_another_name(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.syspath_prepend(str(tmp_path))
        package = _package(tmp_path, {"alpha": _declaring("gamma")})
        with pytest.raises(RuntimeError, match="must be a ServiceSpec named 'alpha'"):
            discover(package)

    def test_a_declaration_that_is_no_spec(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.syspath_prepend(str(tmp_path))
        package = _package(tmp_path, {"alpha": "SERVICE = {'name': 'alpha'}\n"})
        with pytest.raises(RuntimeError, match="must be a ServiceSpec named 'alpha'"):
            discover(package)

    def test_a_broken_declaration_is_not_hidden(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.syspath_prepend(str(tmp_path))
        package = _package(tmp_path, {"alpha": "import no_such_module_here\n"})
        with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
            discover(package)
