"""Import a released latent-diffusion text-to-image folder as a diffcorrupt workdir that `diffcorrupt sample` reads.

    python tools/import_ldm.py --from=FOLDER --workdir=DIR

--from is a diffusers ``LDMTextToImagePipeline`` folder (``unet/``, ``bert/``, ``tokenizer/``,
``scheduler/``, ``vqvae/``, e.g. CompVis/ldm-text2im-large-256's layout). The workdir gets
everything the run needs, so it can move as a whole except for the recorded absolute paths:
``autoencoder/`` (the converted ``vqvae/``, as tools/convert_autoencoder.py writes it),
``tokenizer/vocab.txt`` (copied; ``model.tokenizer`` records its absolute path), and the
checkpoint and ``model.json`` of checkpoint_import/workdir.py. The run's config is the pipeline's:
its U-Net geometry as ``model.unet`` over LDM-txt256, its LDMBert as ``model.text_encoder``, its
scheduler's betas as ``diffusion.schedule``, sampled by default as the pipeline samples (50 DDIM
steps, guidance 1; pass --cfg_scale to `diffcorrupt sample` for more). Prints one JSON line.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from diffcorrupt import jobs
from diffcorrupt.autoencoders.storage import save_autoencoder
from diffcorrupt.checkpoint_import.ldm_sources import read_ldm
from diffcorrupt.checkpoint_import.workdir import check_fresh_workdir, write_imported_run
from diffcorrupt.config.validate import validate
from diffcorrupt.models.registry import parameter_count


def import_ldm(source: str | Path, workdir: str | Path) -> dict:
    """Writes the run of pipeline folder ``source`` into ``workdir``; returns the summary record."""
    source, workdir = Path(source).absolute(), check_fresh_workdir(workdir)  # before anything is written
    imported = read_ldm(source)
    tokenizer = workdir / "tokenizer"
    tokenizer.mkdir(parents=True, exist_ok=True)
    for path in imported.tokenizer_files:
        shutil.copyfile(path, tokenizer / path.name)
    config = imported.config
    config.model.tokenizer = str(tokenizer / "vocab.txt")
    validate(config, check_data=False)
    autoencoder = workdir / "autoencoder"
    save_autoencoder(autoencoder, imported.autoencoder, imported.autoencoder_params, {"source": str(source / "vqvae")})
    step_dir = write_imported_run(workdir, config, imported.params, imported.input_shape, 0, str(autoencoder))
    return {"checkpoint": str(step_dir), "source": str(source), "model": config.model.name, "unet": config.model.unet,
            "text_encoder": config.model.text_encoder, "tokenizer": config.model.tokenizer,
            "input_shape": list(imported.input_shape), "schedule": config.diffusion.schedule,
            "num_steps": config.diffusion.num_steps, "prediction": config.diffusion.prediction,
            "parameters": parameter_count(imported.params), "autoencoder": str(autoencoder)}


def main(argv: list[str] | None = None) -> int:
    return jobs.run("import_ldm", _main, argv, prog="tools/import_ldm.py")


def _main(argv: list[str]) -> int:
    parser = jobs.JobParser("import_ldm", __doc__.split("\n\n")[0], config=False, prog="tools/import_ldm.py")
    parser.add_argument("--from", dest="source", required=True, help="an LDMTextToImagePipeline folder")
    parser.add_argument("--workdir", required=True, help="a fresh folder for the imported run")
    args = parser.parse_args(argv)
    print(json.dumps(import_ldm(args.source, args.workdir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
