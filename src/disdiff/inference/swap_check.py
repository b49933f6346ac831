"""Which factor each row of the swap grid changes, read by classifiers instead of by eye.

For ``P`` random pairs of a ground-truth dataset, a source ``s_i`` and a reference ``r_i``, codes
``z = E(x)`` and every unit ``k``:

    own_i      = G( z(s_i) )                               the source from its own code
    swap_{k,i} = G( z(s_i) with unit k := z(r_i)^k )       row k of the (full) swap grid

where ``G`` is conditional DDIM sampling (:func:`disdiff.inference.generate_latents`) decoded with
quantisation, and every row of a pair starts from the same ``x_T`` and noise, as in the swap grid.
A *reader* ``R_f`` per factor ``f``, a classifier fitted on real images of the dataset, names the
value of ``f`` that a generated image shows. Over the pairs whose true values differ,
``f(s_i) != f(r_i)``:

    moved[k, f]   = mean_i [ R_f(swap_{k,i}) != R_f(own_i) ]     row k changes factor f
    adopted[k, f] = mean_i [ R_f(swap_{k,i}) == f(r_i) ]         row k shows the reference's value of f

and, over all pairs, ``own_accuracy[f] = mean_i [ R_f(own_i) == f(s_i) ]``: whether an image's own
code brings its value of ``f`` back, and ``resampled[f] = mean_i [ R_f(own'_i) != R_f(own_i) ]``, where
``own'_i`` is the same code generated from another ``x_T`` and noise: how often ``f`` changes when
only the sampler's draws do. A factor the code does not control has a large ``resampled``, and then
any change of the code that moves the sampling path moves it too, so ``moved[k, f]`` means something
only where it stands above ``resampled[f]``. A row that changes one factor has one large entry in each of
its rows of ``moved`` and ``adopted`` and small ones elsewhere; a unit the decoder ignores has a row
of zeros. The readers see an image only through the frozen first-stage encoder (its flattened
scaled latent), so they owe nothing to stage 3; their test accuracy on held-out real images is
reported with the scores, and a factor read at 0.6 makes its column noisy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from disdiff.inference import generate_latents, swap_units

__all__ = ["READERS", "SwapCheck", "swap_scores", "fit_readers", "read_factors", "image_features",
           "generated_features", "check_swaps"]

READERS = ("mlp", "linear")


@dataclass
class SwapCheck:
    """The figures of the module docstring for one model (arrays indexed [unit, factor])."""

    factor_names: Sequence[str]
    reader: str
    reader_accuracy: np.ndarray  #: (K,) test accuracy of each reader on held-out real images
    own_accuracy: np.ndarray  #: (K,)
    resampled: np.ndarray  #: (K,)
    moved: np.ndarray  #: (rows, K): row r is unit ``units[r]``
    adopted: np.ndarray  #: (rows, K)
    units: Sequence[int]  #: the unit of each row (every unit by default)
    draws: dict[str, Any] = field(default_factory=dict)  #: pairs, steps, eta, seed, reader images

    def rows(self) -> list[dict[str, Any]]:
        """Per unit: the factor its swap moves most above the sampler's own rate (``moved - resampled``),
        with that factor's rates, and the same excess for the runner-up factor."""
        out = []
        excess = self.moved - self.resampled[None]
        for k, unit in enumerate(self.units):
            order = np.argsort(-np.nan_to_num(excess[k], nan=-np.inf))
            top = int(order[0])
            out.append({"unit": int(unit), "top_factor": str(self.factor_names[top]),
                        "moved": float(self.moved[k, top]), "resampled": float(self.resampled[top]),
                        "excess": float(excess[k, top]),
                        "adopted": float(self.adopted[k, top]),
                        "next_factor": str(self.factor_names[int(order[1])]) if len(order) > 1 else None,
                        "next_excess": float(excess[k, int(order[1])]) if len(order) > 1 else None})
        return out

    def record(self) -> dict[str, Any]:
        """JSON-ready."""
        names = [str(n) for n in self.factor_names]
        return {**self.draws, "reader": self.reader, "factor_names": names,
                "reader_accuracy": dict(zip(names, map(float, self.reader_accuracy))),
                "own_accuracy": dict(zip(names, map(float, self.own_accuracy))),
                "resampled": dict(zip(names, map(float, self.resampled))),
                "moved": self.moved.tolist(), "adopted": self.adopted.tolist(), "units": self.rows()}


def swap_scores(read_own: np.ndarray, read_swap: np.ndarray, source: np.ndarray,
                reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(own_accuracy (K,), moved (N, K), adopted (N, K))`` from the readers' values.

    ``read_own`` (P, K) is what the readers see in the own generations, ``read_swap`` (N, P, K) in
    row k's, ``source`` and ``reference`` (P, K) the pairs' true factor values. An entry of
    ``moved``/``adopted`` whose factor has no differing pair is NaN.
    """
    read_own, read_swap = np.asarray(read_own), np.asarray(read_swap)
    source, reference = np.asarray(source), np.asarray(reference)
    if read_own.shape != source.shape or source.shape != reference.shape or read_swap.shape[1:] != source.shape:
        raise ValueError(f"shapes do not agree: own {read_own.shape}, swap {read_swap.shape}, "
                         f"source {source.shape}, reference {reference.shape}")
    own_accuracy = (read_own == source).mean(axis=0)
    differ = source != reference  # (P, K)
    count = differ.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        moved = ((read_swap != read_own[None]) & differ[None]).sum(axis=1) / count
        adopted = ((read_swap == reference[None]) & differ[None]).sum(axis=1) / count
    return own_accuracy, moved, adopted


def _classifier(kind: str, seed: int):
    if kind == "mlp":
        # One hidden layer reads the geometry from shapes3d-synth's 8x8x3 latents, which a linear model
        # reads poorly: scale 0.88 against 0.32, shape 0.99 against 0.68 on held-out images (docs/EXPERIMENTS.md D66).
        model = MLPClassifier(hidden_layer_sizes=(256,), early_stopping=True, max_iter=200, random_state=seed)
    elif kind == "linear":
        model = LogisticRegression(max_iter=500)
    else:
        raise ValueError(f"reader must be one of {READERS}, got {kind!r}")
    return make_pipeline(StandardScaler(), model)


def fit_readers(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                kind: str = "mlp", seed: int = 0) -> tuple[list[Any], np.ndarray]:
    """One fitted classifier per factor (column of ``train_y``) and their test accuracies (K,)."""
    readers, accuracy = [], []
    for f in range(train_y.shape[1]):
        reader = _classifier(kind, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            reader.fit(train_x, train_y[:, f])
        readers.append(reader)
        accuracy.append(float(np.mean(reader.predict(test_x) == test_y[:, f])))
    return readers, np.asarray(accuracy)


def read_factors(readers: Sequence[Any], features: np.ndarray) -> np.ndarray:
    """(B, K): each reader's value for each image's features."""
    return np.stack([r.predict(features) for r in readers], axis=-1)


@torch.no_grad()
def image_features(module: Any, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """What the readers see: the flattened scaled first-stage latent of each image (B, C·h·w)."""
    parts = [module.encode_images(images[i:i + batch_size].to(module.scale_factor.device)).flatten(1).float().cpu()
             for i in range(0, images.shape[0], batch_size)]
    return torch.cat(parts).numpy()


@torch.no_grad()
def generated_features(module: Any, z: torch.Tensor, steps: int, eta: float, seed: int) -> np.ndarray:
    """What the readers see of the DDIM generations from codes ``z`` (B, N, d), sampler seeded by ``seed``."""
    latents = generate_latents(module, z, steps, eta, seed=seed)
    images = module.decode_latents(latents, quantize=True).clamp(-1.0, 1.0)  # as a saved image would be
    return image_features(module, images)


@torch.no_grad()
def check_swaps(module: Any, dataset: Any, pairs: int = 64, steps: int = 50, eta: float = 1.0, seed: int = 0,
                reader: str = "mlp", reader_images: int = 20000, batch_size: int = 64,
                units: Sequence[int] | None = None,
                code_of: Callable[[np.ndarray], torch.Tensor] | None = None) -> SwapCheck:
    """:class:`SwapCheck` of a stage-3 ``DisDiffModule`` (eval mode, the weights wanted loaded) on a
    ground-truth ``dataset``.

    ``code_of(indices)`` gives the codes (B, N, d) of those dataset images; by default the module's
    encoder on the images (another, e.g. the true factors, checks what the generator does with that code).

    The readers are fitted on ``reader_images`` random images (four fifths) and tested on the rest;
    the ``pairs`` (source, reference) pairs are drawn apart from them. Everything is seeded by ``seed``;
    pairs go through the sampler ``batch_size`` at a time, batch b with sampler seed ``seed + b`` (and
    ``seed + B + b`` for the resampled own generations, B the number of batches).
    """
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    n = len(dataset)
    if pairs < 1 or reader_images < 10:
        raise ValueError(f"pairs must be >= 1 and reader_images >= 10, got {pairs}, {reader_images}")
    if 2 * pairs + reader_images > n:
        raise ValueError(f"the dataset has {n} images; {pairs} pairs and {reader_images} reader images need "
                         f"{2 * pairs + reader_images}")
    rng = np.random.RandomState(seed)
    order = rng.permutation(n)
    reader_idx = order[:reader_images]
    src_idx = order[reader_images:reader_images + pairs]
    ref_idx = order[reader_images + pairs:reader_images + 2 * pairs]

    factors = np.asarray(dataset.factors_of(reader_idx))
    features = image_features(module, torch.from_numpy(dataset.images(reader_idx)).float())
    cut = (4 * reader_images) // 5
    readers, reader_accuracy = fit_readers(features[:cut], factors[:cut], features[cut:], factors[cut:], reader, seed)

    unit_list = list(range(module.num_units)) if units is None else [int(k) for k in units]
    read_own, read_resampled, read_swap = [], [], [[] for _ in unit_list]
    device = module.scale_factor.device
    if code_of is None:
        def code_of(indices: np.ndarray) -> torch.Tensor:
            return module.encode_representation(torch.from_numpy(dataset.images(indices)).float().to(device))
    n_batches = -(-pairs // batch_size)
    for b, start in enumerate(range(0, pairs, batch_size)):
        src, ref = src_idx[start:start + batch_size], ref_idx[start:start + batch_size]
        z_src, z_ref = code_of(src).to(device), code_of(ref).to(device)
        read_own.append(read_factors(readers, generated_features(module, z_src, steps, eta, seed + b)))
        # other sampler draws for the same codes (seeds past every batch's)
        read_resampled.append(read_factors(readers, generated_features(module, z_src, steps, eta, seed + n_batches + b)))
        for row, k in enumerate(unit_list):
            swapped = swap_units(z_src, z_ref, k)
            read_swap[row].append(read_factors(readers, generated_features(module, swapped, steps, eta, seed + b)))
    own, swap = np.concatenate(read_own), np.stack([np.concatenate(r) for r in read_swap])
    source, reference = np.asarray(dataset.factors_of(src_idx)), np.asarray(dataset.factors_of(ref_idx))
    own_accuracy, moved, adopted = swap_scores(own, swap, source, reference)
    resampled = (np.concatenate(read_resampled) != own).mean(axis=0)
    names = tuple(str(v) for v in getattr(dataset, "factor_names", ()))
    if len(names) != source.shape[1]:
        names = tuple(f"factor {f}" for f in range(source.shape[1]))
    return SwapCheck(names, reader, reader_accuracy, own_accuracy, resampled, moved, adopted, unit_list,
                     {"pairs": pairs, "steps": steps, "eta": eta, "seed": seed, "reader_images": reader_images})
