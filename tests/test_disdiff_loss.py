"""The DisDiff disentangling loss (spec 4.6) as a function of tensors."""

import pytest
import torch
import torch.nn.functional as F

from disdiff.diffusion.schedule import DiffusionSchedule, q_sample
from disdiff.models.disentangling_loss import (
    FrozenReencoder,
    capped_weights,
    dis_loss_from_codes,
    disentangling_loss,
    floored_weights,
    sample_concepts,
    sample_weights,
    unit_sample_weights,
)
from disdiff.models.image_encoder import ImageEncoder


def test_cross_entropy_targets_are_the_sampled_units():
    torch.manual_seed(0)
    B, N, d = 5, 4, 3
    z = torch.randn(B, N, d)
    z_hat = z + torch.randn(B, N, d)
    concept = torch.tensor([0, 3, 1, 2, 3])
    # Only the sampled unit moves, and it moves to the true code: both CEs should favour it.
    z_hat_c = z_hat.clone()
    z_hat_c[torch.arange(B), concept] = z[torch.arange(B), concept]
    z_hat_c.requires_grad_(True)
    w = torch.ones(B)
    loss, ce_va, ce_in = dis_loss_from_codes(z, z_hat, z_hat_c, concept, w, dis_weight=0.5)
    a = (z_hat - z).norm(dim=-1)
    b = (z_hat_c - z).norm(dim=-1)
    delta = (z_hat - z_hat_c).norm(dim=-1)
    assert torch.allclose(ce_va, F.cross_entropy(a - b, concept, reduction="none"))
    assert torch.allclose(ce_in, F.cross_entropy(delta, concept, reduction="none"))
    assert torch.allclose(loss, 0.5 * (ce_va + ce_in))
    # the true targets give a lower loss than any shifted (wrong) target
    for shift in range(1, N):
        wrong = (concept + shift) % N
        wrong_loss, _, _ = dis_loss_from_codes(z, z_hat, z_hat_c, wrong, w, dis_weight=0.5)
        assert torch.all(wrong_loss > loss)


def test_logit_scale_is_an_inverse_temperature_and_one_is_the_published_loss():
    torch.manual_seed(1)
    B, N, d = 6, 3, 4
    z, z_hat, z_hat_c = torch.randn(B, N, d), torch.randn(B, N, d), torch.randn(B, N, d)
    concept = torch.tensor([0, 1, 2, 2, 1, 0])
    w = torch.rand(B)
    published = dis_loss_from_codes(z, z_hat, z_hat_c, concept, w, 0.3)
    assert all(torch.equal(x, y) for x, y in zip(published, dis_loss_from_codes(z, z_hat, z_hat_c, concept, w, 0.3, 1.0)))
    loss, ce_va, ce_in = dis_loss_from_codes(z, z_hat, z_hat_c, concept, w, 0.3, logit_scale=4.0)
    a, b = (z_hat - z).norm(dim=-1), (z_hat_c - z).norm(dim=-1)
    delta = (z_hat - z_hat_c).norm(dim=-1)
    assert torch.allclose(ce_va, F.cross_entropy(4.0 * (a - b), concept, reduction="none"))
    assert torch.allclose(ce_in, F.cross_entropy(4.0 * delta, concept, reduction="none"))
    assert torch.allclose(loss, w * 0.3 * (ce_va + ce_in))


def test_codes_z_and_z_hat_carry_no_gradient():
    B, N, d = 3, 2, 4
    z = torch.randn(B, N, d, requires_grad=True)
    z_hat = torch.randn(B, N, d, requires_grad=True)
    z_hat_c = torch.randn(B, N, d, requires_grad=True)
    loss, _, _ = dis_loss_from_codes(z, z_hat, z_hat_c, torch.tensor([0, 1, 1]), torch.ones(B))
    loss.sum().backward()
    assert z.grad is None and z_hat.grad is None
    assert z_hat_c.grad is not None and z_hat_c.grad.abs().sum() > 0


def test_sample_concepts_is_reproducible_uniform_and_on_device():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    c1, c2 = sample_concepts(1000, 6, g1, "cpu"), sample_concepts(1000, 6, g2, "cpu")
    assert torch.equal(c1, c2) and c1.dtype == torch.long and c1.device.type == "cpu"
    assert c1.min() == 0 and c1.max() == 5
    counts = torch.bincount(c1, minlength=6).float()
    assert counts.min() > 120  # roughly uniform (expected ~167)
    assert sample_concepts(4, 3).shape == (4,)


def test_sample_weights_z_and_im():
    x0, x0c = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    im, imc = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    assert torch.allclose(sample_weights("Z", x0, x0c, im, imc), ((x0 - x0c) ** 2).mean(dim=(1, 2, 3)))
    assert torch.allclose(sample_weights("IM", x0, x0c, im, imc), ((im - imc) ** 2).mean(dim=(1, 2, 3)))
    with pytest.raises(ValueError):
        sample_weights("W", x0, x0c)


def _setup(B=4, N=3, d=2, seed=0):
    torch.manual_seed(seed)
    sched = DiffusionSchedule()
    x0 = torch.randn(B, 3, 4, 4)
    t = torch.tensor([0, 250, 600, 999])[:B]
    x_t = q_sample(sched, x0, t, torch.randn_like(x0))
    pred = torch.randn(B, 3, 4, 4)
    proj = torch.randn(3 * 4 * 4, N * d)
    reencode = lambda img: img.flatten(1) @ proj  # noqa: E731  (a fixed differentiable "encoder")
    decode = lambda lat: 2.0 * lat  # noqa: E731
    z = torch.randn(B, N, d)
    return sched, x_t, t, pred, z, decode, reencode


@pytest.mark.parametrize("loss_type", ["Z", "IM"])
def test_loss_is_exactly_zero_when_the_field_is_zero(loss_type):
    sched, x_t, t, pred, z, decode, reencode = _setup()
    sub_grad = torch.zeros_like(x_t, requires_grad=True)
    out = disentangling_loss(schedule=sched, x_t=x_t, t=t, pred=pred, sub_grad=sub_grad, z=z,
                             concept=torch.tensor([0, 1, 2, 0]), decode=decode, reencode=reencode,
                             loss_type=loss_type, dis_weight=1.0)
    assert torch.all(out.weight == 0) and torch.all(out.loss == 0)
    out.loss.sum().backward()
    assert torch.count_nonzero(sub_grad.grad) == 0


def test_z_weight_closed_form_and_positive_loss_once_the_field_moves():
    sched, x_t, t, pred, z, decode, reencode = _setup()
    sub_grad = (0.1 * torch.randn_like(x_t)).requires_grad_(True)
    concept = torch.tensor([2, 0, 1, 1])
    out = disentangling_loss(schedule=sched, x_t=x_t, t=t, pred=pred, sub_grad=sub_grad, z=z, concept=concept,
                             decode=decode, reencode=reencode, loss_type="Z", dis_weight=0.05)
    ac = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected_w = ((1 - ac) ** 2 / ac * sub_grad.detach() ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(out.weight, expected_w, rtol=1e-4, atol=1e-10)
    assert torch.all(out.loss[1:] > 0)  # t = 0 has a tiny but non-zero weight
    assert torch.equal(out.concept, concept)
    assert torch.allclose(out.loss, out.weight * 0.05 * (out.ce_variant + out.ce_invariant))
    out.loss.sum().backward()
    assert sub_grad.grad.abs().sum() > 0


def test_disentangling_path_uses_ddim_coef():
    sched, x_t, t, pred, z, _, _ = _setup()
    sub_grad = 0.1 * torch.randn_like(x_t)
    seen = []
    out = disentangling_loss(schedule=sched, x_t=x_t, t=t, pred=pred, sub_grad=sub_grad, z=z,
                             concept=torch.zeros(4, dtype=torch.long), decode=lambda lat: seen.append(lat) or lat,
                             reencode=lambda img: img.flatten(1)[:, :6], loss_type="Z")
    x0, x0c = seen
    coef = sched.ddim_coef[t].view(-1, 1, 1, 1)
    eps_c = pred + coef * sub_grad
    expected = sched.sqrt_recip_alphas_cumprod[t].view(-1, 1, 1, 1) * x_t - \
        sched.sqrt_recipm1_alphas_cumprod[t].view(-1, 1, 1, 1) * eps_c
    assert torch.allclose(x0c, expected, atol=1e-5)
    assert out.weight.shape == (4,)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_frozen_reencoder(mode):
    torch.manual_seed(0)
    enc = ImageEncoder(resolution=16, width=4, num_units=2, unit_dim=3)
    enc.train()
    enc(torch.randn(8, 3, 16, 16))  # give BN non-trivial running statistics
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    out = FrozenReencoder(mode)(enc, x)
    assert enc.training  # mode restored
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k  # running statistics untouched
    out.square().sum().backward()
    assert all(p.grad is None for p in enc.parameters())
    assert x.grad is not None and x.grad.abs().sum() > 0
    if mode == "eval":
        enc.eval()
        assert torch.allclose(out, enc(x), atol=1e-6)
    with pytest.raises(ValueError):
        FrozenReencoder("frozen")


def test_normalized_weights_opt_in_rescales_by_the_batch_mean_only():
    sched, x_t, t, pred, z, decode, reencode = _setup()
    concept = torch.tensor([2, 0, 1, 1])
    kwargs = dict(schedule=sched, x_t=x_t, t=t, pred=pred, z=z, concept=concept, decode=decode,
                  reencode=reencode, loss_type="Z", dis_weight=0.05)
    for scale in (1.0, 1e-3):  # the normalised loss does not shrink with the field
        sub_grad = scale * 0.1 * torch.randn(x_t.shape, generator=torch.Generator().manual_seed(5))
        plain = disentangling_loss(sub_grad=sub_grad, **kwargs)
        norm = disentangling_loss(sub_grad=sub_grad, normalize_weight=True, **kwargs)
        assert torch.allclose(norm.weight, plain.weight / plain.weight.mean(), rtol=1e-5)
        assert torch.allclose(norm.weight.mean(), torch.tensor(1.0), rtol=1e-5)
        assert torch.allclose(norm.loss, norm.weight * 0.05 * (norm.ce_variant + norm.ce_invariant))
    # G = 0: still exactly zero (no 0/0)
    zero = disentangling_loss(sub_grad=torch.zeros_like(x_t), normalize_weight=True, **kwargs)
    assert torch.all(zero.weight == 0) and torch.all(zero.loss == 0)


def _z_loss_kwargs(concept: list[int], seed: int) -> dict:
    """The arguments of a "Z" disentangling loss on _setup()'s tensors, with a random field of size 0.1."""
    sched, x_t, t, pred, z, decode, reencode = _setup()
    sub_grad = 0.1 * torch.randn(x_t.shape, generator=torch.Generator().manual_seed(seed))
    return dict(schedule=sched, x_t=x_t, t=t, pred=pred, sub_grad=sub_grad, z=z, concept=torch.tensor(concept),
                decode=decode, reencode=reencode, loss_type="Z", dis_weight=0.05)


def test_flat_in_t_weight_is_the_z_weight_without_its_schedule_factor():
    kwargs = _z_loss_kwargs([1, 0, 2, 1], seed=3)
    sched, t, sub_grad = kwargs["schedule"], kwargs["t"], kwargs["sub_grad"]
    plain = disentangling_loss(**kwargs)
    flat = disentangling_loss(flat_in_t=True, **kwargs)
    abar = sched.alphas_cumprod[t].double()
    factor = ((1 - abar) ** 2 / abar).float()  # (1 - ᾱ)²/ᾱ: from ~1e-6 at t = 0 to ~7e3 at t = 999
    assert torch.allclose(flat.weight, sub_grad.pow(2).flatten(1).mean(1))
    assert torch.allclose(flat.weight * factor, plain.weight, rtol=1e-3)
    # only the weight differs: the same cross-entropies, the same formula for the loss
    assert torch.equal(flat.ce_variant, plain.ce_variant) and torch.equal(flat.ce_invariant, plain.ce_invariant)
    assert torch.allclose(flat.loss, flat.weight * 0.05 * (flat.ce_variant + flat.ce_invariant))
    with pytest.raises(ValueError, match="flat_in_t"):
        disentangling_loss(**{**kwargs, "loss_type": "IM"}, flat_in_t=True)


def test_weight_floor_lifts_weak_units_to_a_fraction_of_the_strongest_field_of_the_sample():
    sched, x_t, t, pred, z, decode, reencode = _setup()
    B, N = x_t.shape[0], z.shape[1]
    gen = torch.Generator().manual_seed(7)
    fields = 0.1 * torch.randn((B, N, *x_t.shape[1:]), generator=gen)
    fields[:, 1] *= 1e-3  # unit 1's field has (almost) died
    concept = torch.tensor([1, 0, 1, 2])
    sub_grad = fields[torch.arange(B), concept]
    kwargs = dict(schedule=sched, x_t=x_t, t=t, pred=pred, sub_grad=sub_grad, z=z, concept=concept,
                  decode=decode, reencode=reencode, loss_type="Z", dis_weight=0.05)
    plain = disentangling_loss(**kwargs)
    # each unit's weight, had it been drawn, is the published formula with its own field
    per_unit = unit_sample_weights(sched, t, fields)
    for b in range(B):
        w_k = [disentangling_loss(**{**kwargs, "sub_grad": fields[:, k], "concept": torch.full((B,), k)}).weight[b]
               for k in range(N)]
        assert torch.allclose(per_unit[b], torch.stack(w_k), rtol=2e-3, atol=1e-12)  # float32 x0 differences
    floored = disentangling_loss(weight_floor=0.5, all_fields=fields, **kwargs)
    expected = torch.maximum(plain.weight, 0.5 * per_unit.amax(dim=1))
    assert torch.allclose(floored.weight, expected, rtol=1e-5)
    # the dead unit's samples (0 and 2) are lifted to half the sample's strongest weight ...
    assert torch.all(floored.weight[[0, 2]] > 100 * plain.weight[[0, 2]])
    # ... a live unit's sample keeps its published weight when it is already above the floor
    live = [b for b in (1, 3) if plain.weight[b] >= 0.5 * per_unit[b].max()]
    assert torch.equal(floored.weight[live], plain.weight[live])
    # only the weight changes
    assert torch.equal(floored.ce_variant, plain.ce_variant)
    assert torch.allclose(floored.loss, floored.weight * 0.05 * (floored.ce_variant + floored.ce_invariant))
    # floor 0 is the published weight; G = 0 everywhere still gives exactly 0
    assert torch.equal(floored_weights(plain.weight, per_unit, 0.0), plain.weight)
    zero = disentangling_loss(**{**kwargs, "sub_grad": torch.zeros_like(x_t)}, weight_floor=1.0,
                              all_fields=torch.zeros_like(fields))
    assert torch.all(zero.loss == 0)
    with pytest.raises(ValueError, match="weight_floor"):
        disentangling_loss(**{**kwargs, "loss_type": "IM"}, weight_floor=0.5, all_fields=fields)
    with pytest.raises(ValueError, match="floor"):
        floored_weights(plain.weight, per_unit, 1.5)


def test_weight_cap_bounds_only_the_weights_above_it():
    kwargs = _z_loss_kwargs([2, 0, 1, 1], seed=11)
    plain = disentangling_loss(**kwargs)
    cap = float(plain.weight.median())  # some samples above the cap, some below
    assert (plain.weight > cap).any() and (plain.weight < cap).any()
    capped = disentangling_loss(weight_cap=cap, **kwargs)
    above = plain.weight > cap
    assert torch.all(capped.weight[above] == cap)
    assert torch.equal(capped.weight[~above], plain.weight[~above])
    # only the weight changes, and the loss keeps its formula
    assert torch.equal(capped.ce_variant, plain.ce_variant) and torch.equal(capped.ce_invariant, plain.ce_invariant)
    assert torch.allclose(capped.loss, capped.weight * 0.05 * (capped.ce_variant + capped.ce_invariant))
    # a cap above every weight is the published loss
    assert torch.equal(disentangling_loss(weight_cap=10 * float(plain.weight.max()), **kwargs).loss, plain.loss)
    with pytest.raises(ValueError, match="cap"):
        capped_weights(plain.weight, 0.0)
