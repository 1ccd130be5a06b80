"""The ``robustlab`` command: demo, run, list, report, baseline, reproduce.

User errors (a bad suite, a missing file, an unknown probe) print one message with the fix and exit
with status 2 — no traceback. Thread counts are set before torch loads (a 5-50x trap on 2 cores).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from robustlab.core.errors import RobustlabError  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure, certify and improve the robustness of ML models.")
console = Console(stderr=False)
err_console = Console(stderr=True, soft_wrap=True)

EXECUTOR_HELP = "where jobs run: 'inprocess' (default) or 'dask' (a loopback LocalCluster, or --scheduler)"


def _setup(threads: int, device: str) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise RobustlabError(f"unknown --device {device!r}", fix="use --device cpu or --device cuda")


def _parse_gates(items: list[str]) -> dict[str, float]:
    from robustlab.evaluate.metrics import parse_fail_under

    return dict(parse_fail_under(s) for s in items)


def _run(suite, out: Path | None, resume: Path | None, executor: str, scheduler: str | None,
         device: str, threads: int, fail_under: list[str], quiet: bool) -> None:
    from robustlab.evaluate.executors import make_executor
    from robustlab.evaluate.runner import run_suite

    _setup(threads, device)
    gates = _parse_gates(fail_under)
    with make_executor(executor, scheduler) as ex:
        result = run_suite(suite, out_dir=out, resume=resume, executor=ex, device=device,
                           threads=None if executor == "dask" else threads, fail_under=gates,
                           progress=not quiet, console=console)
    _print_summary(result)
    if result.failures:
        err_console.print("[bold red]fail-under:[/] " + "; ".join(result.failures))
        raise typer.Exit(1)


def _print_summary(result) -> None:
    s = result.summary
    m = s["metrics"]
    table = Table(title=f"{s['suite']['name']}: {s['model']['name']} on {s['data']['name']} (n={s['data']['n']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(m):
        if key == "clean_accuracy" or key.endswith(("mean_accuracy", "min_accuracy")):
            table.add_row(key, f"{m[key]:.4f}" if isinstance(m[key], float) else str(m[key]))
    console.print(table)
    for c in s.get("checks", []):
        if c.get("severity") == "warning":
            console.print(f"[yellow]check {c.get('check')}:[/] {c.get('message')}")
    j = s["jobs"]
    console.print(f"jobs: {j['total']} total, {j['reused']} reused from disk, {j['computed']} computed; "
                  f"wall {s['wall_seconds']:.1f} s")
    console.print(f"report: [bold]{result.run_dir / 'report.html'}[/]")


@app.command()
def demo(
    out: Path | None = typer.Option(None, "--out", help="run directory (default robustlab-runs/demo-TIME)"),
    resume: Path | None = typer.Option(None, "--resume", help="continue an interrupted run in this directory"),
    executor: str = typer.Option("inprocess", "--executor", help=EXECUTOR_HELP),
    scheduler: str | None = typer.Option(None, "--scheduler", help="address of a running Dask scheduler"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    threads: int = typer.Option(2, "--threads", help="torch threads in this process"),
    quick: bool = typer.Option(False, "--quick", help="a seconds-long smoke version (quick model, 64 images)"),
    text: bool = typer.Option(False, "--text", help="run the text demo (TF-IDF classifier, typos) instead"),
    fail_under: list[str] = typer.Option([], "--fail-under", help="METRIC=VALUE: exit 1 if a metric is below"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Train or load the zoo model and run the default suite; prints where the report is."""
    from robustlab.evaluate.suite import builtin_suite

    name = "text-demo" if text else ("demo-quick" if quick else "demo")
    suite = None if resume else builtin_suite(name)
    _run(suite, out, resume, executor, scheduler, device, threads, fail_under, quiet)


@app.command()
def run(
    suite_file: Path | None = typer.Argument(None, help="the suite YAML file (optional with --resume)"),
    out: Path | None = typer.Option(None, "--out", help="run directory (default robustlab-runs/NAME-TIME)"),
    resume: Path | None = typer.Option(None, "--resume", help="continue an interrupted run in this directory"),
    executor: str = typer.Option("inprocess", "--executor", help=EXECUTOR_HELP),
    scheduler: str | None = typer.Option(None, "--scheduler", help="address of a running Dask scheduler"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    threads: int = typer.Option(2, "--threads", help="torch threads in this process"),
    fail_under: list[str] = typer.Option([], "--fail-under", help="METRIC=VALUE: exit 1 if a metric is below"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
) -> None:
    """Run a suite file: model x data x probes -> outcomes, summary.json and report.html."""
    from robustlab.evaluate.suite import load_suite

    if suite_file is None and resume is None:
        raise RobustlabError("give a suite file or --resume RUN_DIR", fix="robustlab run my-suite.yaml")
    suite = load_suite(suite_file) if suite_file else None
    _run(suite, out, resume, executor, scheduler, device, threads, fail_under, quiet)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Every registered probe, grouped by kind."""
    from robustlab.core import registry

    avail = registry.available()
    if as_json:
        print(json.dumps({k: sorted(v) for k, v in avail.items()}, indent=1))
        return
    for kind, entries in avail.items():
        table = Table(title=f"{kind}s", title_justify="left")
        table.add_column("name")
        table.add_column("what it is")
        for name, obj in entries.items():
            doc = (obj.__doc__ or "").strip().splitlines()
            table.add_row(name, doc[0] if doc else "")
        console.print(table)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run directory")) -> None:
    """Rebuild report.html of a finished run from its outcomes."""
    from robustlab.report.html import build_report

    if not (run_dir / "outcomes.parquet").exists():
        raise RobustlabError(f"{run_dir} has no outcomes.parquet",
                             fix=f"finish the run first: robustlab run --resume {run_dir}")
    path = build_report(run_dir)
    console.print(f"report: [bold]{path}[/]")


@app.command()
def mce(
    run_dir: Path = typer.Argument(..., help="the run of the model"),
    baseline: Path = typer.Option(..., "--baseline", help="the run of the baseline model (same suite)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """mCE and relative mCE of a run's corruptions against a baseline run (Hendrycks & Dietterich 2019)."""
    from robustlab.core.outcomes import Outcomes
    from robustlab.evaluate.mce import mce as compute

    frames = []
    for d in (run_dir, baseline):
        if not (d / "outcomes.parquet").exists():
            raise RobustlabError(f"{d} has no outcomes.parquet",
                                 fix=f"finish the run first: robustlab run --resume {d}")
        frames.append(Outcomes.load(d / "outcomes.parquet").to_frame())
    result = compute(*frames)
    if as_json:
        print(json.dumps(result, indent=1))
        return
    table = Table(title=f"corruption error of {run_dir.name} relative to {baseline.name}")
    for col in ("corruption", "CE", "relative CE"):
        table.add_column(col)
    for c in result["corruptions"]:
        rel = result["relative_ce"].get(c)
        table.add_row(c, f"{result['ce'][c]:.3f}", "-" if rel is None else f"{rel:.3f}")
    console.print(table)
    console.print(f"mCE {result['mce']:.3f}   relative mCE {result['relative_mce']:.3f}")


@app.command()
def leaderboard(
    metric: str = typer.Option("clean_accuracy", "--metric", help="the metric to rank by (a summary.json key)"),
    suite: str | None = typer.Option(None, "--suite", help="only runs of this suite name"),
    limit: int = typer.Option(20, "--limit", help="rows to show"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Runs recorded in the DuckDB store, ranked by a metric."""
    from robustlab.evaluate.store import leaderboard as board
    from robustlab.evaluate.store import store_path

    rows = board(metric, suite=suite, limit=limit)
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    table = Table(title=f"{metric} ({store_path()})")
    for col in ("value", "suite", "model", "data", "n", "finished", "run_dir"):
        table.add_column(col)
    for r in rows:
        table.add_row(f"{r['value']:.4f}", str(r["suite"]), str(r["model"]), str(r["data"]), str(r["n"]),
                      str(r["finished"]), str(r["run_dir"]))
    console.print(table)


@app.command()
def baseline(
    data: str = typer.Option("shapeworld", "--data", help="the dataset (shapeworld)"),
    styles: str = typer.Option("style_sketch,style_cartoon,style_painting,style_weather,style_handmade,"
                               "style_tattoo,style_texture", "--styles", help="comma-separated style_* transforms"),
    severities: str = typer.Option("3", "--severities", help="comma-separated severities, e.g. 3 or 1,3,5"),
    out: Path = typer.Option(..., "--out", help="the baseline JSON file to write"),
    quick: bool = typer.Option(False, "--quick", help="a seconds-long tiny family (for tests)"),
    seed: int = typer.Option(0, "--seed", help="seeds data, subsets, models and styles"),
    size: int = typer.Option(32, "--size", help="image side (the suite's data.options.size)"),
    arch: str = typer.Option("resnet", "--arch", help="the family: 'resnet' (narrow ShapeWorld ResNets) or 'cnn'"),
    threads: int = typer.Option(2, "--threads", help="torch threads in this process"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train a baseline family of small CNNs and save its per-style ID->OOD lines (for a suite's `baseline:`)."""
    from robustlab.evaluate.baseline import make_baseline, save_baseline

    _setup(threads, "cpu")
    names = [s.strip() for s in styles.split(",") if s.strip()]
    try:
        sev = [float(s) for s in severities.split(",") if s.strip()]
    except ValueError:
        raise RobustlabError(f"--severities {severities!r} is not a comma-separated list of numbers",
                             fix="e.g. --severities 3 or --severities 1,3,5") from None
    if quiet:
        result = make_baseline(data, names, sev, quick=quick, seed=seed, size=size, arch=arch)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as bar:
            task = bar.add_task("baseline family: data and styles", total=None)

            def step(done: int, total: int, label: str) -> None:
                bar.update(task, completed=done, total=total, description=f"baseline family: {label}")

            result = make_baseline(data, names, sev, quick=quick, seed=seed, size=size, arch=arch,
                                       progress=step)
    path = save_baseline(result, out)
    table = Table(title=f"baseline family on {result.dataset} ({len(result.models)} models, {result.scale} fit)")
    for col in ("shift", "setting", "slope", "intercept", "R²", "family OOD accuracy"):
        table.add_column(col)
    for sh in result.shifts:
        table.add_row(sh.probe, sh.setting, f"{sh.fit.slope:.3f}", f"{sh.fit.intercept:.3f}", f"{sh.fit.r2:.3f}",
                      f"{min(sh.ood_acc):.3f} .. {max(sh.ood_acc):.3f}")
    console.print(table)
    for note in result.notes:
        console.print(note)
    console.print(f"baseline: [bold]{path}[/]  (use it in a suite as `baseline: {path}`)")


@app.command()
def reproduce(
    key: str | None = typer.Argument(None, help="paper key (see --list)"),
    list_papers: bool = typer.Option(False, "--list", help="all 41 seed papers with key, title and status"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    quick: bool = typer.Option(False, "--quick", help="seconds-long smoke mode on tiny data"),
    threads: int = typer.Option(1, "--threads", help="torch threads (1 is fastest for the tiny models used)"),
) -> None:
    """Run a seed paper's reproduction and check its claims (exit 0 held, 1 a claim failed, 2 could not run)."""
    from robustlab.papers import catalog

    if list_papers or key is None:
        rows = catalog.listing()
        if as_json:
            print(json.dumps(rows, indent=1))
        else:
            table = Table(title="seed papers")
            for col in ("#", "key", "status", "title"):
                table.add_column(col)
            for r in rows:
                table.add_row(str(r["number"]), r["key"], r["status"], r["title"])
            console.print(table)
        return
    _setup(threads, "cpu")
    if as_json:  # keep stdout for the one JSON object: progress goes to stderr
        import contextlib

        with contextlib.redirect_stdout(sys.stderr):
            result = catalog.run(key, quick=quick)
    else:
        result = catalog.run(key, quick=quick)
    if as_json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        catalog.print_result(result, console)
    raise typer.Exit(result.exit_code)


def main() -> None:
    """Entry point: run the app, turning robustlab's user errors into one clean message."""
    try:
        rc = app(standalone_mode=False)  # click returns the exit code of typer.Exit here
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except RobustlabError as exc:
        err_console.print(f"[bold red]error:[/] {exc.message}")
        if exc.fix:
            err_console.print(f"[bold]fix:[/] {exc.fix}")
        code = 130 if type(exc).__name__ == "RunInterrupted" else 2
        sys.exit(code)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
