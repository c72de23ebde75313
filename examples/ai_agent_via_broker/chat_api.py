"""A stand-in chat-completions API (OpenAI wire format) that demands its API key: the "provider".

Usage: ``python -m examples.ai_agent_via_broker.chat_api <key file>``; prints its port.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from examples._common import announce_port


def main() -> None:
    key = Path(sys.argv[1]).read_text().strip()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.headers.get("Authorization") != f"Bearer {key}":
                self._send(401, {"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}})
                return
            question = body.get("messages", [{}])[-1].get("content", "")
            self._send(200, {"id": "chatcmpl-1", "object": "chat.completion", "model": body.get("model"),
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": f"You asked: {question}"}}],
                             "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})

        def _send(self, status: int, doc: dict[str, object]) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    announce_port(server.server_address[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
