"""Does the first stage keep the factors the swap-check readers read? (docs/EXPERIMENTS.md D66-D68)

Fits the swap-check readers (disdiff.inference.swap_check) on real images' first-stage latents, then reads
held-out images after a first-stage round trip (encode, decode with quantisation, clamp, encode again), and
fits the same readers on round-trip images to see what the reconstructions still hold. If the round trip
keeps a factor readable, the first stage is not why generations lose it.

    python experiments/stage1_roundtrip_reads.py RUN_DIR [--images 20000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from disdiff.api import DisDiff
from disdiff.data.registry import load_dataset
from disdiff.inference.swap_check import fit_readers, image_features


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = DisDiff.load(args.run)
    module = model.module
    dataset = load_dataset("shapes3d-synth", resolution=32)
    idx = np.random.RandomState(args.seed).permutation(len(dataset))[:args.images]
    images = torch.from_numpy(dataset.images(idx)).float()
    factors = np.asarray(dataset.factors_of(idx))
    features = image_features(module, images)
    cut = 4 * len(idx) // 5
    readers, accuracy = fit_readers(features[:cut], factors[:cut], features[cut:], factors[cut:], "mlp", args.seed)
    with torch.no_grad():
        round_trip = torch.cat([module.decode_latents(module.encode_images(images[i:i + 512]), quantize=True).clamp(-1, 1)
                                for i in range(0, len(images), 512)])
    rt_features = image_features(module, round_trip)
    rt_accuracy = [float(np.mean(r.predict(rt_features[cut:]) == factors[cut:, f])) for f, r in enumerate(readers)]
    # Readers fitted on round-trip images themselves: what the reconstructions still hold, without the
    # shift between real and reconstructed latents.
    _, rt_fitted = fit_readers(rt_features[:cut], factors[:cut], rt_features[cut:], factors[cut:], "mlp", args.seed)
    names = list(dataset.factor_names)
    print(json.dumps({"real": dict(zip(names, accuracy.round(3).tolist())),
                      "stage1_round_trip_real_readers": dict(zip(names, np.round(rt_accuracy, 3).tolist())),
                      "stage1_round_trip_own_readers": dict(zip(names, rt_fitted.round(3).tolist()))}))


if __name__ == "__main__":
    main()
