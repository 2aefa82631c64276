"""The HTML report: self-contained (no scripts, no external resources, images as data URIs that
decode to PNGs), escaped, with the evaluation table; opened in headless Chromium when present."""

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import tiny_config
from PIL import Image

from aevb import __version__
from aevb.cli import main
from aevb.outputs.report import Report, render_html

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class Page(HTMLParser):
    """Tags with their attributes, text and table rows of an HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.text, self.rows, self._row = [], [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._row.append("")  # one entry per cell, empty cells included

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._row and data.strip():
            self._row[-1] = (self._row[-1] + " " + data.strip()).strip()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from aevb.training.loop import train

    return train(tiny_config(tmp_path_factory.mktemp("report")))


@pytest.fixture(scope="module")
def report(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    return out


def test_report_is_self_contained_and_every_image_is_a_png(report):
    text = report.read_text(encoding="utf-8")
    page = Page(text)
    names = {t for t, _ in page.tags}
    assert not names & {"script", "link", "iframe", "object", "embed", "base"}
    assert "url(" not in text and "@import" not in text
    images = [a["src"] for t, a in page.tags if t == "img"]
    # reconstructions, samples, sample_draws, manifold, traversals, latent, curves
    assert len(images) == 7
    for src in images:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            im.verify()
            assert im.format == "PNG"
    for tag, attrs in page.tags:
        for key, value in attrs.items():
            assert not (key in ("src", "href") and not value.startswith("data:")), (tag, key, value)


def test_report_shows_config_data_version_and_the_test_elbo(run_dir, report):
    page = Page(report.read_text(encoding="utf-8"))
    text = " ".join(page.text)
    assert f"aevb {__version__}" in text
    summary = json.loads((run_dir / "summary.json").read_text())["test"]
    row = next(r for r in page.rows if r[0].startswith("summary.json (test"))
    header = next(r for r in page.rows if r[0] == "source")
    assert row[header.index("ELBO (nats)")] == f"{summary['elbo']:.4g}"
    assert row[header.index("KL(q||p)")] == f"{summary['kl']:.4g}"
    assert ["shape", "8, 8"] in page.rows and ["name", "digits"] in page.rows  # data.json
    assert ["latent_dim", "4"] in page.rows and ["optimizer", "adam"] in page.rows  # resolved config


def test_report_includes_eval_json_columns(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    ev = {"n": 180, "elbo": -26.5, "elbo_se": 0.25, "recon": -26.0, "kl": 0.5, "log_px": -25.93,
          "log_px_se": 0.24, "k": 20, "bits_per_dim": 0.5845, "active_units": 3}
    (run / "eval.json").write_text(json.dumps(ev))
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    page = Page(out.read_text(encoding="utf-8"))
    header = next(r for r in page.rows if r[0] == "source")
    row = next(r for r in page.rows if r[0] == "eval.json")
    assert [h for h in header[1:] if h != "training bound"] == ["n", "ELBO (nats)", "± s.e.", "E_q log p(x|z)", "KL(q||p)",
                                                                "log p(x) (nats)", "± s.e.", "k", "bits/dim", "active units"]
    assert row[header.index("log p(x) (nats)")] == "-25.93" and row[header.index("bits/dim")] == "0.5845"
    assert row[header.index("active units")] == "3"


def test_everything_from_the_run_is_html_escaped():
    evil = "<script>alert('x')</script>"
    page_text = render_html(Report(title=evil, version="1<2", config={"data": {"name": "<img src=x onerror=y>"}},
                                   data={"a&b": '"q"'}, eval_rows=[("eval.json", {"elbo": -1.5, "odd<key": "<b>"})],
                                   notes=[evil]))
    page = Page(page_text)
    assert all(t not in ("script", "img") for t, _ in page.tags)
    text = " ".join(page.text)
    for raw in (evil, "<img src=x onerror=y>", "a&b", '"q"', "odd<key", "1<2"):
        assert raw in text  # shown as text, not parsed as markup
    assert "&lt;script&gt;" in page_text and "&lt;img src=x onerror=y&gt;" in page_text


def test_report_falls_back_to_saved_pngs_when_the_checkpoint_is_damaged(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    for w in run.glob("checkpoints/*/weights.safetensors"):
        w.write_bytes(b"damaged")
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aevb report: warning: the model could not be loaded")
    assert "weights.safetensors" in err[0]
    page = Page(out.read_text(encoding="utf-8"))
    assert len([a for t, a in page.tags if t == "img"]) == len(list((run / "plots").glob("*.png"))) == 6
    assert any("could not be loaded" in s and "weights.safetensors" in s for s in page.text)


def test_report_with_a_damaged_config_json_is_written_but_warns_and_exits_1(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "config.json").write_text("{not json")
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"aevb report: warning: {run / 'config.json'} could not be read" in err and "Traceback" not in err
    page = Page(out.read_text(encoding="utf-8"))
    assert any("config.json could not be read" in t for t in page.text)
    assert next(r for r in page.rows if r[0].startswith("summary.json (test"))  # the rest of the page is there


def test_report_shows_per_split_eval_json_test_first_and_the_training_bound(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    summary = json.loads((run / "summary.json").read_text())
    summary["train_bound"] = "beta=4 bound (not an ELBO)"
    (run / "summary.json").write_text(json.dumps(summary))
    ev = {"train": {"split": "train", "n": 1437, "log_px": -24.5, "k": 5, "by_label": {"0": {"n": 3}}},
          "test": {"split": "test", "n": 180, "log_px": -25.93, "k": 20}}
    (run / "eval.json").write_text(json.dumps(ev))
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    grid = text[text.index("<table class='grid'>"):]
    grid = grid[:grid.index("</table>")]
    cells = [re.findall(r"<t[hd]>(.*?)</t[hd]>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", grid)]  # empty cells kept
    header, rows = cells[0], {c[0]: c for c in cells[1:]}
    assert list(rows) == ["summary.json (test, end of training)", "eval.json (test)", "eval.json (train)"]
    assert header[1] == "training bound"
    assert rows["summary.json (test, end of training)"][1] == "beta=4 bound (not an ELBO)"
    assert rows["eval.json (test)"][header.index("log p(x) (nats)")] == "-25.93"
    assert rows["eval.json (train)"][header.index("n")] == "1,437"


def test_report_names_the_training_bound_and_omits_the_column_for_older_runs(report, run_dir, tmp_path):
    page = Page(report.read_text(encoding="utf-8"))
    header = next(r for r in page.rows if r[0] == "source")
    row = next(r for r in page.rows if r[0].startswith("summary.json"))
    assert row[header.index("training bound")] == "ELBO"  # the fixture trains with beta = 1
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    summary = json.loads((old / "summary.json").read_text())
    del summary["train_bound"]  # written before summary.json named the training bound
    (old / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "old.html"
    assert main(["report", str(old), "--out", str(out)]) == 0
    header = next(r for r in Page(out.read_text(encoding="utf-8")).rows if r[0] == "source")
    assert "training bound" not in header


CHECK_SCRIPT = """<script>
window.__errors = [];
window.addEventListener('error', e => __errors.push('error: ' + (e.message || (e.target && e.target.src))), true);
document.addEventListener('securitypolicyviolation', e => __errors.push('csp: ' + e.violatedDirective + ' ' + e.blockedURI));
for (const level of ['error', 'warn']) {
  const original = console[level];
  console[level] = (...args) => { __errors.push(level + ': ' + args.join(' ')); original.apply(console, args); };
}
window.addEventListener('load', () => {
  const images = [...document.images].map(i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}));
  const pre = document.createElement('pre');
  pre.id = 'aevb-check';
  pre.textContent = JSON.stringify({errors: __errors, images: images});
  document.body.appendChild(pre);
});
</script>"""


def _chromium(*args, user_data_dir):
    return subprocess.run([str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}",
                           "--enable-logging=stderr", "--v=0", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (/usr/bin/chromium)")
def test_report_opens_in_headless_chromium_with_no_errors_and_every_image_decoded(report, tmp_path):
    text = report.read_text(encoding="utf-8")
    # The report has no scripts; the checking page adds one, allowed by one more CSP source.
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    assert csp in text
    checked = text.replace(csp, csp + "; script-src 'unsafe-inline'").replace("</title>", "</title>" + CHECK_SCRIPT, 1)
    check_page = tmp_path / "check.html"
    check_page.write_text(checked, encoding="utf-8")

    done = _chromium("--virtual-time-budget=10000", "--dump-dom", check_page.as_uri(),
                     user_data_dir=tmp_path / "profile1")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = Page(done.stdout)
    result = json.loads(next(s for s in dom.text if s.startswith('{"errors"')))
    assert result["errors"] == []
    assert len(result["images"]) == 7
    assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in result["images"]), result["images"]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []

    shot = tmp_path / "report.png"
    done = _chromium(f"--screenshot={shot}", "--window-size=1200,2000", report.resolve().as_uri(),
                     user_data_dir=tmp_path / "profile2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert [line for line in done.stderr.splitlines() if ":CONSOLE" in line] == []
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1200, 2000)
        assert len(im.convert("L").getcolors(1 << 16)) > 20  # not a blank page
