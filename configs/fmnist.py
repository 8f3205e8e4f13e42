"""Class-conditional Fashion-MNIST at 32x32 grey: the embedded default dataset.

Presets (``--config=configs/fmnist.py:<preset>``):
  default  the small-scale twin of the paper's class-conditional runs.
  tiny     a few steps on a small batch: what the smoke tests use; trains in seconds.

The corruption manifest at the paper's eta = 7.5%:
  diffcorrupt corruption --config=configs/fmnist.py --config.data.corruption.ratio=0.075
reports num_corrupted = floor(0.075 * 60000) = 4500 with the full set installed (750 of the
embedded 10k fallback), and a flip matrix with an all-zero diagonal.
"""

from diffcorrupt.config.loading import select_preset
from diffcorrupt.config.presets import small_scale, smoke
from diffcorrupt.config.schema import base_config


def _default(config):
    config.data.name = "fashion_mnist"
    config.data.image_size = 32
    config.data.channels = 1
    config.data.corruption.kind = "symmetric"
    small_scale(config)


def _tiny(config):
    _default(config)
    smoke(config)


def get_config(arg=None):
    return select_preset(arg, {"default": _default, "tiny": _tiny}, base_config(), "configs/fmnist.py")
