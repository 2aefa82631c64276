"""MNIST download into the cache against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import threading

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
