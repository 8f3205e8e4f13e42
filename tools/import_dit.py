"""Import a released DiT checkpoint as a diffcorrupt workdir that `diffcorrupt sample` reads.

    python tools/import_dit.py --from=PATH --workdir=DIR [--model=DiT-XL/2] [--autoencoder=DIR]

--from is the facebookresearch ``.pt`` state dict (e.g. DiT-XL-2-256x256.pt) or a diffusers
``DiTTransformer2DModel`` folder (a pipeline folder with ``transformer/``, or that folder itself).
The preset is inferred from the weights unless --model names it. The run's config is DiT's: the
linear schedule of 1000 steps, learned sigma when the model outputs twice its input channels,
ImageNet-style latents (``latent_records``, images 8x the latent size, RGB), sampled as DiT's
evaluation does (250 DDPM steps, guidance 1.5). --autoencoder, an autoencoder folder (from
tools/convert_autoencoder.py, e.g. of stabilityai/sd-vae-ft-ema), is recorded in ``model.json``
as an absolute path: the sample job decodes the latents with it. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ml_collections

from diffcorrupt import jobs
from diffcorrupt.autoencoders.storage import check_autoencoder_folder
from diffcorrupt.checkpoint_import.dit_sources import ImportedDiT, read_dit
from diffcorrupt.checkpoint_import.workdir import check_fresh_workdir, write_imported_run
from diffcorrupt.config.schema import base_config
from diffcorrupt.config.validate import validate
from diffcorrupt.models.registry import parameter_count

LATENT_DOWNSAMPLING = 8  # the Stable Diffusion VAE that DiT was trained in


def import_config(imported: ImportedDiT) -> ml_collections.ConfigDict:
    """The config of a run that would have trained this model, as DiT trained it."""
    config = base_config()
    config.model.name = imported.model_name
    config.model.learned_sigma = imported.learned_sigma
    config.diffusion.schedule = "linear"
    config.diffusion.num_steps = 1000
    config.diffusion.loss = "hybrid" if imported.learned_sigma else "mse"
    config.data.name = "latent_records"
    config.data.image_size = imported.input_shape[0] * LATENT_DOWNSAMPLING
    config.data.channels = 3
    config.sample.sampler = "ddpm"
    config.sample.steps = 250
    config.sample.cfg_scale = 1.5
    validate(config, check_data=False)
    return config


def main(argv: list[str] | None = None) -> int:
    return jobs.run("import_dit", _main, argv, prog="tools/import_dit.py")


def _main(argv: list[str]) -> int:
    parser = jobs.JobParser("import_dit", __doc__.split("\n\n")[0], config=False, prog="tools/import_dit.py")
    parser.add_argument("--from", dest="source", required=True, help="a DiT .pt file or a diffusers DiT folder")
    parser.add_argument("--workdir", required=True, help="a fresh folder for the imported run")
    parser.add_argument("--model", default=None, help="DiT-{S,B,L,XL}/{2,4,8}; default: inferred from the weights")
    parser.add_argument("--autoencoder", default=None, help="the autoencoder folder that decodes the latents")
    args = parser.parse_args(argv)
    check_fresh_workdir(args.workdir)
    autoencoder = None if args.autoencoder is None else str(Path(args.autoencoder).absolute())
    if autoencoder is not None:
        check_autoencoder_folder(autoencoder, "--autoencoder")
    imported = read_dit(args.source, args.model)
    config = import_config(imported)
    step_dir = write_imported_run(args.workdir, config, imported.params, imported.input_shape,
                                  imported.num_classes, autoencoder)
    print(json.dumps({"checkpoint": str(step_dir), "source": imported.source, "model": imported.model_name,
                      "input_shape": list(imported.input_shape), "num_classes": imported.num_classes,
                      "learned_sigma": imported.learned_sigma, "parameters": parameter_count(imported.params),
                      "autoencoder": autoencoder}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
