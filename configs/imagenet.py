"""Class-conditional ImageNet-1K at 256x256: the paper's main setting.

Presets (``--config=configs/imagenet.py:<preset>``); eta and the corruption kind are overrides, not
presets, and the paper's grids over them live in ``diffcorrupt sweep`` (diffcorrupt/sweeps/grids.py):

  --config.data.corruption.ratio=0.025          eta, one of the paper's 0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2
  --config.data.corruption.kind=asymmetric      flips only within the classes of data.corruption.groups
  --config.model.cep.kind=uniform|gaussian      CEP-U / CEP-G (gamma: --config.model.cep.gamma=1.0)

default  pixels from TFDS (``imagenet2012``), DiT-XL/2 at batch 256; kept for corruption manifests:
           diffcorrupt corruption --config=configs/imagenet.py --config.data.corruption.ratio=0.025
         reports num_corrupted = floor(0.025 * 1281167) = 32029. It needs the dataset prepared by TFDS in
         the ArrayRecord format (the archives are a manual download):
           tfds build imagenet2012 --file_format=array_record --manual_dir=<folder with the ILSVRC2012 tars>

ldm4     LDM-4: the LDM-cin256-v2 U-Net (~400M) on VQ-f4 latents (64x64x3), "ldm_linear" schedule, eps-MSE,
         batch 512 (the paper's 64/GPU x 8), lr 1e-4, 178K steps, guidance 2.0.
           diffcorrupt train --config=configs/imagenet.py:ldm4 --workdir=runs/ldm4-eta0.025 \\
             --config.data.corruption.ratio=0.025
         Paper, Table 1 (guidance 2.0, 50K samples, FID / IS / precision / recall): clean 9.44 / 138.5 / .71 / .43,
         input perturbation 9.18 / 141.8 / .67 / .43, CEP-U 7.00 / 170.7 / .73 / .45, CEP-G 6.91 / 180.8 / .76 / .44.
         Table 6: condition dropout 8.67, label smoothing 8.49. Table 7: fixed data corruption 8.44, random data
         corruption 8.13. Table 5 (guidance 2.5), FID clean vs eta 2.5% at 100K steps 12.7 / 12.2, 150K 10.1 / 9.0.

dit_xl2  DiT-XL/2 (675M, learned sigma, hybrid loss, linear schedule) on SD's KL-f8 latents (32x32x4, scale
         0.18215), batch 256 (32/GPU x 8), lr 1e-4, 400K steps, guidance 1.75.
           diffcorrupt train --config=configs/imagenet.py:dit_xl2 --workdir=runs/dit-eta0.025 \\
             --config.data.corruption.ratio=0.025
         Paper, Table 1 (guidance 1.75): clean 6.76 / 179.7 / .74 / .46, input perturbation 6.75 / 182.3 / .75 / .45,
         CEP-U 5.51 / 189.9 / .77 / .46, CEP-G 5.92 / 185.2 / .75 / .45.

Both latent presets read pre-encoded shards (docs/latent.md). Prepare them once, from the TFDS set above:
  python tools/convert_autoencoder.py --from=vq-f4/model.ckpt --preset=vq-f4 --out=ae/vq-f4
  python tools/convert_autoencoder.py --from=sd-vae-ft-ema/ --out=ae/kl-f8
  diffcorrupt encode --config=configs/imagenet.py:ldm4 --config.data.name=tfds:imagenet2012 \\
    --config.data.data_dir= --autoencoder=ae/vq-f4 --out=latents/imagenet256-vq-f4 --flips
  diffcorrupt encode --config=configs/imagenet.py:dit_xl2 --config.data.name=tfds:imagenet2012 \\
    --config.data.data_dir= --autoencoder=ae/kl-f8 --out=latents/imagenet256-kl-f8 --flips
(paths relative to the repository root; ``--config.data.data_dir=DIR`` points a run elsewhere; ``--flips`` stores
each image's mirror too, for the random flips both papers train with). The corruption
is applied by example index when the shards are read, so one encoding serves every eta and seed.

Evaluation as the paper's numbers were made: 50K class-balanced samples, DPM-Solver 50 steps, at the
preset's guidance. The paper compares with the 50K validation images; the sweep grids pass the ADM
reference batch instead, the usual stand-in (linked from guided-diffusion's evaluations/ README):
  diffcorrupt report --workdirs='runs/ldm4-*' --reference=references/VIRTUAL_imagenet256_labeled.npz

Personalization (paper section 3.5, docs/personalization.md): a control branch beside a pre-trained run,
trained 10 epochs on ImageNet-100's Canny edges with diffusers' ControlNet training defaults (lr 5e-6
constant after 500 warm-up steps, AdamW weight decay 1e-2, gradient norm 1, no empty prompts, no EMA; 4
images a device on the paper's 8 GPUs: batch 32, 39,590 steps), the base frozen:

controlnet_ldm4  ControlNet beside an ldm4 run      (personalize.base: runs/imagenet_ldm4/eta0_seed0)
t2i_ldm4         T2I-Adapter beside an ldm4 run     (the same base)
controlnet_dit   ControlNet-Transformer beside a dit_xl2 run, 13 of 28 blocks copied as PixArt-delta
                 (personalize.base: runs/imagenet_dit/eta0_seed0)
  diffcorrupt train --config=configs/imagenet.py:controlnet_ldm4 --workdir=runs/in100-canny-eta0.025 \\
    --config.personalize.base=runs/imagenet_ldm4/eta0.025-symmetric_seed0
  diffcorrupt report --workdirs='runs/in100-canny-*' --controls=dataset:validation:classes:classes/imagenet100.json \\
    --reference=dataset:validation:classes:classes/imagenet100.json --num_samples=5000
``diffcorrupt sweep --grid=imagenet100_ldm4_controlnet`` (and ``_t2i``, ``imagenet100_dit_controlnet``) runs one
beside each clean, symmetric-eta, CEP-U and CEP-G run of the pre-training grids. ImageNet-100 is a list the
paper does not publish and this repository does not ship: the usual one is CMC's (Tian et al. 2019,
``imagenet100.txt``, 100 WordNet ids); write it as ``classes/imagenet100.json``, a JSON list of WordNet ids or
class ids. The step count assumes its 126,689 training images; set train.num_steps for another list.

Asymmetric corruption flips only among the ImageNet classes that overlap CIFAR-100 (WordNet), a list the
paper does not publish and this repository does not ship: write it as ``groups/imagenet_cifar100.json``, one
list of class ids or of the dataset's class names (WordNet ids for TFDS imagenet2012), e.g. ``[["n01440764", "n02123045", ...]]`` (or point
``data.corruption.groups`` at another file). Symmetric runs never read it.
"""

from diffcorrupt.config.loading import select_preset
from diffcorrupt.config.schema import base_config

IMAGENET_CIFAR100_GROUPS = "groups/imagenet_cifar100.json"
IMAGENET100_CLASSES = "classes/imagenet100.json"
IMAGENET100_TRAIN = 126_689  # training images of CMC's ImageNet-100 (1,300 a class, fewer in a few)
PERSONALIZE_BATCH = 32  # diffusers' train_controlnet.py: 4 per device, on the paper's 8 GPUs


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


def _latent(config, data_dir):
    """ImageNet at 256x256 (what the encoder saw) read as pre-encoded latents from ``data_dir``."""
    _default(config)
    config.data.name = "latent_records"
    config.data.data_dir = data_dir
    config.data.corruption.groups = IMAGENET_CIFAR100_GROUPS
    config.checkpoint.keep_every = 50_000  # Table 5 reads FID along training


def _ldm4(config):
    _latent(config, "latents/imagenet256-vq-f4")
    config.model.name = "LDM-cin256-v2"
    config.diffusion.schedule = "ldm_linear"
    config.train.batch_size = 512
    config.train.num_steps = 178_000
    config.sample.cfg_scale = 2.0


def _dit_xl2(config):
    _latent(config, "latents/imagenet256-kl-f8")
    config.model.name = "DiT-XL/2"
    config.model.learned_sigma = True
    config.diffusion.schedule = "linear"
    config.diffusion.loss = "hybrid"
    config.train.batch_size = 256
    config.train.num_steps = 400_000
    config.sample.cfg_scale = 1.75


def _personalize(config, pretrain, base, method):
    """Personalization on ImageNet-100 (paper section 3.5) beside the pre-trained run ``base``: Canny
    edges of the same latents' images, the classes of ``IMAGENET100_CLASSES`` (labels unchanged, so
    the base's class table serves), clean data, 10 epochs with diffusers' ControlNet defaults."""
    pretrain(config)
    config.personalize.base = base
    config.personalize.method = method
    config.data.subset = f"classes:{IMAGENET100_CLASSES}"
    config.data.control = "canny"
    config.model.label_drop = 0.0  # proportion_empty_prompts
    config.train.batch_size = PERSONALIZE_BATCH
    config.train.num_steps = 10 * IMAGENET100_TRAIN // PERSONALIZE_BATCH
    config.train.lr = 5e-6
    config.train.lr_schedule = "constant"
    config.train.warmup_steps = 500
    config.train.weight_decay = 1e-2
    config.train.grad_clip = 1.0
    config.train.ema_decay = 0.0  # diffusers keeps no EMA of a ControlNet: the sampled weights are the trained ones
    config.checkpoint.every_steps = 5_000
    config.checkpoint.keep_every = 0


def _controlnet_ldm4(config):
    _personalize(config, _ldm4, "runs/imagenet_ldm4/eta0_seed0", "controlnet")


def _t2i_ldm4(config):
    _personalize(config, _ldm4, "runs/imagenet_ldm4/eta0_seed0", "t2i-adapter")


def _controlnet_dit(config):
    _personalize(config, _dit_xl2, "runs/imagenet_dit/eta0_seed0", "controlnet")
    config.personalize.copies = 13  # PixArt-delta's 13 of 28 blocks


def get_config(arg=None):
    return select_preset(arg, {"default": _default, "ldm4": _ldm4, "dit_xl2": _dit_xl2,
                               "controlnet_ldm4": _controlnet_ldm4, "t2i_ldm4": _t2i_ldm4,
                               "controlnet_dit": _controlnet_dit}, base_config(), "configs/imagenet.py")
