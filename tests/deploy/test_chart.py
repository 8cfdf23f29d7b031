"""The Helm chart: valid manifests for every scenario, every service of the registry with its
real settings and endpoints, least privilege, and refusals of what would break an install."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from common.core.tokens import load_signing_key
from common.localstack.registry import discover
from tests.deploy.chart import CHART, SCENARIOS, Manifest, render, validate
from tests.deploy.test_manifests import _gateway_setting_names, _setting_names

SERVICES = discover()


def _kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def _pods(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    """Every pod template by its workload's name."""
    return {
        m["metadata"]["name"]: m["spec"]["template"]
        for m in manifests
        if m["kind"] in ("Deployment", "StatefulSet", "Job")
    }


@pytest.fixture(scope="module")
def trial() -> list[Manifest]:
    return render()


class TestRendering:
    @pytest.mark.parametrize("scenario", SCENARIOS)
    def test_every_manifest_is_valid(self, scenario: str) -> None:
        manifests = render(SCENARIOS[scenario])
        assert manifests
        assert [error for m in manifests for error in validate(m)] == []

    def test_no_image_no_install(self) -> None:
        with pytest.raises(helm_python.HelmError, match=r"image\.repository is empty"):
            render(required=False)

    def test_one_replica_on_a_volume(self) -> None:
        with pytest.raises(helm_python.HelmError, match=r"needs storage\.type=s3"):
            render({"services": {"deployments": {"replicas": 2}}})

    def test_deviceconnect_replicas_need_nats(self) -> None:
        with pytest.raises(helm_python.HelmError, match="needs NATS"):
            render({"nats": {"enabled": False}})


class TestServices:
    def test_values_list_every_service_of_the_registry(self) -> None:
        values = yaml.safe_load((CHART / "values.yaml").read_text())["services"]
        assert set(values) == {svc.name for svc in SERVICES}
        for svc in SERVICES:
            entry = values[svc.name]
            assert entry["module"] == svc.module
            assert entry["envPrefix"] == svc.env_prefix
            assert entry["apiName"] == svc.internal_name
            assert tuple(entry.get("peers", ())) == svc.peers, svc.name
            given = {*entry.get("secretEnv", {}), *entry.get("keyFiles", {})}
            given |= {"STORAGE_PATH"} if entry.get("artifacts") else set()
            assert given == set(svc.local_env), svc.name

    def test_only_real_settings(self, trial: list[Manifest]) -> None:
        pods = _pods(trial)
        for svc in SERVICES:
            container = pods[f"fleetport-{svc.name.replace('_', '-')}"]["spec"]["containers"][0]
            assert container["args"] == [svc.module]
            unknown = {e["name"] for e in container["env"]} - _setting_names(svc)
            assert not unknown, f"{svc.name}: unknown settings {unknown}"
        gateway = pods["fleetport-gateway"]["spec"]["containers"][0]
        assert {e["name"] for e in gateway["env"]} <= _gateway_setting_names()

    def test_probes_on_the_real_endpoints(self, trial: list[Manifest]) -> None:
        pods = _pods(trial)
        for svc in SERVICES:
            container = pods[f"fleetport-{svc.name.replace('_', '-')}"]["spec"]["containers"][0]
            alive = svc.health_path.removesuffix("/health") + "/alive"
            assert container["readinessProbe"]["httpGet"]["path"] == svc.health_path
            # Alive, not healthy: a database outage must not restart every service.
            assert container["livenessProbe"]["httpGet"]["path"] == alive
        gateway = pods["fleetport-gateway"]["spec"]["containers"][0]
        assert gateway["livenessProbe"]["httpGet"]["path"] == "/status"

    def test_every_container_probed_limited_and_unprivileged(self, trial: list[Manifest]) -> None:
        for name, pod in _pods(trial).items():
            security = pod["spec"]["securityContext"]
            assert security["runAsNonRoot"] is True, name
            assert security["fsGroup"] == security["runAsGroup"], name
            for container in pod["spec"]["containers"]:
                assert container["securityContext"]["allowPrivilegeEscalation"] is False
                assert set(container["resources"]) == {"requests", "limits"}, name
                if not name.endswith("create-admin"):
                    assert {"readinessProbe", "livenessProbe"} <= set(container), name
                # The web UI writes its configuration at start; everything else cannot write.
                if not name.endswith("webui"):
                    assert container["securityContext"]["readOnlyRootFilesystem"] is True, name

    def test_every_workload_has_a_disruption_budget(self, trial: list[Manifest]) -> None:
        budgets = _kind(trial, "PodDisruptionBudget")
        assert set(_kind(trial, "Deployment")) - budgets.keys() == {"fleetport-nats"}

    def test_volume_recreates_and_s3_rolls(self, trial: list[Manifest]) -> None:
        volume = _kind(trial, "Deployment")["fleetport-deployments"]
        assert volume["spec"]["strategy"] == {"type": "Recreate"}
        s3 = _kind(render(SCENARIOS["production"]), "Deployment")["fleetport-deployments"]
        assert s3["spec"]["strategy"]["type"] == "RollingUpdate"
        assert s3["spec"]["replicas"] == 3
        env = {e["name"]: e for e in s3["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["DEPLOYMENTS_STORAGE_DEFAULT"]["value"] == "aws"
        assert env["DEPLOYMENTS_AWS_AUTH_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == (
            "fleetport-s3"
        )


class TestMongoDB:
    def test_the_member_name_resolves_before_it_is_ready(self, trial: list[Manifest]) -> None:
        service = _kind(trial, "Service")["fleetport-mongodb"]
        assert service["spec"]["publishNotReadyAddresses"] is True
        url = _kind(trial, "Secret")["fleetport-mongodb"]["stringData"]["url"]
        host = "fleetport-mongodb-0.fleetport-mongodb.fleetport.svc.cluster.local:27017"
        assert url == f"mongodb://{host}/?replicaSet=rs0"
        scripts = _kind(trial, "ConfigMap")["fleetport-mongodb"]["data"]
        assert f'"{host}"' in scripts["initiate.js"]

    def test_probes_only_look(self, trial: list[Manifest]) -> None:
        container = _pods(trial)["fleetport-mongodb"]["spec"]["containers"][0]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert "initiate" not in " ".join(container[probe]["exec"]["command"])
            assert container[probe]["timeoutSeconds"] >= 10
        assert "initiate.js" in container["lifecycle"]["postStart"]["exec"]["command"][-1]

    def test_external_url_from_a_secret(self) -> None:
        manifests = render(SCENARIOS["production"])
        assert "fleetport-mongodb" not in _kind(manifests, "StatefulSet")
        env = _pods(manifests)["fleetport-useradm"]["spec"]["containers"][0]["env"]
        url = next(e for e in env if e["name"] == "USERADM_MONGO_URL")
        assert url["valueFrom"]["secretKeyRef"] == {"name": "fleetport-mongodb", "key": "url"}


class TestSecrets:
    def test_generated_keys_work(self, trial: list[Manifest], tmp_path: Path) -> None:
        data = _kind(trial, "Secret")["fleetport-keys"]["data"]
        for key in ("useradm.pem", "deviceauth.pem"):
            (tmp_path / key).write_bytes(base64.b64decode(data[key]))
            assert load_signing_key(tmp_path / key) is not None
        assert len(base64.b64decode(base64.b64decode(data["iot-manager-key"]))) == 32
        assert len(base64.b64decode(data["presign-secret"])) >= 32

    def test_keys_are_kept(self, trial: list[Manifest]) -> None:
        keys = _kind(trial, "Secret")["fleetport-keys"]
        assert keys["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    def test_an_existing_secret_instead(self) -> None:
        manifests = render(SCENARIOS["production"])
        assert "fleetport-keys" not in _kind(manifests, "Secret")  # the operator's own
        volumes = _pods(manifests)["fleetport-deviceauth"]["spec"]["volumes"]
        keys = next(v for v in volumes if v["name"] == "keys")["secret"]
        assert keys["secretName"] == "fleetport-keys"
        assert keys["items"] == [{"key": "deviceauth.pem", "path": "deviceauth.pem"}]

    def test_admin_job_from_a_secret(self, trial: list[Manifest]) -> None:
        job = _kind(trial, "Job")["fleetport-create-admin"]
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
        env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["FLEETPORT_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "fleetport-admin",
            "key": "password",
        }


class TestTLS:
    def test_cert_manager_certificate_serves_the_ingress(self, trial: list[Manifest]) -> None:
        certificate = _kind(trial, "Certificate")["fleetport-tls"]
        ingress = _kind(trial, "Ingress")["fleetport"]
        assert ingress["spec"]["tls"] == [
            {"hosts": ["fleetport.example.com"], "secretName": certificate["spec"]["secretName"]}
        ]
        paths = {
            p["path"]: p["backend"]["service"]["name"]
            for p in ingress["spec"]["rules"][0]["http"]["paths"]
        }
        assert paths == {"/": "fleetport-gateway", "/ui": "fleetport-webui"}
        env = _pods(trial)["fleetport-deployments"]["spec"]["containers"][0]["env"]
        base = next(e for e in env if e["name"] == "DEPLOYMENTS_PRESIGN_URL_BASE")
        assert base["value"] == "https://fleetport.example.com"

    def test_existing_secret(self) -> None:
        manifests = render(SCENARIOS["production"])
        assert _kind(manifests, "Certificate") == {}
        tls = _kind(manifests, "Ingress")["fleetport"]["spec"]["tls"]
        assert tls[0]["secretName"] == "fleetport-tls"


class TestNetworkPolicies:
    def _from(self, trial: list[Manifest], name: str) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = _kind(trial, "NetworkPolicy")[name]["spec"]["ingress"]
        return [source for rule in rules for source in rule.get("from", [])]

    def test_everything_is_denied_unless_allowed(self, trial: list[Manifest]) -> None:
        deny = _kind(trial, "NetworkPolicy")["fleetport-default-deny"]["spec"]
        assert deny["policyTypes"] == ["Ingress"]
        assert "ingress" not in deny
        instance = deny["podSelector"]["matchLabels"]
        for pod in _pods(trial).values():
            assert instance.items() <= pod["metadata"]["labels"].items()

    def test_only_services_reach_mongodb(self, trial: list[Manifest]) -> None:
        tiers = [s["podSelector"]["matchLabels"] for s in self._from(trial, "fleetport-mongodb")]
        assert [t.get("fleetport.io/tier") for t in tiers] == ["service", None]
        assert tiers[1]["fleetport.io/database-client"] == "true"  # the admin Job
        job = _pods(trial)["fleetport-create-admin"]["metadata"]["labels"]
        assert job["fleetport.io/database-client"] == "true"

    def test_services_from_the_gateway_and_each_other(self, trial: list[Manifest]) -> None:
        sources = self._from(trial, "fleetport-services")
        tiers = [s["podSelector"]["matchLabels"]["fleetport.io/tier"] for s in sources]
        assert tiers == ["gateway", "service"]
        for svc in SERVICES:
            pod = _pods(trial)[f"fleetport-{svc.name.replace('_', '-')}"]
            assert pod["metadata"]["labels"]["fleetport.io/tier"] == "service"

    def test_only_deviceconnect_reaches_nats(self, trial: list[Manifest]) -> None:
        sources = self._from(trial, "fleetport-nats")
        components = [
            s["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for s in sources
        ]
        assert components == ["deviceconnect"]


class TestMetrics:
    def test_services_are_scraped_on_their_port(self, trial: list[Manifest]) -> None:
        pods = _pods(trial)
        for svc in SERVICES:
            pod = pods[f"fleetport-{svc.name.replace('_', '-')}"]
            assert pod["metadata"]["annotations"] == {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "8080",
                "prometheus.io/path": "/metrics",
            }
            ports = pod["spec"]["containers"][0]["ports"]
            assert ports == [{"name": "http", "containerPort": 8080}]

    def test_gateway_metrics_on_a_port_no_service_exposes(self, trial: list[Manifest]) -> None:
        pod = _pods(trial)["fleetport-gateway"]
        container = pod["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["GATEWAY_METRICS_PORT"] == "9100"
        assert env["GATEWAY_LISTEN_PORT"] == "8080"
        assert {"name": "metrics", "containerPort": 9100} in container["ports"]
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9100"
        service = _kind(trial, "Service")["fleetport-gateway"]
        assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]

    def test_the_scraper_is_let_through_when_named(self, trial: list[Manifest]) -> None:
        assert "fleetport-metrics" not in _kind(trial, "NetworkPolicy")
        production = render(SCENARIOS["production"])
        policy = _kind(production, "NetworkPolicy")["fleetport-metrics"]["spec"]
        rule = policy["ingress"][0]
        assert rule["ports"] == [{"port": "http"}, {"port": "metrics"}]
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]
        tiers = policy["podSelector"]["matchExpressions"][0]["values"]
        assert tiers == ["service", "gateway"]

    def test_off(self) -> None:
        plain = render(SCENARIOS["plain"])
        gateway = _pods(plain)["fleetport-gateway"]
        assert "annotations" not in gateway["metadata"]
        names = {e["name"] for e in gateway["spec"]["containers"][0]["env"]}
        assert "GATEWAY_METRICS_PORT" not in names
