"""join_token node attestor: single use, expiry, agent ID form, no token in messages."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from grpclib.const import Status

from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.api.errors import status_for
from spiffe_server.datastore import JoinToken, open_datastore
from spiffe_server.errors import AttestationError
from spiffe_server.nodeattest.join_token import (
    DEFAULT_JOIN_TOKEN_TTL,
    JoinTokenAttestor,
    JoinTokenRecord,
    MemoryJoinTokenStore,
    generate_join_token,
    join_token_agent_id,
)

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TD = TrustDomain.parse("example.org")


async def no_challenge(_: bytes) -> bytes:
    raise AssertionError("join_token must not send a challenge")


def attestor_with(*records: JoinTokenRecord) -> JoinTokenAttestor:
    store = MemoryJoinTokenStore()
    for record in records:
        store.add(record)
    return JoinTokenAttestor(TD, store)


def test_generate_join_token_is_uuid4_with_default_ttl() -> None:
    record = generate_join_token(now=NOW)
    assert uuid.UUID(record.token).version == 4
    assert record.expires_at == NOW + timedelta(seconds=600) == NOW + DEFAULT_JOIN_TOKEN_TTL
    assert record.token not in repr(record)
    assert generate_join_token(now=NOW).token != record.token


def test_generate_join_token_rejects_non_positive_ttl() -> None:
    with pytest.raises(ValueError, match="ttl must be positive"):
        generate_join_token(now=NOW, ttl=timedelta(0))


async def test_attest_returns_spire_agent_id_without_reattest() -> None:
    """The agent ID keeps SPIRE's shape but names the token by a SHA-256 prefix: the ID never holds the token."""
    record = generate_join_token(now=NOW)
    result = await attestor_with(record).attest(record.token.encode(), no_challenge, now=NOW)
    ref = hashlib.sha256(record.token.encode()).hexdigest()[:32]
    assert result.agent_id == SpiffeId.parse(f"spiffe://example.org/spire/agent/join_token/{ref}")
    assert result.agent_id == join_token_agent_id(TD, record.token)
    assert record.token not in str(result.agent_id)
    assert result.selectors == ()
    assert result.can_reattest is False


async def test_attest_token_is_single_use() -> None:
    record = generate_join_token(now=NOW)
    attestor = attestor_with(record)
    await attestor.attest(record.token.encode(), no_challenge, now=NOW)
    with pytest.raises(AttestationError) as info:
        await attestor.attest(record.token.encode(), no_challenge, now=NOW)
    assert str(info.value) == "join_token: join token does not exist or has already been used"
    assert status_for(info.value) is Status.PERMISSION_DENIED
    assert info.value.attestor == "join_token"


async def test_attest_unknown_token_is_refused_without_echoing_it() -> None:
    token = str(uuid.uuid4())
    with pytest.raises(AttestationError, match="does not exist") as info:
        await attestor_with().attest(token.encode(), no_challenge, now=NOW)
    assert token not in str(info.value)


async def test_attest_expired_token_is_refused_and_consumed() -> None:
    record = generate_join_token(now=NOW, ttl=timedelta(seconds=60))
    attestor = attestor_with(record)
    with pytest.raises(AttestationError, match=r"^join_token: join token has expired$"):
        await attestor.attest(record.token.encode(), no_challenge, now=NOW + timedelta(seconds=60))
    with pytest.raises(AttestationError, match="already been used"):
        await attestor.attest(record.token.encode(), no_challenge, now=NOW)


async def test_attest_token_valid_until_just_before_expiry() -> None:
    record = generate_join_token(now=NOW, ttl=timedelta(seconds=60))
    result = await attestor_with(record).attest(record.token.encode(), no_challenge,
                                                now=NOW + timedelta(seconds=59))
    assert result.agent_id == join_token_agent_id(TD, record.token)


@pytest.mark.parametrize("payload", [b"", b"..", b"../etc", b"a/b", "t\u00e9".encode(), b"\xff\xfe", b"x" * 129])
async def test_attest_malformed_token_is_refused(payload: bytes) -> None:
    record = JoinTokenRecord(token=payload.decode("latin-1"), expires_at=NOW + timedelta(hours=1))
    with pytest.raises(AttestationError, match=r"^join_token: join token is malformed$"):
        await attestor_with(record).attest(payload, no_challenge, now=NOW)


async def test_attest_with_sqlite_datastore_is_single_use(tmp_path: Path) -> None:
    """The real datastore is a JoinTokenStore: the second use of a token is refused."""
    store = open_datastore(tmp_path / "datastore.sqlite")
    try:
        record = generate_join_token(now=NOW)
        store.create_join_token(JoinToken(token=record.token, expires_at=record.expires_at))
        attestor = JoinTokenAttestor(TD, store)
        result = await attestor.attest(record.token.encode(), no_challenge, now=NOW)
        assert result.agent_id == join_token_agent_id(TD, record.token)
        with pytest.raises(AttestationError, match="does not exist or has already been used"):
            await attestor.attest(record.token.encode(), no_challenge, now=NOW)
    finally:
        store.close()
