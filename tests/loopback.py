"""An HTTP server on 127.0.0.1 in a thread, for ``with`` blocks: the base of the tests' fake
OpenAI-compatible servers (tests/test_openai_concurrency.py, test_http_answers.py, test_openai_mllm.py)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    """Subclasses build their request handler and call ``self.serve(Handler, path)``; ``url`` is then
    ``http://127.0.0.1:PORT`` + ``path``."""

    def serve(self, handler, path: str = "") -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


class JSONHandler(BaseHTTPRequestHandler):
    """A quiet request handler that answers JSON (``send_json``) and reads a JSON body (``read_json``)."""

    def log_message(self, *a):
        pass

    def send_json(self, code: int, obj, extra: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def read_json(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")


def fake_openai_front(handler: JSONHandler, srv, body: dict, recorded: dict, redirect_code: int, vocab: list[str]) -> bool:
    """What both fake OpenAI-compatible servers do before their own routes: record the request (headers and
    ``recorded`` body), redirect everything when ``srv.redirect_to`` is set, and answer ``/tokenize``
    (a BOS id first, as some servers do; 404 when ``srv.tokenize`` is off). True when it answered."""
    with srv.lock:
        srv.headers.append(dict(handler.headers))
        srv.bodies.append(recorded)
    if srv.redirect_to:
        handler.send_response(redirect_code)
        handler.send_header("Location", srv.redirect_to + handler.path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return True
    if handler.path == "/tokenize":
        if not srv.tokenize:
            handler.send_json(404, {"error": "no such route"})
            return True
        text = body.get("content", "")
        ids = [vocab.index(text)] if text in vocab else [99, 98]
        handler.send_json(200, {"tokens": [1000] + (ids if text else [])})
        return True
    return False
