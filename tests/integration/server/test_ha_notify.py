"""Two real servers on one PostgreSQL database: a change committed through one reaches an agent
streaming from the other in under 1 s, pushed by LISTEN/NOTIFY (the safety-net poll is 30 s)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_server.app import JOURNAL_ID_FILE
from spiffe_server.datastore import RegistrationEntry, open_datastore
from tests.datastore.helpers import sel
from tests.integration.server.agent_client import agent_channel, attest
from tests.integration.server.revocation_support import new_x509, serial_of
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"
MAX_PROPAGATION_S = 1.0


async def test_entry_and_revocation_written_on_a_reach_agent_of_b_within_a_second(pg_schema: str) -> None:
    with ServerProc.start(extra_args=["--database", pg_schema]) as a:
        b = ServerProc.start(extra_args=["--database", pg_schema], data_dir=a.data_dir,
                             socket_path=a.data_dir.parent / "b.sock")
        try:
            assert "listening for changes of other servers" in b.log_text()
            token = b.cli_json("token", "generate")["value"]
            agent = await attest(b, "join_token", token.encode())
            async with agent_channel(b, agent) as stub, stub.SyncAuthorized.open() as stream:
                await stream.send_message(agent_pb2.SyncAuthorizedRequest(), end=True)
                full = await asyncio.wait_for(stream.recv_message(), 20)
                assert full is not None and full.full and not full.entries

                for n in range(2):  # an entry created on A, streamed by B well before its 30 s poll
                    created = await asyncio.to_thread(
                        a.cli_json, "entry", "create", "--spiffe-id", f"{TD}/w{n}", "--parent-id", agent.spiffe_id,
                        "--selector", f"unix:uid:{n}")
                    pushed = await asyncio.wait_for(stream.recv_message(), 5)
                    assert pushed is not None and [e.id for e in pushed.entries] == [created["id"]]

                # timed: a third writer (this process) commits straight to the database; the clock
                # starts when the commit returns (a CLI's own start-up would hide the delay)
                delays = []
                store = open_datastore(pg_schema)
                try:
                    for n in range(10):
                        entry = await asyncio.to_thread(store.create_entry, RegistrationEntry(
                            spiffe_id=f"{TD}/t{n}", parent_id=agent.spiffe_id, selectors=sel(f"unix:uid:{100 + n}"),
                            created_at=datetime(2026, 1, 1, tzinfo=UTC)))
                        committed = time.monotonic()
                        pushed = await asyncio.wait_for(stream.recv_message(), 5)
                        delays.append(time.monotonic() - committed)
                        assert pushed is not None and [e.id for e in pushed.entries] == [entry.id]
                finally:
                    store.close()

                # a revocation on A of an SVID B signed: B pushes it to the agent, again before any poll
                cert = await new_x509(stub, created["id"], f"{TD}/w1")
                await asyncio.to_thread(a.cli_json, "revoke", "svid", "--serial", serial_of(cert), "--reason", "ha")
                while True:
                    pushed = await asyncio.wait_for(stream.recv_message(), 5)
                    assert pushed is not None
                    if any(r.value == serial_of(cert) for r in pushed.revocations):
                        break
                await stream.cancel()
            delays.sort()
            print(f"commit -> stream on the other server: p50 {delays[len(delays) // 2] * 1000:.0f} ms,"
                  f" max {delays[-1] * 1000:.0f} ms")
            assert delays[-1] < MAX_PROPAGATION_S, delays
        finally:
            b.stop()


def _roots(srv: ServerProc) -> set[bytes]:
    pem = srv.cli("bundle", "show", "--format", "pem").stdout.encode()
    return {c.fingerprint(hashes.SHA256()) for c in x509.load_pem_x509_certificates(pem)}


def test_each_server_has_its_own_ca_and_every_bundle_publishes_all_roots(pg_schema: str) -> None:
    config = 'trust_domain = "example.org"\nca_ttl = "5m"\n'  # a short CA TTL: the rotator ticks every second
    with ServerProc.start(extra_args=["--database", pg_schema], config_text=config) as a, \
            ServerProc.start(extra_args=["--database", pg_schema], config_text=config) as b:
        ids = {(srv.data_dir / JOURNAL_ID_FILE).read_text() for srv in (a, b)}
        assert len(ids) == 2  # two journals, two CA key pairs
        deadline = time.monotonic() + 20
        while (len(roots := _roots(a)) < 2 or roots != _roots(b)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(roots) == 2 and roots == _roots(b)
