"""disdiff: unsupervised disentanglement of diffusion probabilistic models (DisDiff).

The package is organised as the system it implements:

- ``disdiff.data``        ground-truth datasets (real file formats and the built-in renderer)
- ``disdiff.diffusion``   pure diffusion maths: schedules, forward process, samplers, EMA
- ``disdiff.models``      networks: autoencoders, ADM UNet, DisDiff encoder and shift decoder
- ``disdiff.training``    Lightning modules, run directories and the ``train`` command
- ``disdiff.metrics``     disentanglement metrics as pure functions
- ``disdiff.evaluation``  the evaluation protocol over checkpoints and seeds
- ``disdiff.cli``         the ``disdiff`` command line
"""

from disdiff.config import instantiate_from_config

__version__ = "0.1.0"
__all__ = ["instantiate_from_config", "__version__"]
