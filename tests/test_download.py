"""Resumable, verified downloads against a local HTTP server with Range support and faults."""

from __future__ import annotations

import hashlib
import logging
import random
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sparseshift.download import DownloadError, download, md5sum, verify

DATA = random.Random(0).randbytes(3 * 2**20)
MD5 = hashlib.md5(DATA).hexdigest()
CORRUPT = bytearray(DATA)
CORRUPT[123_456] ^= 0xFF
CORRUPT = bytes(CORRUPT)
FAST = {"timeout": 2, "backoff": 0, "chunk_bytes": 256 * 2**10}


class Handler(BaseHTTPRequestHandler):
    """Serves DATA with Range support; /flaky, /reset and /stall misbehave on their first request."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        path = self.path
        if path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/data")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path in ("/flaky", "/reset", "/stall") and path not in srv.misbehaved:
            srv.misbehaved.add(path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA)))
            self.end_headers()
            self.wfile.write(DATA[: 2**20])
            self.wfile.flush()
            if path == "/reset":  # abortive close: the client sees ECONNRESET
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif path == "/stall":  # longer than the client's timeout
                time.sleep(1.0)
            self.close_connection = True
            return
        body = {"/data": DATA, "/flaky": DATA, "/reset": DATA, "/stall": DATA,
                "/corrupt": CORRUPT, "/norange": DATA}.get(path)
        if body is None:
            self.send_error(404)
            return
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and path != "/norange":
            start = int(m[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.block_on_close = False
    srv.requests, srv.misbehaved = [], set()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def part_of(dest):
    return dest.with_name(dest.name + ".part")


def test_plain_download(server, tmp_path):
    dest = tmp_path / "sub" / "x.h5ad"
    out = download(f"{server.url}/data", dest, size=len(DATA), md5=MD5, **FAST)
    assert out == dest
    assert dest.read_bytes() == DATA
    assert md5sum(dest) == MD5
    assert not part_of(dest).exists()
    assert server.requests == [("/data", None)]


def test_redirect(server, tmp_path):
    dest = tmp_path / "x.h5ad"
    download(f"{server.url}/redirect", dest, size=len(DATA), md5=MD5, **FAST)
    assert dest.read_bytes() == DATA
    assert [p for p, _ in server.requests] == ["/redirect", "/data"]


def test_interrupted_then_resumed_by_next_call(server, tmp_path):
    dest = tmp_path / "x.h5ad"
    url = f"{server.url}/flaky"
    with pytest.raises(DownloadError, match="next run resumes"):
        download(url, dest, size=len(DATA), md5=MD5, retries=0, **FAST)
    part = part_of(dest)
    assert not dest.exists()
    n = part.stat().st_size
    assert 0 < n < len(DATA)
    assert part.read_bytes() == DATA[:n]
    download(url, dest, size=len(DATA), md5=MD5, retries=0, **FAST)
    assert server.requests[-1] == ("/flaky", f"bytes={n}-")
    assert dest.read_bytes() == DATA
    assert md5sum(dest) == MD5
    assert not part.exists()


@pytest.mark.parametrize("path", ["/flaky", "/reset", "/stall"])
def test_interrupted_retried_within_one_call(server, tmp_path, path):
    dest = tmp_path / "x.h5ad"
    timeout = 0.3 if path == "/stall" else 2
    download(f"{server.url}{path}", dest, size=len(DATA), md5=MD5, retries=1,
             **{**FAST, "timeout": timeout})
    assert dest.read_bytes() == DATA
    assert not part_of(dest).exists()
    assert len(server.requests) == 2
    if path != "/reset":  # a reset may discard bytes in flight, leaving nothing to resume
        assert server.requests[1][1] is not None and server.requests[1][1].startswith("bytes=")
        assert server.requests[1][1] != "bytes=0-"


def test_corrupt_copy_rejected_by_md5(server, tmp_path):
    dest = tmp_path / "x.h5ad"
    with pytest.raises(DownloadError, match="md5") as err:
        download(f"{server.url}/corrupt", dest, size=len(CORRUPT), md5=MD5, **FAST)
    assert MD5 in str(err.value) and hashlib.md5(CORRUPT).hexdigest() in str(err.value)
    assert not dest.exists()
    assert not part_of(dest).exists()


def test_wrong_expected_size(server, tmp_path):
    dest = tmp_path / "x.h5ad"
    with pytest.raises(DownloadError, match="size") as err:
        download(f"{server.url}/data", dest, size=len(DATA) + 1, **FAST)
    assert str(len(DATA) + 1) in str(err.value) and str(len(DATA)) in str(err.value)
    assert not dest.exists()
    assert not part_of(dest).exists()


def test_http_404(server, tmp_path):
    dest = tmp_path / "x.h5ad"
    url = f"{server.url}/missing"
    with pytest.raises(DownloadError) as err:
        download(url, dest, size=len(DATA), md5=MD5, **FAST)
    msg = str(err.value)
    assert url in msg and str(dest) in msg and "404" in msg
    assert f"yourself (expected {len(DATA)} bytes, md5 {MD5}) and place it at {dest}" in msg
    assert not dest.exists() and not part_of(dest).exists()
    assert len(server.requests) == 1  # a client error is not retried


def test_unreachable_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "x.h5ad"
    url = f"http://127.0.0.1:{port}/data"
    with pytest.raises(DownloadError, match="place it at") as err:
        download(url, dest, size=len(DATA), retries=1, **FAST)
    assert url in str(err.value)
    assert not dest.exists() and not part_of(dest).exists()


def test_existing_dest_returned_without_network(server, tmp_path):
    dest = tmp_path / "x.h5ad"
    dest.write_bytes(DATA)
    assert download(f"{server.url}/data", dest, size=len(DATA), md5=MD5, **FAST) == dest
    assert download(f"{server.url}/data", dest, size=len(DATA), md5=MD5,
                    verify_existing_md5=True, **FAST) == dest
    assert server.requests == []
    with pytest.raises(DownloadError, match="size"):  # a wrong existing file is reported, not replaced
        download(f"{server.url}/data", dest, size=len(DATA) + 1, **FAST)
    dest.write_bytes(CORRUPT)
    with pytest.raises(DownloadError, match="md5"):
        download(f"{server.url}/data", dest, md5=MD5, verify_existing_md5=True, **FAST)
    assert dest.read_bytes() == CORRUPT and server.requests == []


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    dest = tmp_path / "x.h5ad"
    part_of(dest).write_bytes(b"\0" * 1000)  # stale garbage: appending to it would corrupt the file
    download(f"{server.url}/norange", dest, size=len(DATA), md5=MD5, **FAST)
    assert server.requests == [("/norange", "bytes=1000-")]
    assert dest.read_bytes() == DATA


def test_complete_partial_file_416(server, tmp_path):
    dest = tmp_path / "x.h5ad"
    part_of(dest).write_bytes(DATA)
    download(f"{server.url}/data", dest, md5=MD5, **FAST)
    assert server.requests == [("/data", f"bytes={len(DATA)}-")]
    assert dest.read_bytes() == DATA and not part_of(dest).exists()


def test_progress_logged(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sparseshift.download")
    dest = tmp_path / "x.h5ad"
    download(f"{server.url}/data", dest, size=len(DATA), progress_every=0.1, **FAST)
    progress = [r.getMessage() for r in caplog.records if "MB/s" in r.getMessage()]
    assert len(progress) >= 5
    assert any("100%" in m for m in progress)
    assert all(re.search(r"[\d.]+ / [\d.]+ MB \(\d+%\) at [\d.]+ MB/s", m) for m in progress)


def test_verify(tmp_path):
    path = tmp_path / "x.h5ad"
    with pytest.raises(DownloadError, match="not found"):
        verify(path)
    path.write_bytes(DATA)
    assert verify(path, size=len(DATA), md5=MD5) == path
    with pytest.raises(DownloadError, match=f"expected {len(DATA) - 1} bytes, found {len(DATA)}"):
        verify(path, size=len(DATA) - 1)
    with pytest.raises(DownloadError, match="md5"):
        verify(path, md5="0" * 32)
