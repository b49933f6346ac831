"""Diagnostic for docs/EXPERIMENTS.md: what does the image encoder's shared trunk know?

The units are linear read-outs (the encoder's last Linear) of the trunk's features. This probes
those features themselves: for each factor, the test accuracy of a logistic regression on the
flattened trunk output (``ImageEncoder._features``, eval-mode BatchNorm as at export), next to the
same probe on the code (the N·d units). If the trunk knows a factor that no unit holds, a new
read-out could find it; if the trunk does not know it, no read-out can.

    python experiments/trunk_probe.py CKPT [CKPT ...] [--train 4000 --test 2000]
"""
from __future__ import annotations

import argparse

from synth_sample import encode_in_chunks, factor_probe, random_sample

from disdiff.api import DisDiff


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=2000)
    args = parser.parse_args()
    _, factors, images = random_sample(args.train + args.test)
    for path in args.checkpoints:
        encoder = DisDiff.load(path).module.encoder.eval()
        trunk = encode_in_chunks(lambda x: encoder._features(x).flatten(1), images).numpy()
        code = encode_in_chunks(encoder, images).numpy()
        print(path, f"trunk features {trunk.shape[1]}, code {code.shape[1]}")
        for name, feats in (("trunk", trunk), ("code", code)):
            accs = factor_probe(feats, factors, args.train)
            print(f"  {name:5s}", " ".join(f"{a:.2f}" for a in accs), flush=True)


if __name__ == "__main__":
    main()
