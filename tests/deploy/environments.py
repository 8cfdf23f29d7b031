"""What the deployment files give each process, mapped onto this machine.

`from_compose()` and `from_chart()` read docker-compose.yml and the rendered Helm chart into
`Deployment`s: for every service and the gateway, the module it runs, the environment it is
given and where its volumes are mounted; and which host name is which component. `localise()`
then maps that environment onto this machine, and nothing else: a listening address becomes
127.0.0.1 and a free port, a URL naming a component's host points at that component's local
port (MongoDB's at the embedded database, NATS's at a local nats-server), a path under a
mounted volume points into a local directory. A host, a path or a secret the files name but
do not provide is an error, which is the point: settings and deployment files cannot drift.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

from common.core.servicespec import ServiceSpec
from common.localstack.keygen import ensure_keys
from tests.deploy.chart import NAMESPACE, Manifest

__all__ = ["DATABASE", "GATEWAY", "NATS", "Deployment", "Process", "from_chart", "from_compose"]

DATABASE: Final = "database"
NATS: Final = "nats"
GATEWAY: Final = "gateway"
_VARIABLE: Final = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


@dataclass
class Process:
    """One container: the module it runs, its environment, its mounts (container → local)."""

    module: str
    env: dict[str, str]
    mounts: dict[str, Path] = field(default_factory=dict)
    # The command line, for a one-shot container (the admin user's).
    args: list[str] = field(default_factory=list)
    # The settings whose values are secrets: never a path, whatever their first character.
    secret: frozenset[str] = frozenset()


@dataclass
class Deployment:
    """The processes by component (a service's name, `GATEWAY`) and the hosts they use."""

    processes: dict[str, Process]
    # Host name → component (a service's name, `GATEWAY`, `DATABASE`, `NATS`).
    hosts: dict[str, str]
    # How the first admin user is created: the process to run for it.
    create_admin: Process

    def localise(
        self, process: Process, prefix: str, ports: Mapping[str, int], *, port: int
    ) -> dict[str, str]:
        """A process's environment on this machine, listening on `port` (`ports`: component →
        local port)."""
        env = dict(process.env)
        for name, value in process.env.items():
            if name == f"{prefix}LISTEN_HOST":
                env[name] = "127.0.0.1"
            elif "://" in value:
                env[name] = self._url(value, ports)
            elif value.startswith("/") and name not in process.secret:
                env[name] = _local_path(value, process.mounts)
        env[f"{prefix}LISTEN_PORT"] = str(port)
        return env

    def _url(self, value: str, ports: Mapping[str, int]) -> str:
        url = urlsplit(value)
        host = url.hostname or ""
        assert host in self.hosts, f"{value}: {host!r} is no component of the deployment"
        component = self.hosts[host]
        netloc = f"127.0.0.1:{ports[component]}"
        if component == DATABASE:
            # The embedded server is no replica set: the URL keeps only the database's address.
            assert url.scheme in ("mongodb", "mongodb+srv"), value
            return f"mongodb://{netloc}/?directConnection=true"
        return url._replace(netloc=netloc).geturl()


def _local_path(value: str, mounts: Mapping[str, Path]) -> str:
    for mount, local in mounts.items():
        if value == mount or value.startswith(mount.rstrip("/") + "/"):
            return str(local / value.removeprefix(mount).lstrip("/"))
    raise AssertionError(f"{value} is on no volume the container mounts")


def _resource(name: str) -> str:
    return name.replace("_", "-")


# --- docker compose ---------------------------------------------------------------------


def _interpolate(value: Any, variables: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:?msg}`, `${VAR:-default}`: each variable gets a new secret."""

    def value_of(match: re.Match[str]) -> str:
        name = match.group(1)
        return variables.setdefault(name, base64.b64encode(secrets.token_bytes(32)).decode())

    return _VARIABLE.sub(value_of, str(value))


def from_compose(path: Path, services: tuple[ServiceSpec, ...], local: Path) -> Deployment:
    """The compose file's processes; its named volumes become directories under `local`."""
    compose: dict[str, Any] = yaml.safe_load(path.read_text())["services"]
    variables: dict[str, str] = {}
    components = {_resource(svc.name): svc.name for svc in services}

    def process(entry: dict[str, Any], args: list[str] | None = None) -> Process:
        mounts = {}
        for volume in entry.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            mounts[target] = local / source
            mounts[target].mkdir(parents=True, exist_ok=True)
        env = {k: _interpolate(v, variables) for k, v in entry.get("environment", {}).items()}
        secret = frozenset(k for k, v in entry.get("environment", {}).items() if "${" in str(v))
        command = entry["command"]
        return Process(command[0], env, mounts, args or command[1:], secret)

    # The one-shot container that writes the keys into their volume.
    keys = process(compose["keys"])
    ensure_keys(Path(_local_path(keys.args[0], keys.mounts)))
    processes = {components[name]: process(compose[name]) for name in components}
    processes[GATEWAY] = process(compose["gateway"])
    hosts = {name: components.get(name, name) for name in compose}
    hosts |= {"mongo": DATABASE, "nats": NATS}
    admin = next(
        (process(entry) for entry in compose.values() if "create-user" in entry.get("command", [])),
        # Otherwise as the compose file's comment has it: `run --rm useradm ... create-user`.
        process(compose["useradm"], ["create-user"]),
    )
    return Deployment(processes, hosts, admin)


# --- the Helm chart ---------------------------------------------------------------------


def _secrets(manifests: list[Manifest], given: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    found: dict[str, dict[str, str]] = {name: dict(data) for name, data in given.items()}
    for m in manifests:
        if m["kind"] == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in m.get("data", {}).items()}
            found[m["metadata"]["name"]] = data | m.get("stringData", {})
    return found


def _pod_process(
    pod: dict[str, Any], secrets_: Mapping[str, Mapping[str, str]], local: Path
) -> Process:
    container = pod["containers"][0]
    volumes: dict[str, Path] = {}
    for volume in pod.get("volumes", []):
        directory = local / volume["name"]
        if "persistentVolumeClaim" in volume:
            directory = local.parent / "claims" / volume["persistentVolumeClaim"]["claimName"]
        directory.mkdir(parents=True, exist_ok=True)
        if "secret" in volume:
            data = secrets_[volume["secret"]["secretName"]]
            for item in volume["secret"]["items"]:
                (directory / item["path"]).parent.mkdir(parents=True, exist_ok=True)
                (directory / item["path"]).write_text(data[item["key"]])
        volumes[volume["name"]] = directory
    env = {}
    secret = set()
    for var in container.get("env", []):
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets_[ref["name"]][ref["key"]]
            secret.add(var["name"])
        else:
            env[var["name"]] = var["value"]
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
    args = container.get("args", [])
    if container.get("command"):
        return Process("", env, mounts, [*container["command"], *args], frozenset(secret))
    return Process(args[0], env, mounts, args[1:], frozenset(secret))


def from_chart(
    manifests: list[Manifest],
    services: tuple[ServiceSpec, ...],
    local: Path,
    given_secrets: Mapping[str, Mapping[str, str]],
) -> Deployment:
    """The rendered chart's processes; `given_secrets` are the operator's own Secrets."""
    secrets_ = _secrets(manifests, given_secrets)
    components = {_resource(svc.name): svc.name for svc in services}
    components |= {"gateway": GATEWAY, "mongodb": DATABASE, "nats": NATS}

    def component(labels: Mapping[str, str]) -> str:
        name = labels["app.kubernetes.io/component"]
        return components.get(name, name)

    fleetport = {svc.name for svc in services} | {GATEWAY}
    processes = {}
    admin = None
    for m in manifests:
        pod = m["spec"]["template"] if m["kind"] in ("Deployment", "Job") else None
        if pod is None or (
            m["kind"] == "Deployment" and component(pod["metadata"]["labels"]) not in fleetport
        ):
            continue  # not a Fleetport process (MongoDB, NATS, the web UI)
        process = _pod_process(pod["spec"], secrets_, local / m["metadata"]["name"])
        if m["kind"] == "Job":
            admin = process
        else:
            processes[component(pod["metadata"]["labels"])] = process
    hosts = {}
    for m in manifests:
        if m["kind"] == "Service":
            name = m["metadata"]["name"]
            target = component(m["spec"]["selector"])
            for suffix in (
                "",
                f".{NAMESPACE}",
                f".{NAMESPACE}.svc",
                f".{NAMESPACE}.svc.cluster.local",
            ):
                hosts[name + suffix] = target
                if m["spec"].get("clusterIP") == "None":  # a StatefulSet's pods by name
                    hosts[f"{name}-0.{name}{suffix}"] = target
    for m in manifests:
        if m["kind"] == "Ingress":  # the public name: whatever serves its root
            for rule in m["spec"]["rules"]:
                root = next(p for p in rule["http"]["paths"] if p["path"] == "/")
                hosts[rule["host"]] = hosts[root["backend"]["service"]["name"]]
    assert admin is not None, "the chart creates no admin user"
    return Deployment(processes, hosts, admin)
