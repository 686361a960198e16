"""A stand-in for llama.cpp's server that lists its model and then dies at a chosen completion.

What an AMX build inside a VM does: ``/v1/models`` answers, the first matrix multiply kills the process
with SIGILL. Run as ``python fake_model_server.py --port N [--die-at K,L,...] [--signal ILL]``: the
completions numbered K, L, ... kill the process with the signal, the others answer one token
(``--die-at 0``: never die).
The completion count is kept in ``--count-file`` when given, so a restarted server goes on counting.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--die-at", type=lambda text: {int(n) for n in text.split(",")}, default={1})
    parser.add_argument("--signal", default="ILL")
    parser.add_argument("--count-file", type=Path)
    # llama_cpp.server's own options, accepted and ignored
    parser.add_argument("--model"), parser.add_argument("--model_alias"), parser.add_argument("--host")
    parser.add_argument("--n_ctx"), parser.add_argument("--n_threads")
    args = parser.parse_args()
    sig = getattr(signal, f"SIG{args.signal}")
    if sig != signal.SIGKILL:
        signal.signal(sig, signal.SIG_DFL)  # die of it, as a C library's fault would (only the main thread may set it)

    def completions_so_far() -> int:
        if args.count_file is None or not args.count_file.exists():
            return 0
        return int(args.count_file.read_text() or 0)

    count = [completions_so_far()]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._json({"object": "list", "data": [{"id": "smollm2-135m", "object": "model"}]})
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            count[0] += 1
            if args.count_file is not None:
                args.count_file.write_text(str(count[0]))
            if count[0] in args.die_at:
                signal.pthread_kill(threading.get_ident(), sig)  # this thread, at once, as a fault would
                time.sleep(60)  # never answer
            self._json({"id": "x", "object": "chat.completion", "model": "smollm2-135m",
                        "choices": [{"index": 0, "finish_reason": "length",
                                     "message": {"role": "assistant", "content": "OK"}}]})  # fmt: skip

        def _json(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
