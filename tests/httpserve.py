"""A loopback HTTP server with byte-range support, run in a child process (tests only).

Python's ``SimpleHTTPRequestHandler`` ignores ``Range``; GDAL's ``/vsicurl/`` reads a
Cloud-Optimized GeoTIFF with range requests, so this handler answers them (206 with
``Content-Range``) and records each request, so a test can check that a COG is read in parts.

A process, not a thread: rasterio holds the GIL while GDAL waits for the HTTP answer, so a
server thread in the test's own process would never run (the open hangs).

    with serve_folder(tmp_path) as (base_url, log):
        ...  # base_url = "http://127.0.0.1:PORT/"; log(): list of (method, path, range header)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class RangeHandler(SimpleHTTPRequestHandler):
    log: list  # set per server

    def log_message(self, *args) -> None:  # quiet
        pass

    def _serve(self, body: bool) -> None:
        with open(self.server.log_path, "a", encoding="utf-8") as f:  # type: ignore[attr-defined]
            f.write(json.dumps([self.command, self.path, self.headers.get("Range")]) + "\n")
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404, "not found")
            return
        size = path.stat().st_size
        rng = self.headers.get("Range")
        start, end = 0, size - 1
        m = _RANGE.match(rng.strip()) if rng else None
        if m:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "image/tiff")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if body:
            with open(path, "rb") as f:
                f.seek(start)
                self.wfile.write(f.read(end - start + 1))

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)


def _main(folder: str, log_path: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=folder))
    server.log_path = log_path  # type: ignore[attr-defined]
    print(server.server_address[1], flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), server.shutdown()), daemon=True).start()
    server.serve_forever()


@contextlib.contextmanager
def serve_folder(folder: str | os.PathLike) -> Iterator[tuple[str, object]]:
    """Serve ``folder`` on 127.0.0.1 (a free port) for the ``with`` block; yields the base URL
    and a function returning the requests so far."""
    log_path = Path(folder).parent / f".http-log-{os.getpid()}-{id(folder)}.jsonl"
    log_path.write_text("")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "tests.httpserve", os.fspath(folder),
                             str(log_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    seen: list = []

    def log() -> list[tuple[str, str, str | None]]:
        if log_path.exists():
            seen[:] = [tuple(json.loads(ln)) for ln in log_path.read_text().splitlines() if ln]
        return list(seen)

    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}/", log
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log()  # keeps the requests readable after the block
        log_path.unlink(missing_ok=True)


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
