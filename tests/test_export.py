"""Export: the exported encoder and decoder compute what the model computes."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_config

from aevb.cli import main
from aevb.outputs.export import export_model
from aevb.training.checkpoint import list_checkpoints, load_run
from aevb.training.loop import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    return train(tiny_config(tmp, train={"epochs": 1}))


def inputs(num_dims, latent_dim, n=5):
    g = torch.Generator().manual_seed(3)
    return torch.rand(n, num_dims, generator=g), torch.randn(n, latent_dim, generator=g)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_export_matches_the_model(run_dir, tmp_path, capsys):
    out = tmp_path / "ts"
    assert main(["export", str(run_dir), "--format", "torchscript", "--out", str(out)]) == 0
    assert "decoder.pt" in capsys.readouterr().out
    _, model, info = load_run(run_dir)
    x, z = inputs(info.num_dims, model.latent_dim)  # batch 5: not the traced batch size
    decoder, encoder = torch.jit.load(str(out / "decoder.pt")), torch.jit.load(str(out / "encoder.pt"))
    with torch.no_grad():
        torch.testing.assert_close(decoder(z), model.decoder(z))
        q_z = model.posterior(x)
        mu, log_var = encoder(x)
        torch.testing.assert_close(mu, q_z.mean)
        torch.testing.assert_close(torch.exp(0.5 * log_var), q_z.stddev)
        # the decoder's parameters are Bernoulli logits: the model's E[x|z] is their sigmoid
        torch.testing.assert_close(torch.sigmoid(decoder(z)), model.likelihood(z).mean)
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["decoder"]["outputs"]["params"] == ["B", info.num_dims]
    assert manifest["encoder"]["outputs"]["mu"] == ["B", model.latent_dim]
    assert manifest["params_per_dim"] == 1 and manifest["data_shape"] == list(info.shape)


def test_onnx_export_runs_in_onnxruntime_and_matches_the_model(run_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    _, model, info = load_run(run_dir)
    export_model(model, info, tmp_path, "onnx")
    x, z = inputs(info.num_dims, model.latent_dim, n=7)
    params = ort.InferenceSession(str(tmp_path / "decoder.onnx")).run(None, {"z": z.numpy()})[0]
    mu, log_var = ort.InferenceSession(str(tmp_path / "encoder.onnx")).run(None, {"x": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(params, model.decoder(z).numpy(), rtol=1e-4, atol=1e-5)
        q_z = model.posterior(x)
        np.testing.assert_allclose(mu, q_z.mean.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(log_var, q_z.variance.log().numpy(), rtol=1e-4, atol=1e-5)


def test_unknown_format_is_refused_with_the_allowed_values(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", str(run_dir), "--format", "tflite"])
    assert e.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
    _, model, info = load_run(run_dir)
    with pytest.raises(ValueError, match="unknown export format 'tflite'; allowed: torchscript, onnx"):
        export_model(model, info, tmp_path, "tflite")


def test_missing_run_directory_is_a_one_line_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"aevb export: error: run directory {tmp_path / 'nope'} does not exist"


def test_corrupt_checkpoint_is_a_one_line_error_naming_the_file(run_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    weights = list_checkpoints(broken)[-1] / "weights.safetensors"
    weights.write_bytes(b"not a safetensors file")
    assert main(["export", str(broken)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aevb export: error: cannot read ") and str(weights) in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_conv_model_exports_with_a_free_batch_size(tmp_path):
    from aevb.config import RunConfig, update
    from aevb.data import build_datasets
    from aevb.models.vae import build_model

    cfg = update(RunConfig(), {"data": {"name": "digits"}, "model": {"arch": "conv", "hidden": [4, 8], "latent_dim": 3}})
    splits, info = build_datasets(cfg.data)
    model = build_model(cfg.model, info).eval()
    export_model(model, info, tmp_path, "torchscript")
    x, z = splits.test[:9], torch.randn(9, 3)
    mu, log_var = torch.jit.load(str(tmp_path / "encoder.pt"))(x)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "decoder.pt"))(z), model.decoder(z))
        torch.testing.assert_close(mu, model.posterior(x).mean)
