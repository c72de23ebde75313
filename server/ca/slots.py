"""SPIRE's CA slot model (pure): authorities move prepared → active → old, then get pruned.

With lifetime L a successor is prepared once less than min(L/2, 30d) is left and activated once
less than min(L/6, 7d) is left; so with ca_ttl=24h: prepare at 12h, activate at 20h::

    action = next_action(slots, now=now)        # Action.PREPARE / ACTIVATE / NONE
    slots = with_prepared(slots, new_slot)      # publish in the bundle before it signs anything
    slots = with_activated(slots)               # prepared → active, active → old
    slots = pruned(slots, now=now, grace=timedelta(hours=24))
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from spiffe_server.errors import FailedPreconditionError, NotFoundError

MAX_PREPARE_LEAD = timedelta(days=30)
MAX_ACTIVATE_LEAD = timedelta(days=7)

T = TypeVar("T")


class SlotStatus(enum.Enum):
    """Where an authority is in its life."""

    PREPARED = "prepared"
    ACTIVE = "active"
    OLD = "old"


class Action(enum.Enum):
    """What rotation should do next."""

    NONE = "none"
    PREPARE = "prepare"
    ACTIVATE = "activate"


@dataclass(frozen=True, slots=True)
class AuthorityInfo:
    """Public facts about one authority (what the LocalAuthority API shows)."""

    authority_id: str  # hex SKI for X.509 CAs, kid for JWT keys
    status: SlotStatus
    not_before: datetime
    not_after: datetime
    tainted: bool = False


@dataclass(frozen=True, slots=True)
class Slot(Generic[T]):
    """One authority: public facts, the KeyManager id of its key, and its material."""

    info: AuthorityInfo
    key_id: str
    payload: T

    @property
    def authority_id(self) -> str:
        """Shortcut for ``info.authority_id``."""
        return self.info.authority_id

    @property
    def status(self) -> SlotStatus:
        """Shortcut for ``info.status``."""
        return self.info.status

    def with_status(self, status: SlotStatus) -> Slot[T]:
        """A copy with another status."""
        return replace(self, info=replace(self.info, status=status))


Slots = tuple[Slot[T], ...]


def prepare_time(info: AuthorityInfo) -> datetime:
    """When a successor of ``info`` should be prepared."""
    return info.not_after - min((info.not_after - info.not_before) / 2, MAX_PREPARE_LEAD)


def activate_time(info: AuthorityInfo) -> datetime:
    """When the prepared successor of ``info`` should become active."""
    return info.not_after - min((info.not_after - info.not_before) / 6, MAX_ACTIVATE_LEAD)


def find(slots: Slots[T], status: SlotStatus) -> Slot[T] | None:
    """The (single) slot with ``status``, if any."""
    return next((s for s in slots if s.status is status), None)


def next_action(slots: Slots[T], *, now: datetime) -> Action:
    """The next rotation step at ``now`` (apply it, then ask again until NONE)."""
    active, prepared = find(slots, SlotStatus.ACTIVE), find(slots, SlotStatus.PREPARED)
    prepared_usable = prepared is not None and now < prepared.info.not_after
    if active is None or now >= active.info.not_after:
        return Action.ACTIVATE if prepared_usable else Action.PREPARE
    if not prepared_usable:
        return Action.PREPARE if now >= prepare_time(active.info) else Action.NONE
    return Action.ACTIVATE if now >= activate_time(active.info) else Action.NONE


def with_prepared(slots: Slots[T], slot: Slot[T]) -> Slots[T]:
    """Add ``slot`` as the prepared authority, replacing an earlier prepared one."""
    if slot.status is not SlotStatus.PREPARED:
        raise ValueError("slots: a new slot must be prepared")
    return (*(s for s in slots if s.status is not SlotStatus.PREPARED), slot)


def with_activated(slots: Slots[T]) -> Slots[T]:
    """Promote the prepared authority to active; the active one becomes old."""
    if find(slots, SlotStatus.PREPARED) is None:
        raise FailedPreconditionError("ca: there is no prepared authority to activate")
    promote = {SlotStatus.PREPARED: SlotStatus.ACTIVE, SlotStatus.ACTIVE: SlotStatus.OLD}
    return tuple(s.with_status(promote[s.status]) if s.status in promote else s for s in slots)


def pruned(slots: Slots[T], *, now: datetime, grace: timedelta) -> Slots[T]:
    """Drop authorities that are not active and expired more than ``grace`` ago."""
    return tuple(s for s in slots if s.status is SlotStatus.ACTIVE or now < s.info.not_after + grace)


def _get(slots: Slots[T], authority_id: str) -> Slot[T]:
    for slot in slots:
        if slot.authority_id == authority_id:
            return slot
    raise NotFoundError(f"ca: no authority with id {authority_id!r}")


def with_tainted(slots: Slots[T], authority_id: str) -> Slots[T]:
    """Mark an old authority tainted: everything it signed must be re-issued."""
    slot = _get(slots, authority_id)
    if slot.status is not SlotStatus.OLD:
        raise FailedPreconditionError(
            f"ca: only an old authority can be tainted; {authority_id!r} is {slot.status.value}")
    if slot.info.tainted:
        raise FailedPreconditionError(f"ca: authority {authority_id!r} is already tainted")
    marked = replace(slot, info=replace(slot.info, tainted=True))
    return tuple(marked if s is slot else s for s in slots)


def without_revoked(slots: Slots[T], authority_id: str) -> Slots[T]:
    """Remove a tainted authority from the bundle."""
    if not _get(slots, authority_id).info.tainted:
        raise FailedPreconditionError(f"ca: authority {authority_id!r} must be tainted before it is revoked")
    return tuple(s for s in slots if s.authority_id != authority_id)
