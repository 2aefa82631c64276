"""Where named data sets' files are looked for: the cache, data_dir, AEVB_DATA_DIR, system folders.

Search order for a named set with sub-folder ``sub`` (e.g. ``mnist``):
  1. ``data_dir`` when given (the files in it, or in ``data_dir/sub``) -- and nowhere else;
  2. ``$AEVB_DATA_DIR`` and ``$AEVB_DATA_DIR/sub``;
  3. the cache ``$AEVB_CACHE/sub`` (default ``~/.cache/aevb/sub``);
  4. system folders the set names (``/usr/share/datasets/fashion-mnist`` from Debian).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The download cache: ``$AEVB_CACHE`` or ``~/.cache/aevb``."""
    return Path(os.environ.get("AEVB_CACHE") or Path.home() / ".cache" / "aevb")


def candidate_dirs(sub: str, data_dir: str = "", system: tuple[str, ...] = ()) -> list[Path]:
    """Folders to search, in order (see the module docstring)."""
    if data_dir:
        return [Path(data_dir), Path(data_dir) / sub]
    dirs = []
    env = os.environ.get("AEVB_DATA_DIR")
    if env:
        dirs += [Path(env), Path(env) / sub]
    dirs.append(cache_dir() / sub)
    dirs += [Path(s) for s in system]
    return dirs


def find_files(sub: str, alternatives: list[tuple[str, ...]], data_dir: str = "",
               system: tuple[str, ...] = ()) -> tuple[Path, tuple[str, ...]] | None:
    """The first folder holding all files of one alternative set of names.

    Args:
        sub: the set's sub-folder name.
        alternatives: file-name tuples in order of preference, e.g. [("a.npz",), ("a.mat",)].

    Returns:
        (folder, names) or None.
    """
    for folder in candidate_dirs(sub, data_dir, system):
        for names in alternatives:
            if all((folder / n).is_file() for n in names):
                return folder, names
    return None


def describe_search(sub: str, data_dir: str = "", system: tuple[str, ...] = ()) -> str:
    """The searched folders, for 'not found' messages."""
    return ", ".join(str(d) for d in candidate_dirs(sub, data_dir, system))
