"""The runner: suite -> (probe, setting, shard) jobs -> executor -> outcomes on disk -> summary + report.

Each finished job's outcomes are written to ``RUN_DIR/jobs/<job>.parquet`` atomically the moment it
finishes, so an interrupted run (Ctrl-C, SIGKILL) resumes with ``--resume RUN_DIR`` and recomputes
only the missing jobs; a half-written file is never taken for a finished job. Jobs are seeded by
name (``derive_seed(suite.seed, probe, setting, shard)``), so every executor gives the same outcomes.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab.core.errors import ConfigError, ModelError, RunError
from robustlab.core.model import checked_scores
from robustlab.core.outcomes import Outcomes, atomic_write_bytes
from robustlab.core.probe import Probe, ProbeOutput
from robustlab.core.rng import derive_seed, torch_generator
from robustlab.evaluate.suite import Suite, load_suite, parse_suite
from robustlab.evaluate.summary import finalize_run

__all__ = ["Job", "plan_jobs", "run_suite", "RunResult", "RunInterrupted", "Context", "build_context",
           "finalize_run"]


@dataclass(frozen=True)
class Job:
    """One unit of work: a probe at one setting on one shard (``kind == "clean"``: clean predictions)."""

    id: str
    probe: str
    kind: str
    setting: float | None
    shard: int


class RunInterrupted(RunError):
    """The run was interrupted; finished jobs are on disk and ``--resume`` continues."""


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    failures: list[str] = field(default_factory=list)


@dataclass
class Context:
    """What every job of a run needs: the suite, the model, the data and the probe objects."""

    suite: Suite
    model: Any
    data: Any
    probes: dict[str, Probe]
    device: str


_CONTEXTS: dict[tuple[str, str], Context] = {}


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", text)


def setting_label(probe: Probe | None, value: float | None) -> str:
    """Human label of a setting, e.g. ``severity=3`` or ``eps=0.03137``."""
    if probe is None or value is None:
        return "none"
    return f"{probe.setting_name}={value:.4g}"


def build_probes(suite: Suite) -> dict[str, Probe]:
    """Instantiate every probe of the suite (unknown names and parameters fail here, by name)."""
    from robustlab.core import registry

    probes = {}
    for i, spec in enumerate(suite.probes):
        try:
            probes[spec.key] = registry.create(spec.name, **spec.params)
        except ConfigError as exc:
            raise ConfigError(f"suite probes[{i}] ({spec.key!r}): {exc.message}", fix=exc.fix) from None
    return probes


def build_context(suite: Suite, device: str = "cpu", progress: bool = False) -> Context:
    """Load (or reuse, per process) the model, data and probes of ``suite``."""
    key = (suite.to_yaml(), device)  # the whole suite: notes, slices, ... live on ctx.suite too
    if key in _CONTEXTS:
        return _CONTEXTS[key]
    from robustlab.data import load_dataset
    from robustlab.models.loading import load_model

    probes = build_probes(suite)
    d = suite.data
    data = load_dataset(d.name, split=d.split, n=d.n, seed=d.seed, path=d.path, **d.options)
    model = load_model(suite.model, device=device, progress=progress)
    ctx = Context(suite=suite, model=model, data=data, probes=probes, device=device)
    _CONTEXTS[key] = ctx
    return ctx


def check_context(ctx: Context) -> None:
    """Fail early, with one clear message, when data, model and probes do not fit together."""
    model, data = ctx.model, ctx.data
    if len(data) == 0:
        raise ConfigError(f"dataset {ctx.suite.data.name!r} is empty", fix="check data.path / data.n")
    shape = tuple(data.x.shape[1:]) if isinstance(data.x, torch.Tensor) else "text"
    if model.modality != data.modality:
        raise ConfigError(f"the model takes {model.modality} inputs but data {ctx.suite.data.name!r} is "
                          f"{data.modality}", fix="pair the model with a dataset of its modality")
    try:
        scores = checked_scores(model, data.subset(slice(0, 2)).x)
    except ModelError as exc:
        raise ModelError(f"model {ctx.suite.model.label!r} fails on data {ctx.suite.data.name!r} "
                         f"(inputs of shape {shape}): {exc.message}",
                         fix="use a dataset whose inputs match the model (data.name / data.options), "
                             "or the model made for this data") from None
    if scores.shape[1] < data.num_classes:
        raise ConfigError(f"data {ctx.suite.data.name!r} has {data.num_classes} classes but the model "
                          f"outputs {scores.shape[1]} scores", fix="use the model trained for this dataset")
    for key, probe in ctx.probes.items():
        try:
            probe.check_model(model)
        except ModelError as exc:
            raise type(exc)(f"probe {key!r}: {exc.message}", fix=exc.fix) from None
    check_slices(ctx)


def check_slices(ctx: Context) -> None:
    """Suite slices must name attributes the data has and functions that import: checked before any work."""
    from robustlab.evaluate.slices import attrs_frame, build_slices

    specs = ctx.suite.slices
    if not specs:
        return
    build_slices(specs)  # imports every slice function now
    have = set(attrs_frame(ctx.data).columns) - {"example_id"}
    for spec in specs:
        if spec.attribute is not None and spec.attribute not in have:
            close = difflib.get_close_matches(spec.attribute, sorted(have), n=1)
            raise ConfigError(f"slice {spec.key!r}: data {ctx.suite.data.name!r} has no attribute {spec.attribute!r}",
                              fix=(f"did you mean {close[0]!r}? " if close else "")
                              + f"attributes of this data: {', '.join(sorted(have)) or '(none)'}")
        if spec.label is not None and not 0 <= spec.label < ctx.data.num_classes:
            raise ConfigError(f"slice {spec.key!r}: class {spec.label} is not one of the data's "
                              f"{ctx.data.num_classes} classes", fix=f"use 0..{ctx.data.num_classes - 1}")


def plan_jobs(suite: Suite, probes: dict[str, Probe], n_examples: int) -> list[Job]:
    """Every (probe, setting, shard) job of the run, clean jobs first."""
    n_shards = max(1, -(-n_examples // suite.shard_size))
    jobs = [Job(id=f"clean__none__{s:04d}", probe="clean", kind="clean", setting=None, shard=s)
            for s in range(n_shards)]
    for spec in suite.probes:
        probe = probes[spec.key]
        settings = spec.settings if spec.settings is not None else list(probe.default_settings)
        if not settings:
            raise ConfigError(f"probe {spec.key!r} needs settings ({probe.setting_name} values)",
                              fix=f"add '{probe.setting_name}: [...]' to the probe in the suite")
        for value in settings:
            label = setting_label(probe, value)
            for s in range(n_shards):
                jobs.append(Job(id=_safe(f"{spec.key}__{label}__{s:04d}"), probe=spec.key, kind=probe.kind,
                                setting=float(value), shard=s))
    return jobs


def _margin(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    true = scores.gather(1, y.view(-1, 1)).squeeze(1)
    other = scores.clone()
    other.scatter_(1, y.view(-1, 1), float("-inf"))
    return true - other.max(dim=1).values


def run_job(suite_dict: dict[str, Any], run_dir: str, device: str, threads: int | None, job: Job) -> dict[str, Any]:
    """Compute one job and write its outcomes atomically. Runs in any process (Dask workers too)."""
    if threads:
        torch.set_num_threads(threads)
    suite = parse_suite(suite_dict)
    ctx = build_context(suite, device=device)
    t0 = time.perf_counter()
    lo = job.shard * suite.shard_size
    shard = ctx.data.subset(slice(lo, lo + suite.shard_size))
    clean_scores = checked_scores(ctx.model, shard.x, batch_size=suite.batch_size)
    clean_pred = clean_scores.argmax(dim=1)
    y = shard.y
    seed = derive_seed(suite.seed, job.probe, job.setting, job.shard)
    probe = ctx.probes.get(job.probe)
    if job.kind == "clean":
        out = ProbeOutput(scores=clean_scores, attempted=torch.ones(len(y), dtype=torch.bool),
                          queries=torch.ones(len(y), dtype=torch.long), x_probed=shard.x)
    else:
        extra = {"attrs": shard.attrs} if getattr(probe, "needs_attrs", False) else {}
        out = probe.evaluate(ctx.model, shard.x, y, job.setting, clean_pred=clean_pred,
                             generator=torch_generator(seed), **extra)
    seconds = time.perf_counter() - t0
    pred = out.scores.argmax(dim=1)
    correct = (pred == y).numpy()
    clean_correct = (clean_pred == y).numpy()
    attempted = out.attempted.cpu().numpy()
    status = np.where(~attempted, "skipped", np.where(correct, "robust", "broken")).astype(object)
    if job.kind == "clean":
        status = np.where(correct, "robust", "broken").astype(object)
    if out.status is not None:
        status = np.asarray(out.status, dtype=object)
    outcomes = Outcomes({
        "example_id": shard.ids.numpy(), "probe": job.probe, "kind": job.kind,
        "setting": setting_label(probe, job.setting), "param": np.nan if job.setting is None else job.setting,
        "status": status, "label": y.numpy(), "clean_pred": clean_pred.numpy(), "pred": pred.numpy(),
        "clean_correct": clean_correct, "correct": correct,
        "score": out.score.cpu().numpy() if out.score is not None else _margin(out.scores, y).numpy(),
        "distance": (out.distance.cpu().numpy() if out.distance is not None else np.nan),
        "queries": out.queries.cpu().numpy(), "seconds": seconds / max(1, len(y)), "seed": seed, "job": job.id,
    })
    if job.shard == 0 and job.kind != "clean" and suite.examples > 0:
        _save_examples(Path(run_dir), job, probe, shard, out, clean_pred, pred, suite.examples)
    outcomes.save(Path(run_dir) / "jobs" / f"{job.id}.parquet")
    return {"id": job.id, "rows": len(outcomes), "seconds": seconds}


def _save_examples(run_dir: Path, job: Job, probe: Probe, shard: Any, out: ProbeOutput,
                   clean_pred: torch.Tensor, pred: torch.Tensor, k: int) -> None:
    name = _safe(f"{job.probe}__{setting_label(probe, job.setting)}")
    k = min(k, len(shard))
    meta = {"label": shard.y[:k].tolist(), "clean_pred": clean_pred[:k].tolist(), "pred": pred[:k].tolist()}
    if isinstance(shard.x, torch.Tensor):
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, x_clean=shard.x[:k].float().cpu().numpy(),
                            x_probed=torch.as_tensor(out.x_probed[:k]).float().cpu().numpy(),
                            **{key: np.asarray(v, dtype=np.int64) for key, v in meta.items()})
        atomic_write_bytes(run_dir / "examples" / f"{name}.npz", buf.getvalue())
    else:
        payload = {"x_clean": list(shard.x[:k]), "x_probed": list(out.x_probed[:k]), **meta}
        atomic_write_bytes(run_dir / "examples" / f"{name}.json", json.dumps(payload, indent=1).encode())


def _remove_stale_temp_files(run_dir: Path) -> None:
    """Delete temp files a killed run left behind (they were never renamed, so never finished)."""
    for folder in (run_dir, run_dir / "jobs", run_dir / "examples"):
        for tmp in folder.glob(".tmp-*"):
            tmp.unlink(missing_ok=True)


def _prepare_dir(suite: Suite | None, out_dir: Path | None, resume: Path | None) -> tuple[Suite, Path, int]:
    if resume is not None:
        run_dir = Path(resume)
        saved = run_dir / "suite.yaml"
        if not saved.exists():
            raise RunError(f"{run_dir} is not a robustlab run directory (no suite.yaml)",
                           fix="pass the folder printed by the interrupted run")
        stored = load_suite(saved)
        _remove_stale_temp_files(run_dir)
        if suite is not None and suite.fingerprint() != stored.fingerprint():
            raise RunError(f"{run_dir} holds a run of a different suite",
                           fix="resume with the same suite, or start a new run with --out")
        return stored, run_dir, len(list((run_dir / "jobs").glob("[!.]*.parquet")))
    assert suite is not None
    if out_dir is None:
        out_dir = Path("robustlab-runs") / f"{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(out_dir)
    if (run_dir / "suite.yaml").exists():
        raise RunError(f"{run_dir} already holds a run",
                       fix=f"continue it with --resume {run_dir}, or choose another --out")
    (run_dir / "jobs").mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "suite.yaml", suite.to_yaml().encode())
    return suite, run_dir, 0


def run_suite(suite: Suite | None, *, out_dir: str | Path | None = None, resume: str | Path | None = None,
              executor: Any = None, device: str = "cpu", threads: int | None = None,
              fail_under: dict[str, float] | None = None, progress: bool = True,
              console: Any = None) -> RunResult:
    """Run ``suite`` (or resume the run in ``resume``) and build its summary and report."""
    from robustlab.evaluate.executors import InProcessExecutor

    t_start = time.perf_counter()
    suite, run_dir, _ = _prepare_dir(suite, Path(out_dir) if out_dir else None,
                                     Path(resume) if resume else None)
    ctx = build_context(suite, device=device, progress=progress)
    check_context(ctx)
    jobs = plan_jobs(suite, ctx.probes, len(ctx.data))
    done = {p.stem for p in (run_dir / "jobs").glob("*.parquet") if not p.name.startswith(".")}
    todo = [j for j in jobs if j.id not in done]
    reused = len(jobs) - len(todo)
    executor = executor or InProcessExecutor()
    fn = functools.partial(run_job, suite.to_dict(), str(run_dir), device, threads)
    finished = 0
    try:
        with _progress(progress, console) as bar:
            task = bar.add_task(f"{suite.name}: {len(todo)} jobs", total=len(todo)) if bar else None
            for job, _res in executor.map(fn, todo):
                finished += 1
                if bar:
                    label = setting_label(ctx.probes.get(job.probe), job.setting)
                    bar.update(task, advance=1, description=f"{job.probe} {label}")
    except KeyboardInterrupt:
        raise RunInterrupted(f"interrupted: {reused + finished} of {len(jobs)} jobs are saved in {run_dir}",
                             fix=f"continue with --resume {run_dir}") from None
    wall = time.perf_counter() - t_start
    run_info = {"total": len(jobs), "reused": reused, "computed": finished}
    return finalize_run(run_dir, ctx, jobs, run_info, wall, executor.describe(), fail_under or {})


class _NoBar:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(enabled: bool, console: Any) -> Any:
    if not enabled:
        return _NoBar()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)
