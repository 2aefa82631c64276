"""Readable figures and report: label names in the latent scatter, whole-number ticks and labelled colour
bars for tables, several tick labels on a short log-x curve, and a report without None, odd number
formats or a table wider than the page."""

import torch

from aevb.outputs import plots
from aevb.outputs.report import Report, eval_table, format_value, render_html


def test_latent_scatter_legend_shows_label_names():
    points, labels = torch.randn(40, 2), torch.arange(40) % 3
    fig = plots.plot_latent_scatter(points, labels, ("z0", "z1"), label_names=["T-shirt/top", "Trouser", "Pullover"])
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["T-shirt/top", "Trouser", "Pullover"]


def test_fashion_mnist_has_its_ten_label_names():
    from aevb.data.user import FASHION_LABELS

    assert len(FASHION_LABELS) == 10 and FASHION_LABELS[9] == "Ankle boot"


def test_tabular_heat_maps_have_whole_column_ticks_and_a_labelled_colour_bar():
    x = torch.rand(10, 13)
    fig = plots.plot_reconstructions(x, x, (13,))
    ticks = fig.axes[0].get_xticks()
    visible = [t for t in ticks if -0.5 <= t <= 12.5]
    assert visible and all(float(t).is_integer() for t in visible)
    assert fig.axes[-1].get_ylabel() == "value (as the model sees the data)"  # the colour bar's axis


def test_a_short_log_x_training_curve_has_several_tick_labels():
    records = [{"examples": 1455 * (e + 1), "train/elbo": -30.0 + e, "valid/elbo": -29.0 + e, "train/recon": -29.0,
                "train/kl": 1.0} for e in range(3)]
    fig = plots.plot_training_curves(records)
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    labels = [t.get_text() for t, v in zip(ax.get_xticklabels(), ax.get_xticks()) if lo <= v <= hi and t.get_text()]
    assert len(labels) >= 2, labels


def test_report_values_have_no_none_and_seeds_are_plain():
    assert format_value(None) == "\u2014" and format_value(1234, "seed") == "1234" and format_value(1437, "n") == "1,437"
    rows = [("eval.json (test)", {"n": 180, "elbo": -27.4, "log_px": -27.2, "k": 5000, "bits_per_dim": None,
                                  "seed": 1234, "binarization": "dynamic", "measures": "log P(x) of binarized x",
                                  "checkpoint": "last"})]
    html = eval_table(rows)
    grid, details = html.split("<table class='details'>")
    assert "seed" not in grid and "<th>seed</th><td>1234</td>" in details and "None" not in html
    assert grid.count("<th>") == 1 + 5 + 1  # source, the five numeric columns present, the row's source


def test_report_page_styles_keep_tables_inside_the_page():
    page = render_html(Report(title="t", version="0", eval_rows=[("x", {"n": 1})], data={"source": "a" * 400}))
    assert "table.kv td,table.details td{overflow-wrap:anywhere}" in page and "table{max-width:100%}" in page
    assert "white-space:nowrap" in page and format_value(32710.4) == "32,710"  # numbers never break mid-digit


def test_tables_keep_their_column_names_for_the_figures(tmp_path):
    from aevb.config import DataConfig
    from aevb.data import build_datasets

    path = tmp_path / "t.csv"
    path.write_text("alcohol,malic acid,ash,class\n" + "\n".join(f"{i},{i % 3},{i % 5},{i % 2}" for i in range(30)) + "\n")
    splits, info = build_datasets(DataConfig(name=str(path)), "gaussian")
    assert info.feature_names == ["alcohol", "malic acid", "ash"]
    fig = plots.plot_reconstructions(splits.train[:5], splits.train[:5], info.shape, feature_names=info.feature_names)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["alcohol", "malic acid", "ash"]
