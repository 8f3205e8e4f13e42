"""Class-conditional Fashion-MNIST at 32x32 grey: the embedded default dataset.

Presets (``--config=configs/fmnist.py:<preset>``):
  default  the small-scale twin of the paper's class-conditional runs.
  tiny     a few steps on a small batch: what the smoke tests use; trains in seconds.
  latent   the demo's latent diffusion model and the measured reproduction's (docs/reproduction.md):
           DiT-T/2 on the 8x8x4 latents of a small KL autoencoder, v-prediction with min-SNR-5
           weighting, no flips, batch 32, lr 2e-3, 1,000 steps (under 2 minutes on 2 CPU cores). Latents
           first (the embedded 10k split, as the demo uses):
             diffcorrupt autoencoder --config=configs/fmnist.py --config.data.split=test --out=ae/fmnist \
               --steps=400 --batch_size=8 --lr=3e-3
             diffcorrupt encode --config=configs/fmnist.py --config.data.split=test --autoencoder=ae/fmnist \
               --out=latents/fmnist
             diffcorrupt train --config=configs/fmnist.py:latent --workdir=runs/fmnist-latent
  lcm      latent consistency distillation (docs/lcm.md) of the latent run in runs/fmnist-latent: the
           student starts from its EMA weights, gains a 256-feature guidance-scale embedding and learns,
           on the teacher's (corrupted) data, to jump along its guided DDIM trajectories at guidance
           1 to 4; 1,000 steps; sampled by the multistep consistency sampler in 4 steps at guidance 2.
             diffcorrupt train --config=configs/fmnist.py:lcm --workdir=runs/fmnist-lcm
             diffcorrupt sample --workdir=runs/fmnist-lcm --steps=2
  small    the cheap twin of the paper's class-conditional grid (``diffcorrupt sweep --grid=fmnist_small``,
           ``--grid=repro_small``): DiT-T/4, batch 64, 4,000 steps, 10k samples for the report. One train
           step took 0.81 s on 2 CPU cores that other jobs shared (bench train, 2026-11-28; at most 55 minutes
           a run); an accelerator should take minutes (not measured).
             diffcorrupt train --config=configs/fmnist.py:small --workdir=runs/fmnist-eta0.05 \
               --config.data.corruption.ratio=0.05
           The paper's direction to look for: at eta <= 7.5% and with CEP, a lower Frechet distance
           (``fd``, classifier features) and higher recall than clean; at 20%, lower conditional accuracy.
           No numbers are measured yet.

  control  ControlNet personalization (docs/personalization.md) of the latent run in runs/fmnist-latent on
           Canny edges (``diffcorrupt sweep --grid=fmnist_control`` for the clean and 5% bases, 3 seeds each):
             diffcorrupt train --config=configs/fmnist.py:control --workdir=runs/fmnist-control
             diffcorrupt sample --workdir=runs/fmnist-control --controls=dataset:test:balanced[5000:10000]
             diffcorrupt evaluate --samples=runs/fmnist-control/eval/step_6000/dpm25-cfg2-seed0

  memorize the memorization-regime experiment (``diffcorrupt sweep --grid=fmnist_memorization``,
           docs/reproduction.md): pixel-space DiT-T/4 at 16x16 on the class-balanced subset
           ``balanced[0:500]`` of the embedded split, no flips (a copy must be of an image as stored),
           20,000 steps (about 33 minutes on 2 CPU cores), checkpoints kept every 5,000 steps so
           that metrics can be followed over training. Its
           held-out reference is the disjoint ``dataset:test:balanced[5000:10000]``.

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


def _small(config):
    _default(config)
    config.model.name = "DiT-T/4"
    config.train.batch_size = 64
    config.train.num_steps = 4_000
    config.train.lr = 3e-4
    config.train.warmup_steps = 200
    config.train.ema_decay = 0.999  # a horizon of 1,000 steps suits a 4,000-step run
    config.train.log_every = 100
    config.checkpoint.every_steps = 1_000
    config.sample.num_samples = 10_000  # the size of the test split


def _objective(config):
    """What a short run learns fastest from (docs/reproduction.md, "Better small models"): v-prediction
    with min-SNR-5 weighting raised the demo's class accuracy at guidance 2 from 0.47 to 0.60."""
    config.diffusion.prediction = "v"
    config.diffusion.min_snr_gamma = 5.0


def _latent(config):
    _default(config)
    _objective(config)
    config.data.name = "latent_records"
    config.data.data_dir = "latents/fmnist"
    # No flips: in four epochs, mirrored images are more to learn, not more to learn from (exactly
    # encoded flips: accuracy 0.728 at guidance 2 against 0.808 without, 2026-12-04).
    config.data.random_flip = False
    config.model.name = "DiT-T/2"
    config.train.batch_size = 32
    config.train.num_steps = 1_000  # as accurate as 1,200 (0.808 at guidance 2, 2026-12-04)
    config.train.lr = 2e-3
    config.train.warmup_steps = 100
    config.train.ema_decay = 0.995  # a horizon of 200 steps suits a 1,000-step run
    config.train.log_every = 50
    config.checkpoint.every_steps = 500
    config.sample.steps = 25


def _lcm(config):
    """Consistency distillation of a latent run, on that run's data: LCM's recipe (guidance embedding,
    EMA target at 0.95, pseudo-Huber, 50-step solver grid) at this scale's guidance range."""
    _latent(config)
    config.distill.teacher = "runs/fmnist-latent"
    config.model.guidance_dim = 256
    config.distill.cfg_min = 1.0
    config.distill.cfg_max = 4.0
    config.train.num_steps = 1_000
    config.train.lr = 2e-4
    config.train.ema_decay = 0.95
    config.sample.sampler = "lcm"
    config.sample.steps = 4
    config.sample.cfg_scale = 2.0


def _control(config):
    """ControlNet personalization (docs/personalization.md) of the latent run in runs/fmnist-latent
    on Canny edges of the same images: the branch copies the first 3 of its 6 blocks, the base stays
    frozen; trained on the first half of the embedded split's balanced order, the second half held
    out for its controls; no condition dropped (diffusers' default). 6,000 steps at lr 1e-3: the
    paper's 10 epochs (1,560 steps here) at lr 1e-4 left the branch at its same-class edge F1, while
    6,000 steps at 1e-3 follow the edges (0.88 against 0.67, 2026-12-05): a ControlNet's zero layers
    start it slowly, and converge after thousands of steps whatever the dataset's size."""
    _latent(config)
    config.personalize.base = "runs/fmnist-latent"
    config.data.control = "canny"
    config.data.subset = "balanced[0:5000]"
    config.model.label_drop = 0.0
    config.train.num_steps = 6_000
    config.train.lr = 1e-3
    config.train.warmup_steps = 0
    config.train.ema_decay = 0.999
    config.checkpoint.every_steps = 1_000


def _memorize(config):
    _default(config)
    _objective(config)
    config.data.split = "test"  # the embedded 10k, whose second half is the held-out reference
    config.data.subset = "balanced[0:500]"
    config.data.image_size = 16
    config.data.random_flip = False
    config.model.name = "DiT-T/4"
    config.train.batch_size = 32
    # The clean N = 500 run starts to copy at 10,000-15,000 steps and copies 3-10% of its samples at
    # 20,000, when its held-out FD has turned up (docs/reproduction.md, the 2026-12-05 pilot).
    config.train.num_steps = 20_000
    config.train.lr = 1e-3
    config.train.warmup_steps = 100
    config.train.ema_decay = 0.995
    config.train.log_every = 500
    config.checkpoint.every_steps = 5_000
    config.checkpoint.keep_every = 5_000


def get_config(arg=None):
    return select_preset(arg, {"default": _default, "tiny": _tiny, "latent": _latent, "small": _small,
                               "lcm": _lcm, "control": _control, "memorize": _memorize}, base_config(),
                         "configs/fmnist.py")
