"""Download MNIST once into the cache, verified by SHA-256, written atomically.

Mirrors are tried in order (``$AEVB_MNIST_MIRRORS``: space-separated base URLs, overrides the
list below). A file is streamed to a temporary name in the cache folder, hashed, and renamed
into place only when its SHA-256 matches; on a mismatch the temporary file is deleted, so the
cache never holds a bad file.

Bounded: each file has a deadline (``deadline`` seconds for the whole transfer, besides the
socket ``timeout`` for silence) and may not exceed its published size (``MNIST_SIZES``), so a
slow-dripping or endless server is cut off. A transfer that breaks off (a dropped connection,
a chunked body cut mid-chunk, fewer bytes than Content-Length) is retried once from the same
mirror, then reported. Temporary files are removed on every error; ones left by a killed
process (``.<name>.*.part``, older than an hour) are removed by the next download.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import time
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

# Published sizes in bytes (the files whose SHA-256 is above).
MNIST_SIZES = {
    "train-images-idx3-ubyte.gz": 9912422,
    "train-labels-idx1-ubyte.gz": 28881,
    "t10k-images-idx3-ubyte.gz": 1648877,
    "t10k-labels-idx1-ubyte.gz": 4542,
}

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


class ChecksumError(OSError):
    """A downloaded file's hash differs from the published one; nothing was written."""


class BrokenTransfer(OSError):
    """The transfer ended early (dropped connection, cut chunk, short body); worth one retry."""


class TransferLimit(OSError):
    """The server sent more than the published size or missed the deadline; nothing was written."""


def mirrors(urls: list[str] | None = None) -> list[str]:
    """Base URLs to try: ``urls``, else ``$AEVB_MNIST_MIRRORS``, else ``MNIST_MIRRORS``."""
    if urls:
        return list(urls)
    env = os.environ.get("AEVB_MNIST_MIRRORS", "").split()
    return env or list(MNIST_MIRRORS)


def fetch_verified(url: str, dest: Path, sha256: str, timeout: float = 30.0, size: int | None = None,
                   deadline: float = 600.0) -> None:
    """Stream ``url`` to ``dest`` through a temporary file; rename only if the SHA-256 matches.

    Args:
        size: the published size in bytes; a body longer than that is cut off (TransferLimit).
        deadline: seconds allowed for the whole transfer (TransferLimit when exceeded).

    Raises:
        ChecksumError: the bytes differ from ``sha256`` (the temporary file is removed).
        BrokenTransfer: the body ended before its announced length, mid-chunk or with a reset.
        TransferLimit: more than ``size`` bytes, or not done within ``deadline`` seconds.
        urllib.error.URLError / OSError: the server could not be reached or the transfer failed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    start = time.monotonic()
    try:
        h, got = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            announced = int(length) if length and length.isdigit() else None
            while True:
                if time.monotonic() - start > deadline:
                    expected = f"{size or announced:,}" if (size or announced) else "?"
                    raise TransferLimit(f"{url}: not finished after {deadline:g} s ({got:,} of {expected} bytes "
                                        "received); the server is too slow")
                try:
                    chunk = response.read1(1 << 16)  # what has arrived: the deadline is checked as it trickles
                except http.client.IncompleteRead as e:
                    raise BrokenTransfer(f"{url}: the connection broke off after {got + len(e.partial):,} bytes "
                                         "(a chunk was cut short)") from None
                if not chunk:
                    break
                got += len(chunk)
                if size is not None and got > size:
                    raise TransferLimit(f"{url}: the server sent more than the published {size:,} bytes; "
                                        "stopped (this is not the MNIST file)")
                h.update(chunk)
                out.write(chunk)
        if announced is not None and got < announced:
            raise BrokenTransfer(f"{url}: the connection broke off after {got:,} of {announced:,} bytes")
        if h.hexdigest() != sha256:
            raise ChecksumError(f"{url}: SHA-256 {h.hexdigest()} does not match the published {sha256}; "
                                "the download is corrupt or not MNIST, and was not kept")
        os.replace(tmp, dest)
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, http.client.HTTPException) as e:
        raise BrokenTransfer(f"{url}: the connection broke off ({type(e).__name__})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_stale_parts(folder: Path, name: str, older_than_s: float = 3600.0) -> None:
    """Delete ``.<name>.*.part`` files a killed download left in ``folder`` (older than ``older_than_s``)."""
    if not folder.is_dir():
        return
    now = time.time()
    for part in folder.glob(f".{name}.*.part"):
        try:
            if now - part.stat().st_mtime > older_than_s:
                part.unlink()
        except OSError:
            pass


def _fetch_with_one_retry(url: str, dest: Path, sha256: str, timeout: float, size: int | None, deadline: float,
                          errors: list[Exception]) -> bool:
    """True when ``url`` was fetched; else the reason is appended to ``errors``. A broken transfer is retried once."""
    for attempt in (1, 2):
        try:
            fetch_verified(url, dest, sha256, timeout, size, deadline)
            return True
        except BrokenTransfer as e:
            if attempt == 2:
                errors.append(OSError(f"{e}; retried once, same again"))
        except (ChecksumError, TransferLimit) as e:
            errors.append(e)
            return False
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            errors.append(OSError(f"{url}: {getattr(e, 'reason', e)}"))
            return False
    return False


def download_mnist(folder: str | Path | None = None, urls: list[str] | None = None, timeout: float = 30.0,
                   deadline: float = 600.0) -> Path:
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
        remove_stale_parts(folder, name)
        errors: list[Exception] = []
        for base in mirrors(urls):
            if _fetch_with_one_retry(base.rstrip("/") + "/" + name, dest, sha256, timeout, MNIST_SIZES.get(name),
                                     deadline, errors):
                break
        else:
            bad_hash = [e for e in errors if isinstance(e, ChecksumError)]
            if bad_hash:
                raise ChecksumError(f"cannot download {name}: {bad_hash[0]}")
            tried = "; ".join(str(e) for e in errors)
            raise OSError(
                f"cannot download MNIST file {name} from any mirror ({tried}). "
                f"Place the files by hand: copy {', '.join(MNIST_SHA256)} (from any MNIST mirror, "
                f"SHA-256 listed in docs/data.md) into {folder}, or pass --data-dir DIR / set "
                "$AEVB_DATA_DIR to a folder that holds them")
    return folder
