"""Every Prometheus metric the server, the agent and the broker register is in docs/operations.md's reference.

All modules of the three packages are imported (metrics are module-level objects), then every family
named ``spiffe_*`` in the agent's registry (prometheus_client's default) and the server's own
registry is looked up in the metrics tables by its exposed name (a counter with ``_total``).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _import_all(package: str) -> None:
    root = importlib.import_module(package)
    for module in pkgutil.walk_packages(root.__path__, f"{package}."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)


def _exposed(registry: CollectorRegistry) -> dict[str, str]:
    """Exposed family name -> type, for our metrics."""
    return {f"{fam.name}_total" if fam.type == "counter" else fam.name: fam.type
            for fam in registry.collect() if fam.name.startswith("spiffe_")}


def _documented() -> dict[str, str]:
    """Metric -> type from the reference tables (`| `name` | type | ...`)."""
    reference = DOC.read_text().split("## Metrics reference", 1)[1]
    return dict(re.findall(r"^\| `(spiffe_[a-z0-9_]+)` \| (counter|gauge|histogram) \|", reference, re.M))


def test_every_registered_metric_is_documented_with_its_type() -> None:
    _import_all("spiffe_agent")
    _import_all("spiffe_server")
    _import_all("spiffe_broker")
    from spiffe_server.metrics import REGISTRY as SERVER_REGISTRY

    registered = {**_exposed(REGISTRY), **_exposed(SERVER_REGISTRY)}
    documented = _documented()
    assert len(registered) > 30  # both registries were read
    missing = sorted(set(registered) - set(documented))
    assert missing == [], f"metrics missing from docs/operations.md: {missing}"
    wrong_type = {name: (registered[name], documented[name]) for name in registered
                  if documented[name] != registered[name]}
    assert wrong_type == {}


def test_the_reference_lists_no_metric_that_does_not_exist() -> None:
    _import_all("spiffe_agent")
    _import_all("spiffe_server")
    _import_all("spiffe_broker")
    from spiffe_server.metrics import REGISTRY as SERVER_REGISTRY

    registered = {**_exposed(REGISTRY), **_exposed(SERVER_REGISTRY)}
    assert sorted(set(_documented()) - set(registered)) == []
