"""What a sweep found: `status_text` (``kartsim sweep status``) and `write_report` (``kartsim sweep
report --out DIR``: a table sorted by the metric, parameter importances, the best config as a
``kartsim train`` command line, seed statistics, and plots of the metric against each parameter
and of the top trials' learning curves)."""

from __future__ import annotations

import csv
import shlex
import statistics
from pathlib import Path
from typing import Any

from kartsim.sweep.study import SweepSpec

# ref_ratio levels whose share of seeds a seed sweep reports (1.0 = the reference lap)
REF_LEVELS = (2.0, 1.5, 1.3, 1.2, 1.1)


# ----------------------------------------------------------------------------- command lines

def best_command(spec: SweepSpec, trial: Any) -> str:
    """``kartsim train ...`` that trains the trial's config (the sweep's flags plus its values)."""
    from kartsim.rl.config import PART_OF
    from kartsim.rl.train_cmd import train_flags
    from kartsim.sweep.trial import trial_config

    params = {k: v for k, v in trial.params.items() if k != "seed"}
    base, seeds = trial_config(spec, params)
    seed = trial.params.get("seed", seeds[0])
    names = {n.rpartition(".")[2] for n in [*spec.given, *(d.name for d in spec.dims if not d.env_key)]}
    names |= {"seed", "save_name"}
    values = {**base, "seed": seed, "save_name": f"{spec.name}-best"}
    if values.get("env_options"):
        names.add("env_options")
    order = sorted(PART_OF, key=lambda name: PART_OF[name] != "run")  # a stable order: the run part, then the rest
    shown = {f: values[f] for f in order if f in names and f not in ("runs_dir", "models_dir", "progress_bar")}
    return shlex.join(["kartsim", "train", *train_flags(shown)])


# ------------------------------------------------------------------------------------- table

def _finished(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def _value(t: Any) -> float | None:
    """A trial's value: the final one, or a pruned trial's last reported (best so far) value."""
    if t.value is not None:
        return t.value
    return t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None


def ranked(spec: SweepSpec, study: Any) -> list[Any]:
    """Finished trials, best first (complete before pruned at equal value; no value last)."""
    sign = 1 if spec.direction == "minimize" else -1

    def key(t: Any) -> tuple:
        v = _value(t)
        return (v is None, t.state.name != "COMPLETE", sign * v if v is not None else 0.0, t.number)

    return sorted(_finished(study), key=key)


def _p(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def table_rows(spec: SweepSpec, study: Any) -> tuple[list[str], list[list[str]]]:
    names = ["seed"] if spec.seed_sweep else [d.name for d in spec.dims]
    ratio = spec.metric != "ref_ratio"  # a second ref_ratio column when the metric is another
    head = ["rank", "trial", "state", spec.metric, *(["ref_ratio"] if ratio else []), "lapped", "best lap", *names,
            "run"]
    rows = []
    for i, t in enumerate(ranked(spec, study), 1):
        a = t.user_attrs
        rows.append([str(i), str(t.number), t.state.name.lower(), _p(_value(t)) if _value(t) is not None else "-",
                     *([_p(a.get("ref_ratio")) if a.get("ref_ratio") is not None else "-"] if ratio else []),
                     f"{100 * a.get('completion', 0):.0f}%",
                     f"{a['best_lap']:.2f} s" if a.get("best_lap") is not None else "-",
                     *(_p(t.params.get(n, "-")) for n in names), ",".join(a.get("runs", []))])
    return head, rows


def _text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def seed_stats(spec: SweepSpec, study: Any) -> dict[str, Any] | None:
    """Median, min and max of the metric over the seeds, and the share of seeds under each ref_ratio level."""
    done = [t for t in _finished(study) if _value(t) is not None]
    if not spec.seed_sweep or not done:
        return None
    values = [_value(t) for t in done]
    ratios = [t.user_attrs.get("ref_ratio") for t in done]
    return {"seeds": len(done), "median": statistics.median(values), "min": min(values), "max": max(values),
            "reached": {lvl: sum(r is not None and r <= lvl for r in ratios) / len(done) for lvl in REF_LEVELS}}


def _seed_lines(stats: dict[str, Any], metric: str) -> list[str]:
    shares = ", ".join(f"<= {lvl:g}: {100 * share:.0f}%" for lvl, share in stats["reached"].items())
    return [f"{stats['seeds']} seeds: {metric} median {stats['median']:.4g}, min-max {stats['min']:.4g}-"
            f"{stats['max']:.4g}", f"share of seeds whose best lap reached ref_ratio {shares}"]


def status_text(spec: SweepSpec, study: Any, limit: int = 20) -> str:
    from kartsim.sweep.local import counts

    n = counts(study)
    done = n["COMPLETE"] + n["PRUNED"]
    better = "lower" if spec.direction == "minimize" else "higher"
    lines = [f"sweep {spec.name}: {done} / {spec.target} trials finished ({n['COMPLETE']} complete, {n['PRUNED']} "
             f"pruned, {n['RUNNING']} running, {n['WAITING']} queued, {n['FAIL']} failed)",
             f"  metric {spec.metric} ({better} is better), "
             + (f"{len(spec.seeds)} seeds, " if spec.seed_sweep else f"sampler {spec.sampler}, pruner {spec.pruner}, ")
             + f"{spec.timesteps:,} steps per trial, started {spec.created}, study {spec.storage}"]
    order = ranked(spec, study)
    if order:
        best = order[0]
        lines.append(f"  best: trial {best.number}, {spec.metric} {_p(_value(best))} "
                     f"({', '.join(f'{k}={_p(v)}' for k, v in best.params.items())})")
        lines.append(f"  train it: {best_command(spec, best)}")
    stats = seed_stats(spec, study)
    if stats:
        lines += ["  " + s for s in _seed_lines(stats, spec.metric)]
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "RUNNING":
            last = max(t.intermediate_values) if t.intermediate_values else None
            at = f"{spec.metric} {_p(t.intermediate_values[last])} at {last:,} steps" if last else "no evaluation yet"
            lines.append(f"  running: trial {t.number}, {at} ({', '.join(f'{k}={_p(v)}' for k, v in t.params.items())})")
    head, rows = table_rows(spec, study)
    if rows:
        lines += ["", _text_table(head, rows[:limit])]
        if len(rows) > limit:
            lines.append(f"... {len(rows) - limit} more (kartsim sweep report {spec.name} --out DIR)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ report

def importances(spec: SweepSpec, study: Any) -> dict[str, float]:
    """PED-ANOVA parameter importances (Optuna), {} when the study is too small to tell."""
    import optuna

    if spec.seed_sweep or len([t for t in _finished(study) if t.state.name == "COMPLETE"]) < 3:
        return {}
    try:
        return optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def _plot_params(spec: SweepSpec, trials: list[Any], path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    names = ["seed"] if spec.seed_sweep else [d.name for d in spec.dims]
    logs = {d.name for d in spec.dims if d.kind == "loguniform"}
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        for state, color in (("COMPLETE", "tab:blue"), ("PRUNED", "tab:gray")):
            pts = [(t.params[name], _value(t)) for t in trials
                   if t.state.name == state and name in t.params and _value(t) is not None]
            if pts:
                xs = [str(x) if isinstance(x, (str, bool)) else x for x, _ in pts]
                ax.scatter(xs, [y for _, y in pts], c=color, label=state.lower(), alpha=0.8)
        if name in logs:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # the minor labels overlap
        ax.set_xlabel(name)
        ax.set_ylabel(spec.metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"sweep {spec.name}: {spec.metric} against each parameter")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_curves(spec: SweepSpec, trials: list[Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for t in trials:
        curve = t.user_attrs.get("curve") or []
        if curve:
            ax.plot([p["steps"] for p in curve], [p["value"] for p in curve], marker="o", ms=3,
                    label=f"trial {t.number} ({_p(_value(t))})")
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"{spec.metric} (deterministic evaluation)")
    ax.set_title(f"sweep {spec.name}: learning curves of the top {len(trials)} trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(spec: SweepSpec, study: Any, out: Path, top: int = 5) -> list[Path]:
    """Write report.md, trials.csv, params.png and curves.png under `out`; the files written."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    head, rows = table_rows(spec, study)
    order = ranked(spec, study)
    with open(out / "trials.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        w.writerows(rows)
    files = [out / "report.md", out / "trials.csv"]
    md = [f"# Sweep {spec.name}", "", "```", status_text(spec, study, limit=0).split("\n\n")[0], "```", ""]
    if order:
        md += ["## Best config", "", "```", best_command(spec, order[0]), "```", ""]
    stats = seed_stats(spec, study)
    if stats:
        md += ["## Seeds", "", *(f"- {s}" for s in _seed_lines(stats, spec.metric)), ""]
    imp = importances(spec, study)
    if imp:
        md += ["## Parameter importances (PED-ANOVA)", "", "| parameter | importance |", "|---|---|",
               *(f"| {k} | {v:.3f} |" for k, v in imp.items()), ""]
    md += ["## Trials", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
           *("| " + " | ".join(r) + " |" for r in rows), ""]
    if order:
        _plot_params(spec, order, out / "params.png")
        _plot_curves(spec, order[:top], out / "curves.png")
        files += [out / "params.png", out / "curves.png"]
        md += ["## Plots", "", "![metric against each parameter](params.png)", "",
               "![learning curves of the top trials](curves.png)", ""]
    (out / "report.md").write_text("\n".join(md))
    return files


def summary(spec: SweepSpec, study: Any, limit: int = 10) -> dict[str, Any]:
    """What the dashboard shows of a sweep (JSON): states, the best trial, the top trials."""
    from kartsim.sweep.local import counts

    n = counts(study)
    order = ranked(spec, study)
    head, rows = table_rows(spec, study)
    return {
        "name": spec.name, "metric": spec.metric, "direction": spec.direction, "sampler": spec.sampler,
        "backend": spec.backend, "target": spec.target, "done": n["COMPLETE"] + n["PRUNED"],
        "states": {k.lower(): v for k, v in n.items() if v}, "timesteps": spec.timesteps,
        "best": ({"trial": order[0].number, "value": _value(order[0]), "params": order[0].params,
                  "runs": order[0].user_attrs.get("runs", []), "command": best_command(spec, order[0])}
                 if order else None),
        "seeds": seed_stats(spec, study),
        "columns": head, "rows": rows[:limit],
    }
