"""mCE against a baseline, checked on hand-made outcomes (closed form)."""

import pytest

from robustlab.core.errors import ConfigError
from robustlab.core.outcomes import Outcomes
from robustlab.evaluate.mce import mce


def _run(clean_correct, noise):
    """4 examples; ``noise`` maps severity -> number of correct examples."""
    parts = [Outcomes({"example_id": [0, 1, 2, 3], "probe": "clean", "kind": "clean", "setting": "none",
                       "status": "robust", "label": 0, "clean_pred": 0, "pred": 0,
                       "correct": [i < clean_correct for i in range(4)],
                       "clean_correct": [i < clean_correct for i in range(4)]})]
    for sev, k in noise.items():
        parts.append(Outcomes({"example_id": [0, 1, 2, 3], "probe": "gaussian_noise", "kind": "transform",
                               "setting": f"severity={sev}", "param": float(sev), "status": "robust",
                               "label": 0, "clean_pred": 0, "pred": 0, "correct": [i < k for i in range(4)],
                               "clean_correct": [i < clean_correct for i in range(4)]}))
    return Outcomes.concat(parts).to_frame()


def test_mce_closed_form():
    model = _run(4, {1: 3, 2: 2})  # errors 0.25, 0.5; clean error 0
    base = _run(3, {1: 2, 2: 0})  # errors 0.5, 1.0; clean error 0.25
    r = mce(model, base)
    assert r["ce"]["gaussian_noise"] == pytest.approx(0.75 / 1.5)
    assert r["relative_ce"]["gaussian_noise"] == pytest.approx((0.25 + 0.5) / (0.25 + 0.75))
    assert r["mce"] == pytest.approx(0.5)


def test_mce_needs_common_examples_and_corruptions():
    with pytest.raises(ConfigError, match="share no corruption"):
        mce(_run(4, {1: 3}), _run(4, {}))


def test_mce_command(tmp_path):
    import json
    import subprocess
    import sys

    for name, (clean, noise) in {"model": (4, {1: 3, 2: 2}), "base": (3, {1: 2, 2: 0})}.items():
        (tmp_path / name).mkdir()
        Outcomes.from_frame(_run(clean, noise)).save(tmp_path / name / "outcomes.parquet")
    r = subprocess.run([sys.executable, "-m", "robustlab.cli", "mce", str(tmp_path / "model"), "--baseline",
                        str(tmp_path / "base"), "--json"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["mce"] == pytest.approx(0.5)
    missing = subprocess.run([sys.executable, "-m", "robustlab.cli", "mce", str(tmp_path), "--baseline",
                              str(tmp_path / "base")], capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "fix:" in missing.stderr and "Traceback" not in missing.stderr
