"""An HTTP server on 127.0.0.1 in a thread, for ``with`` blocks: the base of the tests' fake
OpenAI-compatible servers (tests/test_openai_concurrency.py, test_http_answers.py, test_openai_mllm.py)."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


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
