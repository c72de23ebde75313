"""Policy rule text shared by the issue 6 tests (unit and acceptance) and benchmarks/bench_policy.py.

``PAYMENTS_RULE`` is the acceptance example of issue 6 (also shown in docs/policy.md): a
``payments`` audience needs an entry labelled ``approved = "true"``.
"""

from __future__ import annotations

PAYMENTS_REASON = "audience payments requires an approved entry"
PAYMENTS_RULE = f"""
[[rule]]
name = "payments-needs-approval"
when = '"payments" in request.audiences && !(has(entry.labels.approved) && entry.labels.approved == "true")'
effect = "deny"
reason = "{PAYMENTS_REASON}"
"""
