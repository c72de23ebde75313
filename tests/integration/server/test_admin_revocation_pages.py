"""ListRevocations on a real spiffe-server pages through the store (keyset) with an opaque, checked token.

    async with _admin(srv) as api:
        page = await api.ListRevocations(admin_pb2.ListRevocationsRequest(page_size=3))
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2
from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub
from spiffe_server.api.convert import jwt_claims_of
from spiffe_server.revocation import serial_hex
from tests.integration.server.agent_client import csr_for
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"
BAD_TOKEN = "datastore: page_token: not a token of this listing"


@contextlib.asynccontextmanager
async def _admin(srv: ServerProc) -> AsyncIterator[AdminAPIStub]:
    channel = Channel(path=str(srv.socket_path))  # SO_PEERCRED: our uid is the server's, an admin
    try:
        yield AdminAPIStub(channel)
    finally:
        channel.close()


async def _revoke_some(api: AdminAPIStub, jwts: int, x509s: int) -> list[tuple[str, str]]:
    """Mint and revoke SVIDs; their (kind, value) keys in listing order."""
    keys = []
    for i in range(jwts):
        minted = await api.MintJWTSVID(admin_pb2.MintJWTSVIDRequest(spiffe_id=f"{TD}/jwt{i}", audience=["db"]))
        jti = str(jwt_claims_of(minted.token)["jti"])
        await api.RevokeSvid(admin_pb2.RevokeSvidRequest(jwt_id=jti, reason="test"))
        keys.append(("jwt", jti))
    for i in range(x509s):
        csr = csr_for(ec.generate_private_key(ec.SECP256R1()), f"{TD}/x509-{i}")
        minted_x509 = await api.MintX509SVID(admin_pb2.MintX509SVIDRequest(csr=csr))
        serial = serial_hex(x509.load_der_x509_certificate(minted_x509.svid_chain[0]).serial_number)
        await api.RevokeSvid(admin_pb2.RevokeSvidRequest(x509_serial=serial, reason="test"))
        keys.append(("x509", serial))
    return sorted(keys, key=lambda k: ({"jwt": 0, "x509": 1}[k[0]], k[1]))  # the store: jti before serial


async def _pages(api: AdminAPIStub, size: int) -> list[list[tuple[str, str]]]:
    pages, token = [], ""
    while True:
        resp = await api.ListRevocations(admin_pb2.ListRevocationsRequest(page_size=size, page_token=token))
        pages.append([(r.kind, r.value) for r in resp.revocations])
        assert len(pages) < 100, "paging does not end"
        if not resp.next_page_token:
            return pages
        token = resp.next_page_token


async def _refused(api: AdminAPIStub, token: str) -> str:
    with pytest.raises(GRPCError) as info:
        await api.ListRevocations(admin_pb2.ListRevocationsRequest(page_size=2, page_token=token))
    assert info.value.status is Status.INVALID_ARGUMENT, info.value
    return str(info.value.message)


async def test_list_revocations_pages_each_once_in_order_and_refuses_bad_tokens(server: ServerProc) -> None:
    async with _admin(server) as api:
        assert await _pages(api, 0) == [[]]
        keys = await _revoke_some(api, jwts=5, x509s=4)
        n = len(keys)
        for size in (1, 2, 4, n - 1, n, 0):  # 0: the server default (100)
            pages = await _pages(api, size)
            assert [k for page in pages for k in page] == keys, size
            assert [len(p) for p in pages] == [min(size or 100, n - s) for s in range(0, n, size or 100)], size
        cli = server.cli_json("revocation", "list")["revocations"]
        assert [(r["kind"], r["value"]) for r in cli] == keys  # the CLI follows the tokens to the end

        first = await api.ListRevocations(admin_pb2.ListRevocationsRequest(page_size=2))
        token = first.next_page_token
        assert token and keys[1][1] not in token  # opaque: not the raw key
        for bad in ("kind:value", f"x509:{keys[-1][1]}", token + "=", token[:1] + "!" + token[2:], "5"):
            assert await _refused(api, bad) == BAD_TOKEN, bad
        with pytest.raises(GRPCError) as too_big:
            await api.ListRevocations(admin_pb2.ListRevocationsRequest(page_size=1001, page_token=token))
        assert too_big.value.status is Status.INVALID_ARGUMENT
        again = await api.ListRevocations(admin_pb2.ListRevocationsRequest(page_size=2, page_token=token))
        assert [(r.kind, r.value) for r in again.revocations] == keys[2:4]  # the server survived them all
