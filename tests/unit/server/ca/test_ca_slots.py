"""Pure CA slot model: prepare at 1/2 life, activate at 5/6 life (caps 30d / 7d), prune, taint, revoke."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spiffe_server.ca import slots as sl
from spiffe_server.ca.slots import Action, AuthorityInfo, Slot, SlotStatus
from spiffe_server.errors import FailedPreconditionError, NotFoundError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
TICK = timedelta(microseconds=1)


def slot(authority_id: str, status: SlotStatus, *, start: datetime = T0, life: timedelta = DAY,
         tainted: bool = False) -> Slot[None]:
    return Slot(AuthorityInfo(authority_id, status, start, start + life, tainted), f"key-{authority_id}", None)


def statuses(slots: sl.Slots[None]) -> dict[str, SlotStatus]:
    return {s.authority_id: s.status for s in slots}


def test_empty_slots_need_prepare() -> None:
    assert sl.next_action((), now=T0) is Action.PREPARE


def test_prepared_without_active_is_activated() -> None:
    assert sl.next_action((slot("a", SlotStatus.PREPARED),), now=T0) is Action.ACTIVATE


def test_prepare_exactly_at_half_life() -> None:
    slots = (slot("a", SlotStatus.ACTIVE),)
    assert sl.next_action(slots, now=T0 + DAY / 2 - TICK) is Action.NONE
    assert sl.next_action(slots, now=T0 + DAY / 2) is Action.PREPARE


def test_activate_exactly_at_five_sixths_life() -> None:
    slots = (slot("a", SlotStatus.ACTIVE), slot("b", SlotStatus.PREPARED, start=T0 + DAY / 2))
    assert sl.next_action(slots, now=T0 + DAY * 5 / 6 - TICK) is Action.NONE
    assert sl.next_action(slots, now=T0 + DAY * 5 / 6) is Action.ACTIVATE


def test_long_lifetimes_are_capped_at_30_and_7_days() -> None:
    info = AuthorityInfo("a", SlotStatus.ACTIVE, T0, T0 + timedelta(days=365))
    assert sl.prepare_time(info) == info.not_after - timedelta(days=30)
    assert sl.activate_time(info) == info.not_after - timedelta(days=7)


def test_expired_active_with_usable_prepared_activates() -> None:
    slots = (slot("a", SlotStatus.ACTIVE), slot("b", SlotStatus.PREPARED, start=T0 + DAY / 2))
    assert sl.next_action(slots, now=T0 + DAY) is Action.ACTIVATE


def test_expired_prepared_is_replaced() -> None:
    slots = (slot("a", SlotStatus.ACTIVE, start=T0 + DAY), slot("b", SlotStatus.PREPARED))
    assert sl.next_action(slots, now=T0 + DAY * 3 / 2) is Action.PREPARE
    assert statuses(sl.with_prepared(slots, slot("c", SlotStatus.PREPARED))) == {
        "a": SlotStatus.ACTIVE, "c": SlotStatus.PREPARED}


def test_with_activated_moves_active_to_old() -> None:
    slots = (slot("o", SlotStatus.OLD), slot("a", SlotStatus.ACTIVE), slot("p", SlotStatus.PREPARED))
    assert statuses(sl.with_activated(slots)) == {"o": SlotStatus.OLD, "a": SlotStatus.OLD, "p": SlotStatus.ACTIVE}


def test_with_activated_needs_a_prepared_slot() -> None:
    with pytest.raises(FailedPreconditionError, match="no prepared authority"):
        sl.with_activated((slot("a", SlotStatus.ACTIVE),))


def test_with_prepared_refuses_non_prepared_slot() -> None:
    with pytest.raises(ValueError, match="must be prepared"):
        sl.with_prepared((), slot("a", SlotStatus.ACTIVE))


def test_pruned_drops_expired_non_active_after_grace() -> None:
    slots = (slot("o", SlotStatus.OLD), slot("a", SlotStatus.ACTIVE), slot("p", SlotStatus.PREPARED, start=T0 + DAY))
    grace = timedelta(hours=24)
    assert statuses(sl.pruned(slots, now=T0 + DAY + grace - TICK, grace=grace)) == statuses(slots)
    assert statuses(sl.pruned(slots, now=T0 + DAY + grace, grace=grace)) == {
        "a": SlotStatus.ACTIVE, "p": SlotStatus.PREPARED}


def test_taint_only_old_authorities() -> None:
    slots = (slot("o", SlotStatus.OLD), slot("a", SlotStatus.ACTIVE))
    tainted = sl.with_tainted(slots, "o")
    assert [s.info.tainted for s in tainted] == [True, False]
    with pytest.raises(FailedPreconditionError, match="only an old authority can be tainted; 'a' is active"):
        sl.with_tainted(slots, "a")
    with pytest.raises(FailedPreconditionError, match="already tainted"):
        sl.with_tainted(tainted, "o")
    with pytest.raises(NotFoundError, match="no authority with id 'zz'"):
        sl.with_tainted(slots, "zz")


def test_revoke_requires_taint() -> None:
    slots = (slot("o", SlotStatus.OLD), slot("a", SlotStatus.ACTIVE))
    with pytest.raises(FailedPreconditionError, match="must be tainted before it is revoked"):
        sl.without_revoked(slots, "o")
    assert statuses(sl.without_revoked(sl.with_tainted(slots, "o"), "o")) == {"a": SlotStatus.ACTIVE}
