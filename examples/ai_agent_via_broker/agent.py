"""The "AI agent": calls a chat API through the broker with its JWT-SVID; it holds no API key at all.

Usage: ``python -m examples.ai_agent_via_broker.agent <broker URL> <broker SPIFFE ID> <our SPIFFE ID>``.
Prints the reply and exits 0, or prints the broker's refusal and exits 3.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request

from cryptography.hazmat.primitives.serialization import Encoding

from spiffe_py.spiffeid import SpiffeId
from spiffe_py.workloadapi import WorkloadApiClient


def main() -> int:
    broker_url, broker_id, our_id = sys.argv[1], sys.argv[2], SpiffeId.parse(sys.argv[3])
    assert not any("KEY" in name.upper() for name in os.environ), "this agent must run without any API key"
    with WorkloadApiClient(timeout=30) as client:
        token = client.fetch_jwt_svid(broker_id, our_id).token        # aud = the broker
        bundles = client.fetch_x509_bundles().bundles                  # to trust the broker's TLS SVID
    cas = "".join(c.public_bytes(Encoding.PEM).decode() for b in bundles.x509_bundles() for c in b.authorities)
    tls = ssl.create_default_context(cadata=cas)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "what is SPIFFE?"}]}
    request = urllib.request.Request(f"{broker_url}/chat/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=tls, timeout=30) as response:
            reply = json.load(response)
    except urllib.error.HTTPError as err:
        print(f"refused by the broker: {err.code} {err.read().decode()}")
        return 3
    print(f"{our_id} got: {reply['choices'][0]['message']['content']!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
