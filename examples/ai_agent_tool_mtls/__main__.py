"""An "AI agent" that calls a "tool" over mTLS; both sides prove who they are with SPIFFE SVIDs.

Next to a running agent with three entries for this user: ``.../examples/ai-agent`` and
``.../examples/tool`` (X509-SVID TTL 10 s, so they rotate about every 5 s) and the tool's own ID
used as an impostor (``bash examples/run_all.sh ai_agent_tool_mtls`` sets all that up)::

    python -m examples.ai_agent_tool_mtls --seconds 25

The AI agent starts the tool, then calls it in a loop for ``--seconds``: every call is a fresh
mTLS connection with the SVID current at that moment, and the agent authorizes the tool's SPIFFE
ID. It then calls once presenting another identity, which the tool must refuse. Exits 0 only if
no call failed, the impostor was refused, and both sides' SVIDs rotated mid-run.

(Both identities belong to one user here so the example runs unprivileged; in production the
tool and the agent would run as different users or containers, with one entry each.)
"""

from __future__ import annotations

import argparse
import json
import socket
import time

from OpenSSL import SSL

from examples._common import SvidById, blocking, check, start_server
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.tls import authorize_id, client_context
from spiffe_py.workloadapi import WorkloadApiClient, X509Source

TD = "spiffe://example.org/examples"


def call_tool(port: int, me: SvidById, source: X509Source, tool_id: SpiffeId, city: str) -> dict[str, str]:
    """One tool call on a new mTLS connection; raises on any TLS or protocol failure."""
    ctx = client_context(me, source, authorize_id(tool_id))  # built per call: picks up the current SVID
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        tls = SSL.Connection(ctx, blocking(sock))
        tls.set_connect_state()
        tls.do_handshake()
        tls.sendall(json.dumps({"city": city}).encode())
        reply = tls.recv(4096)
        if not reply:
            raise ConnectionError("tool closed the connection without answering")
        answer: dict[str, str] = json.loads(reply)
        answer["my_serial"] = f"{tls.get_certificate().get_serial_number():x}"  # the SVID this call presented
        return answer


def refused(port: int, impostor: SvidById, source: X509Source, tool_id: SpiffeId) -> bool:
    """True if the tool refuses a caller presenting ``impostor``'s (valid, but wrong) SPIFFE ID."""
    try:
        call_tool(port, impostor, source, tool_id, "nowhere")
    except (SSL.Error, OSError, ValueError):
        return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent-id", type=SpiffeId.parse, default=SpiffeId.parse(f"{TD}/ai-agent"))
    parser.add_argument("--tool-id", type=SpiffeId.parse, default=SpiffeId.parse(f"{TD}/tool"))
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--min-rotations", type=int, default=2, help="per side")
    args = parser.parse_args()

    tool, port = start_server("examples.ai_agent_tool_mtls.tool", "--spiffe-id", str(args.tool_id),
                              "--allow", str(args.agent_id), "--min-rotations", str(args.min_rotations))
    calls = failures = 0
    tool_serials: list[str] = []
    my_serials: list[str] = []
    with X509Source.start(WorkloadApiClient(), timeout=30) as source:
        me = SvidById(source, args.agent_id)
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            calls += 1
            try:
                answer = call_tool(port, me, source, args.tool_id, "Lisbon")
            except (SSL.Error, OSError, ValueError) as err:
                failures += 1
                print(f"call {calls} FAILED: {type(err).__name__}: {err}", flush=True)
                continue
            for serial, seen, who in ((answer["tool_serial"], tool_serials, "tool"),
                                      (answer["my_serial"], my_serials, "ai-agent")):
                if serial not in seen:
                    seen.append(serial)
                    print(f"call {calls}: {who} SVID serial {serial}", flush=True)
            time.sleep(0.1)
        impostor_refused = refused(port, SvidById(source, args.tool_id), source, args.tool_id)
    tool.terminate()
    ok = all([
        check(failures == 0, f"{calls} calls, {failures} failed"),
        check(len(my_serials) > args.min_rotations, f"ai-agent SVID rotated {len(my_serials) - 1} time(s) mid-run"),
        check(len(tool_serials) > args.min_rotations, f"tool SVID rotated {len(tool_serials) - 1} time(s) mid-run"),
        check(impostor_refused, f"the tool refused a caller presenting {args.tool_id}"),
        check(tool.wait(15) == 0, "the tool process agrees"),
    ])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
