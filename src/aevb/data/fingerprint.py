"""A fingerprint of the prepared data: what ``--resume`` compares to refuse a changed data set.

The fingerprint is the split sizes, the datum size and a BLAKE2b digest (128 bits) of the bytes of
the train, validation and test tensors exactly as the model sees them (after reading, scaling,
splitting and dequantization). Hashing MNIST's 70,000 x 784 float32 values (220 MB) takes a
fraction of a second, once per ``aevb train``.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import torch


def fingerprint_splits(train: torch.Tensor, valid: torch.Tensor, test: torch.Tensor) -> str:
    """``"train 1455, valid 0, test 342 x 64 float32, blake2b 0123...cdef"`` for the three splits."""
    h = hashlib.blake2b(digest_size=16)
    for x in (train, valid, test):
        h.update(f"{tuple(x.shape)} {x.dtype};".encode())
        h.update(np.ascontiguousarray(x.detach().cpu().numpy()).data)
    dims = "x".join(str(d) for d in train.shape[1:])
    return (f"train {len(train)}, valid {len(valid)}, test {len(test)} x {dims} {str(train.dtype).replace('torch.', '')}, "
            f"blake2b {h.hexdigest()}")


class BackgroundFingerprint:
    """``fingerprint_splits`` computed in a worker thread; ``str()`` of it waits for the text.

    hashlib releases the GIL while it hashes a large buffer, so with a spare core the hash (about
    0.25 s of CPU for MNIST) runs beside building the model and the first training steps instead of
    before them. The tensors must not change meanwhile (the trainer never writes its splits).
    """

    def __init__(self, train: torch.Tensor, valid: torch.Tensor, test: torch.Tensor):
        self._text: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(train, valid, test), name="aevb-fingerprint",
                                        daemon=True)
        self._thread.start()

    def _run(self, *splits: torch.Tensor) -> None:
        try:
            self._text = fingerprint_splits(*splits)
        except BaseException as e:  # re-raised in the thread that asks for the text
            self._error = e

    def __str__(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._text is not None
        return self._text
