"""The deployment files describe the system that exists: every service, with real settings."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.launcher import SERVICES, Service, built

DEPLOY = Path(__file__).parents[2] / "deploy"
BUILT = [s for s in SERVICES if built(s)]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def _kubernetes() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((DEPLOY / "kubernetes" / "fleetport.yaml").read_text()))


def _setting_names(service: Service) -> set[str]:
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
        for svc in BUILT:
            assert svc.name in services, f"{svc.name} missing from docker-compose.yml"
            assert services[svc.name]["command"] == [svc.module]

    def test_only_real_settings(self) -> None:
        services = _compose()["services"]
        for svc in BUILT:
            unknown = set(services[svc.name]["environment"]) - _setting_names(svc)
            assert not unknown, f"{svc.name}: unknown settings {unknown}"
        unknown = set(services["gateway"]["environment"]) - _gateway_setting_names()
        assert not unknown, f"gateway: unknown settings {unknown}"

    def test_gateway_on_port_80_and_mongo_official_image(self) -> None:
        services = _compose()["services"]
        assert services["gateway"]["ports"] == ["80:8080"]
        assert services["mongo"]["image"].startswith("mongo:")


class TestKubernetes:
    def _deployments(self) -> dict[str, dict[str, Any]]:
        return {d["metadata"]["name"]: d for d in _kubernetes() if d["kind"] == "Deployment"}

    def test_every_built_service_runs(self) -> None:
        deployments = self._deployments()
        for svc in BUILT:
            container = deployments[svc.name]["spec"]["template"]["spec"]["containers"][0]
            assert container["args"] == [svc.module]
            probe = container["readinessProbe"]["httpGet"]["path"]
            assert probe == svc.health_path

    @pytest.mark.parametrize("svc", BUILT, ids=lambda s: s.name)
    def test_only_real_settings(self, svc: Service) -> None:
        container = self._deployments()[svc.name]["spec"]["template"]["spec"]["containers"][0]
        unknown = {e["name"] for e in container["env"]} - _setting_names(svc)
        assert not unknown, f"{svc.name}: unknown settings {unknown}"
