"""The opt-in deviations object: published defaults, checked values, schedules."""

import pytest

from disdiff.config import ConfigError
from disdiff.training.deviations import Deviations, deviations_in_use, ramp_factor


def test_defaults_are_the_published_behaviour():
    d = Deviations.checked()
    assert d == Deviations()
    assert not d.dis_weight_normalize and not d.train_reencoder
    assert d.encoder_lr_multiplier == 1.0 and d.dis_logit_scale == 1.0 and d.code_kl_weight == 0.0
    assert d.nested_unit_dropout == 0.0 and d.progressive_units == 0
    assert all(d.dis_weight_factor(s) == 1.0 and d.code_kl_factor(s) == 1.0 for s in (0, 1, 10**6))
    assert all(d.active_units(6, s) == 6 for s in (0, 5, 10**6))


def test_ramp_is_zero_then_linear_then_one():
    assert [ramp_factor((2, 5), s) for s in range(8)] == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert ramp_factor((3, 3), 2) == 0.0 and ramp_factor((3, 3), 3) == 1.0
    assert ramp_factor(None, 0) == 1.0


def test_progressive_units_join_one_per_period():
    d = Deviations.checked(progressive_units=100)
    assert [d.active_units(4, s) for s in (0, 99, 100, 250, 300, 10**6)] == [1, 1, 2, 3, 4, 4]


def test_values_are_normalised():
    d = Deviations.checked(dis_weight_ramp=[10, 20], encoder_lr_multiplier=2, train_reencoder=1)
    assert d.dis_weight_ramp == (10, 20) and isinstance(d.encoder_lr_multiplier, float) and d.train_reencoder is True


@pytest.mark.parametrize("key, value", [
    ("encoder_lr_multiplier", 0), ("dis_logit_scale", -1.0), ("code_kl_weight", -0.1),
    ("nested_unit_dropout", 1.5), ("progressive_units", "500"), ("progressive_units", 2.5),
    ("progressive_units", True), ("dis_weight_ramp", [5]), ("dis_weight_ramp", [9, 3]),
    ("code_kl_ramp", [0, "x"]), ("code_kl_ramp", [-1, 4]),
    ("encoder_lr_boost", [2000]), ("encoder_lr_boost", [2000, 0]), ("encoder_lr_boost", [-1, 4.0]),
    ("encoder_lr_boost", [2.5, 4.0]), ("encoder_lr_boost", [True, 4.0]),
    ("dis_weight_cap", 0), ("dis_weight_cap", -0.1), ("dis_weight_cap", "0.1"), ("dis_weight_cap", True),
])
def test_bad_values_name_their_key(key, value):
    with pytest.raises(ConfigError, match=key):
        Deviations.checked(**{key: value})


def test_dis_weight_cap_is_off_by_default_and_named_when_set():
    assert Deviations().dis_weight_cap is None
    d = Deviations.checked(dis_weight_cap=1)
    assert d.dis_weight_cap == 1.0 and isinstance(d.dis_weight_cap, float)
    assert d.in_use() == {"dis_weight_cap": 1.0}


def test_unknown_switch_is_an_error():
    with pytest.raises(ConfigError, match="dis_logit_scal"):
        Deviations.checked(dis_logit_scal=5.0)


def test_timestep_focus_is_checked_and_normalised():
    assert Deviations.checked(timestep_focus=[300, 0.5]).timestep_focus == (300, 0.5)
    assert Deviations.checked().timestep_focus is None
    for bad in ([300], [0, 0.5], [300, 1.5], [300.5, 0.5], [True, 0.5], ["300", 0.5]):
        with pytest.raises(ConfigError, match="timestep_focus"):
            Deviations.checked(timestep_focus=bad)


def test_in_use_lists_exactly_the_switches_moved_from_the_paper():
    assert Deviations.checked().in_use() == {}
    d = Deviations.checked(train_reencoder=True, dis_logit_scale=5, encoder_lr_multiplier=1.0, dis_weight_ramp=[1, 2])
    assert d.in_use() == {"train_reencoder": True, "dis_logit_scale": 5.0, "dis_weight_ramp": (1, 2)}


def test_from_params_reads_the_switches_and_ignores_other_keys():
    params = {"num_units": 6, "unit_dim": 1, "nested_unit_dropout": 0.5, "ldm_ckpt": "x"}
    assert Deviations.from_params(params).in_use() == {"nested_unit_dropout": 0.5}
    with pytest.raises(ConfigError, match="nested_unit_dropout"):
        Deviations.from_params({"nested_unit_dropout": 2.0})


def test_deviations_in_use_adds_the_encoder_switches_by_their_config_path():
    params = {"train_reencoder": True, "encoder_config": {"width": 8, "downsamplings": 4, "standardize_code": True}}
    assert deviations_in_use(params) == {"train_reencoder": True, "encoder_config.standardize_code": True}
    assert deviations_in_use({"num_units": 6}) == {}


def test_train_reencoder_until_ends_the_live_reencoder_at_its_step():
    d = Deviations.checked(train_reencoder=True, train_reencoder_until=10)
    assert [d.live_reencoder(step) for step in (0, 9, 10, 5000)] == [True, True, False, False]
    assert d.in_use() == {"train_reencoder": True, "train_reencoder_until": 10}
    assert Deviations.checked(train_reencoder=True).live_reencoder(10 ** 6)  # null: the whole run
    assert not Deviations.checked().live_reencoder(0)  # published: the frozen copy from the start
    for bad in (-1, 2.5, True, "100"):
        with pytest.raises(ConfigError, match="train_reencoder_until"):
            Deviations.checked(train_reencoder=True, train_reencoder_until=bad)
