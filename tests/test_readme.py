"""The README stays true: its Python tour runs, and .ci/run runs exactly its test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_install_and_demo_then_tests():
    bash = _blocks("bash")
    assert "robustlab demo" in bash[0] and "torch==2.13.0" in bash[0]
    assert "pytest" in bash[1] and "torch==2.13.0" in bash[1]


def test_ci_runs_the_readme_test_command():
    test_command = _blocks("bash")[1].strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci


def test_python_tour_runs(capsys):
    code = _blocks("python")[0]
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "robust accuracy" in out
