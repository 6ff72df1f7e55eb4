#!/usr/bin/env python3
"""What a full grid, random search, TPE and TPE with ASHA (and with Hyperband) each spend to find the best.

On the clouds demo data (``segtrain make-demo-data DIR --kind clouds``; ``--kind`` another), over a space of
categorical values (every point of it is a grid point, so each search can reach the grid's
best): the epochs and CPU seconds each needs until a *complete* trial's best validation IoU is
within ``--tolerance`` (0.005) of the grid's best, for each sampler seed.

1. The grid is trained once, every point to its last epoch, in this process with the trainer
   (one thread): for every epoch its validation IoU and the CPU seconds it took (training,
   validation, checkpoint), through the trainer's validation hook. Kept in ``OUT/grid.json``
   (a point already there is not trained again).
2. The searches (SEARCHES) then run with Optuna's real samplers and pruners, seeded as
   ``segtrain search work`` seeds them (:func:`segtrain.search.study.make_sampler`, one worker),
   asked as the worker asks (ASHA's promotions; a trial of a point drawn before continues that
   point's run) and reporting the recorded values epoch by epoch: a trial of a point trains
   exactly as the grid's run of that point did (training is deterministic on CPU), so its values
   and costs are the grid's, up to the epoch where the pruner stops it. An epoch costs once: a
   point drawn again costs only the epochs its run had not trained.
3. ``--verify SEED`` also runs that seed's first ``--verify-trials`` TPE + ASHA trials for real
   (``segtrain search new`` and ``work``) and checks that they are the replay's: same points, same
   pruning, same values, same runs continued and promoted.

    .venv/bin/python scripts/bench/search.py --data data/clouds --out bench-search [--epochs 9]
        [--seeds 0 1 2] [--min-epochs 1] [--reduction-factor 3] [--verify 0]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from segtrain.cluster.frontend.grid import format_override  # noqa: E402
from segtrain.config import load_config  # noqa: E402
from segtrain.data.synthetic import DemoSpec, make_demo_data  # noqa: E402
from segtrain.search.reuse import PROMOTED, REPEAT_OF, ask_trial, run_number, trained_epochs  # noqa: E402
from segtrain.search.spec import encode_choice, load_search  # noqa: E402
from segtrain.search.study import make_pruner, make_sampler  # noqa: E402
from segtrain.train.trainer import TrainOptions, train  # noqa: E402

SPACE = {  # 4 x 3 x 2 = 24 points
    "optim.lr": [0.001, 0.003, 0.01, 0.03],
    "loss.terms": [{"bce": 1.0}, {"bce": 1.0, "dice": 1.0}, {"dice": 1.0}],
    "optim.name": ["adamw", "sgd"],
}
TINY = ["data.tile_size=64", "data.overlap=8", "data.tiles_per_epoch=128", "data.num_workers=0",
        "model.arch=unet", "model.depth=2", "model.base_width=8", "train.batch_size=16", "train.device=cpu",
        "train.checkpoint_every_minutes=null", "optim.warmup_steps=8", "logging.every_steps=8",
        "logging.samples_every_epochs=1000", "logging.num_samples=0", "logging.wandb.mode=disabled"]


# Grid is the baseline; TPE + ASHA the goal. successive_halving is Optuna's own (no promotions).
SEARCHES = (("random", "none"), ("tpe", "none"), ("tpe", "successive_halving"), ("tpe", "asha"), ("tpe", "hyperband"))


def search_file(out: Path, data: Path, epochs: int, sampler: str, pruner: str, seed: int, n_trials: int,
                min_epochs: Optional[int] = None, rf: int = 3) -> Path:
    """A search file over SPACE (lists: categorical), as a user would write it."""
    overrides = [f"data.root={data}", *TINY, f"train.epochs={epochs}"]
    path = out / f"search-{sampler}-{pruner}-{min_epochs or 'default'}-{rf}-{seed}.yaml"
    first_rung = "" if min_epochs is None else f"min_epochs: {min_epochs}, "  # None: the search file's default
    space = "\n".join(f"  {key}: {json.dumps(values)}" for key, values in SPACE.items())
    path.write_text(f"base: {REPO / 'configs' / 'demo.yaml'}\noverrides: {json.dumps(overrides)}\nspace:\n{space}\n"
                    f"sampler: {{name: {sampler}, startup_trials: 4}}\n"
                    f"pruner: {{name: {pruner}, {first_rung}reduction_factor: {rf}}}\n"
                    f"n_trials: {n_trials}\nseed: {seed}\n")
    return path


def point_key(params: dict) -> str:
    return json.dumps({k: encode_choice(v) for k, v in sorted(params.items())})


def train_grid(out: Path, spec, cache: Path) -> dict[str, dict]:
    """Every point trained to its last epoch: per epoch its val IoU and CPU seconds."""
    import itertools

    grid = json.loads(cache.read_text()) if cache.exists() else {}
    torch.set_num_threads(1)
    points = [dict(zip(SPACE, combo)) for combo in itertools.product(*SPACE.values())]
    for number, params in enumerate(points):
        key = point_key(params)
        if key in grid:
            continue
        overrides = spec.trial_overrides(params)
        cfg = load_config(spec.base, overrides)
        curve: list[dict] = []
        start = time.process_time()

        def record(records: list[dict]) -> None:
            for r in records[len(curve):]:
                curve.append({"iou": r["iou"], "cpu_s": time.process_time() - start})

        run_dir = out / "grid" / f"{number:02d}"
        code = train(cfg, TrainOptions(config_path=str(spec.base), overrides=overrides, run_dir=run_dir,
                                       on_validation=record))
        assert code == 0, f"grid point {number} ended with {code}"
        cpu = [c["cpu_s"] for c in curve]
        grid[key] = {"params": params, "iou": [c["iou"] for c in curve],
                     "epoch_cpu_s": [b - a for a, b in zip([0.0] + cpu, cpu)]}
        cache.write_text(json.dumps(grid, indent=1))
        print(f"grid {number + 1}/{len(points)}: {key} best iou {max(grid[key]['iou']):.4f}, "
              f"{sum(grid[key]['epoch_cpu_s']):.0f} CPU s; load {os.getloadavg()[0]:.1f}", flush=True)
    return grid


def replay(spec, grid: dict, target: float, max_trials: int) -> dict:
    """A search of ``spec`` (one worker) in an in-memory study whose trials report the grid's recorded values.

    Asked as the worker asks (:func:`segtrain.search.reuse.ask_trial`: an asha promotion, else the sampler; a run
    to continue when an earlier trial had the parameters), reported as its reporter reports (the pruner asked
    after each value); an epoch costs only where the trial's run had not trained it yet.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A fixed name: Hyperband puts a trial in a bracket by a hash of the study name and the trial number.
    study = optuna.create_study(study_name="replay", direction="maximize", sampler=make_sampler(spec, 0),
                                pruner=make_pruner(spec))
    epochs = cpu = 0.0
    trials = []
    for draw in range(max_trials):
        study.sampler = make_sampler(spec, draw)
        trial = ask_trial(study, spec)
        run = trial.user_attrs.get(REPEAT_OF, trial.number)
        trained = trained_epochs(study.get_trials(deepcopy=False), run)
        params = {p.key: p.decode(trial.params[p.key]) for p in spec.space}
        point = grid[point_key(params)]
        pruned = False
        for step, value in enumerate(point["iou"], start=1):
            trial.report(value, step)
            if step > trained:
                epochs += 1
                cpu += point["epoch_cpu_s"][step - 1]
            if step < spec.epochs and trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, max(point["iou"]))
        trials.append({"params": params, "state": "PRUNED" if pruned else "COMPLETE", "epochs": step,
                       "value": None if pruned else max(point["iou"]), "run": run,
                       "promoted": bool(trial.user_attrs.get(PROMOTED))})
        if not pruned and max(point["iou"]) >= target:
            return {"reached": True, "trials": len(trials), "epochs": epochs, "cpu_s": cpu, "log": trials}
    return {"reached": False, "trials": len(trials), "epochs": epochs, "cpu_s": cpu, "log": trials}


def verify(out: Path, data: Path, epochs: int, seed: int, expected: list[dict], min_epochs: Optional[int],
           rf: int) -> bool:
    """Run the seed's first trials of TPE + ASHA for real; are they the replay's?"""
    path = search_file(out, data, epochs, "tpe", "asha", seed, len(expected), min_epochs, rf)
    study = out / f"verify-{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    segtrain = [sys.executable, "-m", "segtrain", "search"]
    subprocess.run([*segtrain, "new", str(path), "--study", str(study)], check=True, env=env)
    subprocess.run([*segtrain, "work", str(study)], check=True, env=env, stdout=subprocess.DEVNULL)
    from segtrain.search.status import load

    spec, real, _ = load(study)
    found = [{"params": {p.key: p.decode(t.params[p.key]) for p in spec.space}, "state": t.state.name,
              "epochs": len(t.intermediate_values), "value": t.value if t.state.name == "COMPLETE" else None,
              "run": run_number(t), "promoted": bool(t.user_attrs.get(PROMOTED))}
             for t in real.get_trials(deepcopy=False)]
    same = found == expected
    print(f"verify seed {seed}: the real study's {len(found)} trials {'equal' if same else 'DIFFER FROM'} the replay's")
    if not same:
        print(json.dumps({"real": found, "replay": expected}, indent=1))
    return same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="clouds", help="of the demo data (make-demo-data --kind); clouds: the goal's")
    parser.add_argument("--data", type=Path, help="the demo data's folder (made when missing); default data/KIND")
    parser.add_argument("--out", type=Path, default=REPO / "bench-search")
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--min-epochs", type=int, help="of the pruners (default: the search file's, 2)")
    parser.add_argument("--reduction-factor", type=int, default=3, help="of the pruners (the search file's default: 3)")
    parser.add_argument("--verify", type=int, nargs="*", default=[], metavar="SEED")
    parser.add_argument("--verify-trials", type=int, default=6, help="trials of each verified study")
    args = parser.parse_args()
    args.data = args.data or REPO / "data" / args.kind
    make_demo_data(args.data, DemoSpec(kind=args.kind))
    args.out.mkdir(parents=True, exist_ok=True)
    n_points = 1
    for values in SPACE.values():
        n_points *= len(values)
    grid_spec = load_search(search_file(args.out, args.data, args.epochs, "grid", "none", 0, n_points))
    grid = train_grid(args.out, grid_spec, args.out / "grid.json")
    best = max(max(p["iou"]) for p in grid.values())
    grid_epochs = sum(len(p["iou"]) for p in grid.values())
    grid_cpu = sum(sum(p["epoch_cpu_s"]) for p in grid.values())
    target = best - args.tolerance
    print(f"\ngrid: {len(grid)} points x {args.epochs} epochs = {grid_epochs} epochs, {grid_cpu:.0f} CPU s; "
          f"best val IoU {best:.4f}; target {target:.4f}; load {os.getloadavg()[0]:.1f}")
    print(f"{'search':<24} {'seed':>4} {'trials':>6} {'epochs':>7} {'of grid':>8} {'CPU s':>7} {'of grid':>8}")
    results = {}
    pruning = (args.min_epochs, args.reduction_factor)
    for sampler, pruner in SEARCHES:
        name = f"{sampler}+{pruner}"
        for seed in args.seeds:
            path = search_file(args.out, args.data, args.epochs, sampler, pruner, seed, 4 * n_points, *pruning)
            result = results[f"{name}-{seed}"] = replay(load_search(path), grid, target, 4 * n_points)
            print(f"{name:<24} {seed:>4} {result['trials']:>6} {result['epochs']:>7.0f} "
                  f"{result['epochs'] / grid_epochs:>8.0%} {result['cpu_s']:>7.0f} {result['cpu_s'] / grid_cpu:>8.0%}"
                  + ("" if result["reached"] else f"  (not reached in {result['trials']} trials)"))
        ran = [results[f"{name}-{s}"] for s in args.seeds]
        reached = sum(r["reached"] for r in ran)
        for label, average in (("mean", statistics.mean), ("med.", statistics.median)):  # a miss: infinitely dear
            e, c = (average([r[key] if r["reached"] else math.inf for r in ran]) for key in ("epochs", "cpu_s"))
            figures = (f"{e:>7.1f} {e / grid_epochs:>8.0%} {c:>7.0f} {c / grid_cpu:>8.0%}" if math.isfinite(e)
                       else f"{'-':>7} {'-':>8} {'-':>7} {'-':>8}")
            print(f"{name:<24} {label:>4} {'':>6} {figures}"
                  + (f"  reached {reached} of {len(ran)}" if label == "mean" else ""))
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    ok = all([verify(args.out, args.data, args.epochs, seed, results[f"tpe+asha-{seed}"]["log"][:args.verify_trials],
                     *pruning) for seed in args.verify])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
