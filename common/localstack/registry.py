"""The services of this checkout: each package under `services/` declares itself.

A service joins the local stack by adding `services/<name>/service.py` with
`SERVICE = ServiceSpec(...)`; nothing here lists them. Only the declarations are imported
(with their packages' `__init__`, which stay free of FastAPI), so this takes milliseconds.
"""

from __future__ import annotations

import importlib
import pkgutil

from common.core.servicespec import ServiceSpec

__all__ = ["discover"]


def _declaration(package: str, name: str) -> ServiceSpec:
    module = f"{package}.{name}.service"
    try:
        declaration = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise RuntimeError(f"{package}.{name} has no service.py declaring its SERVICE") from None
    declared = getattr(declaration, "SERVICE", None)
    if not isinstance(declared, ServiceSpec) or declared.name != name:
        raise RuntimeError(f"{module}.SERVICE must be a ServiceSpec named {name!r}")
    return declared


def discover(package: str = "services") -> tuple[ServiceSpec, ...]:
    """The declaration of every service package under `package`, by name."""
    root = importlib.import_module(package)
    return tuple(
        _declaration(package, info.name)
        for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda info: info.name)
        if info.ispkg
    )
