"""DisDiffModule (stage 3): what trains, gradient paths, losses, EMA, checkpoints, API, configs."""

import inspect
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from disdiff_support import IMAGE_SIZE, ImageBatches, make_module, random_images, randomize_shift_output
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from disdiff.api import DisDiff
from disdiff.config import PACKAGED_CONFIG_DIR, ConfigError, check_param_types, load_configs
from disdiff.diffusion.schedule import extract
from disdiff.training.deviations import deviations_in_use
from disdiff.training.disdiff_module import DisDiffModule

TRAINABLE_PREFIXES = ("denoiser.shift_middle_block.", "denoiser.shift_output_blocks.", "denoiser.shift_out.",
                      "denoiser.repre_embed.", "denoiser.part_emb.", "denoiser.part_latents.", "encoder.")


def test_stage2_is_loaded_frozen_with_its_scale_factor(ldm_ckpt):
    m = make_module(ldm_ckpt)
    raw = torch.load(ldm_ckpt, weights_only=True)["state_dict"]
    assert float(m.scale_factor) == pytest.approx(0.7)
    assert m.hparams["stage2"]["scale_factor"] == pytest.approx(0.7)
    # EMA weights of the stage-2 UNet by default, the raw ones on request
    w = m.denoiser.unet.out[2].weight
    assert torch.equal(w, raw["ema.out__2__weight"])
    m_raw = make_module(ldm_ckpt, use_ema_unet=False)
    assert torch.equal(m_raw.denoiser.unet.out[2].weight, raw["unet.out.2.weight"])
    assert not torch.equal(raw["unet.out.2.weight"], raw["ema.out__2__weight"])
    m.train()
    assert not m.denoiser.unet.training and not m.first_stage.training and m.encoder.training
    assert all(not p.requires_grad for p in m.denoiser.unet.parameters())
    assert all(not p.requires_grad for p in m.first_stage.parameters())


def test_exactly_the_named_parameters_are_trained(ldm_ckpt):
    m = make_module(ldm_ckpt, dis_weight=5.0)
    randomize_shift_output(m)
    names = {id(p): n for n, p in m.named_parameters()}
    trainable = {names[id(p)] for p in m.trainable_parameters()}
    assert trainable == {n for n, p in m.named_parameters() if n.startswith(TRAINABLE_PREFIXES)}
    opt = m.configure_optimizers()["optimizer"]
    assert {names[id(p)] for g in opt.param_groups for p in g["params"]} == trainable
    assert opt.param_groups[0]["weight_decay"] == 0.01
    # EMA shadows the denoiser's trainable parameters only (never the encoder or the frozen UNet)
    assert {"denoiser." + n for n in m.ema.param_to_shadow} == {n for n in trainable if n.startswith("denoiser.")}

    m.train()
    out = m.compute_losses(random_images(4), generator=torch.Generator().manual_seed(0))
    assert out["loss_dis"] > 0
    out["loss"].backward()
    with_grad = {n for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == trainable
    assert all(p.grad is None for n, p in m.named_parameters() if n not in trainable)


def test_encoder_gradient_flows_only_through_repre_embed(ldm_ckpt):
    m = make_module(ldm_ckpt, dis_weight=5.0)
    randomize_shift_output(m)
    m.train()
    captured = {}

    def on_encoder(module, inputs, output):
        if "z" not in captured:  # the first call is the live encoding; later ones are the re-encoder
            captured["z"] = output
            output.register_hook(lambda g: captured.__setitem__("grad_z", g))

    def on_repre(module, inputs, output):
        inputs[0].register_hook(lambda g: captured.__setitem__("grad_repre_in", g))

    h1 = m.encoder.register_forward_hook(on_encoder)
    h2 = m.denoiser.repre_embed.register_forward_hook(on_repre)
    out = m.compute_losses(random_images(4), generator=torch.Generator().manual_seed(1))
    assert out["loss_dis"] > 0
    out["loss"].backward()
    h1.remove()
    h2.remove()
    B = captured["z"].shape[0]
    assert captured["grad_z"].abs().sum() > 0
    assert torch.allclose(captured["grad_z"], captured["grad_repre_in"].reshape(B, -1), atol=1e-7, rtol=1e-5)

    # Cutting the repre_embed path leaves the encoder without any gradient.
    m.zero_grad(set_to_none=True)
    original = m.denoiser.repre_embed.forward
    m.denoiser.repre_embed.forward = lambda x: original(x.detach())
    try:
        out = m.compute_losses(random_images(4), generator=torch.Generator().manual_seed(1))
        out["loss"].backward()
    finally:
        del m.denoiser.repre_embed.forward
    assert all(p.grad is None for p in m.encoder.parameters())


@pytest.mark.parametrize("loss_type", ["Z", "IM"])
def test_dis_loss_is_exactly_zero_at_initialisation(ldm_ckpt, loss_type):
    m = make_module(ldm_ckpt, dis_loss_type=loss_type, dis_weight=1.0)
    out = m.compute_losses(random_images(4), generator=torch.Generator().manual_seed(0))
    assert torch.count_nonzero(out["fields"]) == 0
    assert out["loss_dis"].item() == 0.0
    grads = torch.autograd.grad(out["loss_dis"], list(m.trainable_parameters()), allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)
    randomize_shift_output(m)
    out = m.compute_losses(random_images(4), generator=torch.Generator().manual_seed(0))
    assert out["loss_dis"].item() > 0


def test_reconstruction_uses_shift_coef_and_dis_uses_sampled_unit(ldm_ckpt):
    m = make_module(ldm_ckpt, dis_weight=0.3)
    randomize_shift_output(m)
    x = random_images(4)
    concept = torch.tensor([2, 0, 1, 2])
    out = m.compute_losses(x, concept=concept, generator=torch.Generator().manual_seed(2))
    t, z_t, G = out["t"], out["z_t"], out["fields"]
    eps_hat = out["pred"] + extract(m.schedule.shift_coef, t, z_t.shape) * G.sum(1)
    assert torch.allclose(out["loss_rec"], (out["noise"] - eps_hat).abs().mean(), atol=1e-6)
    dis = out["dis"]
    assert torch.equal(dis.concept, concept)
    ac = m.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    g_c = G[torch.arange(4), concept].detach()
    assert torch.allclose(dis.weight, ((1 - ac) ** 2 / ac * g_c ** 2).mean(dim=(1, 2, 3)), rtol=1e-4, atol=1e-12)
    z = out["z"].detach()
    a = (dis.z_hat - z).norm(dim=-1)
    b = (dis.z_hat_c - z).norm(dim=-1)
    ce_va = torch.nn.functional.cross_entropy(a - b, concept, reduction="none")
    assert torch.allclose(dis.ce_variant, ce_va, atol=1e-6)
    assert torch.allclose(out["loss_dis"], (dis.weight * 0.3 * (dis.ce_variant + dis.ce_invariant)).mean())
    assert torch.allclose(out["loss"], out["loss_rec"] + out["loss_dis"])


def test_dis_weight_zero_skips_the_disentangling_term(ldm_ckpt):
    m = make_module(ldm_ckpt, dis_weight=0.0)
    out = m.compute_losses(random_images(4), generator=torch.Generator().manual_seed(0))
    assert "dis" not in out and out["loss_dis"].item() == 0.0


def test_bad_options_are_config_errors(ldm_ckpt, tmp_path):
    with pytest.raises(ConfigError, match="dis_loss_type"):
        make_module(ldm_ckpt, dis_loss_type="ZZ")
    with pytest.raises(ConfigError, match="reencoder_bn_mode"):
        make_module(ldm_ckpt, reencoder_bn_mode="frozen")
    with pytest.raises(ConfigError, match="ldm_ckpt"):
        make_module("???")
    with pytest.raises(ConfigError, match="not found"):
        make_module(tmp_path / "missing.ckpt")
    with pytest.raises(ConfigError, match="resolution"):
        make_module(ldm_ckpt, encoder_config={"width": 8, "resolution": 32})
    with pytest.raises(ConfigError, match="dis_weight_flat_in_t"):
        make_module(ldm_ckpt, dis_loss_type="IM", dis_weight_flat_in_t=True)
    # a stage-2 run directory resolves to its last checkpoint
    assert make_module(ldm_ckpt.parent.parent).hparams["stage2"]["source"] == str(ldm_ckpt)


def _plain_only(value):
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_only(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain_only(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def test_fit_logs_terms_updates_ema_and_checkpoint_is_self_contained(ldm_ckpt, tmp_path):
    m = make_module(ldm_ckpt, dis_weight=1.0)
    m.learning_rate = 1e-3
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(m, DataLoader(ImageBatches(), batch_size=4))
    for key in ("train/loss_rec", "train/loss_dis", "train/loss"):
        assert key in trainer.callback_metrics
    assert int(m.ema.num_updates) == 2
    assert _plain_only(dict(m.hparams))

    path = tmp_path / "run" / "checkpoints" / "step=00000002.ckpt"
    path.parent.mkdir(parents=True)
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["hyper_parameters"]["stage2"]["unet_config"]["target"] == "disdiff.models.unet.UNetModel"

    # The stage-3 checkpoint loads without the stage-2 file.
    moved = ldm_ckpt.with_name("moved.ckpt")
    ldm_ckpt.rename(moved)
    try:
        model = DisDiff.load(path)
    finally:
        moved.rename(ldm_ckpt)
    assert model.run_dir == tmp_path / "run" and model.global_step == 2 and model.uses_ema
    x = random_images(3, seed=9)
    m.eval()
    with torch.no_grad():
        assert torch.allclose(model.encode(x), m.encode_representation(x), atol=1e-6)
    for name, shadow in m.ema.shadow_state_dict().items():
        assert torch.equal(dict(model.module.denoiser.named_parameters())[name], shadow)

    z = model.encode(x)
    assert z.shape == (3, 3, 4)
    out = model.generate(z, steps=2, eta=1.0, seed=0)
    assert out.shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE) and torch.isfinite(out).all()
    again = model.generate(z, steps=2, eta=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, again)
    swapped = model.swap(x, x[:1], unit=1, steps=2, seed=0)
    assert swapped.shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with pytest.raises(ValueError):
        model.swap(x, x[:1], unit=3, steps=2)


def test_log_images_and_swap_grid_share_x_T_per_column(ldm_ckpt):
    from disdiff.inference import swap_grid, swap_units

    m = make_module(ldm_ckpt)
    randomize_shift_output(m, std=0.2)
    x = random_images(2)
    out = m.log_images({"image": x}, max_images=2, ddim_steps=2)
    assert set(out) == {"inputs", "reconstruction", "samples", "samples_swapping", "samples_swapping_partial"}
    assert out["samples_swapping"].shape == (3 * 2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert out["samples_swapping_partial"].shape == (3 * 2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert m.training  # restored

    m.eval()
    z = m.encode_representation(x).detach()
    # Swapping a unit with the same value changes nothing: every row reproduces the source's own
    # generation exactly, because each row starts from the same x_T (and noise) per column.
    grid = swap_grid(m, z, z[0], steps=3, eta=1.0, seed=7)
    from disdiff.inference import generate

    own = generate(m, z, steps=3, eta=1.0, seed=7)
    assert torch.allclose(grid[0, 0], own[0], atol=1e-5)
    for k in range(3):
        assert torch.allclose(grid[k, 0], own[0], atol=1e-5)  # column 0 is the reference itself
    # row k of the full swap == generation from the swapped codes
    assert torch.allclose(grid[1], generate(m, swap_units(z, z[0], 1), steps=3, eta=1.0, seed=7), atol=1e-5)
    partial = swap_grid(m, z, z[0], steps=3, eta=1.0, seed=7, partial=True)
    assert partial.shape == grid.shape


def test_traversal_and_pca_directions(ldm_ckpt):
    from disdiff.inference import pca_directions, traverse, traverse_codes

    rng = np.random.RandomState(0)
    codes = rng.randn(200, 3, 4).astype(np.float32)
    codes[:, 1, 2] *= 10.0
    directions, std, mean = pca_directions(codes)
    assert directions.shape == (3, 4) and std.shape == (3,)
    assert abs(abs(directions[1, 2]) - 1.0) < 1e-3
    assert np.allclose(np.linalg.norm(directions, axis=1), 1.0, atol=1e-5)
    z = torch.zeros(3, 4)
    moved = traverse_codes(z, directions, std, [-1.0, 0.0, 2.0], unit=1)
    assert torch.equal(moved[1], z) and torch.allclose(moved[2, 1], torch.from_numpy(2 * std[1] * directions[1]))
    assert torch.equal(moved[:, 0], torch.zeros(3, 4)) and torch.equal(moved[:, 2], torch.zeros(3, 4))

    m = make_module(ldm_ckpt).eval()
    grid = traverse(m, z, directions, std, [-1.0, 0.0, 1.0], steps=2, eta=0.0, seed=0)
    assert grid.shape == (3, 3, 3, IMAGE_SIZE, IMAGE_SIZE)
    # G = 0 at initialisation: the image does not depend on z, so all cells are equal (shared x_T)
    assert torch.allclose(grid[0, 0], grid[2, 2], atol=1e-5)


def test_packaged_configs_match_the_module_signature():
    accepted = set(inspect.signature(DisDiffModule.__init__).parameters) - {"self"}
    paths = sorted((PACKAGED_CONFIG_DIR / "disdiff").glob("*-dis.yaml"))
    names = {p.name for p in paths}
    for ds in ("shapes3d", "mpi3d", "cars3d", "celeba"):
        assert {f"{ds}-vq-dis.yaml", f"{ds}-kl-dis.yaml"} <= names
    assert "shapes3d-synth-vq-small-dis.yaml" in names
    for path in paths:
        config = load_configs([path])
        params = config.model.params
        assert config.model.target == "disdiff.training.disdiff_module.DisDiffModule"
        assert set(params) <= accepted, path.name
        plain = OmegaConf.to_container(params, resolve=False)
        check_param_types(DisDiffModule, {k: v for k, v in plain.items() if v != "???"}, path.name)
        # published: N = 6 units of 32 (checked below); the small CPU config: 8 units of 1 (docs/EXPERIMENTS.md)
        assert (params.num_units, params.unit_dim) == (8, 1) if "synth" in path.name else params.num_units == 6
        if path.name.startswith(("shapes3d-vq", "cars3d-vq", "celeba-vq")):
            assert (params.dis_loss_type, params.dis_weight) == ("Z", 0.05)
        if path.name.startswith("mpi3d-vq"):
            assert (params.dis_loss_type, params.dis_weight) == ("Z", 0.01)
        if "-kl-" in path.name:
            assert params.dis_loss_type == "IM"
        if "synth" not in path.name:  # the published recipe (the small CPU config's unit_dim is issue 12's)
            assert params.encoder_config.width == 128 and params.encoder_config.resolution == 64
            assert params.unit_dim == 32
            assert deviations_in_use(plain) == {}, path.name  # the published recipe: no opt-in switch moved


def test_encoder_lr_multiplier_gives_the_encoder_its_own_lr(ldm_ckpt):
    module = make_module(ldm_ckpt, encoder_lr_multiplier=4.0)
    module.learning_rate = 1e-3
    opt = module.configure_optimizers()["optimizer"]
    denoiser_group, encoder_group = opt.param_groups
    # the warm-up scheduler scales both groups alike; initial_lr is the lr it scales
    assert denoiser_group["initial_lr"] == pytest.approx(1e-3) and encoder_group["initial_lr"] == pytest.approx(4e-3)
    assert encoder_group["lr"] == pytest.approx(4 * denoiser_group["lr"])
    # the two groups hold every trainable parameter exactly once
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(module.trainable_parameters()))
    assert {id(p) for p in encoder_group["params"]} == {id(p) for p in module.encoder.parameters()}
    with pytest.raises(ConfigError, match="encoder_lr_multiplier"):
        make_module(ldm_ckpt, encoder_lr_multiplier=0)


def test_encoder_lr_boost_raises_only_the_encoder_lr_and_only_from_its_step(ldm_ckpt):
    module = make_module(ldm_ckpt, encoder_lr_multiplier=0.25, encoder_lr_boost=[3, 4.0])
    module.learning_rate = 1e-3
    module.warmup_steps = 0
    configured = module.configure_optimizers()
    opt, sched = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(5):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    # steps 0-2: the multiplier alone (2.5e-4); from step 3: times 4 (1e-3); the decoder's lr never moves
    assert [round(enc / 1e-3, 6) for _, enc in lrs] == [0.25, 0.25, 0.25, 1.0, 1.0]
    assert all(dec == pytest.approx(1e-3) for dec, _ in lrs)
    # without the boost the scheduler is the published single warm-up lambda
    plain = make_module(ldm_ckpt).configure_optimizers()["lr_scheduler"]["scheduler"]
    assert len({id(f) for f in plain.lr_lambdas}) == 1


def test_train_reencoder_lets_the_disentangling_loss_reach_the_encoder_weights(ldm_ckpt):
    """Published: Ê is a frozen copy, so with a field G that does not depend on the encoder the
    disentangling loss gives the encoder's weights no gradient; with train_reencoder (the
    original's train_enc_flag) it does, through the re-encoding of the shifted prediction, and with
    train_reencoder_until only before that step."""
    from disdiff.models.disentangling_loss import disentangling_loss

    class _Trainer:  # the module reads only global_step through its trainer
        global_step = 50

    x = random_images(4, seed=3)
    # (train_reencoder, train_reencoder_until, the step the module is at) -> is the re-encoder live?
    cases = {(False, None, 0): False, (True, None, 0): True, (True, 60, 50): True, (True, 50, 50): False}
    for (flag, until, step), live in cases.items():
        module = make_module(ldm_ckpt, train_reencoder=flag, train_reencoder_until=until)
        if step:
            module._trainer = _Trainer()
        module.train()
        g = torch.Generator().manual_seed(0)
        z0 = module.encode_images(x)
        t = torch.tensor([100, 400, 700, 999])
        z_t = module.schedule.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1) * z0 + \
            module.schedule.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1) * torch.randn(z0.shape, generator=g)
        with torch.no_grad():
            pred = module.denoiser.unet(z_t, t)
            z = module.encode_representation(x)
        sub_grad = (0.3 * torch.randn(z0.shape, generator=g)).requires_grad_(True)  # independent of the encoder
        out = disentangling_loss(schedule=module.schedule, x_t=z_t, t=t, pred=pred, sub_grad=sub_grad, z=z,
                                 concept=torch.tensor([0, 1, 2, 0]),
                                 decode=lambda lat: module.decode_latents(lat, quantize=False),
                                 reencode=module._reencode, dis_weight=1.0)
        module.zero_grad()
        out.loss.sum().backward()
        total = sum(float(p.grad.abs().sum()) for p in module.encoder.parameters() if p.grad is not None)
        assert (total > 0) == live, (flag, until, step)
        module._trainer = None
    with pytest.raises(ConfigError, match="needs train_reencoder: true"):
        make_module(ldm_ckpt, train_reencoder_until=100)
    with pytest.raises(ConfigError, match="train_reencoder_until must be"):
        make_module(ldm_ckpt, train_reencoder=True, train_reencoder_until=-1)


def test_dis_weight_ramp_is_off_then_linear_then_the_published_weight(ldm_ckpt):
    """Opt-in ramp: no disentangling term (not even computed) before ``start``, dis_weight x
    (step - start + 1) / (end - start + 1) in between, the constant dis_weight from ``end``."""
    module = make_module(ldm_ckpt, dis_weight=0.3, dis_weight_ramp=[10, 19])
    randomize_shift_output(module)

    class _Trainer:  # the module reads only global_step through its trainer
        def __init__(self, step):
            self.global_step = step

    def at(step):
        module._trainer = _Trainer(step)
        return module

    for step, expected in ((0, 0.0), (9, 0.0), (10, 0.03), (14, 0.15), (19, 0.3), (500, 0.3)):
        at(step)
        assert module.current_dis_weight() == pytest.approx(expected)
    x = random_images(4)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    at(5)
    off = module.compute_losses(x, generator=g())
    assert "dis" not in off and off["loss_dis"].item() == 0.0
    at(14)
    mid = module.compute_losses(x, generator=g())
    at(30)
    full = module.compute_losses(x, generator=g())
    assert mid["loss_dis"].item() > 0
    assert mid["loss_dis"].item() == pytest.approx(full["loss_dis"].item() * 0.5, rel=1e-5)
    module._trainer = None
    assert make_module(ldm_ckpt, dis_weight=0.3).current_dis_weight() == 0.3  # default: the published constant
    for bad in ([5], [10, 5], [-1, 3], [1.5, 3]):
        with pytest.raises(ConfigError, match="dis_weight_ramp"):
            make_module(ldm_ckpt, dis_weight_ramp=bad)
    with pytest.raises(ConfigError, match="dis_logit_scale"):
        make_module(ldm_ckpt, dis_logit_scale=0)


@pytest.mark.parametrize("switch", ["dis_weight_flat_in_t", "dis_weight_cap"])
def test_dis_weight_switches_reach_the_loss(ldm_ckpt, switch):
    x = random_images(4)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain = make_module(ldm_ckpt)
    with torch.no_grad():  # a non-zero field, so that the weights are not all zero
        for p in plain.denoiser.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    a = plain.compute_losses(x, generator=g())
    assert a["dis"].weight.abs().sum() > 0
    cap = float(a["dis"].weight.min()) * 1.0001 if switch == "dis_weight_cap" else None
    other = make_module(ldm_ckpt, **{switch: True if cap is None else cap})
    other.load_state_dict(plain.state_dict())
    b = other.compute_losses(x, generator=g())
    assert torch.equal(a["loss_rec"], b["loss_rec"])
    if switch == "dis_weight_flat_in_t":
        sub_grad = b["fields"][torch.arange(4), b["concept"]]
        assert torch.allclose(b["dis"].weight, sub_grad.pow(2).flatten(1).mean(1))
    else:
        assert torch.allclose(b["dis"].weight, a["dis"].weight.clamp_max(cap))
    assert not torch.allclose(a["dis"].weight, b["dis"].weight)
