"""``entry create|update|delete --data`` over the Batch*Entry RPCs, against a real server on
SQLite and on the real PostgreSQL: every entry gets its own result, one bad entry in the middle
(invalid, or a duplicate the datastore refuses inside the batch's transaction) fails alone."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2
from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"
OK, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS = 0, 3, 5, 6


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_server(request: pytest.FixtureRequest) -> Iterator[ServerProc]:
    """A real server on SQLite, or on a fresh schema of the real PostgreSQL."""
    if request.param == "sqlite":
        with ServerProc.start() as srv:
            yield srv
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"batch_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"create schema {schema}")
    try:
        with ServerProc.start(extra_args=["--database", f"{url}?options=-csearch_path%3D{schema}"]) as srv:
            yield srv
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"drop schema {schema} cascade")


def _entry(name: str, **extra: Any) -> dict[str, Any]:
    return {"spiffe_id": f"{TD}/{name}", "parent_id": f"{TD}/node", "selectors": [{"type": "unix", "value": "uid:1"}],
            **extra}


def _batch(server: ServerProc, verb: str, doc: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    res = server.cli("entry", verb, "--data", "-", "--output", "json", stdin=json.dumps(doc).encode(), check=False)
    return res.returncode, json.loads(res.stdout)["results"]


def test_bad_entries_in_the_middle_fail_alone_and_the_rest_are_applied(store_server: ServerProc) -> None:
    code, results = _batch(store_server, "create", {"entries": [
        _entry("a", x509_svid_ttl="1h30m", labels={"team": "x"}),
        _entry("bad", parent_id="spiffe://other.org/node"),  # refused by validation
        _entry("b", dns_names=["b.example.org"], jwt_svid_ttl=300),
        _entry("a"),  # refused by the datastore inside the batch's transaction
    ]})
    assert code == 1
    assert [r["status"]["code"] for r in results] == [OK, INVALID_ARGUMENT, OK, ALREADY_EXISTS]
    assert "parent_id" in results[1]["status"]["message"]
    assert "similar entry already exists" in results[3]["status"]["message"]
    a, b = results[0]["entry"], results[2]["entry"]
    assert (a["spiffe_id"], a["x509_svid_ttl"], a["labels"]) == (f"{TD}/a", 5400, {"team": "x"})
    assert (b["dns_names"], b["jwt_svid_ttl"]) == (["b.example.org"], 300)
    assert a["id"] and b["id"]
    assert store_server.cli_json("entry", "count")["count"] == 2

    code, results = _batch(store_server, "update", {"entries": [
        {**_entry("a2"), "id": a["id"]}, {**_entry("c"), "id": "no-such-entry"}, {**_entry("b2"), "id": b["id"]}]})
    assert code == 1
    assert [r["status"]["code"] for r in results] == [OK, NOT_FOUND, OK]
    assert (results[0]["entry"]["spiffe_id"], results[0]["entry"]["revision"]) == (f"{TD}/a2", 1)
    shown = store_server.cli_json("entry", "show", "--entry-id", b["id"])["entries"][0]
    assert shown["spiffe_id"] == f"{TD}/b2"

    code, results = _batch(store_server, "delete", {"ids": [a["id"], "no-such-entry", b["id"]]})
    assert code == 1
    assert [(r["status"]["code"], r["id"]) for r in results] == [(OK, a["id"]), (NOT_FOUND, "no-such-entry"),
                                                                 (OK, b["id"])]
    assert store_server.cli_json("entry", "count")["count"] == 0
    assert "BatchCreateEntry" in store_server.cli("audit", "show").stdout


def test_a_clean_batch_exits_zero_and_pretty_output_lists_each_entry(store_server: ServerProc) -> None:
    data = json.dumps({"entries": [_entry("p1"), _entry("p2")]}).encode()
    res = store_server.cli("entry", "create", "--data", "-", stdin=data)
    assert res.stdout.splitlines()[0] == "2 succeeded, 0 failed"
    assert f"{TD}/p2" in res.stdout


def test_malformed_data_is_refused_before_anything_is_sent(store_server: ServerProc) -> None:
    bad = {"entries": [_entry("ok"), {**_entry("x"), "selector": "typo"}]}
    res = store_server.cli("entry", "create", "--data", "-", stdin=json.dumps(bad).encode(), check=False)
    assert (res.returncode, res.stdout) == (1, "")
    assert "entries[1]: unknown key 'selector'" in res.stderr
    res = store_server.cli("entry", "create", "--data", "-", "--spiffe-id", f"{TD}/x", stdin=b"{}", check=False)
    assert "--spiffe-id: cannot be combined with --data" in res.stderr
    assert store_server.cli_json("entry", "count")["count"] == 0


async def test_a_batch_over_the_limit_is_refused_whole(store_server: ServerProc) -> None:
    channel = Channel(path=str(store_server.socket_path))
    try:
        api = AdminAPIStub(channel)
        entries = [types_pb2.Entry(spiffe_id=f"{TD}/w{i}", parent_id=f"{TD}/node",
                                   selectors=[types_pb2.Selector(type="unix", value="uid:1")]) for i in range(1001)]
        with pytest.raises(GRPCError) as err:
            await api.BatchCreateEntry(admin_pb2.BatchCreateEntryRequest(entries=entries))
        assert err.value.status is Status.INVALID_ARGUMENT
        assert err.value.message == "entries: at most 1000 per call, got 1001"
        with pytest.raises(GRPCError) as err:
            await api.BatchDeleteEntry(admin_pb2.BatchDeleteEntryRequest(ids=["x"] * 1001))
        assert err.value.message == "ids: at most 1000 per call, got 1001"
        assert (await api.CountEntries(admin_pb2.CountRequest())).count == 0
    finally:
        channel.close()


@pytest.mark.slow
def test_ten_thousand_entries_load_in_one_command_and_show_streams_them(store_server: ServerProc) -> None:
    doc = {"entries": [_entry(f"w/{i}") for i in range(10_000)]}
    started = time.monotonic()
    code, results = _batch(store_server, "create", doc)
    took = time.monotonic() - started
    print(f"\n10,000 entries loaded in {took:.1f} s with one command")  # reported by the test run (-s)
    assert code == 0
    assert len(results) == 10_000 and all(r["status"]["code"] == OK for r in results)
    assert store_server.cli_json("entry", "count")["count"] == 10_000
    shown = store_server.cli_json("entry", "show")["entries"]
    assert sorted(e["spiffe_id"] for e in shown) == sorted(e["spiffe_id"] for e in doc["entries"])
