"""What the deployment files give each process, mapped onto this machine.

`from_compose()` and `from_chart()` read docker-compose.yml and the rendered Helm chart into
`Deployment`s: for every service and the gateway, the module it runs, the environment it is
given and where its volumes are mounted; and which host name is which component. `localise()`
then maps that environment onto this machine, and nothing else: a listening address becomes
127.0.0.1 and a free port, a URL naming a component's host points at that component's local
port (MongoDB's at the embedded database, without its credentials: the embedded server has
no users; NATS's at a local nats-server), a path under a mounted volume points into a local
directory, and a `_FILE` setting whose file holds such a URL gets a copy holding the local
one. A host, a path or a secret the files name but do not provide is an error, which is the
point: settings and deployment files cannot drift. compose's one-shot that generates the
secrets runs for real, into the local directories of the volumes it mounts.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

from common.core.servicespec import ServiceSpec
from tests.deploy.chart import NAMESPACE, Manifest

__all__ = ["DATABASE", "GATEWAY", "NATS", "Deployment", "Process", "from_chart", "from_compose"]

DATABASE: Final = "database"
NATS: Final = "nats"
GATEWAY: Final = "gateway"
# compose's `$$` (a literal `$`) and `${VAR}`, `${VAR:-default}`, `${VAR-default}`.
_VARIABLE: Final = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}")


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
    # Where localised copies of files go.
    scratch: Path
    # Ports published on the host (`localhost:<port>` in a URL) → component.
    published: dict[int, str] = field(default_factory=dict)

    def localise(
        self, process: Process, prefix: str, ports: Mapping[str, int], *, port: int
    ) -> dict[str, str]:
        """A process's environment on this machine, listening on `port` (`ports`: component →
        local port)."""
        env = dict(process.env)
        for name, value in process.env.items():
            if name in (f"{prefix}LISTEN_HOST", f"{prefix}METRICS_HOST"):
                env[name] = "127.0.0.1"
            elif name == f"{prefix}METRICS_PORT":
                env[name] = "0"  # any free port: the metrics listener is no component
            elif "://" in value:
                env[name] = self._url(value, ports)
            elif value.startswith("/") and name not in process.secret:
                env[name] = self._file(name, _local_path(value, process.mounts), ports)
        env[f"{prefix}LISTEN_PORT"] = str(port)
        return env

    def _file(self, name: str, path: str, ports: Mapping[str, int]) -> str:
        """The local path of a mounted file; a `_FILE` URL's is a copy with the local URL."""
        if not name.endswith("_FILE"):
            return path
        content = Path(path).read_text()
        if "://" not in content:
            return path
        copy = self.scratch / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(self._url(content.strip(), ports))
        return str(copy)

    def _url(self, value: str, ports: Mapping[str, int]) -> str:
        url = urlsplit(value)
        host = url.hostname or ""
        if host == "localhost" and url.port in self.published:
            component = self.published[url.port]
        else:
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


def _interpolate(value: Any, variables: Mapping[str, str]) -> str:
    """Compose's interpolation: a variable set in `variables`, else its default, else empty."""

    def value_of(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return variables.get(match.group(1)) or match.group(2) or ""

    return _VARIABLE.sub(value_of, str(value))


def _provision(entry: dict[str, Any], variables: Mapping[str, str], local: Path) -> None:
    """Run compose's secrets one-shot here: its root a directory of links to the volumes."""
    command = [_interpolate(c, variables) for c in entry["command"]]
    module, root, *args = command
    linked = local / "secrets-root"
    linked.mkdir(parents=True, exist_ok=True)
    for volume in entry["volumes"]:
        source, target = _interpolate(volume, variables).split(":")[:2]
        assert target.startswith(root + "/"), f"{volume}: not under {root}"
        (local / source).mkdir(parents=True, exist_ok=True)
        (linked / target.removeprefix(root + "/")).symlink_to(local / source)
    done = subprocess.run(
        [sys.executable, "-m", module, str(linked), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def from_compose(
    path: Path, services: tuple[ServiceSpec, ...], local: Path, variables: Mapping[str, str]
) -> Deployment:
    """The compose file's processes, with `variables` set; its named volumes become
    directories under `local`."""
    compose: dict[str, Any] = yaml.safe_load(path.read_text())["services"]
    components = {_resource(svc.name): svc.name for svc in services}

    def process(entry: dict[str, Any]) -> Process:
        mounts = {}
        for volume in entry.get("volumes", []):
            source, target = _interpolate(volume, variables).split(":")[:2]
            mounts[target] = local / source
            mounts[target].mkdir(parents=True, exist_ok=True)
        env = {k: _interpolate(v, variables) for k, v in entry.get("environment", {}).items()}
        command = [_interpolate(c, variables) for c in entry["command"]]
        if "entrypoint" in entry:  # a shell command line, not a module
            return Process("", env, mounts, [*entry["entrypoint"], *command])
        return Process(command[0], env, mounts, command[1:])

    _provision(compose["secrets"], variables, local)
    processes = {components[name]: process(compose[name]) for name in components}
    processes[GATEWAY] = process(compose["gateway"])
    hosts = {name: components.get(name, name) for name in compose}
    hosts |= {"mongo": DATABASE, "nats": NATS}
    published = {}
    for name, entry in compose.items():
        for mapping in entry.get("ports", []):
            # [address:]published:container
            published[int(_interpolate(mapping, variables).split(":")[-2])] = hosts[name]
    [admin] = [
        process(entry)
        for entry in compose.values()
        if "create-user" in " ".join(map(str, entry.get("command", [])))
    ]
    return Deployment(processes, hosts, admin, local / "localised", published)


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
    return Deployment(processes, hosts, admin, local / "localised")
