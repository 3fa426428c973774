"""One space definition serves grid, random and Optuna; conditional params stay conditional."""

from __future__ import annotations

import optuna
import pytest

from core import hparams
from core.errors import StudyError
from search_spaces import known_spaces, load_space
from sweeps.tuning.searchers import DefineByRun, trial_count
from trainables import methods  # noqa: F401  (registers the methods: LoRA's hyperparameter rules)


def test_every_shipped_space_is_valid():
    for name in known_spaces():
        space = load_space(name)
        for key, param in space.params.items():
            hparams.check_name(key, key)
            for value in param.bounds():
                hparams.check_value(key, value, key)


def test_grid_is_per_method_so_ia3_gets_no_rank():
    space = load_space("peft_methods", {"learning_rate": [1e-3], "warmup_ratio": 0.0, "lr_scheduler": "linear"}).for_methods(["lora", "ia3"])
    points = space.grid_points(["lora", "ia3"])
    lora = [p for p in points if p["method"] == "lora"]
    ia3 = [p for p in points if p["method"] == "ia3"]
    assert len(lora) == 3 * 2 * 2 and len(ia3) == 1
    assert all("lora_r" not in p for p in ia3)
    assert trial_count("grid", space, ["lora", "ia3"], num_samples=99, grid_repeats=2) == 2 * len(points)


def test_grid_rejects_continuous_ranges():
    with pytest.raises(StudyError, match="continuous loguniform"):
        load_space("lora").grid_points(["lora"])


@pytest.mark.parametrize("sampler", [optuna.samplers.TPESampler(seed=1, multivariate=True, group=True, n_startup_trials=3), optuna.samplers.RandomSampler(seed=1)])
def test_optuna_define_by_run_is_conditional(sampler):
    space = load_space("peft_methods").for_methods(["lora", "qlora", "ia3"])
    define = DefineByRun(space, ["lora", "qlora", "ia3"])
    study = optuna.create_study(direction="maximize", sampler=sampler)
    seen = set()
    for i in range(15):
        trial = study.ask()
        define(trial)
        params = trial.params
        seen.add(params["method"])
        if params["method"] == "ia3":
            assert "lora_r" not in params and "lora_alpha_ratio" not in params
        else:
            assert params["lora_r"] in (8, 16, 32)
        assert 5e-5 <= params["learning_rate"] <= 1e-2
        study.tell(trial, float(i % 3))
    assert seen == {"lora", "qlora", "ia3"}


def test_random_search_is_seeded():
    space = load_space("lora")

    def draw(seed):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        out = []
        for _ in range(3):
            t = study.ask()
            DefineByRun(space, ["lora"])(t)
            out.append(t.params)
            study.tell(t, 0.0)
        return out

    assert draw(7) == draw(7) and draw(7) != draw(8)


def test_overrides_fix_list_and_drop():
    space = load_space("lora", {"lora_r": [8], "lora_dropout": 0.1, "weight_decay": None})
    assert space.params["lora_r"].values == [8]
    assert space.params["lora_r"].methods == ["lora", "qlora"]
    assert space.params["lora_dropout"].type == "fixed"
    assert "weight_decay" not in space.params


def test_unknown_space_suggests():
    with pytest.raises(StudyError, match="did you mean 'lora'"):
        load_space("loar")


def test_first_points_run_first_and_one_value_choices_fill_themselves():
    from sweeps.tuning.searchers import optuna_tpe

    names = ["lora", "ia3"]
    space = load_space("small_encoder", {"target_modules": ["all-linear"]}).for_methods(names)
    lora = {"method": "lora", "lora_r": 16, "lora_alpha_ratio": 2, "lora_dropout": 0.0, "learning_rate": 3e-3, "warmup_ratio": 0.1, "lr_scheduler": "linear"}
    ia3 = {"method": "ia3", "learning_rate": 7.5e-3, "warmup_ratio": 0.0, "lr_scheduler": "linear"}
    searcher = optuna_tpe(space, names, "f1_macro", "max", seed=0, num_samples=4, first_points=[lora, ia3])
    first, second, third = (searcher.suggest(f"t{i}") for i in range(3))
    assert first == {**lora, "target_modules": "all-linear"}
    assert second == {**ia3, "target_modules": "all-linear"}
    assert third["method"] in names and 1e-3 <= third["learning_rate"] <= 1e-2
