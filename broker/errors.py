"""Broker errors and the one table from error class to HTTP status (the proxy API).

A domain error maps by the first class of its MRO that has a row; the JSON body names the rule or
field at fault and never a secret: ``{"error": {"type": ..., "message": ..., "rule": ...}}``.
The token endpoint has its own table (RFC 6749 §5.2 codes) in :mod:`spiffe_broker.exchange`.
"""

from __future__ import annotations

from spiffe_py.errors import SpiffeError


class BrokerError(SpiffeError):
    """Base of the broker's request errors; ``rule`` names the check that refused."""

    def __init__(self, message: str, *, rule: str = "", retry_after: int = 0) -> None:
        super().__init__(message)
        self.rule = rule
        self.retry_after = retry_after


class UnauthenticatedError(BrokerError):
    """No usable SVID: no client certificate and no valid JWT-SVID bearer."""


class RevokedCallerError(UnauthenticatedError):
    """The caller's SVID was revoked (its entry quarantined, its task ended) or has expired."""


class ExchangeOnlyError(UnauthenticatedError):
    """A broker-issued token was presented upstream: it can only be exchanged at /token."""


class ForbiddenError(BrokerError):
    """Refused by the upstream's allow list or a policy rule."""


class BudgetExhaustedError(BrokerError):
    """A per caller budget is used up (``retry_after`` seconds)."""


class BadRequestError(BrokerError):
    """The request is malformed (path, headers, body)."""


class PayloadTooLargeError(BadRequestError):
    """The request body is larger than ``max_request_bytes``."""


class NotFoundError(BrokerError):
    """No upstream by that name."""


class NotReadyError(BrokerError):
    """The broker has no SVID or revocation state yet."""


class UpstreamError(BrokerError):
    """The upstream could not be reached or answered badly."""


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not answer in time."""


# error class -> (HTTP status, error type in the JSON body)
HTTP_STATUS: dict[type[BaseException], tuple[int, str]] = {
    UnauthenticatedError: (401, "unauthenticated"),
    RevokedCallerError: (401, "revoked"),
    ExchangeOnlyError: (401, "exchange_only"),
    ForbiddenError: (403, "forbidden"),
    BudgetExhaustedError: (429, "budget_exhausted"),
    BadRequestError: (400, "bad_request"),
    PayloadTooLargeError: (413, "payload_too_large"),
    NotFoundError: (404, "not_found"),
    NotReadyError: (503, "not_ready"),
    UpstreamError: (502, "upstream_error"),
    UpstreamTimeoutError: (504, "upstream_timeout"),
}


def http_status(err: BaseException) -> tuple[int, str]:
    """(status, type) of ``err``; anything not in the table is a 500 ``internal`` (its text is not shown)."""
    for cls in type(err).__mro__:
        row = HTTP_STATUS.get(cls)
        if row is not None:
            return row
    return 500, "internal"
