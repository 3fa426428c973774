"""``python -m sweeps.report STUDY|RUN_ID``: what a sweep taught, in the terminal and as files.

The same report is logged to the study's parent MLflow run (folder ``report/``) when a sweep
ends; this command rebuilds it from MLflow at any time (also for a run on another machine):
leaderboard, method comparison, base vs best, error analysis of the best trial, Optuna plots,
and the best configuration as a ready-to-run study file.

Exit codes: 0 written, 2 bad input (unknown study or run, nothing finished yet).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import mlflow
import pandas as pd
import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from core.errors import StudyError
from sweeps.reporting import error_analysis, leaderboard, to_target
from sweeps.tracking import runs
from trainables.evaluation import eval_files

# Leaderboard columns shown in the terminal (the files have all of them).
TERMINAL_COLUMNS = ("rank", "trial", "method", "stage", "status", "at_step", "params", "trainable_%", "peak_memory_mb", "train_time_s")


BEFORE_TITLE = "Before training (fresh random task head: chance level, not a baseline) vs after"


@dataclasses.dataclass
class Report:
    folder: Path
    metric: str
    board: pd.DataFrame
    methods: pd.DataFrame
    before_vs_best: pd.DataFrame
    best_run_id: Optional[str]
    notes: list[str]
    floors: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    verdict: Optional[str] = None

    def terminal(self, title: str) -> str:
        metric = self.metric
        cols = [c for c in self.board.columns if c in TERMINAL_COLUMNS or c in (metric, f"test_{metric}", f"before_{metric}")]
        parts = [title, "", "Leaderboard", leaderboard.markdown(self.board[cols]), "", "Methods", leaderboard.markdown(self.methods)]
        if len(self.floors):
            parts += ["", "Floors (no fine-tuning) vs the study's model", leaderboard.markdown(self.floors)]
        if self.verdict:
            parts += [self.verdict]
        if len(self.before_vs_best):
            parts += ["", BEFORE_TITLE, leaderboard.markdown(self.before_vs_best)]
        parts += [""] + self.notes + [f"report written to {self.folder}"]
        return "\n".join(parts)


def _study_settings(client: MlflowClient, parent: Run) -> dict[str, Any]:
    found = runs.parent_yaml(client, parent, runs.STUDY_FILE)
    if found:
        return found
    p = parent.data.params  # older runs: the flattened params
    return {"name": parent.data.tags.get("study", ""), "search": {"metric": p.get("search.metric", "f1_macro"), "mode": p.get("search.mode", "max")}}


def best_study(settings: dict[str, Any], best: Run, metric: str, value: float) -> str:
    """A ready-to-run study file that trains the best trial's configuration once."""
    out = {k: v for k, v in settings.items() if k not in ("space", "final")}
    name = settings.get("name", "study")
    chosen = {k: yaml.safe_load(v) for k, v in runs.sampled_params(best).items()}
    method = chosen.pop("method", best.data.tags.get("method"))
    final = settings.get("final")
    if final and best.data.tags.get("stage") == "final":  # train it as the final stage did
        out["training"] = {**(out.get("training") or {}), "seed": chosen.pop("seed", None)}
        if final.get("epochs") or final.get("max_steps"):
            out["training"].update({"epochs": final.get("epochs") or out["training"].get("epochs"), "max_steps": final.get("max_steps")})
        if final.get("data", "full") == "full":
            out["data"] = {**(out.get("data") or {}), "max_train_rows": None, "max_eval_rows": None}
        if final.get("cpus_per_worker"):
            out["resources"] = {**(out.get("resources") or {}), "cpus_per_worker": final["cpus_per_worker"]}
    out["name"] = f"{name}_best"
    out["description"] = f"best trial of {name} ({metric} {value:.4f}, MLflow run {best.info.run_id}), trained once"
    out["methods"] = [method]
    out["search_space"] = {"name": (settings.get("search_space") or {}).get("name", ""), "overrides": chosen}
    out["search"] = {**(settings.get("search") or {}), "algorithm": "grid", "num_samples": 1, "max_concurrent_trials": 1}
    out["scheduler"] = {"name": "none"}
    out = _without_nulls(out)
    header = (
        f"# {name}_best: the best configuration of study {name} (MLflow run {best.info.run_id},\n"
        f"# {metric} {value:.4f} at its best eval point), as one grid point trained once.\n"
        f"# Launch:   python -m sweeps.run {name}_best.yaml   (a path; add --set ... to change anything)\n"
    )
    return header + yaml.safe_dump(out, sort_keys=False)


def _without_nulls(value: Any) -> Any:
    """Drop unset keys: the file shows what was chosen, the schema fills in the rest."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None and v != {}}
    return value


def write(client: MlflowClient, parent: Run, folder: Path, reached: Optional[to_target.ToTarget] = None) -> Report:
    """Build the report of ``parent``'s study into ``folder`` (created). ``reached``: the
    search's cost to target when the caller has it (the sweep, which just computed it); else it
    is read from the trials' histories."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = _study_settings(client, parent)
    metric, mode = settings["search"]["metric"], settings["search"]["mode"]
    trials = runs.trial_runs(client, parent)
    scores = leaderboard.score_trials(client, trials, metric, mode, parent.data.tags.get("best_run_id"))
    board = leaderboard.leaderboard(scores, metric) if scores else pd.DataFrame(columns=["rank", "trial", "method", "status", metric])
    methods = leaderboard.method_comparison(board, metric, mode) if len(board) else pd.DataFrame()
    notes: list[str] = []
    board.to_csv(folder / "leaderboard.csv", index=False)
    methods.to_csv(folder / "method_comparison.csv", index=False)
    sections = [f"# Study {settings.get('name', '')}: {metric} ({mode})", "", f"Parent MLflow run `{parent.info.run_id}`, {len(trials)} trials.", ""]
    reached = reached or to_target.from_runs(client, trials, metric, mode)
    if reached is not None:
        sections += [reached.line(metric) + ".", ""]
    sections += ["## Leaderboard", "", leaderboard.markdown(board, drop=("run_id",)), "", "## Methods", "", leaderboard.markdown(methods)]
    (folder / "leaderboard.md").write_text(leaderboard.markdown(board, drop=("run_id",)) + "\n")
    (folder / "method_comparison.md").write_text(leaderboard.markdown(methods) + "\n")

    named = parent.data.tags.get("best_run_id")
    best = next((s for s in scores if s.run.info.run_id == named), None) or next((s for s in scores if s.best is not None), None)
    bvb = floors = pd.DataFrame()
    verdict = None
    if best is not None:
        floors, verdict, why_none = _floors(client, parent, best, metric, mode)
        if len(floors):
            floors.to_csv(folder / "floors.csv", index=False)
            (folder / "floors.md").write_text(leaderboard.markdown(floors) + "\n")
            sections += ["", "## Floors (no fine-tuning) vs the study's model", "", leaderboard.markdown(floors)]
            sections += ["", verdict or "", "", "Floors are fitted on the same training rows in seconds (majority class, TF-IDF + logistic "
                         "regression; QA: the best-overlap sentence): a model below them is not worth having."]
        elif why_none:
            notes.append(f"no floor: {why_none}")
        bvb = leaderboard.before_vs_best(client, best)
        bvb.to_csv(folder / "before_vs_best.csv", index=False)
        (folder / "before_vs_best.md").write_text(leaderboard.markdown(bvb) + "\n")
        (folder / "best_study.yaml").write_text(best_study(settings, best.run, metric, best.best))
        sections += ["", f"## {BEFORE_TITLE} ({best.run.data.tags.get('trial_name', '')})", "", leaderboard.markdown(bvb)]
        sections += ["", "Ready-to-run best configuration: [best_study.yaml](best_study.yaml)"]
        errors = _error_analysis(client, best.run, folder)
        if errors:
            sections += ["", "## Error analysis (best trial, validation split)", "", errors]
        else:
            notes.append("no predictions artifact on the best trial (instruction tuning writes eval/generations.csv instead): error analysis skipped")
    else:
        notes.append("no trial reported a score: no best trial")
    missing = _optuna_plots(client, parent, settings, scores, metric, mode, folder / "plots")
    plots = sorted(p.name for p in (folder / "plots").glob("*.png"))
    if plots:
        sections += ["", "## Optuna plots", ""] + [f"![{p[:-4]}](plots/{p})" for p in plots]
    for name, why in missing.items():
        notes.append(f"plot {name} not drawn: {why}")
    if notes:
        sections += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    (folder / "report.md").write_text("\n".join(sections) + "\n")
    return Report(folder, metric, board, methods, bvb, best.run.info.run_id if best else None, notes, floors, verdict)


def _floors(client: MlflowClient, parent: Run, best: leaderboard.TrialScore, metric: str, mode: str) -> tuple[pd.DataFrame, Optional[str], Optional[str]]:
    """(floors vs the study's model, the verdict line, why there is no floor)."""
    from trainables.evaluation.floors import Floor, floor_verdict

    logged = runs.parent_yaml(client, parent, runs.FLOORS_FILE) or {}
    entries = logged.get("floors") or []
    if not entries:
        return pd.DataFrame(), None, logged.get("none_because")
    shown = tuple(k for k in leaderboard.SCORES + ("exact_match", "f1") if k != "eval_loss" and any(k in e["validation"] for e in entries))
    m = dict(best.run.data.metrics)  # test_*: scored once, at the end
    for key in set(shown) | {metric}:  # validation scores at the kept checkpoint, not the last eval
        at_best = [p.value for p in client.get_metric_history(best.run.info.run_id, key) if p.step == best.best_step]
        if at_best:
            m[key] = at_best[-1]
    table = leaderboard.floors_vs_best(entries, best.run, m, shown)
    verdict = floor_verdict([Floor(**e) for e in entries], metric, mode, m)
    return table, verdict.line() if verdict else None, None


def _error_analysis(client: MlflowClient, best: Run, folder: Path) -> Optional[str]:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=best.info.run_id, artifact_path=f"{eval_files.FOLDER}/{eval_files.PREDICTIONS}",
                dst_path=tmp, tracking_uri=client.tracking_uri,
            )
        except Exception:
            return None
        grouped = error_analysis.with_groups(pd.read_csv(path, keep_default_na=False))
    grouped.to_csv(folder / "error_analysis.csv", index=False)
    text = error_analysis.report_markdown(grouped)
    (folder / "error_analysis.md").write_text(text)
    return text


def _optuna_plots(client: MlflowClient, parent: Run, settings: dict[str, Any], scores: list, metric: str, mode: str, folder: Path) -> dict[str, str]:
    from sweeps.reporting.optuna_view import as_optuna_study
    from sweeps.reporting.plots import optuna_pngs

    space = runs.parent_yaml(client, parent, runs.SPACE_FILE)
    if not space or not scores:
        return {"all": "no search space artifact or no trials"}
    scores = [s for s in scores if s.run.data.tags.get("stage", "search") == "search"]  # final repeats are not search points
    study = as_optuna_study(scores, space, list(settings.get("methods") or []), mode, client, metric)
    return optuna_pngs(study, folder)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sweeps.report", description="Leaderboard, method comparison, base vs best, error analysis and Optuna plots of a finished study.")
    runs.add_run_arguments(p)
    p.add_argument("--out", help="folder for the report (default: reports/<experiment>-<run id prefix>)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        client, parent = runs.find_parent(args.ref, args.tracking_uri)
    except StudyError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    name = parent.data.tags.get("study", args.ref)
    out = Path(args.out or f"reports/{name}-{parent.info.run_id[:8]}")
    report = write(client, parent, out)
    print(report.terminal(f"Study {name}, parent run {parent.info.run_id} ({parent.info.status})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
