"""The compose file describes the system that exists: every service, with real settings,
restarted when it fails, health-checked on its real endpoints, started once what it needs is
healthy, each container holding only its own secrets (the Helm chart: test_chart.py)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, Final

import yaml
from prometheus_client import REGISTRY

from common.core.servicespec import LocalResource, ServiceSpec
from common.localstack.provision import KEY_FILES, Layout, provision
from common.localstack.registry import discover

DEPLOY = Path(__file__).parents[2] / "deploy"
SERVICES = discover()
HEALTHCHECK = ["CMD", "python", "-m", "common.core.healthcheck"]
# Containers that run once and exit: they have nothing to health-check.
ONE_SHOTS: Final = frozenset({"secrets", "mongo-users", "create-admin"})
# Where a Fleetport container finds its own secrets volume.
SECRETS: Final = "/run/secrets/fleetport"
_PRIVATE_KEYS: Final = {
    KEY_FILES[LocalResource.USER_TOKEN_KEY],
    KEY_FILES[LocalResource.DEVICE_TOKEN_KEY],
}


def _resource_name(service: ServiceSpec) -> str:
    """The service's name in compose and Kubernetes, where `_` is not allowed."""
    return service.name.replace("_", "-")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def _services() -> dict[str, Any]:
    services: dict[str, Any] = _compose()["services"]
    return services


def _setting_names(service: ServiceSpec) -> set[str]:
    config = importlib.import_module(f"{service.module}.config")
    settings_cls = config.Settings
    prefix = settings_cls.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in settings_cls.model_fields}


def _gateway_setting_names() -> set[str]:
    config = importlib.import_module("gateway.config")
    prefix = config.Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in config.Settings.model_fields}


def _volume_sources(entry: dict[str, Any]) -> dict[str, str]:
    """A container's mounts: target → source (a named volume, or a variable's default)."""
    mounts = {}
    for volume in entry.get("volumes", []):
        source, target = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(volume)).split(":")[:2]
        mounts[target] = source
    return mounts


class TestServices:
    def test_every_built_service_runs(self) -> None:
        services = _services()
        for svc in SERVICES:
            name = _resource_name(svc)
            assert name in services, f"{name} missing from docker-compose.yml"
            assert services[name]["command"] == [svc.module]

    def test_only_real_settings(self) -> None:
        services = _services()
        for svc in SERVICES:
            given = {n.removesuffix("_FILE") for n in services[_resource_name(svc)]["environment"]}
            unknown = given - _setting_names(svc)
            assert not unknown, f"{svc.name}: unknown settings {unknown}"
        unknown = set(services["gateway"]["environment"]) - _gateway_setting_names()
        assert not unknown, f"gateway: unknown settings {unknown}"

    def test_gateway_serves_https_and_the_web_ui(self) -> None:
        services = _services()
        gateway = services["gateway"]
        assert gateway["ports"] == ["${FLEETPORT_HTTPS_PORT:-443}:8443"]
        assert gateway["environment"]["GATEWAY_LISTEN_PORT"] == "8443"
        assert gateway["environment"]["GATEWAY_TLS_CERT_FILE"].startswith(SECRETS + "/tls/")
        assert gateway["environment"]["GATEWAY_TLS_KEY_FILE"].startswith(SECRETS + "/tls/")
        assert gateway["environment"]["GATEWAY_UI_ADDR"] == "http://gui:8090"
        assert services["gui"]["image"].startswith("mendersoftware/gui:")
        assert services["mongo"]["image"].startswith("mongo:")

    def test_mongodb_is_an_authenticated_replica_set(self) -> None:
        mongo = _services()["mongo"]
        command = mongo["command"]
        assert command[command.index("--replSet") + 1] == "rs0"
        assert "--keyFile" in command
        assert mongo["environment"]["MONGO_INITDB_ROOT_PASSWORD_FILE"].startswith("/run/")
        for svc in SERVICES:
            env = _services()[_resource_name(svc)]["environment"]
            prefix = svc.env_prefix
            # The URL, with its user's password, only ever comes from the service's own file.
            assert f"{prefix}MONGO_URL" not in env, svc.name
            assert env[f"{prefix}MONGO_URL_FILE"] == f"{SECRETS}/mongo-url", svc.name

    def test_s3_is_an_option(self) -> None:
        services = _services()
        assert services["s3"]["profiles"] == ["s3"]
        assert services["s3"]["image"].startswith("chrislusf/seaweedfs:")
        needs = services["deployments"]["depends_on"]["s3"]
        assert needs == {"condition": "service_healthy", "required": False}
        env = services["deployments"]["environment"]
        assert env["DEPLOYMENTS_STORAGE_DEFAULT"] == "${FLEETPORT_STORAGE:-local}"


class TestHealth:
    def test_every_long_running_container_is_restarted_and_checked(self) -> None:
        for name, service in _services().items():
            if name in ONE_SHOTS:
                assert "restart" not in service, name
                assert "healthcheck" not in service, name
            else:
                assert service["restart"] == "unless-stopped", name
                check = service["healthcheck"]
                assert check["test"][0] in ("CMD", "CMD-SHELL"), name
                assert check["retries"] >= 1, name
                assert "start_period" in check, name

    def test_health_checks_on_the_real_endpoints(self) -> None:
        services = _services()
        for svc in SERVICES:
            check = services[_resource_name(svc)]["healthcheck"]
            assert check["test"] == [*HEALTHCHECK, f"http://127.0.0.1:8080{svc.health_path}"]
        gateway = services["gateway"]["healthcheck"]["test"]
        assert gateway == [*HEALTHCHECK, "--insecure", "https://127.0.0.1:8443/status"]

    def test_started_once_what_they_need_is_healthy(self) -> None:
        services = _services()
        for name, service in services.items():
            for needed, condition in service.get("depends_on", {}).items():
                expected = (
                    "service_completed_successfully" if needed in ONE_SHOTS else "service_healthy"
                )
                assert condition["condition"] == expected, f"{name} → {needed}"
        for svc in SERVICES:
            needs = services[_resource_name(svc)]["depends_on"]
            assert needs["mongo"] == {"condition": "service_healthy"}
            assert needs["mongo-users"] == {"condition": "service_completed_successfully"}
        assert set(services["gateway"]["depends_on"]) == {
            *(_resource_name(svc) for svc in SERVICES),
            "gui",
        }

    def test_nothing_is_required_for_config_or_down(self) -> None:
        text = (DEPLOY / "docker-compose.yml").read_text()
        assert re.findall(r"\$\{\w+:?\?", text) == []
        assert re.findall(r"\$\{\w+\}", text) == []


class TestSecrets:
    def test_each_service_mounts_only_its_own_secrets(self) -> None:
        services = _services()
        for svc in SERVICES:
            name = _resource_name(svc)
            mounts = _volume_sources(services[name])
            assert mounts[SECRETS] == f"secrets-{name}", name
            others = {s for s in mounts.values() if s.startswith("secrets-")} - {f"secrets-{name}"}
            assert not others, f"{name} mounts {others}"

    def test_no_container_but_the_generator_and_the_owner_holds_a_signing_key(
        self, tmp_path: Path
    ) -> None:
        provision(tmp_path, SERVICES, Layout(clients=(("create-admin", "useradm"),)))
        holders = {
            volume.name
            for volume in tmp_path.iterdir()
            if any(f.name in _PRIVATE_KEYS for f in volume.iterdir())
        }
        assert holders == {"useradm", "deviceauth"}
        for name, service in _services().items():
            for source in _volume_sources(service).values():
                if source.removeprefix("secrets-") in holders:
                    assert name in ("secrets", source.removeprefix("secrets-")), name
        gateway = _volume_sources(_services()["gateway"])
        assert set(gateway.values()) == {"tls"}

    def test_every_secret_a_service_reads_is_generated_into_its_volume(
        self, tmp_path: Path
    ) -> None:
        services = _services()
        provision(tmp_path, SERVICES, Layout(clients=(("create-admin", "useradm"),)))
        for name in [*(_resource_name(s) for s in SERVICES), "create-admin"]:
            for setting, value in services[name]["environment"].items():
                if str(value).startswith(SECRETS + "/"):
                    file = tmp_path / name / str(value).removeprefix(SECRETS + "/")
                    assert file.is_file(), f"{name}: {setting} names {value}, never generated"

    def test_the_generator_mounts_every_consumers_volume(self) -> None:
        mounts = _volume_sources(_services()["secrets"])
        declared = {
            f"/secrets/{_resource_name(s)}": f"secrets-{_resource_name(s)}" for s in SERVICES
        }
        assert declared.items() <= mounts.items()
        assert mounts["/secrets/mongo"] == "secrets-mongo"
        assert mounts["/secrets/create-admin"] == "secrets-create-admin"
        assert mounts["/secrets/tls"] == "tls"


def _prometheus(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / name).read_text())
    return data


def _exported_samples() -> set[str]:
    """The names of the series Fleetport's processes export (every family they define)."""
    for module in [*(f"{svc.module}.main" for svc in SERVICES), "gateway.app"]:
        importlib.import_module(module)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


class TestMetrics:
    def test_prometheus_scrapes_every_service_and_the_gateway(self) -> None:
        services = _services()
        assert services["prometheus"]["image"].startswith("prom/prometheus:")
        assert _volume_sources(services["prometheus"])["/etc/prometheus"] == "./prometheus"
        [job] = _prometheus("prometheus.yml")["scrape_configs"]
        targets = {
            target: group["labels"]["service"]
            for group in job["static_configs"]
            for target in group["targets"]
        }
        gateway_port = services["gateway"]["environment"]["GATEWAY_METRICS_PORT"]
        expected = {f"{_resource_name(svc)}:8080": svc.name for svc in SERVICES}
        assert targets == {**expected, f"gateway:{gateway_port}": "gateway"}
        assert job.get("metrics_path", "/metrics") == "/metrics"

    def test_gateway_metrics_are_not_published(self) -> None:
        gateway = _services()["gateway"]
        assert gateway["environment"]["GATEWAY_METRICS_HOST"] == "0.0.0.0"
        published = [str(p).rsplit(":", 1)[-1] for p in gateway["ports"]]
        assert published == ["8443"]

    def test_prometheus_is_reached_from_this_host_only(self) -> None:
        [port] = _services()["prometheus"]["ports"]
        assert str(port).startswith("127.0.0.1:")

    def test_recording_rules_use_what_is_exported(self) -> None:
        assert _prometheus("prometheus.yml")["rule_files"] == ["rules.yml"]
        exported = _exported_samples()
        rules = [rule for group in _prometheus("rules.yml")["groups"] for rule in group["rules"]]
        assert rules
        for rule in rules:
            assert set(rule) == {"record", "expr"}, rule
            assert re.fullmatch(r"fleetport:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule
            used = set(re.findall(r"\bfleetport_[a-z0-9_]+", rule["expr"]))
            assert used, rule
            assert used <= exported, f"{rule['record']}: {used - exported} not exported"
            assert rule["expr"].count("(") == rule["expr"].count(")"), rule
