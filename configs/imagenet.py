"""Class-conditional ImageNet-1K at 256x256 from TFDS (``imagenet2012``), the paper's main setting.

Needs the dataset prepared by TFDS in the ArrayRecord format (the archives are a manual download):
  tfds build imagenet2012 --file_format=array_record --manual_dir=<folder with the ILSVRC2012 tars>

Presets (``--config=configs/imagenet.py:<preset>``):
  default  symmetric corruption, DiT-XL/2 batch 256 as in the paper (32/GPU x 8).

  diffcorrupt corruption --config=configs/imagenet.py --config.data.corruption.ratio=0.025
reports num_corrupted = floor(0.025 * 1281167) = 32029.
"""

from diffcorrupt.config.loading import select_preset
from diffcorrupt.config.schema import base_config


def _default(config):
    config.data.name = "tfds:imagenet2012"
    config.data.image_size = 256
    config.data.channels = 3
    config.data.num_threads = 16
    config.data.num_workers = 8
    config.data.corruption.kind = "symmetric"
    config.model.name = "DiT-XL/2"
    config.train.batch_size = 256
    config.train.num_steps = 400_000
    config.train.lr = 1e-4
    config.checkpoint.every_steps = 10_000


def get_config(arg=None):
    return select_preset(arg, {"default": _default}, base_config(), "configs/imagenet.py")
