"""Diagnostic for docs/EXPERIMENTS.md: what does each unit (and each group of copies) save in L_r?

For a stage-3 checkpoint, on the same random images and t ~ U[t_lo, t_hi): the L1 eps error with
the full code, and its increase when one unit's values are permuted across the batch (the unit
keeps its marginal but loses its tie to the image). Units whose dominant factor is the same
(largest variance explained, eta^2 >= --copy-threshold) form a group; the group is then permuted
as a whole, and with all but its first unit permuted. If copies only duplicate information, the
group's gain equals one member's; if they add amplitude or resolution, it is larger.

Also printed per unit: its standard deviation, its largest variance explained (eta^2) and that factor,
and the RMS of its field G_k over the batch.

    python experiments/unit_ablation.py CKPT [CKPT ...] [--n 512] [--t-range 100,600]

The per-unit part is now a product command, `disdiff units` (disdiff.inference.unit_usage), with the
same definitions; this script stays for its copy groups and to reproduce the tables of D13-D21 (its
images and draws differ, so figures agree to within 0.003 in field RMS and 0.002 in gain, not to the digit).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from disdiff.api import DisDiff
from disdiff.diffusion.schedule import extract, q_sample
from disdiff.metrics.probe import variance_explained
from synth_sample import encode_in_chunks, random_sample


@torch.no_grad()
def ablate(checkpoint: str, n: int, t_range: tuple[int, int], copy_threshold: float) -> dict:
    model = DisDiff.load(checkpoint).module
    model.eval()
    data, factors, x = random_sample(n, seed=0)
    code = encode_in_chunks(model.encode_representation, x)  # (n, N, d)
    units = code.shape[1]
    eta = variance_explained(code.numpy(), factors)  # (N, K)
    std = np.sqrt(code.numpy().var(axis=0).sum(axis=-1))
    names = [name[:5] for name in data.factor_names]

    torch.manual_seed(0)
    z0 = model.encode_images(x)
    t = torch.randint(*t_range, (n,))
    noise = torch.randn_like(z0)
    z_t = q_sample(model.schedule, z0, t, noise)
    coef = extract(model.schedule.shift_coef, t, z_t.shape)
    perm = torch.randperm(n)

    def error(c: torch.Tensor) -> tuple[float, torch.Tensor]:
        pred, fields = model.denoiser(z_t, t, c)
        return (noise - pred - coef * fields.sum(1)).abs().mean().item(), fields

    def permuted(ks: list[int]) -> torch.Tensor:
        c = code.clone()
        c[:, ks] = code[perm][:, ks]
        return c

    full, fields = error(code)
    field_rms = fields.pow(2).mean(dim=(0, 2, 3, 4)).sqrt().tolist()
    rows = []
    for k in range(units):
        top = int(eta[k].argmax())
        rows.append({"unit": k, "std": round(float(std[k]), 2), "top": f"{names[top]} {eta[k, top]:.2f}",
                     "field_rms": round(field_rms[k], 4), "gain": round(error(permuted([k]))[0] - full, 4)})
    groups = {}
    for k in range(units):
        top = int(eta[k].argmax())
        if eta[k, top] >= copy_threshold:
            groups.setdefault(names[top], []).append(k)
    group_rows = []
    for name, ks in groups.items():
        if len(ks) < 2:
            continue
        group_rows.append({"factor": name, "units": ks,
                           "gain_all": round(error(permuted(ks))[0] - full, 4),
                           "gain_all_but_first": round(error(permuted(ks[1:]))[0] - full, 4)})
    return {"checkpoint": checkpoint, "t_range": list(t_range), "full": round(full, 4),
            "units": rows, "copy_groups": group_rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--t-range", default="100,600")
    parser.add_argument("--copy-threshold", type=float, default=0.8)
    args = parser.parse_args()
    lo, hi = (int(v) for v in args.t_range.split(","))
    for checkpoint in args.checkpoints:
        result = ablate(checkpoint, args.n, (lo, hi), args.copy_threshold)
        print(f"== {checkpoint}  L1 eps with the full code {result['full']}")
        for row in result["units"]:
            print("  ", json.dumps(row))
        for row in result["copy_groups"]:
            print("  group", json.dumps(row))


if __name__ == "__main__":
    main()
