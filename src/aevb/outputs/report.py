"""A run report: one self-contained HTML page (figures as base64 PNG data URIs, no scripts,
no external resources) with the evaluation table, the data description, the training curve,
the resolved configuration and the package version. Every string from the run is HTML-escaped.

``gather_report(run_dir)`` reads a run directory into a ``Report``; ``render_html(report)`` is a
pure function of it.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

# (key, column heading) of the evaluation table, in this order; other keys follow as they come.
EVAL_COLUMNS = [("train_bound", "training bound"), ("n", "n"), ("elbo", "ELBO (nats)"), ("elbo_se", "± s.e."), ("recon", "E_q log p(x|z)"),
                ("kl", "KL(q||p)"), ("log_px", "log p(x) (nats)"), ("log_px_se", "± s.e."), ("k", "k"),
                ("bits_per_dim", "bits/dim"), ("active_units", "active units")]
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CAPTIONS = {
    "reconstructions": "Test data (left) and the means of p(x|z) at the posterior mean (right), cell by cell.",
    "samples": "Means of p(x|z) for z drawn from the prior.",
    "sample_draws": "Draws x ~ p(x|z) for z drawn from the prior.",
    "manifold": "Decoded grid of z through the prior's inverse CDF (AEVB figure 4).",
    "samples_per_class": "Conditional model: one row per class y, the means of p(x|z,y) for z drawn from p(z|y).",
    "prior_components": "The learned prior's heaviest components, one per row: the component itself (VampPrior "
                        "pseudo-input, or the decoded mean), then decoded draws from it.",
    "traversals": "One row per latent dimension, most active first; z_d runs over prior quantiles, others 0.",
    "latent": "Posterior means of the test set coloured by label (PCA when latent_dim > 2).",
    "latent_tsne": "Posterior means of the test set, t-SNE.",
    "curves": "Bound, reconstruction and KL terms against training examples seen (log axis; AEVB figure 2).",
}


@dataclass
class Report:
    """Everything the page shows; strings are raw (``render_html`` escapes them)."""

    title: str
    version: str
    config: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    eval_rows: list = field(default_factory=list)      # [(source, {key: value})]
    last_metrics: dict = field(default_factory=dict)
    figures: list = field(default_factory=list)        # [(name, png bytes)]
    notes: list = field(default_factory=list)
    problems: list = field(default_factory=list)       # damaged inputs: the page is partial (the CLI warns)


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


PLAIN_INT_KEYS = ("seed", "split_seed", "step", "best_step", "k", "latent_dim", "epochs")  # identifiers, not counts


def format_value(v, key: str = "") -> str:
    """Numbers to 4 significant digits (counts with thousands separators; seeds and steps plain), NaN as
    'nan', a missing value as an em dash (never 'None'), anything else as str."""
    if v is None or v == "":
        return "\u2014"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v) if key in PLAIN_INT_KEYS or key.endswith("seed") else f"{v:,}"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(format_value(u) for u in v)
    if isinstance(v, dict):
        return ", ".join(f"{k} {format_value(u)}" for k, u in v.items())
    return str(v)


def _kv_table(d: dict) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(format_value(v, str(k)))}</td></tr>" for k, v in d.items())
    return f"<table class='kv'>{rows}</table>"


def eval_table(rows: list) -> str:
    """One row per (source, values) pair with the numeric columns of EVAL_COLUMNS present in any row;
    every other value (what the numbers measure, p(x|z), protocol, seed, ...) goes to a details table
    below, one column per source, so that the grid stays narrow enough for a 1200 px page."""
    keys = [k for k, _ in EVAL_COLUMNS if any(k in r for _, r in rows)]
    heads = dict(EVAL_COLUMNS)
    head = "<tr><th>source</th>" + "".join(f"<th>{_esc(heads.get(k, k))}</th>" for k in keys) + "</tr>"
    body = "".join("<tr><th>" + _esc(src) + "</th>" + "".join(
        f"<td>{_esc(format_value(r.get(k), k))}</td>" for k in keys) + "</tr>" for src, r in rows)
    grid = f"<div class='scroll'><table class='grid'>{head}{body}</table></div>"
    extra = sorted({k for _, r in rows for k in r if k not in heads})
    with_extra = [(src, r) for src, r in rows if any(k in r for k in extra)]
    if not extra or not with_extra:
        return grid
    head = "<tr><th>detail</th>" + "".join(f"<th>{_esc(src)}</th>" for src, _ in with_extra) + "</tr>"
    body = "".join(f"<tr><th>{_esc(k)}</th>" + "".join(f"<td>{_esc(format_value(r.get(k), k))}</td>"
                                                       for _, r in with_extra) + "</tr>" for k in extra)
    return grid + f"<table class='details'>{head}{body}</table>"


def _config_html(cfg: dict) -> str:
    parts = []
    for section, values in cfg.items():
        if isinstance(values, dict):
            parts.append(f"<h3>[{_esc(section)}]</h3>" + _kv_table(values))
        else:
            parts.append(_kv_table({section: values}))
    return "".join(parts)


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}h3{font-size:1em;margin:.8em 0 .3em}.meta{color:#666}table{border-collapse:collapse;
margin:.4em 0;font-size:.92em}th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left}
table.grid td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}table{max-width:100%}
table.kv td,table.details td{overflow-wrap:anywhere}.scroll{overflow-x:auto;max-width:100%}th{background:#f6f6f6;font-weight:600}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}.note{color:#8a4b00}
"""


def render_html(report: Report) -> str:
    """The page for ``report``: self-contained HTML5 (inline CSS, images as data: URIs, no scripts)."""
    figs = {name: png for name, png in report.figures}
    sections = [f"<h1>{_esc(report.title)}</h1><p class='meta'>aevb {_esc(report.version)} · report written "
                f"{_esc(datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))}</p>"]
    sections += [f"<p class='note'>{_esc(n)}</p>" for n in report.notes]
    sections.append("<h2>Evaluation</h2>" + (eval_table(report.eval_rows) if report.eval_rows else
                    "<p>No summary.json or eval.json in this run directory (run <code>aevb evaluate</code>).</p>"))
    sections.append("<h2>Data</h2>" + (_kv_table(report.data) if report.data else "<p>no data.json</p>"))
    sections.append("<h2>Training</h2>")
    if "curves" in figs:
        sections.append(_figure("curves", figs.pop("curves")))
    if report.last_metrics:
        sections.append("<h3>last metrics record</h3>" + _kv_table(report.last_metrics))
    sections.append("<h2>Figures</h2>" + "".join(_figure(n, png) for n, png in figs.items()))
    sections.append("<h2>Resolved configuration</h2>" + _config_html(report.config))
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_esc(report.title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(sections) + "\n</body></html>\n")


def _figure(name: str, png: bytes) -> str:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    caption = CAPTIONS.get(name, name)
    return (f"<figure id='fig-{_esc(name)}'><img src='{uri}' alt='{_esc(name)}'>"
            f"<figcaption><b>{_esc(name)}</b>: {_esc(caption)}</figcaption></figure>")


def _read_json(path: Path, notes: list, problems: list | None = None):
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        notes.append(f"{path.name} could not be read: {e}")
        if problems is not None:
            problems.append(f"{path} could not be read: {e}")
        return None


def _eval_splits(ev: dict) -> list:
    """(split, values) pairs of eval.json, test first: per-split {"test": {...}} or one flat result."""
    if isinstance(ev.get("split"), str) or not any(isinstance(v, dict) for v in ev.values()):
        flat = {k: v for k, v in ev.items() if not isinstance(v, (dict, list))}
        return [(flat.get("split"), flat)] if flat else []
    nested = [(k, v) for k, v in ev.items() if isinstance(v, dict)]
    return sorted(nested, key=lambda kv: (kv[0] != "test", kv[0] != "valid"))


def eval_rows(run_dir: Path, notes: list) -> list:
    """Rows for the evaluation table from summary.json ({"test": {...}, "train_bound": "ELBO", ...})
    and eval.json (per split, {"test": {...}, "train": {...}}, or one flat result); test rows first.

    ``train_bound`` (the name of the bound trained on, e.g. "ELBO" or "beta=4 bound (not an ELBO)")
    is shown in the summary rows when summary.json has it.
    """
    rows = []
    summary = _read_json(run_dir / "summary.json", notes)
    if isinstance(summary, dict):
        bound = summary.get("train_bound")
        bound = {"train_bound": bound} if isinstance(bound, str) and bound else {}
        for split, values in sorted(summary.items(), key=lambda kv: kv[0] != "test"):
            if isinstance(values, dict):
                rows.append((f"summary.json ({split}, end of training)", {**bound, **values}))
    ev = _read_json(run_dir / "eval.json", notes)
    if isinstance(ev, dict):
        for split, values in _eval_splits(ev):
            measure = values.get("measure") if isinstance(values.get("measure"), dict) else {}
            values = {k: v for k, v in values.items() if not isinstance(v, (dict, list))}
            if measure.get("what"):
                values["measures"] = measure["what"]
            if measure.get("bits_per_dim_label") and values.get("bits_per_dim") is not None:
                values["bits/dim is"] = measure["bits_per_dim_label"]
            rows.append(("eval.json" + (f" ({split})" if split else ""), values))
    return rows


def gather_report(run_dir: str | Path, which: str = "last", seed: int = 0) -> Report:
    """Read a run directory; figures are drawn afresh from the checkpoint (or, when it cannot be
    loaded, taken from the PNGs already in run_dir/plots, with a note saying so)."""
    from aevb import __version__
    from aevb.outputs.plots import figure_png
    from aevb.training.metrics import read_metrics

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise OSError(f"run directory {run_dir} does not exist")
    notes: list = []
    problems: list = []
    config = _read_json(run_dir / "config.json", notes, problems) or {}
    data = _read_json(run_dir / "data.json", notes, problems) or {}
    records = read_metrics(run_dir / "metrics.jsonl")
    if isinstance(data, dict) and data.get("missing") == "mask":
        notes.append(f"data.missing = mask: {float(data.get('missing_fraction', 0)):.1%} of the entries are missing; "
                     "every bound, log p(x) and bits/dim here is the log-likelihood of the observed entries only")
    model_cfg = config.get("model") if isinstance(config, dict) else None
    if isinstance(model_cfg, dict) and model_cfg.get("conditional"):
        notes.append("model.conditional = true: every bound and log-likelihood here is of log p(x|y), given each "
                     "example's label y")
    report = Report(title=f"aevb run {run_dir.resolve().name}", version=__version__, config=config, data=data,
                    eval_rows=eval_rows(run_dir, notes), last_metrics=records[-1] if records else {}, notes=notes,
                    problems=problems)
    try:
        from aevb.outputs.figures import BASIC, draw_figures, load_context

        ctx = load_context(str(run_dir), which, seed)
        report.figures = [(n, figure_png(f)) for n, f in draw_figures(ctx, BASIC + ("sample_draws",))]
        notes += [f"figure {name} skipped: {reason}" for name, reason in ctx.skipped.items()]
    except (RuntimeError, ValueError, OSError, KeyError) as e:
        from aevb.data.excerpt import redact

        # the page gets no excerpt of a file aevb did not write; the terminal gets the (short, masked) message
        notes.append(f"figures taken from {run_dir / 'plots'}: the model could not be loaded ({redact(str(e))})")
        problems.append(f"the model could not be loaded ({e}); figures taken from {run_dir / 'plots'}")
        report.figures = [(p.stem, p.read_bytes()) for p in sorted((run_dir / "plots").glob("*.png"))]
    return report


def write_report(run_dir: str | Path, out: str | Path | None = None, which: str = "last", seed: int = 0) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default RUN_DIR/report.html); returns the path."""
    return write_report_checked(run_dir, out, which, seed)[0]


def write_report_checked(run_dir: str | Path, out: str | Path | None = None, which: str = "last",
                         seed: int = 0) -> tuple[Path, list]:
    """``write_report`` that also returns the problems found (damaged checkpoint or JSON files):
    the page is written all the same, partial, with notes saying what is missing."""
    report = gather_report(run_dir, which, seed)
    out = Path(out) if out else Path(run_dir) / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(report), encoding="utf-8")
    return out, report.problems
