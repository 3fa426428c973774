"""``python -m sweeps.export STUDY|RUN_ID --out DIR [--merge]``: the best trial, ready to use.

Writes the best trial's adapter (and trained head) with the fine-tuned model's config
(labels) and tokenizer, or with ``--merge`` the adapter folded into the base weights: a plain
transformers model folder. Either loads with plain transformers + peft (see the README.md
written next to it); ``--push-to-hub REPO`` uploads the folder (token from $HF_TOKEN).

Exit codes: 0 written, 2 bad input (unknown study/run, no adapter, folder in use, no token).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from core.errors import StudyError
from sweeps.tracking import runs, store
from sweeps.tracking.artifacts import ADAPTER, ADAPTER_FILES
from trainables.inference import EXPORT_INFO

REMOTE_CODE = "pooled_classifier"  # the module a mean-pooled export ships (trainables/model/pooling.py)


def _check_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / EXPORT_INFO).is_file():
        raise StudyError("--out", f"{out} exists and holds other files", "pass a new or empty folder (an earlier export there is replaced)")


def _hub_token() -> str:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise StudyError("--push-to-hub", "no Hugging Face token in the environment", "export HF_TOKEN=<a token with write access>")
    return token


def export(client: MlflowClient, parent: Run, out: Path, merge: bool = False, trial_run_id: Optional[str] = None) -> dict[str, Any]:
    """Export the parent's best trial (or ``trial_run_id``) to ``out``; returns the export info."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig

    from trainables.kinds import TASKS
    from trainables.model import pooling as poolings
    from trainables.model.methods import METHODS
    from trainables.model.load import (
        base_kwargs,
        head_class,
        load_base,
        load_tokenizer,
        load_trained,
        resolve,
    )

    settings = runs.parent_yaml(client, parent, runs.STUDY_FILE)
    data = runs.parent_yaml(client, parent, runs.DATA_FILE)
    if not settings or not data:
        raise StudyError("run", f"parent run {parent.info.run_id} has no {runs.STUDY_FILE} / {runs.DATA_FILE}", "export a study run by this version of sweeps")
    trial = runs.trial_of(client, parent, trial_run_id)
    _check_out(out)
    method, task, ref = trial.data.tags["method"], TASKS[settings["task"]], settings["model"]
    labels: list[str] = data["label_names"]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            adapter = Path(mlflow.artifacts.download_artifacts(run_id=trial.info.run_id, artifact_path=ADAPTER, dst_path=tmp, tracking_uri=client.tracking_uri))
        except Exception:
            raise StudyError("trial", f"trial run {trial.info.run_id} has no {ADAPTER}/ artifact", "pick a trial that finished (see python -m sweeps.report)") from None
        base_path = resolve(ref)
        tokenizer = load_tokenizer(ref)
        # Studies recorded before training.pooling existed trained the family's own head.
        pooling = settings["training"].get("pooling", "cls")
        head_kwargs = base_kwargs(task, labels, ref, pooling)
        config = AutoConfig.from_pretrained(base_path, **head_kwargs)
        if poolings.CONFIG_KEY in head_kwargs:  # a key the family's config class lacks is not set by from_pretrained
            setattr(config, poolings.CONFIG_KEY, head_kwargs[poolings.CONFIG_KEY])
        head = head_class(task, base_path, {"config": config})
        if head is not task.auto_model:  # mean pooling: the export carries the class as remote code
            config.auto_map = {task.auto_model.__name__: f"{REMOTE_CODE}.{head.__name__}"}
        if config.pad_token_id is None:
            config.pad_token_id = tokenizer.pad_token_id  # decoder heads pool the last non-pad token
        # Built beside the download and moved into place at the end: a failure leaves no half export.
        work = Path(tmp) / "export"
        work.mkdir()
        quantization = None
        spec = METHODS[method]
        if spec.peft_config is None:
            # full / head baselines: no adapter; the trained weights go into the base, always merged
            merge = True
            model = load_base(task, base_path, {"config": config})
            load_trained(model, str(adapter))
            model.save_pretrained(work)
        elif merge:
            # The unquantized base in the checkpoint's own dtype (also for QLoRA: its adapter merges
            # into dequantized weights): the merged model is stored as the base model ships.
            base = load_base(task, base_path, {"config": config})
            PeftModel.from_pretrained(base, adapter).merge_and_unload().save_pretrained(work)
        else:
            for name in ADAPTER_FILES:
                if (adapter / name).is_file():
                    shutil.copy(adapter / name, work / name)
            # The base as this machine finds it (a packaged model's folder differs per machine).
            adapter_config = json.loads((work / "adapter_config.json").read_text())
            adapter_config["base_model_name_or_path"] = base_path
            (work / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
            config.save_pretrained(work)
            if spec.quantized:
                device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
                quantization = spec.quantization(device).to_dict()
        tokenizer.save_pretrained(work)
        if head is not task.auto_model:
            shutil.copy(poolings.__file__, work / f"{REMOTE_CODE}.py")
        metric = settings["search"]["metric"]
        info = {
            "study": settings.get("name"),
            "parent_run_id": parent.info.run_id,
            "trial_run_id": trial.info.run_id,
            "tracking_uri": store.redact(client.tracking_uri),  # never a password in an export
            "method": method,
            "params": runs.sampled_params(trial),
            "metric": metric,
            "value": best_value(client, trial, metric, settings["search"]["mode"]),
            "task": settings["task"],
            "model": ref,
            "base_model": base_path,
            "labels": labels,
            "max_length": settings["training"]["max_length"],
            "training": settings["training"],  # what its answers are computed with (trainables.inference)
            "merged": merge,
            "remote_code": f"{REMOTE_CODE}.py" if head is not task.auto_model else None,
            "quantization": quantization,
        }
        (work / EXPORT_INFO).write_text(json.dumps(info, indent=2))
        (work / "README.md").write_text(model_card(info))
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(work), out)
    return info


def best_value(client: MlflowClient, trial: Run, metric: str, mode: str) -> Optional[float]:
    """The trial's score at its best eval point: the checkpoint its adapter comes from."""
    from core import outcomes

    found = outcomes.best_point(((m.value, m.step) for m in client.get_metric_history(trial.info.run_id, metric)), mode)
    return found[0] if found else trial.data.metrics.get(metric)


def model_card(info: dict[str, Any]) -> str:
    from trainables.kinds import TASKS

    params = ", ".join(f"{k}={v}" for k, v in sorted(info["params"].items()))
    auto = TASKS[info["task"]].auto_model.__name__
    remote = info.get("remote_code")
    pooled = (
        f"\n\nIts classifier reads the mean of the token vectors, as `{info['model']}` was trained to embed, "
        f"not the first token: the class that does so ships here as `{remote}` (config `auto_map`). "
        "Load it as below: plain transformers without `trust_remote_code=True` would silently use first-token "
        "pooling and answer wrongly."
    ) if remote else ""
    if info["merged"]:
        trust = ", trust_remote_code=True" if remote else ""
        load = (
            f"from transformers import {auto}, AutoTokenizer\n"
            f"model = {auto}.from_pretrained(FOLDER{trust})\n"
            "tokenizer = AutoTokenizer.from_pretrained(FOLDER)\n"
        )
        what = f"The {info['method']} fine-tuned weights of `{info['model']}` (adapters merged): a plain transformers model."
    else:
        setup = ""
        if info["quantization"]:
            setup = (
                "# QLoRA: the adapter was trained on a 4-bit base; load it the same way\n"
                "kwargs = {'quantization_config': BitsAndBytesConfig.from_dict(json.load(open(f'{FOLDER}/sweep_export.json'))['quantization']), 'device_map': 'cpu'}\n"
            )
        head = auto
        if remote:
            head = "Head"
            setup += (
                "from transformers.dynamic_module_utils import get_class_from_dynamic_module\n"
                f"Head = get_class_from_dynamic_module(AutoConfig.from_pretrained(FOLDER).auto_map[{auto!r}], FOLDER)  # mean pooling\n"
            )
        load = (
            "import json\n"
            "from peft import PeftModel\n"
            f"from transformers import AutoConfig, {auto}, AutoTokenizer, BitsAndBytesConfig\n"
            "kwargs = {}\n" + setup +
            "config = AutoConfig.from_pretrained(FOLDER)  # labels and head of the fine-tuned model\n"
            f"base = {head}.from_pretrained({info['base_model']!r}, config=config, **kwargs)\n"
            "model = PeftModel.from_pretrained(base, FOLDER).eval()\n"
            "tokenizer = AutoTokenizer.from_pretrained(FOLDER)\n"
        )
        what = f"The {info['method']} adapter (and trained task head) for base model `{info['model']}`."
    return (
        f"# {info['study']}: best trial\n\n{what}{pooled}\n\n"
        f"- task: {info['task']}; labels: {', '.join(info['labels'])}\n"
        f"- {info['metric']}: {info['value']}\n"
        f"- hyperparameters: {params}\n"
        f"- MLflow: parent run `{info['parent_run_id']}`, trial run `{info['trial_run_id']}`\n\n"
        "## Load\n\n```python\nFOLDER = '.'  # this folder\n" + load + "```\n\n"
        f"Or: `python -m sweeps.predict {info['parent_run_id']} {_example_inputs(info['task'])}` "
        f"(`sweeps.serve {info['parent_run_id']}`: in the browser).\n"
    )


def _example_inputs(task_name: str) -> str:
    from trainables.kinds import TASKS

    task = TASKS[task_name]
    fields = task.kind.input_fields(task)
    if "question" in fields:
        return '--question "..." --context "..."'
    return '"a prompt"' if "prompt" in fields else '"some text"' + (' --pair "..."' if "text_pair" in fields else "")


def check_hub_repo(repo: str, token: str) -> None:
    """Refuse to upload into a repo that exists and is public: an adapter trained on private
    data must not become public because a name was reused. A new repo is created private."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = HfApi(token=token).repo_info(repo)
    except RepositoryNotFoundError:
        return
    except Exception as exc:
        raise StudyError("--push-to-hub", f"cannot check Hugging Face repo {repo!r} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})", "check the network and HF_TOKEN") from None
    if not info.private:
        raise StudyError("--push-to-hub", f"{repo} exists and is public", "push to a new repo name (created private), or make that repo private first")


def push(out: Path, repo: str, token: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    check_hub_repo(repo, token)  # again: it may have changed since the export began
    api.create_repo(repo, private=True, exist_ok=True)
    api.upload_folder(folder_path=str(out), repo_id=repo, commit_message="sweeps.export")
    return f"https://huggingface.co/{repo}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sweeps.export", description="Export a study's best adapter (or merged model), loadable with plain transformers + peft.")
    runs.add_run_arguments(p)
    p.add_argument("--out", required=True, help="folder to write (new or empty; an earlier export there is replaced)")
    p.add_argument("--merge", action="store_true", help="merge the adapter into the base weights (a standalone model folder)")
    p.add_argument("--trial", help="export this trial run id instead of the best")
    p.add_argument("--push-to-hub", metavar="REPO", help="also upload the folder to this Hugging Face repo (private; token from $HF_TOKEN)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    from trainables.inference import quiet

    quiet()
    out = Path(args.out).expanduser()
    try:
        token = _hub_token() if args.push_to_hub else ""
        if args.push_to_hub:
            check_hub_repo(args.push_to_hub, token)
        client, parent = runs.find_parent(args.ref, args.tracking_uri)
        info = export(client, parent, out, merge=args.merge, trial_run_id=args.trial)
    except StudyError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    kind = "merged model" if info["merged"] else f"{info['method']} adapter"
    print(f"exported the {kind} of trial run {info['trial_run_id']} ({info['metric']} {info['value']:.4f}) to {out}")
    if args.push_to_hub:
        try:
            print(f"pushed to {push(out, args.push_to_hub, token)}")
        except StudyError as exc:
            print(f"error: {exc.one_line()}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
