"""Text-conditional captioned shapes at 32x32 RGB: the embedded text-conditional dataset.

Every caption names the count, size, colour, shape and position of what the image shows, so a
model that ignores its caption, or learned from swapped ones, is easy to catch.

Presets (``--config=configs/shapes.py:<preset>``):
  default  50k generated pairs; caption swap is the paper's CC3M corruption.
  tiny     2k pairs and a few steps, for smoke tests.

  diffcorrupt corruption --config=configs/shapes.py --config.data.corruption.ratio=0.1
reports num_corrupted = 5000 (2500 swapped pairs) and a few example swaps.
Horizontal flips are off: they would contradict "on the left" / "on the right".
"""

from diffcorrupt.config.loading import select_preset
from diffcorrupt.config.presets import small_scale, smoke
from diffcorrupt.config.schema import base_config


def _default(config):
    config.data.name = "captioned_shapes"
    config.data.num_examples = 50_000
    config.data.image_size = 32
    config.data.channels = 3
    config.data.random_flip = False
    config.data.corruption.kind = "swap"
    small_scale(config)


def _tiny(config):
    _default(config)
    smoke(config)
    config.data.num_examples = 2_000


def get_config(arg=None):
    return select_preset(arg, {"default": _default, "tiny": _tiny}, base_config(), "configs/shapes.py")
