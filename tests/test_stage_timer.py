"""Stage 3's time limit from the measured step time (:mod:`disdiff.pipeline.stage_timer`)."""

from __future__ import annotations

import time
import warnings
from types import SimpleNamespace

import pytest

from disdiff.pipeline.settings import QuickstartSettings
from disdiff.pipeline.stage_timer import SpeedReserveTimer, predicted_tail_seconds, speed_reserve_timer


class FakeClock:
    """The step-time window's clock: moves on by ``seconds_per_step`` per step :func:`_run_steps` runs."""

    def __init__(self, seconds_per_step: float) -> None:
        self.t = 0.0
        self.seconds_per_step = seconds_per_step

    def __call__(self) -> float:
        return self.t


def _stub_trainer():
    return SimpleNamespace(should_stop=False, strategy=SimpleNamespace(broadcast=lambda value: value))


def _run_steps(timer: SpeedReserveTimer, clock: FakeClock, steps: int) -> None:
    trainer = _stub_trainer()
    for _ in range(steps):
        clock.t += clock.seconds_per_step
        timer.on_train_batch_end(trainer, None, None, None, 0)


def test_predicted_tail_is_the_step_time_times_the_tail_in_steps():
    assert predicted_tail_seconds(0.18, 1400) == pytest.approx(252.0)


def test_duration_is_the_fixed_budget_until_the_step_time_is_measured():
    clock = FakeClock(0.01)
    timer = SpeedReserveTimer(600.0, lambda: 1000.0, tail_steps=1000, warmup_steps=20, every=10, now=clock)
    _run_steps(timer, clock, 29)  # the window opens at step 20 and closes at step 30
    assert timer.duration_seconds == 600.0 and timer.seconds_per_step is None
    _run_steps(timer, clock, 1)
    assert timer.seconds_per_step == pytest.approx(0.01)


@pytest.mark.parametrize("seconds_per_step, min_reserve, expected", [
    (0.1, 60.0, 850.0),    # fast: 0 s elapsed + 1,000 s left - 1,500 x 0.1 s predicted for the final steps
    (0.001, 120.0, 880.0),  # very fast: the 1.5 s predicted is below the 120 s floor, which is kept
    (1.0, 0.0, 600.0),     # slow: 1,500 s predicted, more than the fixed reserve: its 600 s budget is kept
])
def test_the_stage_trains_until_the_predicted_final_steps_just_fit(seconds_per_step, min_reserve, expected):
    # Not started: Lightning's elapsed training time is its restored offset, here 0.
    clock = FakeClock(seconds_per_step)
    timer = SpeedReserveTimer(600.0, lambda: 1000.0, tail_steps=1500, min_reserve_seconds=min_reserve,
                              warmup_steps=5, every=5, now=clock)
    _run_steps(timer, clock, 10)
    assert timer.duration_seconds == pytest.approx(expected)


def test_one_slow_window_does_not_stop_the_stage():
    # A training grid (~11 s) inside one 50-step window of 0.19 s steps: that window's mean is 0.41 s,
    # which predicts 574 s of final steps where 400 s are left; the median of the windows keeps 0.19 s.
    clock = FakeClock(0.19)
    timer = SpeedReserveTimer(100.0, lambda: 400.0, tail_steps=1400, warmup_steps=5, every=50, now=clock)
    trainer = _stub_trainer()
    for step in range(1, 5 + 50 * 4 + 1):
        if step == 60:  # the stage has trained past its fixed 100 s budget, on the measured extension
            timer.load_state_dict({"time_elapsed": {"train": 120.0}})
        clock.t += 0.19 + (11.0 if step == 5 + 50 * 3 else 0.0)
        timer.on_train_batch_end(trainer, None, None, None, 0)
    assert timer.seconds_per_step == pytest.approx(0.19) and not trainer.should_stop
    assert timer.duration_seconds == pytest.approx(120.0 + 400.0 - 0.19 * 1400)


def test_elapsed_training_of_earlier_invocations_counts_and_stops_the_stage():
    # A resumed stage: the restored Timer state says 900 s of its 1,000 s budget were trained already.
    clock = FakeClock(0.1)
    timer = SpeedReserveTimer(1000.0, lambda: 300.0, tail_steps=500, warmup_steps=5, every=5, now=clock)
    timer.load_state_dict({"time_elapsed": {"train": 900.0}})
    _run_steps(timer, clock, 10)
    trainer_after = _stub_trainer()
    timer.on_train_batch_end(trainer_after, None, None, None, 0)
    # 900 s elapsed + 300 s left - 50 s predicted = 1,150 s: past the fixed 1,000 s, and still going
    assert timer.duration_seconds == pytest.approx(1150.0) and not trainer_after.should_stop
    timer.load_state_dict({"time_elapsed": {"train": 1160.0}})
    timer.on_train_batch_end(trainer_after, None, None, None, 0)
    assert trainer_after.should_stop


def test_it_resumes_the_state_of_lightnings_own_timer():
    from lightning.pytorch.callbacks import Timer

    timer = SpeedReserveTimer(600.0, lambda: 0.0, tail_steps=1)
    assert timer.state_key == Timer(duration={"seconds": 1}).state_key


def test_only_stage3_gets_it_and_it_can_be_switched_off(tmp_path):
    settings = QuickstartSettings(out=tmp_path)
    timer = speed_reserve_timer(settings, "disdiff", 1200.0, lambda: 1500.0)
    assert isinstance(timer, SpeedReserveTimer) and timer.min_reserve_seconds == 120.0
    assert timer.tail_steps == settings.tail_step_equivalents
    assert speed_reserve_timer(settings, "ldm", 1200.0, lambda: 1500.0) is None
    settings.speed_reserve = False
    assert speed_reserve_timer(settings, "disdiff", 1200.0, lambda: 1500.0) is None


@pytest.mark.parametrize("time_left, stops_early", [(1e6, False), (0.0, True)])
def test_in_a_real_fit_the_stage_trains_past_the_fixed_budget_only_when_time_allows(time_left, stops_early):
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Slow(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            time.sleep(0.2)
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    # A fixed budget of 2 s stops a 0.2 s/step run after about 10 of its 20 steps; the step time is
    # first measured at step 2, well inside it even on a busy machine.
    timer = SpeedReserveTimer(2.0, lambda: time_left, tail_steps=10, warmup_steps=1, every=1)
    trainer = pl.Trainer(max_steps=20, callbacks=[timer], logger=False, accelerator="cpu",
                         enable_model_summary=False, enable_progress_bar=False, enable_checkpointing=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Slow(), DataLoader(TensorDataset(torch.randn(80, 2)), batch_size=4))
    assert (trainer.global_step < 20) == stops_early
    assert timer.seconds_per_step is not None and timer.seconds_per_step >= 0.2


def test_the_report_says_what_the_measured_step_time_gave_stage3(tmp_path):
    from disdiff.pipeline.layout import QuickstartLayout
    from disdiff.pipeline.pretrained import StagePlan
    from disdiff.pipeline.quickstart_report import _speed_reserve_text
    from disdiff.utils.io import atomic_write_json

    settings = QuickstartSettings(out=tmp_path)
    layout = QuickstartLayout(tmp_path)
    plan = StagePlan(trained=("disdiff",))
    layout.stage_dir("disdiff").mkdir(parents=True)
    atomic_write_json(layout.done_marker("disdiff"), {"global_step": 10, "training_seconds": 1550.0})
    assert _speed_reserve_text(layout, plan, settings) == ""  # the fixed reserve alone (no measurement)
    atomic_write_json(layout.done_marker("disdiff"), {"global_step": 10, "training_seconds": 1550.0,
                                                     "seconds_per_step": 0.18, "fixed_reserve_training_seconds": 1440})
    text = _speed_reserve_text(layout, plan, settings)
    assert "0.180 s per step" in text and f"{settings.tail_step_equivalents:g} steps' worth" in text
    assert "trained 1m50s beyond the 24m00s" in text


@pytest.mark.parametrize("flag, expected", [([], True), (["--fixed-reserve"], False)])
def test_the_cli_switches_the_measured_reserve_off_with_fixed_reserve(tmp_path, monkeypatch, flag, expected):
    from disdiff.cli.main import main
    from disdiff.pipeline import quickstart

    seen = {}
    monkeypatch.setattr(quickstart.Quickstart, "run", lambda self: seen.setdefault("settings", self.settings))
    assert main(["quickstart", "--out", str(tmp_path / "qs"), *flag]) == 0
    assert seen["settings"].speed_reserve is expected
