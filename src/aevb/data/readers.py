"""File readers: IDX (gzip or raw), .npy/.npz, MATLAB .mat and Larochelle's .amat text files.

Each reader returns a numpy array exactly as stored (no scaling) and raises ``ValueError`` /
``OSError`` whose message names the file, the position and what was expected. Image folders and
CSV tables live in ``tables.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

from aevb.data.excerpt import excerpt

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic 1f 8b.

    Raises:
        OSError: missing file, or a truncated / corrupt gzip stream (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise OSError(f"{path}: truncated gzip file (the compressed stream ends early, "
                      f"{len(raw)} bytes on disk); download it again") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise OSError(f"{path}: corrupt gzip file ({e}); download it again") from None


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def _read_exactly(f, n: int, path: Path) -> bytearray:
    """Up to ``n`` bytes of ``f`` into one preallocated buffer (fewer at the end of the stream)."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    try:
        while got < n:
            step = f.readinto(view[got:got + (16 << 20)])
            if not step:
                break
            got += step
    except EOFError:
        raise OSError(f"{path}: truncated gzip file (the compressed stream ends early); download it again") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise OSError(f"{path}: corrupt gzip file ({e}); download it again") from None
    del view
    if got < n:
        del buf[got:]
    return buf


def read_idx(path: str | Path, expected_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (MNIST format): magic 00 00 TYPE NDIM, NDIM big-endian uint32 sizes, data.

    The file is streamed (gunzipped on the fly when it starts with 1f 8b) and at most the bytes
    its header promises are read, plus one to detect excess: a small .gz that expands to far more
    than its header says (a decompression bomb) never grows memory past the promised size.

    Args:
        path: ``.gz`` or raw IDX file.
        expected_ndim: 3 for images, 1 for labels; None accepts any.

    Returns:
        Array of the header's shape and type (uint8 for MNIST), native byte order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as raw:
        compressed = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        f = gzip.GzipFile(fileobj=raw) if compressed else raw
        head = _read_exactly(f, 4, path)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in IDX_DTYPES:
            magic = head.hex() if len(head) >= 4 else f"only {len(head)} bytes"
            raise ValueError(f"{path}: not an IDX file: magic number is {magic}, expected 0000TTNN "
                             "(two zero bytes, a type byte 08/09/0b/0c/0d/0e, the number of dimensions)")
        dtype, ndim = np.dtype(IDX_DTYPES[head[2]]), head[3]
        if expected_ndim is not None and ndim != expected_ndim:
            raise ValueError(f"{path}: IDX header says {ndim} dimensions, expected {expected_ndim} "
                             f"({'images N x rows x cols' if expected_ndim == 3 else 'labels N'})")
        header = 4 + 4 * ndim
        sizes = _read_exactly(f, 4 * ndim, path)
        if len(sizes) < 4 * ndim:
            raise ValueError(f"{path}: IDX header is cut short ({4 + len(sizes)} bytes, header needs {header})")
        shape = tuple(int(v) for v in np.frombuffer(bytes(sizes), ">u4"))
        need = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if need > _physical_memory():
            raise ValueError(f"{path}: IDX header says shape {shape} ({need:,} data bytes), more than this machine's "
                             "memory; the header is damaged or the file is not what it claims")
        if not compressed and path.stat().st_size - header != need:
            raise ValueError(f"{path}: IDX header says shape {shape} ({need} data bytes) but the file holds "
                             f"{path.stat().st_size - header} data bytes; the file is truncated or not what it claims")
        data = _read_exactly(f, need, path)
        if len(data) != need:
            raise ValueError(f"{path}: IDX header says shape {shape} ({need} data bytes) but the file holds "
                             f"{len(data)} data bytes; the file is truncated or not what it claims")
        if _read_exactly(f, 1, path):
            raise ValueError(f"{path}: IDX header says shape {shape} ({need} data bytes) but the file holds more "
                             "data than that (read no further); the file is damaged or not what it claims")
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def read_array(path: str | Path, key: str = "") -> np.ndarray:
    """An array from ``.npy`` or ``.npz`` (``key`` picks the member; empty: the only one, or
    ``images``/``x``/``data`` when present). Pickled object arrays are refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{path}: cannot read as a numpy array without pickle ({e})") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        names = list(loaded.files)
        if key:
            if key not in names:
                raise KeyError(f"{path}: no array {key!r}; the file holds {', '.join(names)}")
            return loaded[key]
        if len(names) == 1:
            return loaded[names[0]]
        for guess in ("images", "x", "data", "X"):
            if guess in names:
                return loaded[guess]
        raise ValueError(f"{path}: holds several arrays ({', '.join(names)}); say which with --set data.key=NAME")


def read_mat(path: str | Path, variable: str) -> np.ndarray:
    """One variable of a MATLAB ``.mat`` file (v5, via ``scipy.io.loadmat``)."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        contents = loadmat(path)
    except Exception as e:  # scipy raises several types for a bad file
        raise ValueError(f"{path}: cannot read as a MATLAB .mat file ({e})") from None
    if variable not in contents:
        names = [k for k in contents if not k.startswith("__")]
        raise KeyError(f"{path}: no variable {variable!r}; the file holds {', '.join(names) or 'nothing'}")
    return np.asarray(contents[variable])


def read_amat(path: str | Path, num_dims: int = 784) -> np.ndarray:
    """Larochelle & Murray's ``.amat`` (or ``.amat.gz``): one example per line, ``num_dims`` values
    0/1 separated by spaces. Returns uint8 (N, num_dims)."""
    return parse_amat(read_bytes(path), path, num_dims)


def parse_amat(data: bytes, path: str | Path, num_dims: int = 784) -> np.ndarray:
    """The examples of an ``.amat`` file's (decompressed) bytes ``data``, uint8 (N, num_dims).

    The published files have every line exactly ``"v v ... v\n"`` (2 * num_dims bytes): those are
    read as one strided view of the bytes (one pass, one copy of N * num_dims bytes). Anything else
    (other spacing, ``\r\n``, a bad value) goes through a line-by-line reader whose errors name
    the line and column.
    """
    width = 2 * num_dims
    if data and len(data) % width == 0:
        rows = np.frombuffer(data, np.uint8).reshape(-1, width)  # a view, no copy
        separators, ends = rows[:, 1:-1:2], rows[:, -1]
        digits = rows[:, 0::2]
        if (separators == ord(" ")).all() and (ends == ord("\n")).all() and ((digits | 1) == ord("1")).all():
            return digits - np.uint8(ord("0"))
    return _parse_amat_lines(data, path, num_dims)


def _parse_amat_lines(data: bytes, path: str | Path, num_dims: int) -> np.ndarray:
    """The general ``.amat`` reader: whitespace-separated 0/1 values, one example per line."""
    out = []
    for line_no, line in enumerate(data.splitlines(), 1):
        fields = line.split()
        if len(fields) != num_dims:
            raise ValueError(f"{path}, line {line_no}: {len(fields)} values, expected {num_dims}")
        bad = next((i for i, v in enumerate(fields) if v not in (b"0", b"1")), None)
        if bad is not None:
            raise ValueError(f"{path}, line {line_no}, column {bad + 1}: value {excerpt(fields[bad].decode(errors='replace'))}, "
                             "expected 0 or 1")
        out.append(np.frombuffer(b"".join(fields), np.uint8) - np.uint8(ord("0")))
    if not out:
        raise ValueError(f"{path}: the file is empty; expected one example of {num_dims} values per line")
    return np.stack(out)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes as stored (not decompressed), read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
