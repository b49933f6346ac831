"""Diagnostic for docs/EXPERIMENTS.md (D36b): do codes exported from bf16 frozen features score the same
metrics as the float32 export?

Exports every shapes3d-synth image's code with the frozen DPM features computed under a bfloat16
autocast (the trained head in float32), writes ``<out>.npz`` in ``disdiff evaluate``'s format, and
prints, per unit, the correlation with the float32 codes of an existing export of the same checkpoint.

    python experiments/bf16_export_check.py RUN_OR_CKPT FLOAT32_NPZ OUT.npz --threads 2
    disdiff evaluate OUT.npz    # then compare with the float32 export's metrics
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from disdiff.api import DisDiff
from disdiff.data.registry import load_dataset
from disdiff.evaluation.export import FrozenFeatureCache, export_representations, save_representations


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("float32_npz")
    parser.add_argument("out")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = DisDiff.load(args.run)
    model.module.eval()
    dataset = load_dataset("shapes3d-synth", resolution=32)
    M = len(dataset)
    # The cache computes the features under the autocast (kept as float32 arrays of bf16 results);
    # the export then runs only the head on them, in float32.
    start = time.monotonic()
    codes = export_representations(model, dataset, batch_size=args.batch, progress=False,
                                   feature_cache=FrozenFeatureCache(bf16=True))
    seconds = time.monotonic() - start
    save_representations(args.out, codes, model.global_step, "shapes3d-synth", dataset)
    with np.load(args.float32_npz) as npz:
        reference = np.asarray(npz["latents"], dtype=np.float32)
    a, b = codes.reshape(M, -1), reference.reshape(M, -1)
    corr = [float(np.corrcoef(a[:, j], b[:, j])[0, 1]) for j in range(a.shape[1])]
    rel = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    print(json.dumps({"seconds": round(seconds, 1), "images": M, "unit_correlation": [round(c, 6) for c in corr],
                      "relative_l2_error": rel}, indent=1))


if __name__ == "__main__":
    main()
