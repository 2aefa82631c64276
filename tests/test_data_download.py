"""MNIST download into the cache against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import threading
import time

import pytest

from aevb.config import DataConfig
from aevb.data import build_datasets
from aevb.data.download import MNIST_SHA256, ChecksumError, download_mnist


@pytest.fixture
def server(tmp_path):
    """(serve_dir, base_url): a threaded HTTP server on 127.0.0.1 serving serve_dir."""
    serve_dir = tmp_path / "served"
    serve_dir.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(serve_dir))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield serve_dir, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("AEVB_CACHE", str(root))
    monkeypatch.delenv("AEVB_DATA_DIR", raising=False)
    return root


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_good_files_are_downloaded_into_the_cache_and_load(shared_data, server, cache, monkeypatch):
    serve_dir, url = server
    for name in MNIST_SHA256:
        shutil.copy(shared_data / "mnist" / name, serve_dir / name)
    monkeypatch.setenv("AEVB_MNIST_MIRRORS", "http://127.0.0.1:9/ " + url)  # first mirror refuses
    splits, info = build_datasets(DataConfig(name="mnist"), "bernoulli")
    assert info.sizes == {"train": 50000, "valid": 10000, "test": 10000}
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(MNIST_SHA256)
    for name, digest in MNIST_SHA256.items():
        assert sha256(cache / "mnist" / name) == digest
    assert str(cache / "mnist") in info.source


def test_a_wrong_checksum_is_a_clear_error_and_leaves_the_cache_empty(server, cache):
    serve_dir, url = server
    for name in MNIST_SHA256:
        (serve_dir / name).write_bytes(b"not mnist at all")
    with pytest.raises(ChecksumError, match="does not match the published 440fcabf.*was not kept"):
        download_mnist(urls=[url])
    assert list((cache / "mnist").iterdir()) == []


def test_an_unreachable_server_gives_the_by_hand_message(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("AEVB_MNIST_MIRRORS", "http://127.0.0.1:9/")  # discard port: connection refused
    with pytest.raises(OSError) as err:
        build_datasets(DataConfig(name="mnist"), "bernoulli")
    message = str(err.value)
    assert "Place the files by hand" in message and str(cache / "mnist") in message
    assert "train-images-idx3-ubyte.gz" in message and "--data-dir" in message
    assert list((cache / "mnist").iterdir()) == []  # no partial files left behind


def test_files_already_cached_with_the_right_hash_are_not_fetched_again(shared_data, cache):
    (cache / "mnist").mkdir(parents=True)
    for name in MNIST_SHA256:
        shutil.copy(shared_data / "mnist" / name, cache / "mnist" / name)
    assert download_mnist(urls=["http://127.0.0.1:9/"]) == cache / "mnist"  # would fail if it tried the net


# -- hostile servers: a cut chunk, an endless body, a trickle (issue 21, case 7) -------------------

class Misbehaving(http.server.BaseHTTPRequestHandler):
    """Serves ``payload`` badly, as ``mode`` says; counts requests per path in ``hits``."""

    payload = b""
    mode = "good"
    hits: dict = {}
    fail_times = 10**9

    def log_message(self, *args):
        pass

    def do_GET(self):
        cls = type(self)
        cls.hits[self.path] = cls.hits.get(self.path, 0) + 1
        mode = cls.mode if cls.hits[self.path] <= cls.fail_times else "good"
        self.send_response(200)
        if mode == "good":
            self.send_header("Content-Length", str(len(cls.payload)))
            self.end_headers()
            self.wfile.write(cls.payload)
        elif mode == "cut_chunk":  # chunked encoding, the connection dropped mid-chunk
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n" % len(cls.payload) + cls.payload[:len(cls.payload) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif mode == "short":  # fewer bytes than Content-Length
            self.send_header("Content-Length", str(len(cls.payload)))
            self.end_headers()
            self.wfile.write(cls.payload[:10])
            self.close_connection = True
        elif mode == "endless":  # no Content-Length, never ends
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
        elif mode == "trickle":  # one byte every 0.2 s
            self.send_header("Content-Length", str(len(cls.payload)))
            self.end_headers()
            try:
                for i in range(len(cls.payload)):
                    self.wfile.write(cls.payload[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass


@pytest.fixture
def bad_server(monkeypatch):
    """(handler class, base url) with one small fake 'MNIST' file of known hash and size."""
    from aevb.data import download

    payload = bytes(range(256)) * 40  # 10,240 bytes
    name = "t10k-labels-idx1-ubyte.gz"
    monkeypatch.setattr(download, "MNIST_SHA256", {name: hashlib.sha256(payload).hexdigest()})
    monkeypatch.setattr(download, "MNIST_SIZES", {name: len(payload)})
    handler = type("Handler", (Misbehaving,), {"payload": payload, "hits": {}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("mode", ["cut_chunk", "short"])
def test_a_transfer_that_breaks_off_is_retried_once_then_reported_and_nothing_is_cached(bad_server, cache, mode):
    handler, url = bad_server
    handler.mode = mode
    with pytest.raises(OSError) as e:
        download_mnist(urls=[url], timeout=5)
    message = str(e.value)
    assert "the connection broke off" in message and "retried once" in message and "Place the files by hand" in message
    assert handler.hits == {"/t10k-labels-idx1-ubyte.gz": 2}
    assert list((cache / "mnist").iterdir()) == []  # no partial file, no .part


def test_a_transfer_that_breaks_off_once_succeeds_on_the_retry(bad_server, cache):
    handler, url = bad_server
    handler.mode, handler.fail_times = "cut_chunk", 1
    folder = download_mnist(urls=[url], timeout=5)
    assert (folder / "t10k-labels-idx1-ubyte.gz").read_bytes() == handler.payload
    assert handler.hits == {"/t10k-labels-idx1-ubyte.gz": 2}


def test_an_endless_body_is_cut_at_the_published_size(bad_server, cache):
    handler, url = bad_server
    handler.mode = "endless"
    with pytest.raises(OSError, match="more than the published 10,240 bytes; stopped"):
        download_mnist(urls=[url], timeout=5)
    assert list((cache / "mnist").iterdir()) == []


def test_a_trickling_server_is_cut_off_at_the_deadline(bad_server, cache):
    handler, url = bad_server
    handler.mode = "trickle"
    start = time.monotonic()
    with pytest.raises(OSError, match=r"not finished after 1 s \(\d+ of 10,240 bytes received\); the server is too slow"):
        download_mnist(urls=[url], timeout=5, deadline=1.0)
    assert time.monotonic() - start < 5
    assert list((cache / "mnist").iterdir()) == []


def test_a_part_file_left_by_a_killed_download_is_removed_by_the_next(bad_server, cache):
    handler, url = bad_server
    folder = cache / "mnist"
    folder.mkdir(parents=True)
    stale = folder / ".t10k-labels-idx1-ubyte.gz.abc123.part"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    download_mnist(urls=[url], timeout=5)
    assert sorted(p.name for p in folder.iterdir()) == ["t10k-labels-idx1-ubyte.gz"]
