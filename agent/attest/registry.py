"""Workload attestor plugins by name, each built from its own config table (like SPIRE's catalog).

Adding an attestor is one module with a class that has ``name`` and ``async attest(caller)``,
plus one :meth:`AttestorRegistry.register` line in :func:`default_registry`::

    registry = default_registry()
    registry.register("toy", lambda table, procfs: ToyAttestor(table.get("prefix", "toy")))
    attestors = registry.build(["unix", "toy"], {"toy": {"prefix": "x"}}, LinuxProcFs())
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from spiffe_agent.attest import unix
from spiffe_agent.attest.base import WorkloadAttestor
from spiffe_agent.attest.docker import DockerAttestor, DockerEngineApi, socket_path_from_docker_host
from spiffe_agent.attest.procfs import ProcFs
from spiffe_agent.errors import AgentConfigError

AttestorFactory = Callable[[Mapping[str, Any], ProcFs], WorkloadAttestor]


class AttestorRegistry:
    """Attestor factories by name; each gets its plugin's config table and the ``/proc`` seam."""

    def __init__(self) -> None:
        self._factories: dict[str, AttestorFactory] = {}

    def register(self, name: str, factory: AttestorFactory) -> None:
        """Make ``name`` configurable in ``workload_attestors``."""
        if name in self._factories:
            raise ValueError(f"attestor registry: {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> tuple[str, ...]:
        """The registered names."""
        return tuple(self._factories)

    def build(self, names: Iterable[str], tables: Mapping[str, Mapping[str, Any]],
              procfs: ProcFs) -> list[WorkloadAttestor]:
        """The attestors ``names``, in order, each from its table (empty if absent)."""
        out: list[WorkloadAttestor] = []
        for name in names:
            factory = self._factories.get(name)
            if factory is None:
                raise AgentConfigError(f"config: workload_attestors must be among {self.names()!r}: {name!r}")
            out.append(factory(tables.get(name, {}), procfs))
        return out


def _docker(table: Mapping[str, Any], procfs: ProcFs) -> DockerAttestor:
    unknown = sorted(set(table) - {"docker_host"})
    if unknown:
        raise AgentConfigError(f"config: unknown keys for the docker attestor: {unknown!r}")
    host = table.get("docker_host") or os.environ.get("DOCKER_HOST")
    return DockerAttestor(procfs, DockerEngineApi(socket_path_from_docker_host(host)))


def default_registry() -> AttestorRegistry:
    """A registry of the built-in attestors (a new one each time: callers may add their own)."""
    registry = AttestorRegistry()
    registry.register("unix", unix.from_config)
    registry.register("docker", _docker)
    return registry
