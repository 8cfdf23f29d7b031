"""The deployment files describe the system that exists: every service, with real settings,
restarted when it fails and health-checked on its real endpoints."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.core.servicespec import ServiceSpec
from common.localstack.registry import discover

DEPLOY = Path(__file__).parents[2] / "deploy"
SERVICES = discover()
HEALTHCHECK = ["CMD", "python", "-m", "common.core.healthcheck"]


def _resource_name(service: ServiceSpec) -> str:
    """The service's name in compose and Kubernetes, where `_` is not allowed."""
    return service.name.replace("_", "-")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def _kubernetes() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((DEPLOY / "kubernetes" / "fleetport.yaml").read_text()))


def _setting_names(service: ServiceSpec) -> set[str]:
    config = importlib.import_module(f"{service.module}.config")
    settings_cls = config.Settings
    prefix = settings_cls.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in settings_cls.model_fields}


def _gateway_setting_names() -> set[str]:
    config = importlib.import_module("gateway.config")
    prefix = config.Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in config.Settings.model_fields}


class TestCompose:
    def test_every_built_service_runs(self) -> None:
        services = _compose()["services"]
        for svc in SERVICES:
            name = _resource_name(svc)
            assert name in services, f"{name} missing from docker-compose.yml"
            assert services[name]["command"] == [svc.module]

    def test_only_real_settings(self) -> None:
        services = _compose()["services"]
        for svc in SERVICES:
            unknown = set(services[_resource_name(svc)]["environment"]) - _setting_names(svc)
            assert not unknown, f"{svc.name}: unknown settings {unknown}"
        unknown = set(services["gateway"]["environment"]) - _gateway_setting_names()
        assert not unknown, f"gateway: unknown settings {unknown}"

    def test_gateway_on_port_80_and_mongo_official_image(self) -> None:
        services = _compose()["services"]
        assert services["gateway"]["ports"] == ["80:8080"]
        assert services["mongo"]["image"].startswith("mongo:")

    def test_every_long_running_container_is_restarted(self) -> None:
        services = _compose()["services"]
        assert "restart" not in services["keys"]  # a one-off job
        for name, service in services.items():
            if name != "keys":
                assert service["restart"] == "unless-stopped", name

    def test_health_checks_on_the_real_endpoints(self) -> None:
        services = _compose()["services"]
        expected = {_resource_name(svc): svc.health_path for svc in SERVICES} | {
            "gateway": "/status"
        }
        for name, path in expected.items():
            check = services[name]["healthcheck"]
            assert check["test"] == [*HEALTHCHECK, f"http://127.0.0.1:8080{path}"], name
            assert check["retries"] >= 1
            assert "start_period" in check
        assert "healthcheck" in services["mongo"]

    def test_started_once_what_they_need_is_healthy(self) -> None:
        services = _compose()["services"]
        for svc in SERVICES:
            assert services[_resource_name(svc)]["depends_on"] == {
                "mongo": {"condition": "service_healthy"},
                "keys": {"condition": "service_completed_successfully"},
            }
        assert services["gateway"]["depends_on"] == {
            _resource_name(svc): {"condition": "service_healthy"} for svc in SERVICES
        }


class TestKubernetes:
    def _deployments(self) -> dict[str, dict[str, Any]]:
        return {d["metadata"]["name"]: d for d in _kubernetes() if d["kind"] == "Deployment"}

    def _containers(self) -> dict[str, dict[str, Any]]:
        return {
            container["name"]: container
            for d in _kubernetes()
            if d["kind"] in ("Deployment", "StatefulSet")
            for container in d["spec"]["template"]["spec"]["containers"]
        }

    def test_every_built_service_runs(self) -> None:
        deployments = self._deployments()
        for svc in SERVICES:
            template = deployments[_resource_name(svc)]["spec"]["template"]
            assert template["spec"]["containers"][0]["args"] == [svc.module]

    def test_every_container_is_probed(self) -> None:
        containers = self._containers()
        assert set(containers) >= {"mongo", "gateway", *(_resource_name(svc) for svc in SERVICES)}
        for name, container in containers.items():
            assert "livenessProbe" in container, name
            assert "readinessProbe" in container, name

    def test_probes_on_the_real_endpoints(self) -> None:
        containers = self._containers()
        for svc in SERVICES:
            probes = containers[_resource_name(svc)]
            assert probes["readinessProbe"]["httpGet"] == {"path": svc.health_path, "port": 8080}
            # Alive, not healthy: a database outage must not restart every service.
            alive = svc.health_path.removesuffix("/health") + "/alive"
            assert probes["livenessProbe"]["httpGet"] == {"path": alive, "port": 8080}
        for probe in ("readinessProbe", "livenessProbe"):
            assert containers["gateway"][probe]["httpGet"] == {"path": "/status", "port": 8080}

    @pytest.mark.parametrize("svc", SERVICES, ids=lambda s: s.name)
    def test_only_real_settings(self, svc: ServiceSpec) -> None:
        deployment = self._deployments()[_resource_name(svc)]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        unknown = {e["name"] for e in container["env"]} - _setting_names(svc)
        assert not unknown, f"{svc.name}: unknown settings {unknown}"
