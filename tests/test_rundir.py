"""One run per folder, one writer at a time: reused --out, concurrent trainers, stale locks,
leftovers of interrupted writes and a disk that fills while checkpointing (issues 20 and 21)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import run_cli, tiny_config
from safetensors import SafetensorError

from aevb.training import checkpoint as checkpoint_module
from aevb.training.checkpoint import (
    find_checkpoint,
    list_checkpoints,
    read_state,
    read_tensors,
    save_checkpoint,
)
from aevb.training.loop import train
from aevb.training.metrics import read_metrics
from aevb.training.rundir import (
    LOCK_NAME,
    RunDirError,
    RunLock,
    claim_run_dir,
    clean_leftovers,
)


def write_lock(run_dir, pid, proc_start=""):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "proc_start": proc_start,
                                                 "started": "2026-12-06 06:00:00 UTC", "command": "aevb train"}))


def test_a_second_run_into_a_used_out_is_refused_naming_resume_and_overwrite(tmp_path):
    first = train(tiny_config(tmp_path, train={"epochs": 2, "seed": 0}))
    before = sorted(p.name for p in (first / "checkpoints").iterdir())
    with pytest.raises(RunDirError) as e:
        train(tiny_config(tmp_path, train={"epochs": 1, "seed": 5}))
    message = str(e.value)
    assert "already holds a run" in message and f"aevb train --resume {first}" in message and "--overwrite" in message
    assert sorted(p.name for p in (first / "checkpoints").iterdir()) == before  # nothing pruned or added
    assert json.loads((first / "config.json").read_text())["train"]["seed"] == 0
    assert [m["epoch"] for m in read_metrics(first)] == [1, 2]
    assert not (first / LOCK_NAME).exists()  # released after a normal end


def test_overwrite_empties_the_run_so_nothing_of_the_old_run_remains(tmp_path):
    first = train(tiny_config(tmp_path, train={"epochs": 2, "seed": 0}))
    (first / "checkpoints" / "step-00000999").mkdir()  # anything of the old run must go
    second = train(tiny_config(tmp_path, train={"epochs": 1, "seed": 5}), overwrite=True)
    assert second == first
    assert json.loads((second / "config.json").read_text())["train"]["seed"] == 5
    assert [m["epoch"] for m in read_metrics(second)] == [1]
    steps = [read_state(p)["step"] for p in list_checkpoints(second)]
    assert steps == [30]  # 1455 digits / 50 per batch = 30 steps: only the new run's checkpoint
    assert read_state(find_checkpoint(second))["config"]["train"]["seed"] == 5


def test_overwrite_never_empties_a_folder_that_is_not_a_run(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    with pytest.raises(RunDirError, match="not an aevb run directory"):
        claim_run_dir(folder, new=True, overwrite=True)
    assert (folder / "thesis.tex").read_text() == "precious"
    assert not (folder / LOCK_NAME).exists()


def test_a_live_lock_refuses_a_second_writer_and_names_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from aevb.training.rundir import _process_start

        run_dir = tmp_path / "run"
        write_lock(run_dir, holder.pid, _process_start(holder.pid))
        (run_dir / "config.json").write_text("{}")
        for new, overwrite in ((True, False), (True, True), (False, False)):
            with pytest.raises(RunDirError) as e:
                claim_run_dir(run_dir, new=new, overwrite=overwrite)
            assert f"pid {holder.pid} on {socket.gethostname()}" in str(e.value) and "in use" in str(e.value)
        assert (run_dir / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_dir = tmp_path / "run"
    write_lock(run_dir, dead.pid)
    (run_dir / "config.json").write_text("{}")
    lock = claim_run_dir(run_dir, new=False)
    assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (run_dir / LOCK_NAME).exists()


def test_a_lock_whose_pid_now_belongs_to_another_process_is_stale(tmp_path):
    run_dir = tmp_path / "run"
    write_lock(run_dir, os.getpid(), proc_start="1")  # our pid, but not our start time: a reused pid
    with RunLock(run_dir):
        assert json.loads((run_dir / LOCK_NAME).read_text())["proc_start"] != "1"


def test_a_lock_of_another_host_is_not_taken_over_and_the_message_says_how_to_remove_it(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "x", "command": "aevb"}))
    with pytest.raises(RunDirError) as e:
        RunLock(run_dir).acquire()
    assert "on elsewhere" in str(e.value) and f"delete {run_dir / LOCK_NAME}" in str(e.value)


def test_leftovers_of_a_killed_checkpoint_write_are_cleaned_and_a_half_replaced_one_restored(tmp_path):
    ckpts = tmp_path / "checkpoints"
    save_checkpoint(ckpts / "step-00000004", {"model.w": torch.ones(2)}, {"step": 4})
    save_checkpoint(ckpts / "best.old", {"model.w": torch.full((2,), 7.0)}, {"step": 4})  # killed between renames
    (ckpts / "best.tmp").mkdir()
    (ckpts / "best.tmp" / "weights.safetensors").write_bytes(b"half")
    (ckpts / "step-00000008.tmp").mkdir()
    (tmp_path / "summary.json.tmp").write_text("{")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"{LOCK_NAME}.{dead.pid}.tmp").write_text("{}")  # a starter killed while taking the lock
    (tmp_path / f"{LOCK_NAME}.{os.getpid()}.tmp").write_text("{}")  # one still starting: kept
    done = clean_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.glob(f"{LOCK_NAME}.*")) == [f"{LOCK_NAME}.{os.getpid()}.tmp"]
    assert sorted(p.name for p in ckpts.iterdir()) == ["best", "step-00000004"]
    assert torch.equal(read_tensors(ckpts / "best")["model.w"], torch.full((2,), 7.0))
    assert not (tmp_path / "summary.json.tmp").exists()
    assert "restored best" in done and "removed step-00000008.tmp" in done


def test_disk_full_while_checkpointing_is_one_clear_error_and_the_run_resumes_after(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, train={"epochs": 2, "checkpoint_every": 10, "eval_every": 0})
    calls = {"n": 0}
    real = checkpoint_module.save_file

    def full_disk(tensors, path):
        calls["n"] += 1
        if calls["n"] == 3:  # step 10, best (end of epoch... ), then step 20 fails
            with open(path, "wb") as f:
                f.write(b"x" * 10)
            raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                                  "message: \"No space left on device\" })")
        return real(tensors, path)

    monkeypatch.setattr(checkpoint_module, "save_file", full_disk)
    with pytest.raises(RunDirError) as e:
        train(cfg)
    message = str(e.value)
    assert "no space left on device" in message and "\n" not in message
    run_dir = tmp_path / "run"
    last = find_checkpoint(run_dir)
    assert f"last good checkpoint ({last})" in message and f"aevb train --resume {run_dir}" in message
    assert not list((run_dir / "checkpoints").glob("*.tmp"))  # the failed write left nothing behind
    assert not (run_dir / LOCK_NAME).exists()
    read_tensors(last)  # loadable
    monkeypatch.setattr(checkpoint_module, "save_file", real)  # space freed
    from aevb.config import RunConfig

    resumed = RunConfig.load(run_dir / "config.json")
    train(resumed, resume=True)
    assert read_state(find_checkpoint(run_dir))["step"] == 60


def test_a_full_disk_while_writing_metrics_says_what_to_do(tmp_path, monkeypatch):
    import errno

    from aevb.training import metrics

    def no_space(self, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(metrics.MetricsLog, "write", no_space)
    with pytest.raises(RunDirError) as e:
        train(tiny_config(tmp_path, train={"epochs": 1}))
    message = str(e.value)
    assert "metrics.jsonl): no space left on device" in message  # metrics come before the epoch's checkpoint
    assert "no checkpoint was written yet" in message and "--overwrite" in message


def _tmpfs(path, size):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()[:100]})")


@pytest.mark.slow
def test_a_real_full_tmpfs_gives_one_line_and_the_run_resumes_once_space_is_freed(tmp_path):
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    disk = tmp_path / "disk"
    _tmpfs(disk, "700k")
    try:
        out = disk / "run"
        args = ["--data", "digits", "--hidden", "256", "--latent-dim", "4", "--epochs", "2", "--batch-size", "50",
                "--quiet", "--set", "train.checkpoint_every=5", "--set", "train.keep_checkpoints=1"]
        r = run_cli("train", *args, "--out", out)
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "no space left on device" in r.stderr and f"aevb train --resume {out}" in r.stderr
        read_tensors(find_checkpoint(out))  # the last good checkpoint loads
        assert not (out / LOCK_NAME).exists()
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # free space
        r = run_cli("train", "--resume", out, "--quiet")
        assert r.returncode == 0, r.stderr
        assert read_state(find_checkpoint(out))["step"] == 60
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


@pytest.mark.slow
def test_two_trainers_on_one_out_at_once_the_second_is_refused(tmp_path):
    out = tmp_path / "run"
    args = ["--data", "digits", "--hidden", "32", "--latent-dim", "4", "--epochs", "100000", "--quiet"]  # until killed
    env = dict(os.environ, PYTHONPATH=str(os.path.join(os.path.dirname(__file__), "..", "src")), OMP_NUM_THREADS="1",
               MPLBACKEND="Agg")
    first = subprocess.Popen([sys.executable, "-m", "aevb", "train", *args, "--out", str(out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (out / "config.json").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert first.poll() is None, first.stderr.read()
        for extra in ([], ["--overwrite"]):
            r = run_cli("train", *args, "--out", out, *extra)
            assert r.returncode == 2 and f"pid {first.pid}" in r.stderr and "in use" in r.stderr, r.stderr
        r = run_cli("train", "--resume", out)
        assert r.returncode == 2 and f"pid {first.pid}" in r.stderr, r.stderr
    finally:
        first.kill()
        first.wait()
    from aevb.training.rundir import lock_is_stale, read_lock

    holder = read_lock(out)  # SIGKILL left the lock behind; the next writer takes it over
    assert holder["pid"] == first.pid and lock_is_stale(holder)


@pytest.mark.slow
def test_a_tmpfs_filled_by_another_process_mid_run_gives_one_line_and_resumes_once_freed(tmp_path):
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    disk = tmp_path / "disk"
    _tmpfs(disk, "8m")
    try:
        out = disk / "run"
        args = ["--data", "digits", "--hidden", "32", "--latent-dim", "4", "--batch-size", "50", "--quiet"]
        r = run_cli("train", *args, "--epochs", "1", "--out", out)
        assert r.returncode == 0, r.stderr
        filler = disk / "filler"  # another process takes every free byte
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)
        assert shutil.disk_usage(disk).free < 64 * 1024
        r = run_cli("train", "--resume", out, "--epochs", "2", "--quiet")
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "no space left on device" in r.stderr and "step-00000030" in r.stderr
        read_tensors(find_checkpoint(out))  # still loads
        filler.unlink()  # space freed
        r = run_cli("train", "--resume", out, "--epochs", "2", "--quiet")
        assert r.returncode == 0, r.stderr
        assert read_state(find_checkpoint(out))["step"] == 60
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)
