"""Download MNIST once into the cache, verified by SHA-256, written atomically.

Mirrors are tried in order (``$AEVB_MNIST_MIRRORS``: space-separated base URLs, overrides the
list below). A file is streamed to a temporary name in the cache folder, hashed, and renamed
into place only when its SHA-256 matches; on a mismatch the temporary file is deleted, so the
cache never holds a bad file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from aevb.data.locate import cache_dir

MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


class ChecksumError(OSError):
    """A downloaded file's hash differs from the published one; nothing was written."""


def mirrors(urls: list[str] | None = None) -> list[str]:
    """Base URLs to try: ``urls``, else ``$AEVB_MNIST_MIRRORS``, else ``MNIST_MIRRORS``."""
    if urls:
        return list(urls)
    env = os.environ.get("AEVB_MNIST_MIRRORS", "").split()
    return env or list(MNIST_MIRRORS)


def fetch_verified(url: str, dest: Path, sha256: str, timeout: float = 30.0) -> None:
    """Stream ``url`` to ``dest`` through a temporary file; rename only if the SHA-256 matches.

    Raises:
        ChecksumError: the bytes differ from ``sha256`` (the temporary file is removed).
        urllib.error.URLError / OSError: the server could not be reached or the transfer failed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != sha256:
            raise ChecksumError(f"{url}: SHA-256 {h.hexdigest()} does not match the published {sha256}; "
                                "the download is corrupt or not MNIST, and was not kept")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def download_mnist(folder: str | Path | None = None, urls: list[str] | None = None, timeout: float = 30.0) -> Path:
    """Put the four MNIST IDX .gz files in ``folder`` (default: the cache's ``mnist/``).

    Files already there with the right SHA-256 are kept. Each missing file is fetched from the
    first mirror that serves it with the right hash.

    Returns:
        The folder.

    Raises:
        ChecksumError: a mirror served a file with a wrong hash and no other mirror served a good one.
        OSError: no mirror could be reached; the message says how to place the files by hand.
    """
    from aevb.data.readers import file_digest

    folder = Path(folder) if folder else cache_dir() / "mnist"
    for name, sha256 in MNIST_SHA256.items():
        dest = folder / name
        if dest.is_file() and file_digest(dest) == sha256:
            continue
        errors: list[Exception] = []
        for base in mirrors(urls):
            try:
                fetch_verified(base.rstrip("/") + "/" + name, dest, sha256, timeout)
                break
            except ChecksumError as e:
                errors.append(e)
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                errors.append(OSError(f"{base}: {getattr(e, 'reason', e)}"))
        else:
            bad_hash = [e for e in errors if isinstance(e, ChecksumError)]
            if bad_hash:
                raise ChecksumError(f"cannot download {name}: {bad_hash[0]}")
            tried = "; ".join(str(e) for e in errors)
            raise OSError(
                f"cannot download MNIST file {name} (offline or mirrors unreachable: {tried}). "
                f"Place the files by hand: copy {', '.join(MNIST_SHA256)} (from any MNIST mirror, "
                f"SHA-256 listed in docs/data.md) into {folder}, or pass --data-dir DIR / set "
                "$AEVB_DATA_DIR to a folder that holds them")
    return folder
