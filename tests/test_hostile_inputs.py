"""Hostile and extreme inputs end in one clear line (issue 21, cases 5, 6 and 8): a file's secrets
never reach a message or the report, decompression bombs are refused before they grow memory,
float64 data beyond float32, an absurd --k, and --memory-mb bounding the evaluator's memory."""

from __future__ import annotations

import gzip
import json
import resource
import struct
import subprocess
import sys
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from conftest import REPO, run_cli

from aevb.config import DataConfig, ModelConfig
from aevb.data import DataInfo, build_datasets
from aevb.data.excerpt import excerpt, redact
from aevb.data.images import MAX_IMAGE_PIXELS, read_image_folder
from aevb.data.readers import read_idx
from aevb.inference.importance import importance_sample
from aevb.models.vae import build_model

SECRETS = "USER=me\nAPI_KEY=sk-very-secret-123\nPASSWORD=hunter2\n"


def test_excerpt_keeps_a_short_prefix_and_never_a_value():
    assert excerpt("five") == "'five'"
    assert excerpt("API_KEY=sk-very-secret-123") == "'API_KEY=…'"
    assert excerpt("root:$6$saltsalt$hash:19000:0:99999:7:::") == "'root:…'"
    assert excerpt("x" * 100) == "'" + "x" * 12 + "…'"
    assert redact("line 2, column 1 ('USER=…'): 'API_KEY=…' is not a number") == \
        "line 2, column 1 ('…'): '…' is not a number"


def test_a_data_file_of_secrets_is_never_quoted_beyond_its_key_names(tmp_path):
    secrets = tmp_path / "secrets.txt"
    secrets.write_text(SECRETS)
    with pytest.raises(ValueError) as e:
        build_datasets(DataConfig(name=str(secrets)), "gaussian")
    message = str(e.value)
    assert "line 2, column 1" in message and "is not a number" in message
    for secret in ("sk-very", "hunter2", "=me"):
        assert secret not in message


@pytest.mark.slow
def test_the_report_of_a_run_whose_data_points_at_secrets_holds_none_of_them(tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", "--data", "digits", "--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet",
                "--out", run)
    assert r.returncode == 0, r.stderr
    secrets = tmp_path / "secrets.txt"
    secrets.write_text(SECRETS)
    link = tmp_path / "link.csv"
    link.symlink_to(secrets)  # the issue's /etc/shadow through a link
    for target in (secrets, link):
        cfg = json.loads((run / "config.json").read_text())
        cfg["data"]["name"] = str(target)
        (run / "config.json").write_text(json.dumps(cfg))
        r = run_cli("report", run, "--out", tmp_path / "report.html")
        page = (tmp_path / "report.html").read_text()
        assert "could not be loaded" in page, r.stderr
        for secret in ("API_KEY", "sk-very", "hunter2", "USER=me"):
            assert secret not in page  # nothing of the file in the HTML
        for secret in ("sk-very", "hunter2", "=me"):
            assert secret not in r.stderr  # the terminal shows at most 'API_KEY=…'


def png_header_only(path, width, height):
    """A PNG whose header claims width x height 8-bit grey pixels, with a few bytes of image data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [6000, 20000])  # over aevb's limit; over Pillow's own bomb limit
def test_an_image_claiming_a_huge_size_is_refused_before_decoding(tmp_path, side):
    folder = tmp_path / "images"
    folder.mkdir()
    png_header_only(folder / "bomb.png", side, side)
    assert side * side > MAX_IMAGE_PIXELS
    tracemalloc.start()
    with pytest.raises(ValueError) as e:
        read_image_folder(folder)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "bomb.png" in str(e.value) and ("decompression bomb" in str(e.value) or "too large" in str(e.value))
    assert "resize the images" in str(e.value)
    assert peak < 10 * 2**20


def test_an_idx_gz_expanding_far_beyond_its_header_never_grows_memory_past_the_promise(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    promised = 100 * 28 * 28
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 100, 28, 28))
        zeros = b"\0" * (1 << 20)
        for _ in range(64):  # 64 MiB of data behind a header promising 78,400 bytes
            f.write(zeros)
    assert path.stat().st_size < 400_000  # a small file
    tracemalloc.start()
    with pytest.raises(ValueError) as e:
        read_idx(path, 3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "holds more data than that" in str(e.value) and "(100, 28, 28) (78400 data bytes)" in str(e.value)
    assert peak < promised + 2 * 2**20  # the promised bytes plus gzip's buffers, never the 64 MiB


def test_an_idx_file_of_exactly_the_promised_size_reads(tmp_path):
    path = tmp_path / "x.gz"
    x = np.arange(2 * 3 * 4, dtype=">i2").reshape(2, 3, 4)
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 0x0B, 3, 2, 3, 4) + x.tobytes())
    np.testing.assert_array_equal(read_idx(path, 3), x.astype(np.int16))


def test_an_idx_header_promising_more_than_the_machine_holds_is_refused_without_reading(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 4_000_000_000, 60_000, 60_000))
    with pytest.raises(ValueError, match="more than this machine's memory"):
        read_idx(path, 3)


@pytest.mark.parametrize("standardize", [False, True])
def test_float64_data_beyond_float32_says_it_overflows_and_what_to_do(tmp_path, standardize):
    x = np.random.default_rng(0).random((50, 4))
    x[7, 2] = 1e300  # finite in float64, inf in float32
    np.save(tmp_path / "big.npy", x)
    with pytest.raises(ValueError) as e:
        build_datasets(DataConfig(name=str(tmp_path / "big.npy"), standardize=standardize), "gaussian")
    message = str(e.value)
    assert "example 7, dimension 2 is 1e+300, which overflows float32" in message and "rescale" in message
    assert "is inf" not in message and "is nan" not in message


def test_evaluate_with_an_absurd_k_is_one_line(tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", "--data", "digits", "--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet",
                "--out", run)
    assert r.returncode == 0, r.stderr
    r = run_cli("evaluate", run, "--k", "99999999999999999999")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--k must be between 1 and 1,000,000,000" in r.stderr and "got 99999999999999999999" in r.stderr


def tiny_model(latent_dim=2, num_dims=16):
    torch.manual_seed(0)
    info = DataInfo(name="t", shape=(num_dims,), num_dims=num_dims, support="binary", binarization="none")
    return build_model(ModelConfig(latent_dim=latent_dim, hidden=[8]), info).eval()


def test_noise_streamed_under_a_small_budget_gives_the_same_numbers_and_equals_a_direct_sum():
    model = tiny_model()
    x = (torch.rand(2, 16, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    k = 70_000  # more than one noise piece (65,536 rows)
    streamed = importance_sample(model, x, k=k, memory_mb=1, progress=False)  # 16*K*D bytes > 1 MB: streamed
    whole = importance_sample(model, x, k=k, memory_mb=512, progress=False, workers=1)
    torch.testing.assert_close(streamed["log_px"], whole["log_px"], rtol=0, atol=1e-9)
    # direct: z = mu + sigma * eps with eps drawn as documented, log-mean-exp of log p(x,z) - log q(z|x)
    g = torch.Generator().manual_seed(1234 + 1)
    with torch.no_grad():
        q_z = model.posterior(x)
        for b in range(2):
            eps = torch.cat([torch.randn(65536, 2, generator=g), torch.randn(k - 65536, 2, generator=g)])
            z = q_z.base_dist.loc[b] + q_z.base_dist.scale[b] * eps
            log_w = (model.likelihood_module(model.decoder(z)).log_prob(x[b].expand(k, -1))
                     + model.prior().log_prob(z) - torch.distributions.Normal(q_z.base_dist.loc[b],
                                                                             q_z.base_dist.scale[b]).log_prob(z).sum(-1))
            direct = torch.logsumexp(log_w.double(), 0) - np.log(k)
            assert abs(float(direct) - float(streamed["log_px"][b])) < 1e-4


PROBE = """
import resource, sys, torch
sys.path.insert(0, {tests!r})
from test_hostile_inputs import tiny_model
from aevb.inference.importance import importance_sample
model = tiny_model(latent_dim=20)
x = (torch.rand(1, 16) < 0.5).float()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
importance_sample(model, x, k=int(sys.argv[1]), memory_mb=int(sys.argv[2]), progress=False)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


@pytest.mark.slow
def test_memory_mb_bounds_the_evaluators_peak_for_a_huge_k():
    def growth(k, memory_mb):
        r = subprocess.run([sys.executable, "-c", PROBE.format(tests=str(REPO / "tests")), str(k), str(memory_mb)],
                           capture_output=True, text=True, timeout=300, check=False,
                           env={"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
        assert r.returncode == 0, r.stderr
        return float(r.stdout.split()[-1])

    # K = 2,000,000 with a 20-d latent: its noise alone is 160 MB (320 MB with the stacking copy)
    assert growth(2_000_000, 32) < 32 + 40  # the budget plus torch's buffers
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0
