"""A JWT-SVID subject token for SDK token exchanges: one audience, always current, never stale.

The agent is the cache: FetchJWTSVID answers from the agent's per-audience cache (re-signed at
half-life, revoked ``jti``s dropped at once), so asking it on every ``get_token()`` costs one local
RPC and can never return a token the server revoked. This object only adds what an SDK hook needs:
a lazily started :class:`~spiffe_py.workloadapi.JwtSource`, a bounded wait, a clear error when the
workload has no identity, and a final check that the token is not about to expire.

::

    provider = JwtSvidProvider("https://api.openai.com/v1")
    token = provider.get_token()          # compact JWS
"""

from __future__ import annotations

import threading
from datetime import timedelta

from spiffe_py.clock import Clock, SystemClock
from spiffe_py.errors import NoIdentityError, WorkloadApiError
from spiffe_py.jwtsvid import JwtSvid
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.workloadapi import JwtSource, WorkloadApiClient

DEFAULT_TIMEOUT_S = 5.0
# A token this close to its expiry is not handed out: the exchange takes a round trip, and the
# relying party allows some skew the other way only.
MIN_REMAINING = timedelta(seconds=2)


class JwtSvidProvider:
    """Current JWT-SVIDs for one audience from the Workload API (thread-safe).

    ``source``: a started JwtSource to share (the caller closes it); by default one is started on
    the first call (at ``address``, else ``SPIFFE_ENDPOINT_SOCKET``) and closed by :meth:`close`.
    ``timeout`` bounds every wait on the agent, so ``get_token`` never blocks for long.
    """

    def __init__(
        self,
        audience: str,
        *,
        source: JwtSource | None = None,
        spiffe_id: SpiffeId | None = None,
        address: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        clock: Clock | None = None,
    ) -> None:
        if not audience:
            raise ValueError("integrations: audience must not be empty")
        self.audience = audience
        self._spiffe_id = spiffe_id
        self._address = address
        self._timeout = timeout
        self._clock = clock or SystemClock()
        self._source = source
        self._owns_source = source is None
        self._client: WorkloadApiClient | None = None  # the one our own source uses
        self._lock = threading.Lock()

    def _jwt_source(self) -> JwtSource:
        with self._lock:
            if self._source is None:
                client = WorkloadApiClient(self._address, timeout=self._timeout)
                try:
                    # One unary call first: a workload with no entry gets PERMISSION_DENIED at once,
                    # where the source's stream would retry it until the timeout.
                    client.fetch_jwt_bundles()
                    self._source = JwtSource.start(client, timeout=self._timeout)
                    self._client = client
                except TimeoutError as err:
                    client.close()
                    cause = err.__cause__
                    if isinstance(cause, NoIdentityError):
                        raise self._no_identity(cause) from cause
                    raise WorkloadApiError(
                        f"integrations: the Workload API gave no JWT bundle within {self._timeout:g} s"
                        + (f" ({cause})" if cause else " (is SPIFFE_ENDPOINT_SOCKET right, is the agent up?)"),
                        status="UNAVAILABLE",
                    ) from err
                except NoIdentityError as err:
                    client.close()
                    raise self._no_identity(err) from err
                except BaseException:
                    client.close()
                    raise
            return self._source

    def _no_identity(self, err: WorkloadApiError) -> NoIdentityError:
        who = f"SPIFFE ID {self._spiffe_id}" if self._spiffe_id else "this workload"
        return NoIdentityError(
            f"integrations: no JWT-SVID is issued to {who} for audience {self.audience!r}: no registration "
            f"entry matches it (create one with spiffe-server entry create); agent said: {err}",
            status=err.status,
        )

    def fetch(self) -> JwtSvid:
        """The current JWT-SVID (parsed); raises NoIdentityError or WorkloadApiError, never blocks long."""
        source = self._jwt_source()
        try:
            svid = source.fetch_jwt_svid(self.audience, self._spiffe_id)
        except NoIdentityError as err:
            raise self._no_identity(err) from err
        if svid.expiry - self._clock.now() < MIN_REMAINING:
            raise WorkloadApiError(
                f"integrations: the agent's JWT-SVID for {self.audience!r} expires at {svid.expiry.isoformat()}; "
                "refusing to hand out a token about to expire (is the agent cut off from its server?)",
                status="UNAVAILABLE",
            )
        return svid

    def get_token(self) -> str:
        """The current JWT-SVID as a compact JWS: the hook the SDKs call before each exchange."""
        return self.fetch().token

    __call__ = get_token

    def close(self) -> None:
        """Close the JwtSource this provider started (not one it was given)."""
        if not self._owns_source:
            return
        with self._lock:
            source, client, self._source, self._client = self._source, self._client, None, None
        if source is not None:
            source.close()
        if client is not None:
            client.close()

    def __enter__(self) -> JwtSvidProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
