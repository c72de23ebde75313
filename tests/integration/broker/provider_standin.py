"""A local stand-in for the OpenAI and Anthropic HTTP APIs (no network exists here): the one allowed fake.

Usage: ``python provider_standin.py <port> <openai key file> <anthropic key file> <request log>``.

It checks what the providers check: the API key in the provider's header (OpenAI
``Authorization: Bearer``, Anthropic ``x-api-key`` plus ``anthropic-version``), a JSON body
with ``model`` and ``messages``, and answers in each provider's wire format (errors included),
streaming as server-sent events with the provider's usage fields. It also refuses, with 400,
any request that still carries a caller credential: a JWT anywhere in a header, an
``x-api-key`` on the OpenAI route or an ``Authorization`` header on the Anthropic route. Every
request is logged as one JSON line (header names, whether the key matched, model, stream).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

from aiohttp import web

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.")
STREAM_CHUNKS = 20
CHUNK_DELAY = 0.01
PROMPT_TOKENS = 10


def _log(app: web.Application, entry: dict[str, object]) -> None:
    with Path(app["log"]).open("a") as fh:
        fh.write(json.dumps(entry) + "\n")


def _caller_credential(request: web.Request) -> str | None:
    for name, value in request.headers.items():
        if JWT.search(value):
            return f"a JWT in header {name}"
    if "ssl-client-cert" in {k.lower() for k in request.headers}:
        return "a client certificate header"
    return None


async def _body(request: web.Request) -> dict[str, object] | web.Response:
    try:
        doc = await request.json()
    except ValueError:
        return web.json_response({"error": {"message": "invalid JSON body", "type": "invalid_request_error"}},
                                 status=400)
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), str) or not isinstance(doc.get("messages"), list):
        return web.json_response({"error": {"message": "model and messages are required",
                                            "type": "invalid_request_error"}}, status=400)
    return doc


def _key(request: web.Request, name: str) -> str:
    # read per request: the tests rotate the key file and expect the broker to follow
    return Path(request.app[name]).read_text().strip()


async def openai_chat(request: web.Request) -> web.StreamResponse:
    key = _key(request, "openai_key")
    leaked = _caller_credential(request) or ("an x-api-key header" if "x-api-key" in request.headers else None)
    key_ok = request.headers.get("Authorization") == f"Bearer {key}"
    doc = await _body(request)
    _log(request.app, {"route": "openai", "key_ok": key_ok, "leaked": leaked, "headers": sorted(request.headers),
                       "model": doc.get("model") if isinstance(doc, dict) else None,
                       "stream_options": doc.get("stream_options") if isinstance(doc, dict) else None})
    if leaked:
        return web.json_response({"error": {"message": f"caller credential forwarded: {leaked}",
                                            "type": "invalid_request_error"}}, status=400)
    if not key_ok:
        return web.json_response({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                            "code": "invalid_api_key"}}, status=401)
    if isinstance(doc, web.Response):
        return doc
    model = str(doc["model"])
    if not doc.get("stream"):
        return web.json_response({
            "id": "chatcmpl-standin", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello from the stand-in"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 5, "total_tokens": PROMPT_TOKENS + 5}})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for i in range(STREAM_CHUNKS):
        chunk = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                 "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await asyncio.sleep(CHUNK_DELAY)
    last = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    await response.write(f"data: {json.dumps(last)}\n\n".encode())
    options = doc.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        usage = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                 "choices": [], "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": STREAM_CHUNKS,
                                          "total_tokens": PROMPT_TOKENS + STREAM_CHUNKS}}
        await response.write(f"data: {json.dumps(usage)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def anthropic_messages(request: web.Request) -> web.StreamResponse:
    key = _key(request, "anthropic_key")
    leaked = _caller_credential(request) or ("an Authorization header" if "Authorization" in request.headers else None)
    key_ok = request.headers.get("x-api-key") == key
    doc = await _body(request)
    _log(request.app, {"route": "anthropic", "key_ok": key_ok, "leaked": leaked, "headers": sorted(request.headers),
                       "model": doc.get("model") if isinstance(doc, dict) else None})
    if leaked:
        return web.json_response({"type": "error", "error": {"type": "invalid_request_error",
                                                             "message": f"caller credential forwarded: {leaked}"}},
                                 status=400)
    if not key_ok:
        return web.json_response({"type": "error", "error": {"type": "authentication_error",
                                                             "message": "invalid x-api-key"}}, status=401)
    if "anthropic-version" not in request.headers:
        return web.json_response({"type": "error", "error": {"type": "invalid_request_error",
                                                             "message": "anthropic-version header is required"}},
                                 status=400)
    if isinstance(doc, web.Response):
        return doc
    model = str(doc["model"])
    message = {"id": "msg_standin", "type": "message", "role": "assistant", "model": model,
               "content": [{"type": "text", "text": "hello from the stand-in"}], "stop_reason": "end_turn",
               "stop_sequence": None, "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 5}}
    if not doc.get("stream"):
        return web.json_response(message)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)

    async def event(name: str, data: dict[str, object]) -> None:
        await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

    start = {**message, "content": [], "stop_reason": None, "usage": {"input_tokens": PROMPT_TOKENS,
                                                                       "output_tokens": 1}}
    await event("message_start", {"type": "message_start", "message": start})
    await event("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "text", "text": ""}})
    for i in range(STREAM_CHUNKS):
        await event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": f"t{i} "}})
        await asyncio.sleep(CHUNK_DELAY)
    await event("content_block_stop", {"type": "content_block_stop", "index": 0})
    await event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": STREAM_CHUNKS}})
    await event("message_stop", {"type": "message_stop"})
    await response.write_eof()
    return response


def main() -> None:
    port, openai_key, anthropic_key, log = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    app = web.Application()
    app["openai_key"] = openai_key
    app["anthropic_key"] = anthropic_key
    app["log"] = log
    app.router.add_post("/v1/chat/completions", openai_chat)
    app.router.add_post("/v1/messages", anthropic_messages)
    web.run_app(app, host="127.0.0.1", port=port, print=lambda *_: print("ready", flush=True))


if __name__ == "__main__":
    main()
