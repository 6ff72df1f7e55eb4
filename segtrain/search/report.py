"""A study's figures and its best trial as a ready config.

    history.png        the objective of each finished trial and the best so far
    intermediate.png   every trial's validation values by epoch (pruned trials end early)
    importances.png    how much each parameter explains of the objective (fANOVA; 2+ finished trials)
    slice.png          the objective against each parameter, one panel each
    best.yaml          the best trial's whole config (train it longer, or evaluate its run)

Figures come from ``optuna.visualization.matplotlib`` (matplotlib only, no network).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from segtrain.config import to_yaml
from segtrain.errors import UserError
from segtrain.fsutil import atomic_write_text
from segtrain.search.reuse import run_number
from segtrain.search.status import load
from segtrain.search.study import trial_dir


def write_report(study_dir: Path, out: Optional[Path] = None) -> list[Path]:
    """Write the figures that the study's trials allow, and best.yaml once a trial is complete; their paths."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    spec, study, _ = load(study_dir)
    out = Path(out or Path(study_dir) / "report")
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.value is not None]
    if not finished:
        raise UserError(f"{study_dir}: no trial has finished yet; nothing to report")
    out.mkdir(parents=True, exist_ok=True)
    target = spec.objective.metric
    figures: list[tuple[str, Callable[[], Any]]] = [
        ("history.png", lambda: plots.plot_optimization_history(study, target_name=target)),
        ("intermediate.png", lambda: plots.plot_intermediate_values(study)),
        ("slice.png", lambda: plots.plot_slice(study, target_name=target)),
    ]
    if len(finished) >= 2:
        figures.append(("importances.png", lambda: plots.plot_param_importances(study, target_name=target)))
    written = []
    for name, draw in figures:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            written.append(_save(draw(), out / name))
    complete = [t for t in finished if t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        params = {p.key: p.decode(best.params[p.key]) for p in spec.space}
        text = (f"# best trial {best.number} of study {study.study_name}: {target} {best.value:.4f}\n"
                f"# its run: {trial_dir(study_dir, run_number(best))}\n" + to_yaml(spec.trial_config(params)))
        atomic_write_text(out / "best.yaml", text)
        written.append(out / "best.yaml")
    return written


def _save(drawn: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    if hasattr(drawn, "figure"):  # one plot
        figure = drawn.figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
    else:  # a panel per parameter, with a colour bar Optuna placed: only widened
        figure = drawn.flat[0].figure
        figure.set_size_inches(3.5 * drawn.size + 2, 5)
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=100)
    tmp.replace(path)
    plt.close(figure)
    return path
