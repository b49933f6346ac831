"""Opt-in unit_reset: redundancy of a unit given earlier units, re-drawing a unit's output rows."""

import warnings

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from disdiff.config import ConfigError
from disdiff.training.deviations import Deviations
from disdiff.training.unit_reset import UnitReset, reinitialise_unit_rows, unit_redundancy
from disdiff_support import ImageBatches, make_module


def _independent(M=2000, N=4, d=1, seed=0):
    return torch.randn(M, N, d, generator=torch.Generator().manual_seed(seed))


def test_independent_units_are_not_redundant_and_unit_zero_never_is():
    r = unit_redundancy(_independent())
    assert r[0] == 0
    assert r.max() < 0.02  # chance level: about (#features)/M = 9/2000


@pytest.mark.parametrize("copy", [lambda u: 3 * u - 1, lambda u: u**3, lambda u: -u.abs(), lambda u: u**2])
def test_monotone_and_u_shaped_copies_are_redundant(copy):
    z = _independent()
    z[:, 2] = copy(z[:, 0]) + 0.05 * torch.randn(2000, 1, generator=torch.Generator().manual_seed(9))
    r = unit_redundancy(z)
    assert r[2] > 0.85 and r[1] < 0.02 and r[3] < 0.02
    # order matters: the earlier unit of a pair is never the redundant one
    assert r[0] == 0


def test_half_copy_scores_about_half_and_constant_scores_zero():
    z = _independent()
    z[:, 3] = (z[:, 1] + z[:, 3]) / 2**0.5  # half the variance from unit 1
    z[:, 2] = 0.0
    r = unit_redundancy(z)
    assert r[3] == pytest.approx(0.5, abs=0.05) and r[2] == 0


def test_multi_dimensional_units():
    z = _independent(N=3, d=4)
    z[:, 2] = z[:, 0] @ torch.randn(4, 4, generator=torch.Generator().manual_seed(2))  # a rotation-like mix of unit 0
    r = unit_redundancy(z)
    assert r[2] > 0.99 and r[1] < 0.05


def test_reinitialise_touches_only_the_units_rows_and_their_first_moments():
    layer = torch.nn.Linear(10, 6)  # 3 units of d = 2
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1)
    layer(torch.randn(5, 10)).square().sum().backward()
    opt.step()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    moments = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in layer.parameters()}
    reinitialise_unit_rows(layer, 1, 2, torch.Generator().manual_seed(0), opt)
    rows = slice(2, 4)
    for name, p in layer.named_parameters():
        assert torch.equal(p[:2], before[name][:2]) and torch.equal(p[4:], before[name][4:])
        assert not torch.equal(p[rows], before[name][rows]) and p[rows].abs().max() <= 1 / 10**0.5
        assert torch.all(opt.state[p]["exp_avg"][rows] == 0)
        assert torch.equal(opt.state[p]["exp_avg"][:2], moments[p]["exp_avg"][:2])
        assert torch.equal(opt.state[p]["exp_avg_sq"], moments[p]["exp_avg_sq"])  # kept: usual update size
    # the draw depends on the generator only
    other = torch.nn.Linear(10, 6)
    reinitialise_unit_rows(other, 1, 2, torch.Generator().manual_seed(0))
    assert torch.equal(other.weight[rows], layer.weight[rows]) and torch.equal(other.bias[rows], layer.bias[rows])


def test_switch_is_checked():
    assert Deviations.checked().unit_reset is None
    assert Deviations.checked(unit_reset=[500, 0.7, 4000]).unit_reset == (500, 0.7, 4000)
    for bad in ([500, 0.7], [0, 0.7, 10], [500, 1.5, 10], [500, 0.7, -1], [500.5, 0.7, 10], [True, 0.5, 10]):
        with pytest.raises(ConfigError, match="unit_reset"):
            Deviations.checked(unit_reset=bad)


def test_module_resets_redundant_units_during_fit(ldm_ckpt):
    with pytest.raises(ConfigError, match="unit_reset"):
        make_module(ldm_ckpt, unit_reset=[2, 0.5, 10], encoder_config={"width": 8, "unit_branches": True})
    assert make_module(ldm_ckpt).configure_callbacks() == []
    # threshold tiny: with 4 images per batch every later unit is "redundant" at the check steps 2 and 4
    m = make_module(ldm_ckpt, unit_reset=[2, 0.01, 3])
    callbacks = m.configure_callbacks()
    assert len(callbacks) == 1 and isinstance(callbacks[0], UnitReset)
    fc0 = m.encoder.fc.weight.detach().clone()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(m, DataLoader(ImageBatches(), batch_size=4))
    assert m.last_codes is not None and m.last_codes.shape[0] == 4
    # the reset at step 2 re-drew the later units' rows from the seeded draw (no reset after `until` = 3)
    d = m.encoder.unit_dim
    rows = slice(2 * d, 3 * d)  # the last of the 3 units
    expected = torch.Generator().manual_seed(1_000_003 * 2 + 2)
    bound = 1.0 / m.encoder.fc.in_features**0.5
    fresh = (torch.rand(m.encoder.fc.weight[rows].shape, generator=expected, dtype=torch.float64) * 2 - 1) * bound
    # the unit trained for two more steps (lr 1e-3) after its reset: near the fresh draw, far from the start
    assert (m.encoder.fc.weight[rows].double() - fresh).abs().max() < 0.01
    assert (m.encoder.fc.weight[rows] - fc0[rows]).abs().max() > 0.05
