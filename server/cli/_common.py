"""What every ``spiffe-server`` admin command shares: the socket, the call, flags and output.

Only the standard library, the generated protobuf messages, ``h2`` (the admin calls go through
``_wire``: no asyncio, no grpclib) and ``spiffe_py._text``/``_cli`` load here; each command
imports what else it needs when it runs, so that a simple call starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from spiffe_py._cli import fields, json_scalar, when
from spiffe_py._duration import EXAMPLES, parse_whole_seconds
from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2
from spiffe_py._text import printable
from spiffe_server.cli._wire import Channel, NotGrpcError, RpcError
from spiffe_server.defaults import ADMIN_SOCKET_NAME, DEFAULT_DATA_DIR_NAME, SOCKET_ENV

if TYPE_CHECKING:
    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub

DEFAULT_SOCKET = Path(DEFAULT_DATA_DIR_NAME) / ADMIN_SOCKET_NAME
RPC_TIMEOUT = 30.0  # one RPC (one page of a paged listing), not the whole command
MAX_SECONDS = 2**31 - 1  # durations are int32 on the wire
MAX_INT64 = 2**63 - 1

Handler = Callable[["AdminAPIStub", argparse.Namespace], Coroutine[Any, Any, None]]
_T = TypeVar("_T")


class CliError(Exception):
    """A one-line user-facing error."""


def not_admin_socket(path: str, why: str) -> str:
    """The message for a socket that answers, but not with the admin API."""
    return (f"{path!r}: this is not a spiffe-server admin socket ({why}); give the server's <data_dir>/api.sock "
            f"with --socket-path or ${SOCKET_ENV}")


def default_socket() -> str:
    """The admin socket: ``$SPIFFE_SERVER_SOCKET``, else the server's default ``<data_dir>/api.sock``."""
    return os.environ.get(SOCKET_ENV) or str(DEFAULT_SOCKET)


# -- rendering -----------------------------------------------------------------------------------


def now_of(args: argparse.Namespace) -> datetime:
    """The time pretty output measures expiry against: read once per command, by the I/O shell."""
    now: datetime | None = getattr(args, "now", None)
    if now is None:
        from spiffe_py.clock import SystemClock

        now = args.now = SystemClock().now()
    return now


def time_text(args: argparse.Namespace, unix: int, *, expiry: bool = True) -> str:
    """A Unix time for pretty output: RFC 3339 and relative (``(in 59m)``, ``(expired 3h ago)``)."""
    return when(unix, now=now_of(args), expiry=expiry)


def pairs_text(mapping: dict[str, Any]) -> list[str]:
    """``key=value`` lines of a mapping (labels, JWT claims), sorted by key."""
    return [f"{k}={json_scalar(v)}" for k, v in sorted(mapping.items())]


def listing(title: str, blocks: Sequence[str]) -> str:
    """``title`` then the blocks, one blank line between each."""
    return "\n\n".join([title, *blocks]) if blocks else title


def selector_strings(items: Sequence[types_pb2.Selector]) -> list[str]:
    return [f"{s.type}:{s.value}" for s in items]


def one_line(value: Any) -> str:
    """A value as one printable line: its control characters (newlines too) escaped."""
    return printable(str(value))


def pretty(value: dict[str, Any]) -> str:
    """Aligned ``key : value`` lines of a flat JSON object, for commands without a renderer of their own."""
    return fields([(key, [json_scalar(v) for v in item] if isinstance(item, list)
                    else pairs_text(item) if isinstance(item, dict) else json_scalar(item))
                   for key, item in value.items()])


def json_text(value: Any, *, indent: int | None = 2) -> str:
    """JSON with every control character escaped (DEL too)."""
    return json.dumps(value, indent=indent, sort_keys=False).replace("\x7f", "\\u007f")


def emit(args: argparse.Namespace, value: Any, text: str | None = None) -> None:
    """Print ``value`` as JSON, or as ``text`` (default: key/value lines) for ``--output pretty``.

    Strings come from operators and peers, so no control character reaches the terminal raw:
    JSON escapes them (DEL included), pretty output shows them as ``\\xNN``.
    """
    if args.output == "json":
        print(json_text(value))
    else:
        print(printable(text if text is not None else pretty(value), keep_layout=True))


# -- inputs --------------------------------------------------------------------------------------


def read_file(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise CliError(f"{flag}: cannot read {path!r}: {err.strerror}") from err


def pairs(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{flag}: must be key=value, got {item!r}")
        out[key] = value
    return out


def selector_pbs(items: Sequence[str] | None) -> list[types_pb2.Selector]:
    out = []
    for item in items or ():
        kind, sep, value = item.partition(":")
        if not sep or not kind or not value:
            raise CliError(f"--selector: must be of the form type:value, got {item!r}")
        out.append(types_pb2.Selector(type=kind, value=value))
    return out


def seconds_arg(text: str) -> int:
    """A duration flag (``--ttl`` and the like): ``90s``, ``5m``, ``1h30m`` or plain seconds, within int32.

    Negative values pass through so that the server names the field that refuses them.
    """
    try:
        value = parse_whole_seconds(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a duration such as {EXAMPLES}, got {text!r}") from None
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SECONDS} seconds, got {text}")
    if value < -MAX_SECONDS - 1:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def expires_at_arg(text: str) -> int:
    """``--expires-at``: Unix seconds or an RFC 3339 time with a zone, as Unix seconds."""
    if text.isdigit():
        if int(text) > MAX_INT64:  # the server bounds the value; this only keeps it on the wire
            raise argparse.ArgumentTypeError(f"must be at most {MAX_INT64}, got {text}")
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be Unix seconds or RFC 3339, got {text!r}") from None
    if when.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"RFC 3339 time needs a zone (Z or +hh:mm), got {text!r}")
    return int(when.timestamp())


# -- parsers -------------------------------------------------------------------------------------


def admin_parser(sub: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    """A command that calls the admin API: ``--socket-path`` and ``--output`` included."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--socket-path", default=None,
                   help=f"admin API socket (default ${SOCKET_ENV}, else {DEFAULT_SOCKET})")
    p.add_argument("--output", choices=("json", "pretty"), default="pretty",
                   help="pretty: aligned fields for people; json: a stable document for scripts")
    p.set_defaults(admin_handler=handler)
    return p


def group(sub: Any, name: str, help_text: str) -> Any:
    """A noun (``entry``, ``agent``, ...) whose verbs are added to the returned sub-parsers."""
    p = sub.add_parser(name, help=help_text, description=help_text)
    return p.add_subparsers(dest=f"{name}_cmd", required=True, metavar="COMMAND")


# -- calling the server --------------------------------------------------------------------------


class _Stub:
    """The admin API as the handlers call it (``await api.GetEntry(req)``), over the synchronous channel.

    Each RPC has its own ``RPC_TIMEOUT`` (the socket timeout): a paged or batched command gets a
    fresh timeout per page or batch, never one deadline for the whole command.
    """

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def __getattr__(self, name: str) -> Callable[[Any], Awaitable[Any]]:
        async def call(request: Any) -> Any:
            return self._channel.unary(name, request)

        return call


def _drive(coro: Coroutine[Any, Any, None]) -> None:
    """Run a handler coroutine to its end without an event loop: every call it awaits completes at once."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("an admin command awaited something other than an admin call")


async def pages(call: Callable[[Any], Awaitable[Any]], req: Any, items: Callable[[Any], Iterable[_T]]
                ) -> AsyncIterator[_T]:
    """The items of a paged List RPC, page by page (``next_page_token`` set on ``req``)."""
    while True:
        page = await call(req)
        for item in items(page):
            yield item
        if not page.next_page_token:
            return
        req.page_token = page.next_page_token


async def all_pages(call: Callable[[Any], Awaitable[Any]], req: Any, items: Callable[[Any], Iterable[_T]]
                    ) -> list[_T]:
    """Every item of a paged List RPC."""
    return [item async for item in pages(call, req, items)]


def _call(handler: Handler, args: argparse.Namespace) -> None:
    path = str(args.socket_path)
    with Channel(path, timeout=RPC_TIMEOUT) as channel:
        try:
            _drive(handler(cast("AdminAPIStub", _Stub(channel)), args))
        except RpcError as err:
            if err.status != "UNIMPLEMENTED":
                raise
            try:  # another gRPC service (a spiffe-agent's Workload API), or an older server?
                channel.unary("Health", admin_pb2.HealthRequest())
            except (RpcError, NotGrpcError):
                raise CliError(not_admin_socket(path, "it serves another gRPC API")) from None
            raise CliError(f"the server at {path!r} does not implement this command: is it older than this CLI?"
                           ) from None
        except NotGrpcError as err:
            raise CliError(not_admin_socket(path, str(err))) from None


def run_admin(handler: Handler, args: argparse.Namespace) -> int:
    """Run one admin command; map failures to a one-line stderr message and exit 1."""
    if args.socket_path is None:
        args.socket_path = default_socket()
    try:
        _call(handler, args)
    except RpcError as err:
        return fail(f"{err.status}: {err.message}")
    except TimeoutError:
        return fail(f"timed out after {RPC_TIMEOUT:.0f}s talking to {str(args.socket_path)!r}")
    except (ConnectionError, FileNotFoundError, OSError) as err:
        return fail(f"cannot reach the server admin socket {str(args.socket_path)!r}: "
                    f"{getattr(err, 'strerror', None) or err}")
    except CliError as err:
        return fail(str(err))
    return 0


def fail(message: str) -> int:
    print(f"error: {printable(message)}", file=sys.stderr)
    return 1
