"""Diagnostic for docs/EXPERIMENTS.md: what does L_r ask of each unit? (where the encoder's gradient goes)

For a stage-3 checkpoint, on n random shapes3d-synth images: the per-image gradient of the
reconstruction loss with respect to each unit, delta_k(x) = dL_r(x)/dz^k, averaged over --draws
draws of (t, noise) per image (t uniform, the full code, no nested dropout). A gradient step moves
unit k's value on image x by about -lr * delta_k(x) (before the encoder's kernel spreads it), so
how delta_k depends on the factors says what L_r is pulling unit k towards:

* eta2[k, f]: the share of delta_k's variance explained by factor f (between-level variance of
  the per-level means over the total variance; the noise floor, about (levels - 1) / n, is printed
  from the same statistic with the factor's labels shuffled);
* pull[k, f]: the between-level standard deviation of delta_k itself (absolute size, comparable
  across units and factors), in units of 1e-4.

Also printed per unit: which factor the unit currently holds (largest variance explained of z^k).
With ``--dis-weights``, per unit c: the disentangling loss's mean sample weight w_b and
cross-entropies when every sample's sampled unit is c (t uniform; the loss at its full weight,
whatever the ramp), i.e. how much that loss can ask of unit c at all (w_b is proportional to G_c^2).

    python experiments/unit_gradient.py CKPT [CKPT ...] [--n 2048] [--draws 4] [--dis-weights]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from disdiff.api import DisDiff
from disdiff.diffusion.schedule import extract, q_sample
from disdiff.metrics.probe import variance_explained
from synth_sample import encode_in_chunks, random_sample


def between_level_stats(values: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """``(eta^2, between-level std)`` of ``values`` (n,) grouped by integer ``labels`` (n,)."""
    levels = np.unique(labels)
    means = np.array([values[labels == v].mean() for v in levels])
    weights = np.array([(labels == v).mean() for v in levels])
    between = float((weights * (means - values.mean()) ** 2).sum())
    total = float(values.var())
    return between / max(total, 1e-30), float(np.sqrt(between))


def unit_gradients(model, x: torch.Tensor, draws: int, chunk: int, seed: int) -> np.ndarray:
    """(n, N) per-image dL_r/dz^k, the mean over ``draws`` draws of (t, noise); L_r per image is its L1 mean."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for xs in x.split(chunk):
        with torch.no_grad():
            z0 = model.encode_images(xs)
            code = model.encode_representation(xs)
        total = torch.zeros(code.shape[:2])
        for _ in range(draws):
            z = code.clone().requires_grad_(True)
            t = torch.randint(0, model.schedule.num_timesteps, (xs.shape[0],), generator=generator)
            noise = torch.randn(z0.shape, generator=generator)
            z_t = q_sample(model.schedule, z0, t, noise)
            pred, fields = model.denoiser(z_t, t, z)
            coef = extract(model.schedule.shift_coef, t, z_t.shape)
            per_image = (noise - pred - coef * fields.sum(1)).abs().flatten(1).mean(1)
            (grad,) = torch.autograd.grad(per_image.sum(), z)
            total += grad.sum(-1)  # d = 1 units; for d > 1 the sum over a unit's dimensions
        out.append(total / draws)
    return torch.cat(out).numpy()


@torch.no_grad()
def dis_weights_per_unit(model, x: torch.Tensor, seed: int) -> list[tuple[float, float, float]]:
    """Per unit c: (mean w_b, mean CE_va, mean CE_in) with c the sampled unit of every sample."""
    model.current_dis_weight = lambda: model.dis_weight  # the full weight, past any ramp
    rows = []
    for c in range(model.num_units):
        generator = torch.Generator().manual_seed(seed)
        concept = torch.full((x.shape[0],), c, dtype=torch.long)
        dis = model.compute_losses(x, concept=concept, generator=generator)["dis"]
        rows.append((dis.weight.mean().item(), dis.ce_variant.mean().item(), dis.ce_invariant.mean().item()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dis-weights", action="store_true", help="also the disentangling loss's weight per unit")
    args = parser.parse_args()
    data, factors, x = random_sample(args.n, seed=args.seed)
    names = [name[:5] for name in data.factor_names]
    shuffled = np.random.RandomState(1).permutation(factors)
    for checkpoint in args.checkpoints:
        model = DisDiff.load(checkpoint).module
        model.eval()
        code = encode_in_chunks(model.encode_representation, x).numpy()
        held = variance_explained(code, factors)  # (N, K)
        delta = unit_gradients(model, x, args.draws, args.chunk, args.seed)
        print(f"== {checkpoint}  (n {args.n}, draws {args.draws})")
        print("unit  holds            | eta2 of dL_r/dz_k per factor: " + " ".join(f"{n:>6}" for n in names)
              + " | pull (1e-4): " + " ".join(f"{n:>6}" for n in names) + " | floor")
        for k in range(delta.shape[1]):
            top = int(held[k].argmax())
            stats = [between_level_stats(delta[:, k], factors[:, f]) for f in range(factors.shape[1])]
            floor = max(between_level_stats(delta[:, k], shuffled[:, f])[0] for f in range(factors.shape[1]))
            print(f"{k:>4}  {names[top]:>5} {held[k, top]:.2f} {np.abs(code[:, k]).mean():6.2f}"
                  f" |{'':31}" + " ".join(f"{s[0]:6.3f}" for s in stats)
                  + " |" + "".join(f"{1e4 * s[1]:7.2f}" for s in stats) + f" | {floor:.3f}")
        if args.dis_weights:
            for k, (w, ce_va, ce_in) in enumerate(dis_weights_per_unit(model, x[:512], args.seed)):
                print(f"  dis loss with unit {k} sampled: mean w_b {w:.2e}  CE_va {ce_va:.3f}  CE_in {ce_in:.3f}")


if __name__ == "__main__":
    main()
