"""Render throughput of the built-in ``shapes3d-synth`` dataset (single thread).

Renders the full 480,000-image grid block by block into a reusable in-memory buffer (nothing is
written to disk) and prints one JSON line per resolution:

    python benchmarks/bench_render.py                    # 64x64
    python benchmarks/bench_render.py --resolution 64 32
    python benchmarks/bench_render.py --factor-sizes 4 4 4 8 4 15   # a reduced grid

``images_per_s`` counts the whole job: the one-off ray casting of the 480 geometries plus the
colouring of every image. The BLAS/OpenMP thread count is pinned to 1 before numpy is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from disdiff.data import render  # noqa: E402
from disdiff.data.synth import DEFAULT_FACTOR_SIZES  # noqa: E402


def bench(factor_sizes: tuple[int, ...], resolution: int) -> dict:
    start = time.perf_counter()
    geometry = render.render_geometry(factor_sizes, resolution)
    geometry_seconds = time.perf_counter() - start
    n_floor, n_wall, n_object = factor_sizes[:3]
    block = np.empty((n_object, geometry.num_geometries, resolution, resolution, 3), dtype=np.uint8)
    checksum = 0
    colour_start = time.perf_counter()
    for f in range(n_floor):
        for w in range(n_wall):
            geometry.render_block(f, w, block)
            checksum += int(block[:, :, resolution // 2, resolution // 2].sum(dtype=np.int64))
    colour_seconds = time.perf_counter() - colour_start
    total = time.perf_counter() - start
    images = int(np.prod(factor_sizes))
    return {
        "benchmark": "shapes3d-synth render",
        "resolution": resolution,
        "factor_sizes": list(factor_sizes),
        "images": images,
        "seconds": round(total, 3),
        "images_per_s": round(images / total, 1),
        "geometry_seconds": round(geometry_seconds, 3),
        "colour_images_per_s": round(images / colour_seconds, 1),
        "threads": 1,
        "checksum": checksum,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, nargs="+", default=[64])
    parser.add_argument("--factor-sizes", type=int, nargs=6, default=list(DEFAULT_FACTOR_SIZES))
    args = parser.parse_args(argv)
    for resolution in args.resolution:
        print(json.dumps(bench(tuple(args.factor_sizes), resolution)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
