"""Cost to target (sweeps/reporting/to_target.py): what a search spent before it first came
within 1% of its best, over trials that run side by side."""

from __future__ import annotations

import pytest

from sweeps.reporting.to_target import Curve, target, to_target


def test_the_target_is_one_percent_of_the_best_on_the_metrics_side():
    assert target(0.80, "max") == pytest.approx(0.792)
    assert target(2.0, "min") == pytest.approx(2.02)
    assert target(-1.0, "max") == pytest.approx(-1.01), "relative to the magnitude"
    assert target(0.0, "min") == 0.0, "a best of 0 must be met exactly"


def test_side_by_side_trials_are_summed_at_the_moment_the_target_is_first_met():
    # t (s), score, device-hours so far. Trial a starts at 0; b at 5; c at 50 (after the target).
    a = Curve(started=0, points=[(10, 0.50, 1.0), (20, 0.70, 2.0), (30, 0.71, 3.0)])
    b = Curve(started=5, points=[(12, 0.60, 0.5), (24, 0.795, 1.5), (40, 0.80, 2.5)])
    c = Curve(started=50, points=[(60, 0.30, 4.0)])
    got = to_target([a, b, c], "max", "cpu")
    assert got.best == 0.80 and got.target == pytest.approx(0.792)
    assert got.trials == 2 and got.trials_total == 3  # b's 0.795 at t=24: a and b had started
    assert got.hours == pytest.approx(2.0 + 1.5)  # a at its point t=20, b at t=24; c not yet
    assert got.hours_total == pytest.approx(3.0 + 2.5 + 4.0)
    assert got.wall_s == 24
    assert got.metrics() == {"to_target_trials": 2, "to_target_cpu_hours": pytest.approx(3.5), "to_target_wall_s": 24,
                             "to_target_share": pytest.approx(3.5 / 9.5)}
    assert "after 2 of 3 trials, 3.5 CPU-hours (37% of the search's 9.5), 0.4 min" in got.line("f1_macro")


def test_a_loss_is_met_from_above_and_points_without_a_score_still_count_their_compute():
    a = Curve(started=0, points=[(10, 1.0, 1.0), (20, None, 2.0), (30, 0.5, 3.0)])
    b = Curve(started=0, points=[(15, 0.504, 0.5)])
    got = to_target([a, b], "min", "gpu")
    assert got.best == 0.5 and got.wall_s == 15 and got.hours == pytest.approx(1.0 + 0.5)
    assert "to_target_gpu_hours" in got.metrics()


def test_no_score_at_all_is_no_cost_to_target():
    assert to_target([Curve(started=0, points=[(10, None, 1.0)])], "max", "cpu") is None
    assert to_target([], "max", "cpu") is None
