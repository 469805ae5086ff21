"""A stand-in for api.openai.com, api.anthropic.com and huggingface.co, over real TLS.

Run inside the server's network namespace: `python fake_ai_service.py CERT KEY LOG`. It listens
on 0.0.0.0:443 with a certificate the test CA signed for the three names, prints "ready", and
answers only what the unmodified SDKs need for one call each:

- OpenAI:       POST /v1/chat/completions                     a chat completion
- OpenAI:       POST /v1/files                                a file upload (multipart), answered
                                                              with its file object
- Anthropic:    POST /v1/messages                             a message
- Hugging Face: `HfApi().upload_file` through the legacy (non-Xet) LFS path:
                POST /api/models/{repo}/preupload/{rev}       "this file goes to LFS"
                POST /{repo}.git/info/lfs/objects/batch       a basic-transfer upload action whose
                                                              href is https://huggingface.co/lfs-upload/{oid}
                PUT  /lfs-upload/{oid}                        the file body (sha256 checked)
                POST /api/models/{repo}/commit/{rev}          the commit (NDJSON), answered with an oid

The real Hub hands out upload URLs on its storage hosts; here the upload goes back to
huggingface.co, so the one flow carries the whole upload (and the catalog names it).

LOG gets one JSON line per request (connection id, peer, method, path, Host, body bytes) and one
per closed connection with every application byte the client sent on it (request heads and
bodies, counted under TLS as the server read them): the test's "truth" for upload sizes.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ids = itertools.count(1)
_log_lock = threading.Lock()


class _Counting(io.RawIOBase):
    """The connection's bytes as a raw stream, counted (what the client sent, at the TLS layer)."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            n = self.sock.recv_into(buffer)
        except (ConnectionError, ssl.SSLError, OSError):
            return 0
        self.count += n
        return n


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-ai/1"
    log_file: Any = None

    def setup(self) -> None:
        super().setup()
        self.conn_id = next(_ids)
        self._raw = _Counting(self.connection)
        self.rfile = io.BufferedReader(self._raw, 65536)

    def finish(self) -> None:
        super().finish()
        self._log(event="closed", received=self._raw.count)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _log(self, **fields: Any) -> None:
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        line = json.dumps({"conn": self.conn_id, "peer": peer, **fields})
        with _log_lock:
            self.log_file.write(line + "\n")
            self.log_file.flush()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, status: int, doc: Any) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        body = self._body()
        host = (self.headers.get("Host") or "").split(":")[0]
        path = self.path.split("?")[0]
        self._log(event="request", method=self.command, path=path, host=host, body=len(body))
        if path == "/v1/chat/completions":
            self._reply(
                200,
                {
                    "id": "chatcmpl-umbra",
                    "object": "chat.completion",
                    "created": 1700000000,
                    "model": "gpt-4o-mini",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "logprobs": None,
                            "message": {"role": "assistant", "content": "hello from the fake"},
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
                },
            )
        elif path == "/v1/files":
            self._reply(
                200,
                {
                    "id": f"file-umbra{self.conn_id}",
                    "object": "file",
                    "bytes": len(body),
                    "created_at": 1700000000,
                    "filename": "upload.jsonl",
                    "purpose": "fine-tune",
                    "status": "processed",
                },
            )
        elif path == "/v1/messages":
            self._reply(
                200,
                {
                    "id": "msg_umbra",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-5",
                    "content": [{"type": "text", "text": "hello from the fake"}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 5, "output_tokens": 4},
                },
            )
        elif "/preupload/" in path:
            files = json.loads(body)["files"]
            self._reply(
                200,
                {
                    "files": [
                        {"path": f["path"], "uploadMode": "lfs", "shouldIgnore": False, "oid": None}
                        for f in files
                    ]
                },
            )
        elif path.endswith(".git/info/lfs/objects/batch"):
            objects = json.loads(body)["objects"]
            self._reply(
                200,
                {
                    "transfer": "basic",
                    "objects": [
                        {
                            "oid": o["oid"],
                            "size": o["size"],
                            "authenticated": True,
                            "actions": {"upload": {"href": f"https://huggingface.co/lfs-upload/{o['oid']}"}},
                        }
                        for o in objects
                    ],
                },
            )
        elif path.startswith("/lfs-upload/"):
            oid = path.rsplit("/", 1)[1]
            ok = hashlib.sha256(body).hexdigest() == oid
            self._log(event="lfs", oid=oid, size=len(body), sha256_ok=ok)
            self._reply(200 if ok else 400, {})
        elif "/commit/" in path and path.startswith("/api/"):
            repo = path.split("/api/models/", 1)[1].split("/commit/")[0]
            oid = hashlib.sha1(body).hexdigest()
            self._reply(
                200,
                {
                    "commitUrl": f"https://huggingface.co/{repo}/commit/{oid}",
                    "commitOid": oid,
                    "pullRequestUrl": None,
                },
            )
        else:
            self._reply(404, {"error": f"not faked: {self.command} {path}"})


def main() -> None:
    cert, key, log = sys.argv[1:4]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    Handler.log_file = open(log, "a", encoding="utf-8")  # noqa: SIM115 (open for the server's life)
    server = ThreadingHTTPServer(("0.0.0.0", 443), Handler)
    server.daemon_threads = True
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
