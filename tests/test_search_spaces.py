"""One space definition serves grid, random and Optuna; conditional params stay conditional."""

from __future__ import annotations

import optuna
import pytest

from core import hparams
from core.errors import StudyError
from search_spaces import known_spaces, load_space
from sweeps.tuning.searchers import DefineByRun, trial_count
from trainables.model import methods  # noqa: F401  (registers the methods: LoRA's hyperparameter rules)


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


# A 27-point discrete space (the one bench/search_efficiency.py searches).
DISCRETE = {"lora_r": [4, 8], "lora_alpha_ratio": [2, 4], "lora_dropout": [0.0], "learning_rate": [0.001, 0.003, 0.01],
            "warmup_ratio": [0.1], "lr_scheduler": ["linear"]}
THREE = ["lora", "qlora", "ia3"]


def _drive(searcher, n, at_once=1, start=0, score=lambda c, i: (i * 7919 % 101) / 101):
    """Suggest up to ``n`` configs (trial ids from ``start``), ``at_once`` running together; the
    configs handed out."""
    from ray.tune.search import Searcher

    configs, running = [], []
    for i in range(start, start + n):
        config = searcher.suggest(f"t{i}")
        if config is Searcher.FINISHED:
            break
        configs.append(config)
        running.append((f"t{i}", config, i))
        if len(running) == at_once:
            tid, c, j = running.pop(0)
            searcher.on_trial_complete(tid, {"f1_macro": score(c, j)})
    return configs


def _points(configs):
    return [tuple(sorted(c.items())) for c in configs]


@pytest.mark.parametrize("algorithm", ["optuna", "random"])
@pytest.mark.parametrize("at_once", [1, 2])
def test_sampled_searches_never_run_a_point_twice_and_end_when_the_space_is_spent(algorithm, at_once):
    """TPE and random sampling propose taken points again on a discrete space (optuna#2021;
    1-3 of 9 trials per seed on this space before): each configuration is handed out once,
    also while its twin is still running, and after all 27 the search says FINISHED."""
    from sweeps.tuning.searchers import SEARCHERS

    space = load_space("small_encoder", DISCRETE)
    for seed in range(2):
        searcher = SEARCHERS[algorithm].make(space, THREE, metric="f1_macro", mode="max", seed=seed, num_samples=9)
        configs = _drive(searcher, 40, at_once)
        assert len(configs) == 27 and len(set(_points(configs))) == 27
        assert {c["method"] for c in configs} == set(THREE)
        # what Optuna holds: every handed-out point once as a real trial, the redraws as failed twins
        trials = searcher._ot_study.trials
        real = [t for t in trials if "repeat_of" not in t.user_attrs]
        assert len(real) == 27 and all(t.state != optuna.trial.TrialState.FAIL for t in real)
        twins = [t for t in trials if "repeat_of" in t.user_attrs]
        assert all(t.state == optuna.trial.TrialState.FAIL for t in twins)
        assert all(t.params == trials[t.user_attrs["repeat_of"]].params for t in twins)


def test_distinct_points_survive_a_saved_and_restored_searcher(tmp_path):
    """Tune saves the searcher with the experiment (``--resume``): a restored one still knows
    which points are taken."""
    from sweeps.tuning.searchers import optuna_tpe

    space = load_space("small_encoder", DISCRETE)
    first = optuna_tpe(space, THREE, "f1_macro", "max", seed=3, num_samples=27)
    before = _drive(first, 10)
    first.save(str(tmp_path / "searcher.pkl"))
    second = optuna_tpe(space, THREE, "f1_macro", "max", seed=3, num_samples=27)
    second.restore(str(tmp_path / "searcher.pkl"))
    after = _drive(second, 30, start=10)
    assert len(before) + len(after) == 27 and len(set(_points(before + after))) == 27


def test_an_endless_space_is_sampled_as_optuna_samples_it():
    """With a continuous range nothing is listed or refused: 40 trials from a 2-method space."""
    from sweeps.tuning.searchers import optuna_points, optuna_tpe

    space = load_space("small_encoder", {**DISCRETE, "learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2}})
    assert optuna_points(space, THREE) is None
    configs = _drive(optuna_tpe(space, THREE, "f1_macro", "max", seed=0, num_samples=40), 40)
    assert len(configs) == 40


def test_extend_refuses_a_finite_space_whose_points_have_all_run():
    """``--extend`` on a spent space would run nothing: the taken points are counted from the
    earlier trials as Optuna holds them (a one-line StudyError names the fix in sweeps.tuning.extend)."""
    from sweeps.tuning.searchers import optuna_tpe, points_left

    space = load_space("small_encoder", DISCRETE)
    searcher = optuna_tpe(space, THREE, "f1_macro", "max", seed=0, num_samples=27)
    _drive(searcher, 20)
    assert points_left(space, THREE, searcher._ot_study) == 7
    _drive(searcher, 40, start=20)
    assert points_left(space, THREE, searcher._ot_study) == 0
