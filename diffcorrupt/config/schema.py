"""The one schema every config preset starts from.

Presets change values, never add keys: ``validate`` treats any key missing here as a typo. Keys that
later stages fill in (models, training, checkpoints) are declared now so that every preset carries
them from the start, as design.md's stable surface asks.
"""

from __future__ import annotations

import ml_collections

CLASS_CORRUPTIONS = ("symmetric", "asymmetric")
TEXT_CORRUPTIONS = ("swap",)
CHOICES = {
    "data.corruption.kind": CLASS_CORRUPTIONS + TEXT_CORRUPTIONS,
    "data.corruption.mode": ("fixed", "random"),
    "data.control": ("", "canny", "folder"),
    "data.corruption.prior": ("empirical", "uniform"),
    "model.cep.kind": ("none", "uniform", "gaussian"),
    "model.cep.gaussian_reading": ("std", "variance"),
    "model.cep.dims": ("last", "all"),
    "model.dtype": ("float32", "bfloat16"),
    "diffusion.schedule": ("linear", "ldm_linear", "ldm_txt_linear", "cosine"),
    "diffusion.prediction": ("eps", "v"),
    "diffusion.loss": ("mse", "hybrid"),
    "sample.sampler": ("ddpm", "ddim", "dpm", "lcm"),
    "distill.loss": ("huber", "l2"),
    "personalize.method": ("controlnet", "t2i-adapter"),
    "train.lr_schedule": ("constant", "cosine"),
}


def base_config() -> ml_collections.ConfigDict:
    """Every key a preset may set, with its default."""
    config = ml_collections.ConfigDict()
    # Seeds the data order, augmentation and (later) initialisation and sampling noise. The
    # corruption has a seed of its own, so that one corrupted dataset can be trained with many seeds.
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    # fashion_mnist | captioned_shapes | synthetic | image_folder | caption_folder | latent_records
    # | tfds:<builder name>, e.g. tfds:imagenet2012.
    config.data.name = "fashion_mnist"
    config.data.split = "train"
    config.data.data_dir = ""  # '' means the source's own default location.
    config.data.num_examples = 0  # Size of generated sources; 0 = the whole dataset elsewhere.
    config.data.subset = ""  # '' = the whole split; '[a:b]' or 'balanced[a:b]' (data/sources/subset.py)
    config.data.image_size = 32
    config.data.channels = 1
    config.data.random_flip = True
    config.data.shuffle = True
    config.data.num_epochs = 0  # 0 = repeat forever.
    config.data.num_workers = 0  # grain worker processes; 0 reads in the main process.
    config.data.num_threads = 4  # grain reader threads per process.
    config.data.prefetch = 64  # elements buffered ahead per process.
    # The control image of each example, for personalization (docs/personalization.md): '' = none;
    # canny = Canny edges (OpenCV, thresholds 100/200) of the example's training pixels (a latent
    # folder's are read from the dataset it was encoded from); folder = the image named by the
    # example's index in data.control_dir (segmentation maps or any other control).
    config.data.control = ""
    config.data.control_dir = ""

    config.data.corruption = ml_collections.ConfigDict()
    config.data.corruption.kind = "symmetric"
    config.data.corruption.ratio = 0.0
    config.data.corruption.mode = "fixed"  # fixed: drawn once (the paper's main setting); random: per epoch.
    config.data.corruption.seed = 0
    config.data.corruption.prior = "empirical"  # distribution the new labels are drawn from.
    # asymmetric only: '' = the dataset's default groups; 'a,b;c,d' = class ids; or a path to a JSON
    # file holding a list of lists of class ids or names.
    config.data.corruption.groups = ""

    config.model = ml_collections.ConfigDict()
    config.model.name = "DiT-S/4"  # DiT-{T,S,B,L,XL}/{2,4,8} or LDM-{cin256-v2,txt256,small}
    config.model.learned_sigma = False  # predict the variance too (DiT's hybrid loss)
    config.model.dtype = "float32"  # compute dtype; parameters stay float32
    config.model.label_drop = 0.1  # share of training conditions replaced by the null one (for guidance)
    config.model.text_max_length = 77  # tokens per caption (text-conditional data)
    # Captions -> ids: 'bytes' (UTF-8 bytes, no vocabulary file), or the path of a BERT WordPiece
    # vocab.txt (an imported model's; a tokenizer_config.json beside it may set do_lower_case).
    config.model.tokenizer = "bytes"
    # The caption encoder: '' = the model's default (DiT-T/S and LDM-small: small, else bert-base),
    # a name in models.text_encoder.TEXT_ENCODERS (small, bert-base, ldm-bert), or a JSON object of
    # its EncoderShape fields (an imported encoder of another geometry).
    config.model.text_encoder = ""
    # LDM only: a JSON object of U-Net fields laid over the LDM-* preset (models.unet.OVERRIDABLE),
    # e.g. '{"model_channels": 320, "channel_mult": [1, 2, 4, 4]}' for an imported geometry; '' = none.
    config.model.unet = ""
    config.model.cep = ml_collections.ConfigDict()
    config.model.cep.kind = "none"
    config.model.cep.gamma = 1.0
    config.model.cep.gaussian_reading = "std"  # std: sigma = gamma/sqrt(d); variance: sigma^2 = gamma/sqrt(d)
    config.model.cep.dims = "last"  # d = the embedding's last dimension, or all its elements
    config.model.cep.perturb_null = False
    # The paper's baselines (Table 6): dropout and label smoothing on the condition embedding.
    config.model.condition_dropout = 0.0
    config.model.label_smoothing = 0.0
    # Features of the guidance-scale embedding a consistency-distilled student takes (LCM: 256); 0 = none.
    config.model.guidance_dim = 0

    config.diffusion = ml_collections.ConfigDict()
    config.diffusion.schedule = "linear"  # linear (DiT) | ldm_linear (LDM) | ldm_txt_linear (text LDM, SD) | cosine
    config.diffusion.num_steps = 1000
    config.diffusion.prediction = "eps"  # eps | v
    config.diffusion.loss = "mse"  # mse | hybrid (learned sigma, as DiT)
    config.diffusion.input_perturbation = 0.0  # Ning et al. 2023 baseline; 0.1 in their paper
    config.diffusion.min_snr_gamma = 0.0  # Min-SNR-gamma loss weighting (Hang et al. 2023: 5); 0 = off

    # Latent consistency distillation (LCM, Luo et al. 2023; docs/lcm.md). A teacher turns training
    # into distillation: this run's model starts from the teacher's EMA weights and learns to jump
    # along the teacher's guided DDIM trajectories, on this config's (corrupted) data.
    config.distill = ml_collections.ConfigDict()
    config.distill.teacher = ""  # the teacher run's workdir; '' = ordinary diffusion training
    config.distill.teacher_step = 0  # its checkpoint; 0 = the newest
    config.distill.ddim_timesteps = 50  # N: the skipping-step solver's grid of N timesteps, T/N apart
    # Guidance scales s drawn uniformly per example (our convention, uncond + s (cond - uncond));
    # LCM's w in [2, 14] with s = 1 + w.
    config.distill.cfg_min = 3.0
    config.distill.cfg_max = 15.0
    config.distill.loss = "huber"  # huber (pseudo-Huber, sqrt(d^2 + c^2) - c) | l2
    config.distill.huber_c = 0.001  # diffusers' LCM script

    # Personalization (docs/personalization.md): a base turns training into the training of a control
    # branch (ControlNet or T2I-Adapter) beside the base run's frozen EMA weights, on this config's
    # data with its data.control images; the base itself is never changed.
    config.personalize = ml_collections.ConfigDict()
    config.personalize.base = ""  # the pre-trained run's workdir; '' = ordinary diffusion training
    config.personalize.base_step = 0  # its checkpoint; 0 = the newest
    config.personalize.method = "controlnet"  # controlnet (U-Net or DiT) | t2i-adapter (U-Net)
    config.personalize.copies = 0  # DiT ControlNet: the blocks copied; 0 = half the depth (PixArt-delta: 13 of 28)

    config.sample = ml_collections.ConfigDict()
    config.sample.sampler = "dpm"  # ddpm | ddim | dpm (DPM-Solver++(2M)) | lcm (a distilled run's multistep sampler)
    config.sample.steps = 50
    config.sample.eta = 0.0  # DDIM only
    config.sample.cfg_scale = 1.5
    config.sample.num_samples = 50_000  # the ADM protocol's 50K; class-balanced (N/C per class)
    config.sample.batch_size = 256  # global; a multiple of the data-parallel size

    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 100_000
    config.train.batch_size = 256  # global, over all processes and devices
    config.train.lr = 1e-4
    config.train.lr_schedule = "constant"  # constant | cosine (decays to 0 at num_steps)
    config.train.warmup_steps = 0
    config.train.weight_decay = 0.0  # AdamW; the paper leaves it unstated
    config.train.b1 = 0.9
    config.train.b2 = 0.999
    config.train.grad_clip = 0.0  # global-norm clipping; 0 turns it off
    config.train.grad_accum = 1  # micro-batches per step (the batch is split, not multiplied)
    config.train.ema_decay = 0.9999  # DiT's
    config.train.log_every = 50
    config.train.sample_every = 0  # EMA sample grids into the workdir and TensorBoard; 0 turns them off

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 5_000
    config.checkpoint.keep = 3  # the newest ones
    config.checkpoint.keep_every = 0  # also keep every n-th step for good; 0 keeps none extra
    config.checkpoint.async_save = True

    # Device mesh; one axis may be -1 for "all remaining devices". Batches split over data x fsdp.
    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1
    config.mesh.fsdp = 1
    config.mesh.tensor = 1
    config.mesh.dcn_data = 1  # slices (or GPU nodes) the data axis spans; data above is per slice
    config.mesh.dcn_fsdp = 1
    # Logical axis -> mesh axes, over diffcorrupt.parallel.sharding.DEFAULT_RULES: 'embed=fsdp,mlp=tensor'.
    config.mesh.rules = ""
    return config
