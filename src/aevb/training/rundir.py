"""Run directories: one run per folder, one writer at a time.

- A new run goes into an empty (or missing) folder. A folder that already holds files is refused,
  naming ``--resume`` (continue that run) and ``--overwrite`` (empty it first); ``--overwrite``
  only empties a folder that is an aevb run directory, never any other folder.
- The writer holds ``run_dir/.aevb.lock`` (JSON: pid, host, process start time, start time, command)
  while it trains. A second writer is refused with a message naming the holder. The lock is
  removed on any normal exit or exception; a lock left by a killed process is stale and is taken
  over when its pid no longer runs (or runs a different process: the start time differs). A lock
  from another host cannot be checked; the message says how to remove it by hand.
- Leftovers of an interrupted checkpoint write (``*.tmp`` / ``*.old`` folders, ``*.json.tmp``
  files) are cleaned when the next writer starts; a checkpoint that was half-way through being
  replaced is put back from its ``.old`` copy.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".aevb.lock"
# Any of these marks a folder as an aevb run directory (what --overwrite may empty).
RUN_MARKERS = ("config.json", "data.json", "metrics.jsonl", "checkpoints", LOCK_NAME)


class RunDirError(RuntimeError):
    """A run directory is taken, holds another run, or cannot be written; the message says what to do."""


def _process_start(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (Linux), '' if unknown or not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 of proc(5); fields after the command name


def _running(pid: int, start: str) -> bool:
    """True when ``pid`` is alive and (where /proc tells) is the process that wrote the lock."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _process_start(pid)
    return not (start and now and now != start)


def describe_holder(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
            f" ({holder.get('command', '?')})")


def read_lock(run_dir: str | Path) -> dict | None:
    """The lock's JSON, ``{}`` when the file exists but cannot be parsed, None when there is no lock."""
    path = Path(run_dir) / LOCK_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def lock_is_stale(holder: dict) -> bool:
    """A lock of this host whose process is gone (or an unreadable lock, which aevb never writes)."""
    if not holder:
        return True
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    return not isinstance(pid, int) or pid <= 0 or not _running(pid, str(holder.get("proc_start", "")))


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir/.aevb.lock`` for this process, or raises RunDirError."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False
        self.created_dir = False  # remove the folder on release if it is still empty (a refused run)

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": _process_start(os.getpid()),
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)[:200]}
        tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}.tmp")
        try:
            try:
                tmp.write_text(json.dumps(me))
            except OSError as e:  # e.g. a full disk: name the lock, not the temporary file
                raise OSError(e.errno, e.strerror, str(self.path)) from None
            for _ in range(3):
                try:
                    os.link(tmp, self.path)  # atomic: fails when a lock exists, never half-written
                    self.held = True
                    return
                except FileExistsError:
                    holder = read_lock(self.path.parent)
                    if holder is None:
                        continue
                    if not lock_is_stale(holder):
                        raise RunDirError(
                            f"{self.path.parent} is in use by another aevb process ({describe_holder(holder)}); "
                            f"wait for it to finish, or choose another --out. If that process is gone (e.g. on "
                            f"another machine), delete {self.path}") from None
                    if read_lock(self.path.parent) == holder:  # still the stale one (not a newer starter's)
                        self.path.unlink(missing_ok=True)
            raise RunDirError(f"cannot take the lock {self.path}: it keeps reappearing (another process is "
                              "starting in the same folder)")
        finally:
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            holder = read_lock(self.path.parent)
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
            if self.created_dir:
                try:
                    self.path.parent.rmdir()  # only succeeds when nothing was written
                except OSError:
                    pass

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def is_run_dir(path: Path) -> bool:
    return any((path / name).exists() for name in RUN_MARKERS)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def claim_run_dir(out: str | Path, new: bool, overwrite: bool = False) -> RunLock:
    """Lock ``out`` for this process and make it ready: empty for a new run, cleaned for a resume.

    Args:
        out: the run directory.
        new: a new run (the folder must be missing or empty, or ``overwrite``); else a resume
            (the folder must exist; leftovers of an interrupted write are cleaned).
        overwrite: empty an existing run directory first (never a folder that is not one).

    Returns:
        The held ``RunLock``; release it when the run ends (``with`` or ``release()``).

    Raises:
        RunDirError: ``out`` is a file, another process holds it, it already holds a run (new
            without ``overwrite``), or it holds files that are not an aevb run (new).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file, not a folder; choose another --out")
    if not new and not out.is_dir():
        raise RunDirError(f"--resume {out}: no such run directory")
    if new:
        if out.is_dir() and any(out.iterdir()) and not is_run_dir(out):
            raise RunDirError(f"--out {out} is a folder with other files in it (not an aevb run directory); "
                              "choose a new or empty folder for the run")
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out)
    lock.created_dir = new and created
    lock.acquire()
    try:
        if new:
            present = [p for p in out.iterdir() if not p.name.startswith(LOCK_NAME)]
            if present and not overwrite:
                raise RunDirError(f"--out {out} already holds a run; continue it with `aevb train --resume {out}`, "
                                  f"start it over with --overwrite (deletes everything in {out}), "
                                  "or choose another --out")
            for child in present:
                _remove(child)
        else:
            done = clean_leftovers(out)
            if done:
                print(f"{out}: cleaned up after an interrupted write ({', '.join(done)})")
    except BaseException:
        lock.release()
        raise
    return lock


def clean_leftovers(run_dir: Path) -> list[str]:
    """Remove what an interrupted write left behind; put back a checkpoint caught mid-replacement.

    Returns:
        The names removed or restored (for a notice).
    """
    done = []
    ckpts = run_dir / "checkpoints"
    if ckpts.is_dir():
        for old in sorted(ckpts.glob("*.old")):
            target = old.with_name(old.name[:-len(".old")])
            if old.is_dir() and not target.exists():
                os.replace(old, target)  # killed between the two renames: the previous copy is complete
                done.append(f"restored {target.name}")
            else:
                _remove(old)
                done.append(f"removed {old.name}")
        for tmp in sorted(ckpts.glob("*.tmp")):
            _remove(tmp)
            done.append(f"removed {tmp.name}")
    for tmp in sorted(run_dir.glob("*.tmp")):
        if not tmp.is_file():
            continue
        if tmp.name.startswith(LOCK_NAME):  # a lock candidate: keep it while its writer may still run
            pid = tmp.name[len(LOCK_NAME) + 1:-len(".tmp")]
            if not pid.isdigit() or _running(int(pid), ""):
                continue
        tmp.unlink(missing_ok=True)
        done.append(f"removed {tmp.name}")
    return done
