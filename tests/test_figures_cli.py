"""`aevb plot`, `aevb sample` and `aevb reconstruct` on a tiny trained run: the PNGs they write
are decoded and their grids counted; bad input gets a one-line error."""

import numpy as np
import pytest
import torch
from conftest import tiny_config
from PIL import Image
from test_plots import grid_blocks, grid_cells

from aevb.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from aevb.training.loop import train

    return train(tiny_config(tmp_path_factory.mktemp("figcli")))


def test_plot_writes_every_applicable_figure_into_the_chosen_folder(run_dir, tmp_path, capsys):
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "p")]) == 0
    names = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert names == sorted(["reconstructions.png", "samples.png", "sample_draws.png", "manifold.png",
                            "traversals.png", "latent.png", "curves.png"])
    assert grid_cells(tmp_path / "p" / "traversals.png") == [(4, 10)]
    assert str(tmp_path / "p" / "curves.png") in capsys.readouterr().out


def test_sample_writes_a_grid_of_n_cells(run_dir, tmp_path):
    out = tmp_path / "s.png"
    assert main(["sample", str(run_dir), "-n", "12", "--out", str(out), "--seed", "3"]) == 0
    assert grid_cells(out) == [(3, 4)]  # 12 samples in ceil(sqrt(12)) = 4 columns


def test_sample_draws_are_binary_pixels_and_seeded(run_dir, tmp_path):
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    for path, seed in ((a, 1), (b, 1), (c, 2)):
        assert main(["sample", str(run_dir), "-n", "9", "--out", str(path), "--draws", "--seed", str(seed)]) == 0
    (mask, pixels), = grid_blocks(a)
    cells = pixels[~mask]  # inside the cells, under gray_r: 0 -> white, 1 -> black, nothing between
    assert set(np.unique(cells).tolist()) == {0.0, 255.0}
    assert grid_cells(a) == [(3, 3)]
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    assert not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(c)))


def test_reconstruct_shows_n_examples_of_the_split_beside_their_reconstructions(run_dir, tmp_path):
    out = tmp_path / "r.png"
    assert main(["reconstruct", str(run_dir), "-n", "7", "--split", "valid", "--out", str(out)]) == 0
    assert grid_cells(out) == [(1, 7), (1, 7)]


@pytest.mark.parametrize("argv, message", [
    (["sample", "{missing}", "-n", "4", "--out", "{tmp}/x.png"], "does not exist"),
    (["sample", "{run}", "-n", "0", "--out", "{tmp}/x.png"], "-n must be a positive"),
    (["reconstruct", "{run}", "-n", "4", "--out", "{tmp}/x.jpg"], "must end in .png"),
    (["plot", "{missing}"], "does not exist"),
    (["report", "{missing}"], "does not exist"),
    (["reconstruct", "{run}", "-n", "1000", "--split", "valid", "--out", "{tmp}/x.png"],
     "-n 1000: the valid split of digits has only 162 examples"),
    (["sample", "{run}", "--which", "latest", "--out", "{tmp}/x.png"], "unknown checkpoint 'latest'"),
])
def test_bad_input_gives_a_one_line_error(run_dir, tmp_path, capsys, argv, message):
    argv = [a.format(missing=tmp_path / "nope", run=run_dir, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"aevb {argv[0]}: error:") and message in err and "\n" not in err


def test_sample_and_reconstruct_write_into_run_dir_plots_by_default(run_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    shutil.rmtree(run / "plots")
    assert main(["sample", str(run), "-n", "6"]) == 0
    assert main(["reconstruct", str(run), "-n", "5"]) == 0
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["reconstructions.png", "samples.png"]
    assert grid_cells(run / "plots" / "samples.png") == [(2, 3)]
    assert grid_cells(run / "plots" / "reconstructions.png") == [(1, 5), (1, 5)]


def test_corrupt_checkpoint_is_reported_with_its_file(run_dir, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    for w in broken.glob("checkpoints/*/weights.safetensors"):
        w.write_bytes(b"not a safetensors file")
    assert main(["sample", str(broken), "-n", "4", "--out", str(tmp_path / "x.png")]) == 2
    assert "weights.safetensors" in capsys.readouterr().err


def test_reconstructions_use_the_model_means(run_dir):
    from aevb.data import build_datasets
    from aevb.training.checkpoint import load_run

    cfg, model, info = load_run(run_dir)
    splits, _ = build_datasets(cfg.data, cfg.model.likelihood)
    x = splits.test[:5]
    rec = model.reconstruct(x)
    expected = torch.sigmoid(model.decoder(model.encoder(x).mean))  # Bernoulli mean at the posterior mean
    assert torch.allclose(rec, expected, atol=1e-6)
