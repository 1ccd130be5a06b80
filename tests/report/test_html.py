"""build_report writes one self-contained page with every section, embedded figures and no URLs."""

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from robustlab.core.errors import RunError
from robustlab.core.outcomes import Outcomes
from robustlab.report import SECTIONS, build_report


def test_report_has_every_section_and_is_self_contained(run_dir):
    path = build_report(run_dir)
    assert path == run_dir / "report.html" and path.exists()
    html = path.read_text()
    for sid in SECTIONS:
        assert f'id="{sid}"' in html, sid
    for ref in ("http://", "https://", 'src="http', "<script", "<link rel=\"stylesheet", "url(", "@import"):
        assert ref not in html, ref
    srcs = re.findall(r'\ssrc="([^"]*)"', html)
    hrefs = re.findall(r'\shref="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(h.startswith("#") or h == "data:," for h in hrefs)
    # corruption plot, security curve, two example figures
    assert len(srcs) == 4
    png = base64.b64decode(srcs[0].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_report_numbers_and_provenance(run_dir):
    html = build_report(run_dir).read_text()
    assert "87.5%" in html  # clean accuracy 21/24
    assert "fake-suite" in html and "digits-cnn" in html
    assert "scikit-learn bundled digits (https&#58;//scikit-learn.org)" in html  # source shown, URL inert
    assert "26 total · 4 reused · 22 computed" in html and "1 min 23 s" in html
    assert "torch" in html and "2.13.0" in html and "synthetic run for tests" in html
    assert "pgd_linf: {eps: [0.01, 0.03, 0.1, 0.3]}" in html  # suite.yaml verbatim
    assert "pgd_linf.robust_accuracy[eps=0.03]" in html  # metric names for --fail-under
    assert "severity=3" in html  # the middle severity of gaussian_noise is the one shown


def test_text_examples_are_escaped_and_diffed(run_dir):
    html = build_report(run_dir).read_text()
    assert "<mark>wonderfl</mark>" in html and "<mark>wonderful</mark>" in html
    assert "&lt;b&gt;plto&lt;/b&gt;" in html and "<b>plto" not in html


def test_empty_sections_say_so(tmp_path):
    run = tmp_path / "bare"
    ids = np.arange(5)
    Outcomes({"example_id": ids, "probe": "clean", "kind": "clean", "setting": "none", "label": ids % 2,
              "clean_pred": ids % 2, "pred": ids % 2, "clean_correct": True, "correct": True}).save(
        run / "outcomes.parquet")
    html = build_report(run).read_text()
    for sid in SECTIONS:
        assert f'id="{sid}"' in html, sid
    for line in ("No transform probes in this run.", "No attack probes in this run.",
                 "No examples were saved in this run.", "summary.json is missing"):
        assert line in html, line
    assert "data:image" not in html


def test_warnings_are_highlighted(tmp_path, make_run):
    run = make_run(tmp_path, text=False)
    frame = Outcomes.load(run / "outcomes.parquet").to_frame()
    at = (frame.probe == "pgd_linf") & (frame.param == 0.3) & frame.clean_correct
    frame.loc[at, "correct"] = True  # 87.5% robust at eps 0.3: non-monotone and masking-like
    frame.loc[at, "status"] = "robust"
    Outcomes.from_frame(frame).save(run / "outcomes.parquet")
    html = build_report(run).read_text()
    assert html.count('<li class="warning">') >= 2
    assert 'class="card alert"' in html and '<span class="pill warning">' in html
    # warnings come first in the list
    first = html.index('<ul class="checks">')
    assert html.index('class="warning"', first) < html.index('class="ok"', first)


def test_checks_from_summary_are_shown(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["checks"] = [{"check": "softmax_outputs", "severity": "warning", "probe": None,
                          "message": "model returns probabilities: pass logits"}]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    html = build_report(run_dir, out=run_dir / "other.html").read_text()
    assert "model returns probabilities: pass logits" in html and (run_dir / "other.html").exists()


def test_falls_back_to_job_files(run_dir):
    frame = Outcomes.load(run_dir / "outcomes.parquet").to_frame()
    for i, (_, part) in enumerate(frame.groupby("job")):
        Outcomes.from_frame(part).save(run_dir / "jobs" / f"{i}.parquet")
    (run_dir / "outcomes.parquet").unlink()
    html = build_report(run_dir).read_text()
    assert "outcomes.parquet is missing" in html and "87.5%" in html


def test_missing_run_dir_raises(tmp_path):
    with pytest.raises(RunError):
        build_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError) as err:
        build_report(tmp_path / "empty")
    assert err.value.fix


def test_certificates_section_shows_the_gap_to_the_strongest_attack(tmp_path, make_run):
    run = make_run(tmp_path, text=False)
    frame = Outcomes.load(run / "outcomes.parquet").to_frame()
    atk = frame[(frame.probe == "pgd_linf") & (frame.param == 0.03)]
    cert = atk.copy()
    cert["probe"], cert["kind"], cert["job"] = "ibp", "certifier", "ibp-eps=0.03"
    # certify the first 10 robust examples: certified accuracy 10/24 below the attack's robust accuracy
    order = np.cumsum(cert["correct"].to_numpy())
    cert["status"] = np.where(cert["correct"] & (order <= 10), "certified", np.where(cert["correct"], "robust",
                                                                                        "broken"))
    Outcomes.from_frame(pd.concat([frame, cert], ignore_index=True)).save(run / "outcomes.parquet")
    html = build_report(run).read_text()
    assert "<h2>Certificates</h2>" in html and "strongest attack" in html
    robust = atk["correct"].mean()
    gap = robust - 10 / 24
    assert f"{100 * 10 / 24:.1f}%" in html and f"{100 * gap:.1f}%" in html
    assert html.count("data:image/png;base64,") >= 5  # + the certified-vs-attacked plot
