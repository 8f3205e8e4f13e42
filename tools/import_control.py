"""Import a diffusers ControlNet or T2I-Adapter as a personalized run of one of our U-Net runs.

    python tools/import_control.py --from=FOLDER --base=RUN --workdir=DIR [--control=canny|folder]

--from is a ``ControlNetModel`` or ``T2IAdapter`` folder (``config.json`` and
``diffusion_pytorch_model.safetensors``); --base the run it was trained beside (an LDM imported with
tools/import_ldm.py, or one trained here), whose U-Net must be the one the branch copies or feeds.
The workdir becomes what `diffcorrupt train --config.personalize.base=RUN` would have written: the
base's config with ``personalize.*`` and ``data.control`` set, the branch's weights as parameters
and EMA, ``model.json`` with the control images' shape. `diffcorrupt sample --controls=...` then
samples it with control images drawn as --control says (Canny edges of a dataset's images, or a
--control_dir of images named by example index), and `diffcorrupt train` fine-tunes it further.
Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from diffcorrupt import jobs
from diffcorrupt.checkpoint_import.control_sources import CONTROLS, read_control
from diffcorrupt.checkpoint_import.workdir import check_fresh_workdir, write_imported_run
from diffcorrupt.models.registry import parameter_count


def import_control(source: str | Path, base: str | Path, workdir: str | Path, control: str = "canny",
                   control_dir: str = "") -> dict:
    """Writes the personalized run of ``source`` beside ``base`` into ``workdir``; returns the summary."""
    source, workdir = Path(source).absolute(), check_fresh_workdir(workdir)  # before anything is written
    imported = read_control(source, base, control, control_dir)
    config = imported.config
    step_dir = write_imported_run(workdir, config, imported.params, imported.input_shape, imported.num_classes,
                                  imported.autoencoder, control_shape=imported.control_shape)
    return {"checkpoint": str(step_dir), "source": str(source), "method": config.personalize.method,
            "base": config.personalize.base, "base_step": config.personalize.base_step, "control": control,
            "control_shape": list(imported.control_shape), "parameters": parameter_count(imported.params)}


def main(argv: list[str] | None = None) -> int:
    return jobs.run("import_control", _main, argv, prog="tools/import_control.py")


def _main(argv: list[str]) -> int:
    parser = jobs.JobParser("import_control", __doc__.split("\n\n")[0], config=False, prog="tools/import_control.py")
    parser.add_argument("--from", dest="source", required=True, help="a ControlNetModel or T2IAdapter folder")
    parser.add_argument("--base", required=True, help="the workdir of the U-Net run the branch was trained beside")
    parser.add_argument("--workdir", required=True, help="a fresh folder for the personalized run")
    parser.add_argument("--control", default="canny", choices=CONTROLS,
                        help="how its control images are drawn: Canny edges (100/200) or a --control_dir")
    parser.add_argument("--control_dir", default="", help="with --control=folder: control images named 0.png, 1.png, ...")
    args = parser.parse_args(argv)
    print(json.dumps(import_control(args.source, args.base, args.workdir, args.control, args.control_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
