#!/usr/bin/env python3
"""Does the default recipe beat the converged per-pixel MLP at equal CPU budgets, on every kind of data?

For each synthetic kind (``water``, ``clouds``, ``speckled``: :mod:`segtrain.data.synthetic`),
each recipe (a config and overrides; default ``configs/demo.yaml``), each CPU budget and each
seed: ``segtrain train`` in a child process on one thread, ``train.epochs`` set so that the
child's CPU time fills the budget, then ``segtrain eval`` on the test split (test IoU at the
threshold calibrated on val, as eval uses it). Beside it, with the same seed, the per-pixel MLP
of :mod:`segtrain.baseline` trained to convergence (its own CPU seconds shown: it needs far
less than any budget) and scored the same way. Printed: one line per run with the load
average, then per kind, budget and recipe the mean test IoU over the seeds with its spread
(lowest..highest), the MLP's, and the CPU seconds actually used.

How many epochs fill a budget: a probe run of PROBE_EPOCHS epochs (seed 0) gives the child's
CPU and wall time; its run.json says how much of the wall time the epochs took (training,
validation, checkpoints), and the same share of the CPU time is taken as theirs, the rest as
start-up (one thread, CPU-bound: wall and CPU time are in proportion). CPU
time is the child's (``resource.getrusage(RUSAGE_CHILDREN)``), so other processes' load moves
it little; wall time is not used for any figure.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench/quality.py [--kinds water clouds speckled]
        [--budgets 2 5] [--seeds 0 1 2] [--recipe 'LABEL=CONFIG key=value ...' ...] [--work DIR]

Results are appended to WORK/quality.jsonl and reused: an interrupted benchmark goes on
where it stopped, and ``--table`` prints the table of what is there.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import time
import subprocess
import sys
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

KINDS = ("water", "clouds", "speckled")
PROBE_EPOCHS = 1
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(argv: list[str], log: Path) -> tuple[float, float]:
    """Run a segtrain command on one thread; its CPU and wall seconds (a failure stops the benchmark)."""
    before, started = child_cpu(), time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **ONE_THREAD}).returncode
    if code:
        sys.exit(f"{shlex.join(argv)} failed (exit {code}); see {log}")
    return child_cpu() - before, time.monotonic() - started


def segtrain(*args: str) -> list[str]:
    return [sys.executable, "-m", "segtrain", *args]


class Bench:
    def __init__(self, work: Path):
        self.work = work
        self.results = work / "quality.jsonl"
        self.records = [json.loads(line) for line in self.results.open()] if self.results.is_file() else []

    def find(self, **key) -> Optional[dict]:
        return next((r for r in self.records if all(r.get(k) == v for k, v in key.items())), None)

    def add(self, record: dict) -> dict:
        record["load"] = round(os.getloadavg()[0], 1)
        self.records.append(record)
        with self.results.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()), flush=True)
        return record

    def data(self, kind: str) -> Path:
        from segtrain.data.synthetic import DemoSpec, make_demo_data

        root = self.work / "data" / kind
        make_demo_data(root, DemoSpec(kind=kind))
        return root

    def train(self, kind: str, recipe: list[str], seed: int, epochs: int, name: str) -> tuple[Path, float, float]:
        run = self.work / "runs" / name
        argv = segtrain("train", *recipe, f"data.root={self.data(kind)}", f"train.epochs={epochs}",
                        f"train.seed={seed}", "logging.wandb.mode=disabled", "data.num_workers=0",
                        f"run.root={self.work / 'runs'}", "--run-dir", str(run))
        if run.exists():  # a run the benchmark was interrupted in: started again
            shutil.rmtree(run)
        return (run, *run_child(argv, self.work / "logs" / f"{name}.train.log"))

    def probe(self, kind: str, label: str, recipe: list[str]) -> dict:
        """CPU seconds of start-up and of one epoch of ``recipe`` on ``kind``."""
        found = self.find(what="probe", kind=kind, recipe=label)
        if found:
            return found
        run, cpu, wall = self.train(kind, recipe, 0, PROBE_EPOCHS, f"probe-{kind}-{label}")
        timing = json.loads((run / "run.json").read_text())["segments"][-1]["timing"]["seconds"]
        per_epoch = cpu * min(sum(timing.values()) / wall, 1.0) / PROBE_EPOCHS
        return self.add({"what": "probe", "kind": kind, "recipe": label, "cpu_s": cpu,
                         "epoch_cpu_s": per_epoch, "startup_cpu_s": cpu - per_epoch * PROBE_EPOCHS})

    def model(self, kind: str, label: str, recipe: list[str], budget_min: float, seed: int) -> dict:
        key = dict(what="model", kind=kind, recipe=label, budget_min=budget_min, seed=seed)
        found = self.find(**key)
        if found:
            return found
        probe = self.probe(kind, label, recipe)
        epochs = max(1, int((budget_min * 60 - probe["startup_cpu_s"]) / probe["epoch_cpu_s"]))
        name = f"{kind}-{label}-{budget_min:g}min-s{seed}"
        run, cpu, _ = self.train(kind, recipe, seed, epochs, name)
        run_child(segtrain("eval", str(run), "--no-wandb", "--no-baseline", "--device", "cpu"),
                  self.work / "logs" / f"{name}.eval.log")
        metrics = json.loads((run / "eval" / "metrics.json").read_text())
        steps = json.loads((run / "run.json").read_text())["segments"][-1].get("end_step")
        return self.add({**key, "epochs": epochs, "steps": steps, "cpu_s": cpu, "test_iou": metrics["iou"],
                         "threshold": metrics["threshold"],
                         "test_iou_at_default": metrics["at_default_threshold"]["iou"]})

    def mlp(self, kind: str, seed: int) -> dict:
        key = dict(what="mlp", kind=kind, seed=seed)
        found = self.find(**key)
        if found:
            return found
        import torch

        from segtrain.baseline import evaluate_baselines
        from segtrain.config.schema import DataConfig

        torch.set_num_threads(1)
        result = evaluate_baselines(DataConfig(root=str(self.data(kind))), None, "test", 0.5, seed)["mlp"]
        return self.add({**key, "test_iou": result["iou"], "threshold": result["threshold"], "steps": result["steps"],
                         "stopped": result["stopped"], "cpu_s": result["cpu_s"]})


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.3f} ({min(values):.3f}..{max(values):.3f})" if len(values) > 1 else f"{mean:.3f}"


def seconds(rows: list[dict]) -> str:
    """Mean CPU seconds of some runs, and their range."""
    values = [r["cpu_s"] for r in rows]
    return f"{statistics.fmean(values):.0f} ({min(values):.0f}..{max(values):.0f})"


def table(bench: Bench) -> None:
    models = [r for r in bench.records if r["what"] == "model"]
    print("| kind | budget CPU-min | recipe | test IoU, mean (lowest..highest) | seeds | CPU-s used | steps "
          "| converged MLP test IoU | MLP CPU-s | model - MLP |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for kind in KINDS:
        mlps = [r for r in bench.records if r["what"] == "mlp" and r["kind"] == kind]
        cells = sorted({(r["budget_min"], r["recipe"]) for r in models if r["kind"] == kind})
        for budget, recipe in cells:
            rows = [r for r in models if r["kind"] == kind and r["budget_min"] == budget and r["recipe"] == recipe]
            seeds = sorted(r["seed"] for r in rows)
            paired = [r for r in mlps if r["seed"] in seeds]
            mlp = spread([r["test_iou"] for r in paired]) if paired else "-"
            gap = (spread([r["test_iou"] - next(m["test_iou"] for m in paired if m["seed"] == r["seed"])
                           for r in rows]) if len(paired) == len(rows) else "-")
            print(f"| {kind} | {budget:g} | {recipe} | {spread([r['test_iou'] for r in rows])} | {len(rows)} "
                  f"| {seconds(rows)} | {round(statistics.fmean(r['steps'] for r in rows))} "
                  f"| {mlp} | {seconds(paired) if paired else '-'} | {gap} |")


def parse_recipe(text: str) -> tuple[str, list[str]]:
    label, _, rest = text.partition("=")
    words = shlex.split(rest)
    if not label or not words:
        raise argparse.ArgumentTypeError(f"--recipe: expected 'LABEL=CONFIG [key=value ...]', got {text!r}")
    return label, words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--budgets", nargs="+", type=float, default=[2.0, 5.0], help="CPU-minutes per training run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--recipe", action="append", type=parse_recipe,
                        help="LABEL=CONFIG [key=value ...] (repeatable; default: demo=configs/demo.yaml)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "quality")
    parser.add_argument("--table", action="store_true", help="only print the table of the results in --work")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "logs").mkdir(exist_ok=True)
    bench = Bench(args.work)
    if not args.table:
        recipes = args.recipe or [("demo", [str(REPO / "configs" / "demo.yaml")])]
        print(f"load average {os.getloadavg()[0]:.1f}; results in {bench.results}", flush=True)
        for kind in args.kinds:
            for seed in args.seeds:
                bench.mlp(kind, seed)
                for budget in args.budgets:
                    for label, recipe in recipes:
                        bench.model(kind, label, recipe, budget, seed)
    table(bench)


if __name__ == "__main__":
    main()
