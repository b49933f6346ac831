"""An image encoder that reads the frozen stage-1/2 networks' features (opt-in
``encoder_config.backbone: dpm``, a deviation from the paper).

Why (docs/EXPERIMENTS.md, D27): the published encoder is a CNN trained from scratch, and at
initialisation its code varies with the colours and hardly with the geometry (shapes3d-synth: the
orientation explains 1 % of a fresh unit's variance, scale and shape under 1 %). The shift decoder
can only learn to use what a code already varies with, and L_r then asks the units for nothing else
(D16), so every unit becomes a colour. The frozen stage-2 UNet had to learn the objects' geometry to
denoise them: on clean latents its encoder half's features give a linear probe shape 0.89 and
orientation 0.60 (chance 0.25 and 0.07), and the orientation explains ~6 % of their variance. A code
read from them starts with the geometry in it.

Layers, for an image ``x`` in [−1, 1]:

1. the first stage's latent (VQ: before quantisation; KL: the posterior mode) times the stage-2
   ``scale_factor`` — the latent the UNet was trained on;
2. the frozen UNet's encoder half at ``t = feature_t`` on that latent (clean: no noise is drawn);
3. every level's output average-pooled over space, and the lowest level's output flattened,
   concatenated (``F`` features); with ``edge_features`` (off by default), the image's colour-edge map
   (:func:`disdiff.models.colour_edges.colour_edge_map`, ``(H−1)(W−1)`` values, no parameters) is
   appended. Why: scale and shape are no linear direction of the UNet features, the latent or the
   pixels, but independent components of the edge map (docs/EXPERIMENTS.md, D39-D43). ``edge_source:
   reconstruction`` takes the edges of the first stage's reconstruction of the latent instead of the
   image's, which generation's blur and noise hardly move (D44, D45);
4. with ``whiten_features`` (off by default), a fixed ZCA whitening of the ``F`` features
   (:class:`disdiff.models.feature_whitening.FixedWhitening`, eigenvalue floor ``whitening_eps``), fitted
   once before the first training step on real images (``whitening_images`` of them,
   :func:`disdiff.training.encoder_setup.fit_feature_whitening`). Why: the raw features' variance is
   ~86 % the hues and under 1 % scale and shape, so the head learns a geometric read-out ~100x slower
   than a hue's (docs/EXPERIMENTS.md, D28);
5. ``LayerNorm(F)`` → ``Linear(F, hidden)`` → SiLU → ``Linear(hidden, N·d)``. With ``ica_init`` (off
   by default) a second, linear read-out of the ``F`` features is added to the head's output
   (:class:`disdiff.models.ica_readout.ICAReadout`), set before the first training step to the
   independent components of ``ica_images`` training images' features, with the head's last layer
   zeroed at the same time, so that training starts from the ICA code (docs/EXPERIMENTS.md, D38). With
   ``edge_features`` the ICA weighs the two blocks (UNet features, edge map) equally: each block's
   standardised features are divided by the square root of its width (D43). ``ica_components`` (null:
   the code's N·d) fits more components than the code has and keeps N·d of them, dropping those
   dependent on one kept (mutual information above ``ica_max_dependence`` nats, no labels; D48, D52);
   ``ica_restarts`` (default 1) runs FastICA from that many starts and keeps the most non-Gaussian fit (D54);
6. with ``standardize_code`` (off by default), an affine-free ``BatchNorm1d(N·d)``, as the CNN
   encoder's switch of that name: every code dimension has unit variance over real images, so the
   code's scale cannot grow. Why: with the live re-encoder (``train_reencoder``) the head's unbounded
   output scale closed a loop that diverged (docs/EXPERIMENTS.md, E99 seed 2).

Only the layers of steps 5-6 are trained (the ICA read-out's weights included; its feature statistics
are fixed); step 4's statistics are fixed buffers, saved in checkpoints.
The frozen networks are the stage-3 module's own (``first_stage`` and ``denoiser.unet``); this encoder
holds them without registering them, so they add nothing to its parameters, state dict or mode
switches, and no gradient reaches their weights. Gradients do flow
through them to the images, as the disentangling loss's re-encoding needs.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from disdiff.models.colour_edges import colour_edge_map, num_edge_features
from disdiff.models.feature_whitening import FixedWhitening
from disdiff.models.ica_readout import ICAReadout
from disdiff.models.image_encoder import standardized_code

__all__ = ["DPMFeatureEncoder", "CONFIG_KEYS", "pooled_levels"]

#: The ``encoder_config`` keys of this encoder (``backbone: dpm`` selects it).
CONFIG_KEYS = ("backbone", "hidden", "feature_t", "standardize_code", "whiten_features", "whitening_eps",
               "whitening_images", "ica_init", "ica_images", "ica_components", "ica_max_dependence", "ica_restarts",
               "edge_features", "edge_source")
#: Where ``edge_features`` takes its edges: the image, or the first stage's reconstruction of it (D45).
EDGE_SOURCES = ("image", "reconstruction")


def pooled_levels(hs: list[torch.Tensor]) -> torch.Tensor:
    """Step 3's read-out of the UNet encoder half's outputs ``hs``: every level averaged over space, and
    the lowest level flattened as well: ``(B, F)``."""
    return torch.cat([h.mean(dim=(2, 3)) for h in hs] + [hs[-1].flatten(1)], dim=1)


def latent_is_deterministic(first_stage: nn.Module) -> bool:
    """True when ``encode_to_latent`` is already deterministic (a VQ first stage, or one without a
    posterior ``encode``); a KL autoencoder's draws a posterior sample."""
    return hasattr(first_stage, "quantize") or getattr(first_stage, "encode", None) is None


def clean_latent(first_stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The first stage's deterministic latent of images ``x``: the VQ pre-quantisation latent, or the
    KL posterior's mode."""
    if latent_is_deterministic(first_stage):
        return first_stage.encode_to_latent(x)
    return first_stage.encode(x).mode()


class DPMFeatureEncoder(nn.Module):
    """``x → z``: a trained head on the frozen first stage's and UNet encoder half's features (module docstring).

    ``forward(x)`` returns the flat code ``(B, N·d)``, as :class:`disdiff.models.image_encoder.ImageEncoder`.
    """

    def __init__(self, first_stage: nn.Module, unet: nn.Module, scale_factor: float, image_shape: tuple[int, int, int],
                 num_units: int, unit_dim: int, hidden: int = 256, feature_t: int = 0,
                 standardize_code: bool = False, whiten_features: bool = False, whitening_eps: float = 0.1,
                 whitening_images: int = 4096, ica_init: bool = False, ica_images: int = 5000,
                 ica_components: int | None = None, ica_max_dependence: float = 0.2, ica_restarts: int = 1,
                 edge_features: bool = False, edge_source: str = "image") -> None:
        super().__init__()
        if int(hidden) < 1 or int(feature_t) < 0:
            raise ValueError(f"hidden must be >= 1 and feature_t >= 0, got hidden={hidden}, feature_t={feature_t}")
        if whiten_features and (float(whitening_eps) <= 0 or int(whitening_images) < 2):
            raise ValueError(f"whitening_eps must be > 0 and whitening_images >= 2, got {whitening_eps}, "
                             f"{whitening_images}")
        if ica_init and whiten_features:
            raise ValueError("ica_init and whiten_features exclude each other (ICA whitens the features itself)")
        components = num_units * unit_dim if ica_components is None else int(ica_components)
        if ica_init and components < num_units * unit_dim:
            raise ValueError(f"ica_components ({components}) must be at least the code's {num_units * unit_dim} "
                             "dimensions")
        if ica_init and int(ica_restarts) < 1:
            raise ValueError(f"ica_restarts must be >= 1 (FastICA starts), got {ica_restarts}")
        if ica_init and int(ica_images) <= components:
            raise ValueError(f"ica_images must exceed the ICA's {components} components, got {ica_images}")
        self._frozen = (first_stage, unet)  # a tuple: not registered, so not this module's parameters
        self.scale_factor = float(scale_factor)
        self.feature_t = int(feature_t)
        self.num_units, self.unit_dim = int(num_units), int(unit_dim)
        # The image geometry, as ImageEncoder records it (export and training check data against it).
        self.in_channels, self.resolution = int(image_shape[0]), (int(image_shape[1]), int(image_shape[2]))
        if edge_source not in EDGE_SOURCES:
            raise ValueError(f"edge_source must be one of {', '.join(EDGE_SOURCES)}, got {edge_source!r}")
        self.edge_features, self.edge_source = bool(edge_features), str(edge_source)
        with torch.no_grad():
            num_features = self.features(torch.zeros(1, *image_shape)).shape[1]
        self.whitening = FixedWhitening(num_features, float(whitening_eps)) if whiten_features else None
        self.whitening_images = int(whitening_images)
        self.head = nn.Sequential(nn.LayerNorm(num_features), nn.Linear(num_features, int(hidden)), nn.SiLU(),
                                  nn.Linear(int(hidden), self.num_units * self.unit_dim))
        # The ICA's blocks: the UNet features, and the edge map when it is appended (weighed equally, D43).
        edges = num_edge_features(*self.resolution) if self.edge_features else 0
        blocks = (num_features - edges, edges) if edges else (num_features,)
        self.ica = (ICAReadout(num_features, self.num_units * self.unit_dim, blocks, components,
                               float(ica_max_dependence), int(ica_restarts)) if ica_init else None)
        self.ica_images = int(ica_images)
        self.code_norm = nn.BatchNorm1d(self.num_units * self.unit_dim, affine=False) if standardize_code else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Steps 1-3: ``(B, F)`` frozen features of images ``x``."""
        return self.features_of_latent(self.scale_factor * clean_latent(self._frozen[0], x), x)

    def features_of_latent(self, latent: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Steps 2-3 on a latent already scaled by ``scale_factor``; ``x``, the images it encodes, is
        needed only with ``edge_features``."""
        t = torch.full((latent.shape[0],), self.feature_t, dtype=torch.long, device=latent.device)
        _, hs = self._frozen[1].encode(latent, t)
        features = pooled_levels(hs).float()
        if not self.edge_features:
            return features
        if self.edge_source == "reconstruction":
            # The first stage cannot reproduce pixel noise, so these edges barely move when generation
            # blurs or noises an image (D45), where the raw image's do (D44).
            x = self.reconstruction(latent)
        elif x is None:
            raise ValueError("edge_features: features_of_latent needs the images x as well as their latent")
        return torch.cat([features, colour_edge_map(x.float())], dim=1)

    def reconstruction(self, latent: torch.Tensor) -> torch.Tensor:
        """The first stage's image of a latent scaled by ``scale_factor``, in [−1, 1] (``edge_source:
        reconstruction`` takes its edges)."""
        return self._frozen[0].decode_latent(latent / self.scale_factor).clamp(-1, 1)

    @property
    def reads_training_latent(self) -> bool:
        """True when step 1 is the latent stage 3 trains on (``encode_to_latent`` is deterministic; a KL
        one's is a posterior sample, not its mode): a training step can then pass that latent to
        :meth:`features_of_latent` instead of encoding the images a second time (~4 % of the small
        step, benchmarks/bench_dpm_latent_shortcut.py)."""
        return latent_is_deterministic(self._frozen[0])

    def features_fingerprint(self) -> str:
        """A digest of everything :meth:`features` depends on (the frozen weights, ``scale_factor`` and
        ``feature_t``): equal digests give equal features, so they can be computed once for many heads."""
        digest = hashlib.sha1(f"{self.scale_factor!r}/{self.feature_t}".encode())
        if self.edge_features:  # appended so that the digests of encoders without the edge map are unchanged
            digest.update(b"/edge_features" + (b"/reconstruction" if self.edge_source == "reconstruction" else b""))
        for network in self._frozen:
            for name, tensor in network.state_dict().items():
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def forward(self, x: torch.Tensor, running_code_stats: bool = False, from_latent: bool = False) -> torch.Tensor:
        """The flat code ``(B, N·d)``. ``running_code_stats`` as :meth:`ImageEncoder.forward
        <disdiff.models.image_encoder.ImageEncoder.forward>`: with ``standardize_code``, standardise with
        the running statistics without updating them (re-encodings of generated images). With
        ``from_latent``, ``x`` is a latent scaled by ``scale_factor`` and step 1 is skipped; the
        image-edge map, if any, is taken from its reconstruction (the opt-in ``dis_reencode_latent``)."""
        if not from_latent:
            return self.code_from_features(self.features(x), running_code_stats)
        image = self.reconstruction(x) if self.edge_features and self.edge_source == "image" else None
        return self.code_from_features(self.features_of_latent(x, image), running_code_stats)

    def code_from_features(self, features: torch.Tensor, running_code_stats: bool = False) -> torch.Tensor:
        """Steps 4-6 on precomputed :meth:`features` (what an export of many checkpoints shares)."""
        if self.whitening is not None:
            features = self.whitening(features)
        code = self.head(features)
        if self.ica is not None:
            code = code + self.ica(features)
        return standardized_code(code, self.code_norm, running_code_stats)

    @torch.no_grad()
    def fit_ica(self, features: torch.Tensor, seed: int = 0) -> np.ndarray:
        """Step 5's opt-in ICA read-out: fit it on ``features`` ``(n, F)`` and zero the head's last layer,
        so that the code equals the independent components; return their excess kurtosis."""
        if self.ica is None:
            raise ValueError("this encoder was built without ica_init")
        kurtosis = self.ica.fit(features, seed)
        self.head[-1].weight.zero_()
        self.head[-1].bias.zero_()
        return kurtosis

    def encode_units(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, d)``."""
        return self.forward(x).reshape(x.shape[0], self.num_units, self.unit_dim)
