"""Per-iteration schedules hit their endpoints."""

from __future__ import annotations

import math

import pytest

from smart_nets.engines import SMARTSchedule, cosine_schedule, linear_warmup, teacher_init_share


def test_cosine_schedule_endpoints_and_warmup():
    assert cosine_schedule(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine_schedule(99, 100, 0.996, 1.0) == 1.0
    assert cosine_schedule(0, 100, 1.0, 0.0, warmup_steps=10) == 0.0
    assert cosine_schedule(5, 100, 1.0, 0.0, warmup_steps=10) == pytest.approx(0.5)
    assert cosine_schedule(10, 100, 1.0, 0.0, warmup_steps=10) == pytest.approx(1.0)
    values = [cosine_schedule(s, 100, 1.0, 0.0, warmup_steps=10) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone after warmup


def test_schedule_rejects_steps_outside_the_run():
    with pytest.raises(ValueError, match="step must be in"):
        cosine_schedule(100, 100, 1.0, 0.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        cosine_schedule(0, 10, 1.0, 0.0, warmup_steps=10)
    with pytest.raises(ValueError, match="warmup_fraction"):
        SMARTSchedule(warmup_fraction=1.0)


def test_smart_schedule_is_indexed_per_iteration_over_the_whole_run():
    s = SMARTSchedule(base_lr=8e-4, min_lr=1e-6, warmup_fraction=0.1, teacher_temp_warmup_fraction=0.3)
    total = 1000
    first, last = s(0, total), s(total - 1, total)
    assert first["lr"] == 0.0 and s(100, total)["lr"] == pytest.approx(8e-4) and last["lr"] == pytest.approx(1e-6)
    assert first["momentum"] == pytest.approx(0.996) and last["momentum"] == 1.0
    assert first["weight_decay"] == pytest.approx(0.04) and last["weight_decay"] == pytest.approx(0.4)
    # the patch temperature is held at its start for 80% of the run (the authors' 400 of 500 epochs), then raised
    assert first["teacher_temp_patch"] == pytest.approx(0.04) and s(799, total)["teacher_temp_patch"] == 0.04
    assert s(800, total)["teacher_temp_patch"] == 0.07 and last["teacher_temp_patch"] == 0.07
    # momentum moves within an epoch, not only between epochs (the authors' code indexed it per epoch)
    assert s(1, total)["momentum"] > first["momentum"]
    assert linear_warmup(0, 0, 0.04, 0.07) == 0.07


def test_teacher_init_share_is_the_product_of_the_momenta():
    assert teacher_init_share([0.5, 0.5, 1.0]) == pytest.approx(0.25)
    assert teacher_init_share([0.9, 0.0]) == 0.0
    s = SMARTSchedule(momentum=0.996)
    share = s.teacher_init_share(160)
    assert share == pytest.approx(math.prod(s(t, 160)["momentum"] for t in range(160)))
    assert 0.70 < share < 0.75  # DINO's momentum keeps most of the random start over a short run
    assert SMARTSchedule(momentum=0.97).teacher_init_share(240) < 0.05


def test_momentum_for_a_run_length_keeps_the_asked_share():
    s = SMARTSchedule()
    m = s.momentum_for(240, 0.05)
    assert (
        SMARTSchedule(momentum=m).teacher_init_share(240)
        <= 0.05
        < SMARTSchedule(momentum=m + 2e-4).teacher_init_share(240)
    )
    assert s.momentum_for(100_000, 0.05) > 0.996  # paper-length runs can keep DINO's momentum
