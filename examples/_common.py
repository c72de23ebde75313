"""Small helpers shared by the examples (not part of the library).

::

    svid_source = SvidById(x509_source, SpiffeId.parse("spiffe://example.org/examples/tool"))
    proc, port = start_server("examples.ai_agent_tool_mtls.tool", "--seconds", "30")
    check(calls_failed == 0, "no call failed")
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
from typing import IO

from spiffe_py.spiffeid import SpiffeId
from spiffe_py.workloadapi import X509Source
from spiffe_py.x509svid import X509Svid

READY_PREFIX = "listening on port "


class SvidById:
    """An X509SvidSource that serves one chosen identity of a workload that has several."""

    def __init__(self, source: X509Source, spiffe_id: SpiffeId) -> None:
        self._source = source
        self.spiffe_id = spiffe_id

    def get_x509_svid(self) -> X509Svid:
        """The current SVID for our SPIFFE ID (the agent rotates it; we always read the latest)."""
        for svid in self._source.x509_context().svids:
            if svid.spiffe_id == self.spiffe_id:
                return svid
        raise LookupError(f"the Workload API serves no SVID for {self.spiffe_id}")


def blocking(sock: socket.socket, seconds: int = 10) -> socket.socket:
    """Make ``sock`` blocking with kernel-level timeouts, as pyOpenSSL needs.

    Python's ``settimeout`` switches the descriptor to non-blocking mode, which pyOpenSSL reports
    as WantReadError instead of waiting; SO_RCVTIMEO/SO_SNDTIMEO bound the waits instead.
    """
    sock.settimeout(None)
    limit = struct.pack("ll", seconds, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
    return sock


def announce_port(port: int) -> None:
    """Tell the parent process (see start_server) where we listen."""
    print(f"{READY_PREFIX}{port}", flush=True)


def _relay(stream: IO[str], prefix: str) -> None:
    for line in stream:
        print(f"{prefix}{line}", end="", flush=True)


def start_server(module: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    """Run ``python -m module args``, wait for its port, then relay its output prefixed by its name."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if not first.startswith(READY_PREFIX):
        proc.kill()
        raise SystemExit(f"{module} did not start (said {first!r})")
    name = module.rsplit(".", 1)[-1]
    threading.Thread(target=_relay, args=(proc.stdout, f"[{name}] "), daemon=True).start()
    return proc, int(first.removeprefix(READY_PREFIX))


def check(ok: bool, claim: str) -> bool:
    """Print one claim of an example as OK/FAILED; returns ``ok`` so callers can combine them."""
    print(f"{'OK    ' if ok else 'FAILED'} {claim}", flush=True)
    return ok
