"""A local HTTP server on 127.0.0.1 that answers like DashScope, for the prompt-extension tests.

It speaks the wire format the ``dashscope`` SDK (1.24.x) uses, read from the SDK's source:

- ``POST {base}/services/aigc/text-generation/generation`` (``dashscope.Generation.call``) and
  ``POST {base}/services/aigc/multimodal-generation/generation`` (``dashscope.MultiModalConversation.call``):
  ``Authorization: Bearer <key>``, body ``{"model", "input": {"messages": [...]}, "parameters": {...}}``;
  success ``{"request_id", "output": {"choices": [{"finish_reason", "message": {"role", "content"}}]},
  "usage"}``, where a multimodal answer's content is a list of ``{"text": ...}`` parts; errors are HTTP 4xx/5xx
  with ``{"request_id", "code", "message"}``.
- The SDK's upload of a local ``file://`` image: ``GET {base}/uploads?action=getPolicy&model=M`` answered with
  ``{"request_id", "data": {policy fields, "upload_host", "upload_dir"}}``, then a multipart ``POST`` of the file
  to ``upload_host`` (here ``/oss`` on this server); the SDK then sends ``oss://<upload_dir>/<file name>`` in the
  message with the header ``X-DashScope-OssResourceResolve: enable``.

Behaviour is scripted per endpoint: a queue of actions, one per request ("ok", "status", "sleep"); with the
queue empty it answers ``ok``. Every request is recorded (path, headers, JSON body, uploaded files).
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TEXT_PATH = "/api/v1/services/aigc/text-generation/generation"
VL_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
UPLOAD_POLICY_PATH = "/api/v1/uploads"
OSS_PATH = "/oss"


class FakeDashScope:
    """``with FakeDashScope(key) as server:`` -> ``server.base_url`` for DASH_API_URL.

    Args:
        api_key: the key the server accepts; any other gets HTTP 401 InvalidApiKey.
        answer: the text of a successful answer (text and multimodal).
    """

    def __init__(self, api_key: str, answer: str = "an extended prompt"):
        self.api_key = api_key
        self.answer = answer
        self.script = {"text": [], "vl": [], "oss": []}
        self.requests = []   # dicts: kind, path, headers, body
        self.uploads = {}    # oss key -> file bytes
        self.lock = threading.Lock()
        self._server = None
        self._thread = None

    # ------------------------------------------------------------------------------------------- control

    def then(self, kind: str, *actions):
        """Queue ``actions`` for endpoint ``kind`` ("text" | "vl" | "oss"): ("ok",), ("ok", text),
        ("status", code, error_code, message), ("sleep", seconds[, text]) (answers ok after a delay)."""
        with self.lock:
            self.script[kind].extend(actions)
        return self

    def calls(self, kind: str) -> list:
        with self.lock:
            return [r for r in self.requests if r["kind"] == kind]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v1"

    def __enter__(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                fake._handle(self, "GET")

            def do_POST(self):
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -------------------------------------------------------------------------------------------- server

    def _next_action(self, kind):
        with self.lock:
            return self.script[kind].pop(0) if self.script[kind] else ("ok",)

    def _handle(self, h: BaseHTTPRequestHandler, method: str):
        url = urlparse(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        kind = {TEXT_PATH: "text", VL_PATH: "vl", UPLOAD_POLICY_PATH: "policy", OSS_PATH: "oss"}.get(url.path)
        record = {"kind": kind, "method": method, "path": url.path, "query": parse_qs(url.query),
                  "headers": dict(h.headers.items()), "body": None}
        with self.lock:
            self.requests.append(record)
        if kind is None:
            return self._send(h, 404, {"code": "NotFound", "message": f"no route {url.path}"})
        if kind == "oss":  # the object store does not use the API key
            return self._oss_upload(h, raw, record)
        if h.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._send(h, 401, {"request_id": _rid(), "code": "InvalidApiKey",
                                       "message": "Invalid API-key provided."})
        if kind == "policy":
            return self._send(h, 200, {"request_id": _rid(), "data": {
                "policy": "cG9saWN5", "signature": "c2lnbmF0dXJl", "upload_dir": "dashscope-instant/test",
                "upload_host": f"http://127.0.0.1:{self._server.server_address[1]}{OSS_PATH}",
                "expire_in_seconds": 300, "max_file_size_mb": 100, "capacity_limit_mb": 1000,
                "oss_access_key_id": "LTAI-test", "x_oss_object_acl": "private",
                "x_oss_forbid_overwrite": "true"}})
        record["body"] = json.loads(raw.decode("utf-8"))
        action = self._next_action(kind)
        if action[0] == "sleep":  # a slow answer (the client gives up first in the timeout test)
            time.sleep(action[1])
            action = ("ok",) + tuple(action[2:])
        if action[0] == "status":
            return self._send(h, action[1], {"request_id": _rid(), "code": action[2], "message": action[3]})
        text = action[1] if len(action) > 1 else self.answer
        content = [{"text": text}] if kind == "vl" else text
        return self._send(h, 200, {
            "request_id": _rid(),
            "output": {"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": content}}]},
            "usage": {"input_tokens": 100, "output_tokens": 20, "total_tokens": 120}})

    def _oss_upload(self, h, raw, record):
        action = self._next_action("oss")
        if action[0] == "status":
            return self._send(h, action[1], {"code": action[2], "message": action[3]})
        fields, data = _parse_multipart(raw, h.headers["Content-Type"])
        record["body"] = fields
        with self.lock:
            self.uploads[fields["key"]] = data
        return self._send(h, 200, {})

    @staticmethod
    def _send(h, status: int, payload: dict):
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        try:
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass


def _parse_multipart(raw: bytes, content_type: str):
    """multipart/form-data body -> ({field: text}, file bytes). Byte-exact (email's parser rewrites CRLFs)."""
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    fields, data = {}, None
    for part in raw.split(b"--" + boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, _, body = part[2:].partition(b"\r\n\r\n")  # part = CRLF headers CRLF CRLF body CRLF
        body = body[:-2]
        disposition = next(line for line in head.decode().split("\r\n")
                           if line.lower().startswith("content-disposition"))
        params = dict(p.strip().split("=", 1) for p in disposition.split(";")[1:])
        if "filename" in params:
            data = body
        else:
            fields[params["name"].strip('"')] = body.decode()
    return fields, data


def _rid() -> str:
    return str(uuid.uuid4())
