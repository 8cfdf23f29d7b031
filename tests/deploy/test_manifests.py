"""The compose file describes the system that exists: every service, with real settings,
restarted when it fails and health-checked on its real endpoints (the Helm chart:
test_chart.py)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

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
