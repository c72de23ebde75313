"""The application: an unmodified OpenAI (or Anthropic) SDK, authenticated by the workload's SPIFFE identity.

This is all the code a Python app needs; the rest of the example only sets up a local world::

    python -m examples.openai_without_a_key.app --seconds 40     # calls until the time is up

It prints one JSON summary line: ``{"ok": N, "failed": N, "errors": [...]}`` and exits 0 only
when every call succeeded.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def openai_client(identity_provider_id: str, service_account_id: str) -> Any:
    """Before: ``OpenAI(api_key=os.environ["OPENAI_API_KEY"])``. After: no key anywhere."""
    from openai import OpenAI

    from spiffe_py.integrations.openai import workload_identity

    return OpenAI(workload_identity=workload_identity(identity_provider_id, service_account_id), max_retries=0)


def openai_x509_client(identity_provider_id: str, service_account_id: str) -> Any:
    """The mTLS variant: the X509-SVID is the TLS client certificate of the SDK's HTTP client."""
    from openai import OpenAI
    from openai.auth import x509_workload_identity

    from spiffe_py.integrations.openai import x509_http_client

    identity = x509_workload_identity(identity_provider_id=identity_provider_id, service_account_id=service_account_id)
    return OpenAI(workload_identity=identity, http_client=x509_http_client(), max_retries=0)


def anthropic_client(federation_rule_id: str, organization_id: str, service_account_id: str) -> Any:
    """Before: ``Anthropic(api_key=os.environ["ANTHROPIC_API_KEY"])``. After: no key anywhere."""
    from anthropic import Anthropic

    from spiffe_py.integrations.anthropic import workload_identity_credentials

    return Anthropic(credentials=workload_identity_credentials(
        federation_rule_id=federation_rule_id, organization_id=organization_id,
        service_account_id=service_account_id), max_retries=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--provider", choices=("openai", "openai-x509", "anthropic"), default="openai")
    parser.add_argument("--seconds", type=float, default=5.0, help="keep calling this long (default 5)")
    parser.add_argument("--interval", type=float, default=0.5, help="pause between calls (default 0.5)")
    parser.add_argument("--identity-provider-id", default="idp_spiffe_example")
    parser.add_argument("--service-account-id", default="sa_billing")
    parser.add_argument("--federation-rule-id", default="fdrl_spiffe_example")
    parser.add_argument("--organization-id", default="00000000-0000-4000-8000-000000000001")
    parser.add_argument("--anthropic-service-account-id", default="svac_billing")
    args = parser.parse_args()

    if args.provider.startswith("openai"):
        make = openai_client if args.provider == "openai" else openai_x509_client
        client = make(args.identity_provider_id, args.service_account_id)

        def call() -> str:
            reply = client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
            return str(reply.choices[0].message.content)
    else:
        client = anthropic_client(args.federation_rule_id, args.organization_id, args.anthropic_service_account_id)

        def call() -> str:
            reply = client.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                                           messages=[{"role": "user", "content": "hi"}])
            return str(reply.content[0].text)

    ok, errors = 0, []
    deadline = time.monotonic() + args.seconds
    while True:
        try:
            if call() == "hello, workload":
                ok += 1
            else:
                errors.append("unexpected reply")
        except Exception as err:  # every failure is reported, none stops the loop
            errors.append(f"{type(err).__name__}: {err}"[:300])
        if time.monotonic() >= deadline:
            break
        time.sleep(args.interval)
    print(json.dumps({"ok": ok, "failed": len(errors), "errors": errors[:5]}), flush=True)
    raise SystemExit(0 if ok and not errors else 1)


if __name__ == "__main__":
    main()
