"""The Helm chart (deploy/helm/fleetport), rendered and validated offline.

Rendering uses Helm's own template engine (the Go SDK, bundled as a library by the
`helm-python-sdk` package), so what is checked is what `helm install` would apply; nothing is
downloaded and no cluster is needed. Every rendered manifest is validated against the
Kubernetes schemas that `kubernetes-validate` bundles, strictly (an unknown field is an
error), for the oldest and the newest Kubernetes the chart supports.

`python -m tests.deploy.chart` (part of `make check`) renders every scenario of `SCENARIOS`
and validates each manifest.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import helm_python
import kubernetes_validate
import yaml

__all__ = [
    "CHART",
    "KUBERNETES_VERSIONS",
    "NAMESPACE",
    "RELEASE",
    "SCENARIOS",
    "Manifest",
    "render",
    "validate",
]

CHART: Final = Path(__file__).parents[2] / "deploy" / "helm" / "fleetport"
RELEASE: Final = "fleetport"
NAMESPACE: Final = "fleetport"
# The oldest Kubernetes the chart declares (Chart.yaml's kubeVersion) and the newest schemas.
KUBERNETES_VERSIONS: Final = ("1.27", "1.37")

Manifest = dict[str, Any]

# What every install sets: an image of its own, and the admin user's Secret.
_REQUIRED: Final[dict[str, Any]] = {
    "image": {"repository": "registry.example.com/fleetport", "tag": "0.1.0"},
    "admin": {"existingSecret": "fleetport-admin"},
}

# Value sets that cover every branch of the templates.
SCENARIOS: Final[dict[str, dict[str, Any]]] = {
    "trial": {},
    "production": {
        "mongodb": {
            "bundled": {"enabled": False},
            "external": {"existingSecret": "fleetport-mongodb", "key": "url"},
        },
        "storage": {
            "type": "s3",
            "s3": {"uri": "https://s3.example.com", "existingSecret": "fleetport-s3"},
        },
        "services": {"deployments": {"replicas": 3}},
        "tls": {"certManager": {"enabled": False}, "existingSecret": "fleetport-tls"},
        "keys": {"existingSecret": "fleetport-keys"},
        "networkPolicy": {
            "gatewayAllowFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}]
        },
        "metrics": {"allowFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
    },
    "plain": {
        "ingress": {"enabled": False},
        "tls": {"enabled": False},
        "gateway": {"service": {"type": "LoadBalancer"}},
        "nats": {"enabled": False},
        "services": {"deviceconnect": {"replicas": 1}},
        "webui": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "metrics": {"enabled": False},
    },
}

# Kinds of cluster add-ons whose schemas no Kubernetes release has: the fields that must be
# there instead.
_CUSTOM_KINDS: Final[dict[tuple[str, str], tuple[tuple[str, ...], ...]]] = {
    ("cert-manager.io/v1", "Certificate"): (
        ("spec", "secretName"),
        ("spec", "dnsNames"),
        ("spec", "issuerRef", "name"),
        ("spec", "issuerRef", "kind"),
    ),
}


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def render(values: Mapping[str, Any] | None = None, *, required: bool = True) -> list[Manifest]:
    """Every manifest the chart renders with these values (over the required ones)."""
    given = _merge(_REQUIRED, values or {}) if required else dict(values or {})
    with helm_python.Chart.load(str(CHART)) as chart:
        files = chart.render(given, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        doc
        for path, text in sorted(files.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def _missing(manifest: Manifest, fields: tuple[tuple[str, ...], ...]) -> list[str]:
    missing = []
    for path in fields:
        node: Any = manifest
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if not node:
            missing.append(".".join(path))
    return missing


def validate(manifest: Manifest) -> list[str]:
    """What is wrong with a manifest for each Kubernetes version; empty when nothing is."""
    kind = (manifest.get("apiVersion", ""), manifest.get("kind", ""))
    name = f"{kind[1]} {manifest.get('metadata', {}).get('name')}"
    if kind in _CUSTOM_KINDS:
        return [f"{name}: no {field}" for field in _missing(manifest, _CUSTOM_KINDS[kind])]
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{name} (Kubernetes {version}): {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{name}: no schema for {kind[0]} {kind[1]} in Kubernetes {version}")
    return errors


def main() -> int:
    """Render every scenario and validate every manifest; 1 if any is invalid."""
    failed = False
    for scenario, values in SCENARIOS.items():
        manifests = render(values)
        errors = [error for manifest in manifests for error in validate(manifest)]
        for error in errors:
            sys.stderr.write(f"{scenario}: {error}\n")
        failed = failed or bool(errors)
        sys.stdout.write(
            f"chart {scenario}: {len(manifests)} manifests, "
            f"{'INVALID' if errors else 'valid'} for Kubernetes {', '.join(KUBERNETES_VERSIONS)}\n"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
