"""Rotation math (pure).

SVIDs and agent SVIDs rotate at half-life; a jitter fraction spreads many
rotations apart (SPIRE uses ±10%)::

    if should_rotate(now=clock.now(), not_before=nb, not_after=na, jitter=rng.uniform(-0.1, 0.1)):
        ...
"""

from __future__ import annotations

from datetime import datetime


def half_life(not_before: datetime, not_after: datetime, *, jitter: float = 0.0) -> datetime:
    """The moment half of the lifetime (shifted by ``jitter`` times half) has passed."""
    if not -0.5 <= jitter <= 0.5:
        raise ValueError("rotation: jitter must be within [-0.5, 0.5]")
    half = (not_after - not_before) / 2
    return not_before + half + half * jitter


def should_rotate(*, now: datetime, not_before: datetime, not_after: datetime, jitter: float = 0.0) -> bool:
    """True once ``now`` is at or past the (jittered) half-life, or the credential expired."""
    return now >= not_after or now >= half_life(not_before, not_after, jitter=jitter)
