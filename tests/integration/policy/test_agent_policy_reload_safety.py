"""Agent hot reload on real processes: an emptied or half-written policy file keeps the old rules.

The server runs without a policy, so every denial below is the agent's own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.integration.agent.conftest import wait_for
from tests.integration.policy.test_agent_policy_acceptance import (
    POLICY,
    Setup,
    agent_log,
    fetch_error,
    start,
    works,
)
from tests.support.policy_rules import PAYMENTS_REASON

pytestmark = pytest.mark.slow

POLICY_POLL_SECONDS = 1.0  # the agent's policy file poll (Guard.watch_policy)

# A commented policy as an editor or config tool writes it; its first half holds no [[rule]].
COMMENTED = "".join(f"# workload policy: line {i} of the change-managed header\n" for i in range(12)) + POLICY


@pytest.fixture(scope="module")
def agent_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    yield from start(tmp_path_factory.mktemp("reload"), "", server_policy=False)


def _count(setup: Setup, text: str) -> int:
    return agent_log(setup.env).count(text)


def test_emptied_or_half_written_policy_file_keeps_the_agents_old_rules(agent_only: Setup) -> None:
    """Truncating the file to 0 bytes, or cutting it before its first rule, must not make the agent allow all."""
    env, policy = agent_only.env, agent_only.policy
    assert PAYMENTS_REASON in fetch_error(env, "payments")
    policy.write_text(COMMENTED)
    wait_for(lambda: _count(agent_only, "policy reloaded") == 1, 30, "the agent to load the commented policy")
    for attempt, text in enumerate(["", COMMENTED[:len(COMMENTED) // 2]]):
        assert "[[rule]]" not in text
        refused = _count(agent_only, "policy refused")
        with policy.open("w") as fh:  # truncate in place, as a crashed or interrupted writer leaves it
            fh.write(text)
        if attempt == 0:
            wait_for(lambda: _count(agent_only, "policy refused") > refused, 30, "the agent to refuse the file")  # noqa: B023
            line = agent_log(env).split("policy refused")[-1].splitlines()[0]
            assert f"{policy}: the file has no rules" in line and "rule = []" in line
        else:  # a second refusal within 10 s is folded into one log line (RepeatFilter): give the poll time
            time.sleep(8 * POLICY_POLL_SECONDS)
        assert PAYMENTS_REASON in fetch_error(env, "payments")  # the previous rules still decide
        assert works(env, "other")
    assert _count(agent_only, "policy reloaded") == 1
    policy.write_text("# every rule removed on purpose\nrule = []\n")
    wait_for(lambda: _count(agent_only, "policy reloaded") == 2, 30, "the agent to load the explicit empty policy")
    assert works(env, "payments")
