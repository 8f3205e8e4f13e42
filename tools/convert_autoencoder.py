"""Convert released autoencoder weights into the project's autoencoder folder.

    python tools/convert_autoencoder.py --from=PATH --out=DIR [--preset=NAME] [--force]

PATH is a diffusers AutoencoderKL / VQModel folder (config.json and
diffusion_pytorch_model.safetensors or .bin; it carries its own architecture, and --preset, if
given, must describe the same one and sets the latent scale), or a CompVis / taming checkpoint (.ckpt, .pth, .pt, .bin),
which needs --preset (e.g. vq-f4 for latent-diffusion's first_stage_models/vq-f4/model.ckpt).
Nothing in a PyTorch file is executed (see diffcorrupt/weights/torch_pickle.py). Prints one JSON
line: out, kind, preset, source, sha256 of params.npz, parameter count, latent scale.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys

import numpy as np
from flax import traverse_util

from diffcorrupt import jobs
from diffcorrupt.autoencoders.convert import import_compvis, import_diffusers
from diffcorrupt.autoencoders.presets import preset as preset_config
from diffcorrupt.autoencoders.storage import save_autoencoder
from diffcorrupt.errors import UserError
from diffcorrupt.output_paths import output_folder


def convert(source: pathlib.Path, out: pathlib.Path, preset: str | None) -> dict:
    if source.is_dir():
        config, params = import_diffusers(source)
        if preset is not None:
            named = preset_config(preset)
            if dataclasses.replace(named, scale_factor=config.scale_factor) != config:
                raise UserError(
                    f"{source} holds a different architecture than preset {preset!r}; drop --preset or fix it"
                )
            config = named  # its latent scale, which LDM sets apart from diffusers' default
    elif preset is None:
        raise UserError(f"{source} is a CompVis checkpoint, which does not record its architecture; pass --preset")
    else:
        config, params = import_compvis(source, preset)
    sha256 = save_autoencoder(out, config, params, {"source": str(source), "preset": preset})
    count = sum(int(np.prod(v.shape)) for v in traverse_util.flatten_dict(params).values())
    return {
        "out": str(out), "kind": config.kind, "preset": preset, "source": str(source),
        "sha256": sha256, "parameters": count, "scale_factor": config.scale_factor,
    }


def main(argv: list[str] | None = None) -> int:
    return jobs.run("convert_autoencoder", _main, argv, prog="tools/convert_autoencoder.py")


def _main(argv: list[str]) -> int:
    parser = jobs.JobParser("convert_autoencoder", __doc__.split("\n\n")[0], config=False,
                            prog="tools/convert_autoencoder.py")
    parser.add_argument("--from", dest="source", required=True, type=pathlib.Path)
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--preset", default=None)
    parser.add_argument("--force", action="store_true", help="write into an --out folder that already holds files")
    args = parser.parse_args(argv)
    output_folder(args.out, "--out", fresh=True, force=args.force)
    if args.preset is not None:
        preset_config(args.preset)
    if not args.source.exists():
        raise UserError(f"--from={args.source} does not exist; pass a diffusers autoencoder folder or a CompVis "
                        "checkpoint file")
    print(json.dumps(convert(args.source, args.out, args.preset)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
