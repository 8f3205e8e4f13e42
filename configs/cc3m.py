"""Text-conditional CC3M at 256x256: the paper's LDM-4 text-to-image runs, corrupted by caption swap.

Presets (``--config=configs/cc3m.py:<preset>``); eta is an override (the paper's 0, 2.5, 5, 7.5, 10, 15,
20 and 30%), its grid lives in ``diffcorrupt sweep --grid=cc3m_swap``:

default  LDM-4: the LDM-txt256 U-Net cross-attending to a trainable BERT-base-shaped encoder (77 tokens x 768)
         on VQ-f4 latents (64x64x3), "ldm_linear" schedule, batch 512 (64/GPU x 8), lr 1e-4, 396K steps,
         guidance 3.0.
           diffcorrupt train --config=configs/cc3m.py --workdir=runs/cc3m-eta0.05 --config.data.corruption.ratio=0.05
         Paper, Table 1 (guidance 3.0, MS-COCO captions vs COCO validation images): clean FID 19.85, IS 30.1,
         precision .61, recall .42; input perturbation FID 19.48, CEP-U 17.93, CEP-G 18.59.

Preparing the data (once; paths relative to the repository root):
1. Images and captions into a ``caption_folder``: ``<dir>/captions.jsonl`` with one
   ``{"file": <image path relative to dir>, "caption": <text>}`` line per image. With img2dataset and
   Google's training TSV (caption, then URL; it has no header line, so add one):
     sed -i '1i caption\\turl' Train_GCC-training.tsv
     img2dataset --url_list=Train_GCC-training.tsv --input_format=tsv --caption_col=caption --url_col=url \\
       --output_format=files --output_folder=data/cc3m --image_size=256 --resize_mode=center_crop
     python -c "import json, pathlib; root = pathlib.Path('data/cc3m'); print('\\n'.join(json.dumps(
       {'file': str(p.relative_to(root)), 'caption': p.with_suffix('.txt').read_text().strip()})
       for p in sorted(root.glob('*/*.jpg'))))" > data/cc3m/captions.jsonl
   The TSV lists 3,318,333 pairs; images whose links have died are simply absent, and the corruption
   counts what is there: num_corrupted = floor(eta x N), rounded down to even.
2. Encode with the VQ-f4 autoencoder (docs/latent.md), reading the folder once:
     python tools/convert_autoencoder.py --from=vq-f4/model.ckpt --preset=vq-f4 --out=ae/vq-f4
     diffcorrupt encode --config=configs/cc3m.py --config.data.name=caption_folder --config.data.data_dir=data/cc3m \\
       --autoencoder=ae/vq-f4 --out=latents/cc3m256-vq-f4 --flips
   The shards keep the clean captions; the swap is applied by example index when training reads them.
3. For evaluation: the MS-COCO 2014 validation captions, one per line, and its images as an ADM ``.npz``
   (``arr_0`` uint8 256x256 centre crops) or a folder:
     diffcorrupt report --workdirs='runs/cc3m-*' --captions=references/coco_val2014_captions.txt \\
       --reference=references/coco_val2014_256.npz

  diffcorrupt corruption --config=configs/cc3m.py --config.data.data_dir=latents/cc3m256-vq-f4 \\
    --config.data.corruption.ratio=0.05
prints the swap count and a few example swaps without training.

lcm_sd15 the paper's LCM-v1.5 row (Table 1): consistency distillation of Stable Diffusion 1.5 on
         corrupted CC3M. Refused for now: SD-1.5 conditions its U-Net on a frozen CLIP ViT-L/14 text
         tower, which diffcorrupt's models cannot hold yet (their text encoders are the small, BERT and
         LDM-BERT ones), and there is no importer for a diffusers SD folder. The distillation itself is
         model-agnostic (docs/lcm.md): any diffcorrupt run distils, e.g. configs/fmnist.py:lcm.
"""

from diffcorrupt.config.loading import select_preset
from diffcorrupt.config.schema import base_config
from diffcorrupt.errors import ConfigError


def _default(config):
    config.data.name = "latent_records"
    config.data.data_dir = "latents/cc3m256-vq-f4"
    config.data.image_size = 256
    config.data.channels = 3
    config.data.num_threads = 16
    config.data.num_workers = 8
    config.data.corruption.kind = "swap"
    config.model.name = "LDM-txt256"
    config.model.text_max_length = 77
    config.diffusion.schedule = "ldm_linear"
    config.train.batch_size = 512
    config.train.num_steps = 396_000
    config.train.lr = 1e-4
    config.checkpoint.every_steps = 10_000
    config.checkpoint.keep_every = 50_000
    config.sample.cfg_scale = 3.0


def _lcm_sd15(config):
    raise ConfigError("configs/cc3m.py:lcm_sd15 needs Stable Diffusion 1.5's CLIP ViT-L/14 text encoder inside the "
                      "model and an importer for its diffusers folder, which diffcorrupt does not have yet; distil a "
                      "diffcorrupt run instead (configs/fmnist.py:lcm, docs/lcm.md)")


def get_config(arg=None):
    return select_preset(arg, {"default": _default, "lcm_sd15": _lcm_sd15}, base_config(), "configs/cc3m.py")
