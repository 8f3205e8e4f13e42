"""``diffcorrupt sample``: images from a trained run's EMA weights, sharded over every device.

  diffcorrupt sample --workdir=DIR [--step=N] [--num_samples=N] [--sampler=ddpm|ddim|dpm|lcm] [--steps=N]
                     [--cfg_scale=S[,S2,...]] [--eta=E] [--seed=S] [--batch_size=B] [--captions=FILE]
                     [--out=DIR] [--mesh=DATA,FSDP,TENSOR] [--autoencoder=DIR] [--controls=dataset[:SPLIT[:SUBSET]]]

Defaults come from the run's saved config (``sample.*``). Each guidance scale gets its own folder
``<out>/<sampler><steps>-cfg<scale>-seed<seed>/`` (default out: ``<workdir>/eval/step_<N>``) with
``samples_*.npz`` shards in the ADM layout, ``settings.json`` (every setting, the checkpoint, the
quantisation) and ``grid.png``. Starting the same command again resumes from the shards already
written, and asking for more samples extends the set: sample j depends only on (seed, j). A
personalized run is sampled with the control images (and labels or captions) of ``--controls``,
stored beside the samples (``control``, uint8) for ``evaluate`` to measure their fidelity.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path

import jax
import ml_collections
from jax.experimental import multihost_utils
import numpy as np
from absl import logging

from diffcorrupt import jobs
from diffcorrupt.autoencoders.storage import check_autoencoder_folder
from diffcorrupt.config.loading import config_hash
from diffcorrupt.diffusion.samplers import SAMPLERS
from diffcorrupt.errors import UserError
from diffcorrupt.flag_types import non_negative_int, positive_int
from diffcorrupt.output_paths import output_folder
from diffcorrupt.parallel.distributed import initialize_from_environment
from diffcorrupt.parallel.mesh import make_mesh
from diffcorrupt.report.figures import save_tiled
from diffcorrupt.sampling.controls import ControlSet
from diffcorrupt.sampling.generate import SampleSettings, conditions, controlled_conditions, make_generator, parallel_batch
from diffcorrupt.sampling.quantise import QUANTISATION
from diffcorrupt.sampling.restore import RestoredModel, restore_ema
from diffcorrupt.sampling.shards import done_indices, first_images, prepare_directory, write_shard

GRID_IMAGES = 64


def main(argv: list[str]) -> int:
    parser = jobs.JobParser("sample", __doc__.splitlines()[0], config=False)
    parser.add_argument("--workdir", required=True, help="the train run's --workdir")
    parser.add_argument("--step", type=non_negative_int, default=None, help="checkpoint step (default: the newest)")
    parser.add_argument("--num_samples", type=positive_int, default=None)
    parser.add_argument("--sampler", choices=SAMPLERS, default=None)
    parser.add_argument("--steps", type=positive_int, default=None)
    parser.add_argument("--cfg_scale", default=None, help="one guidance scale or a comma-separated list")
    parser.add_argument("--eta", type=float, default=None, help="DDIM's eta")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--batch_size", type=positive_int, default=None, help="global batch")
    parser.add_argument("--captions", default=None, help="text runs: a file with one caption per line")
    parser.add_argument("--out", default=None)
    parser.add_argument("--mesh", default="-1,1,1", help="data,fsdp,tensor sizes of the sampling mesh")
    parser.add_argument("--autoencoder", default=None, help="latent runs: decode with this autoencoder folder "
                        "instead of the one recorded at training")
    parser.add_argument("--controls", default=None, help="personalized runs: the examples whose control images "
                        "and labels sample j takes (j mod N), as dataset[:split[:subset]], e.g. dataset:test")
    flags = parser.parse_args(argv)
    initialize_from_environment()
    jobs.log_progress()
    for record in sample_run(flags):
        print(json.dumps(record), flush=True)
    return 0


def sample_run(flags) -> list[dict]:
    """Samples every requested guidance scale; one summary record per scale."""
    mesh = make_mesh(_mesh_config(flags.mesh))
    captions = _read_captions(flags.captions) if flags.captions else None
    out = output_folder(flags.out, "--out") if flags.out else None
    if flags.autoencoder:
        check_autoencoder_folder(flags.autoencoder, "--autoencoder")
    restored = restore_ema(flags.workdir, mesh, flags.step, flags.autoencoder)
    controls = _control_set(flags.controls, restored)
    defaults = restored.config.sample
    num_samples = _given(flags.num_samples, defaults.num_samples)
    batch_size = _given(flags.batch_size, defaults.batch_size)
    out = out or output_folder(Path(flags.workdir) / "eval" / f"step_{restored.step}", "the default --out")
    records = []
    for scale in _scales(flags.cfg_scale, defaults.cfg_scale):
        settings = SampleSettings(sampler=flags.sampler or defaults.sampler, steps=_given(flags.steps, defaults.steps),
                                  cfg_scale=scale, eta=_given(flags.eta, defaults.eta), seed=flags.seed)
        records.append(_sample_one(restored, settings, mesh, num_samples, batch_size, captions, out / settings.name,
                                   flags.workdir, flags.captions, controls))
    return records


def _control_set(spec: str | None, restored: RestoredModel) -> ControlSet | None:
    if restored.base is None:
        if spec is not None:
            raise UserError(f"--controls={spec}: this run was not personalized (it has no personalize.base), so it "
                            "takes no control images; drop --controls")
        return None
    if spec is None:
        raise UserError("this run is personalized; pass --controls=dataset[:split[:subset]] (e.g. dataset:test), the "
                        "examples whose control images and labels to sample with")
    return ControlSet(spec, restored.config.data)


def _sample_one(restored: RestoredModel, settings: SampleSettings, mesh, num_samples: int, batch_size: int,
                captions: list[str] | None, directory: Path, workdir: str, captions_path: str | None,
                controls: ControlSet | None = None) -> dict:
    _check_settings(settings, restored, captions)
    captions_file = None if captions is None else {"name": Path(captions_path).name, "count": len(captions),
                                                   "sha256": hashlib.sha256("\n".join(captions).encode()).hexdigest()}
    record = {
        "workdir": str(Path(workdir).absolute()), "step": restored.step, "config_hash": config_hash(restored.config),
        "model": restored.config.model.name, "sampler": settings.sampler, "steps": settings.steps,
        "cfg_scale": settings.cfg_scale, "eta": settings.eta, "seed": settings.seed, "num_samples": num_samples,
        "conditions": _conditions_text(restored, controls),
        "num_classes": restored.num_classes, "captions_file": captions_file, "quantisation": QUANTISATION,
        "layout": "arr_0 uint8 NHWC, arr_1 int32 labels, index int64 sample numbers",
    }
    main_process = jax.process_index() == 0
    if main_process:
        prepare_directory(directory, record)
    done = done_indices(directory) if main_process else None
    done = np.asarray(multihost_utils.broadcast_one_to_all(
        np.isin(np.arange(num_samples), done if done is not None else np.zeros(0, np.int64))))
    todo = np.flatnonzero(~done)
    padded_batch = parallel_batch(batch_size, mesh)
    generate = make_generator(restored, settings, mesh, padded_batch) if len(todo) else None
    start = time.perf_counter()
    for first in range(0, len(todo), batch_size):
        indices = todo[first:first + batch_size]
        padded = np.concatenate([indices, np.repeat(indices[-1:], padded_batch - len(indices))])
        if controls is None:
            cond, hints = conditions(restored, padded, captions), None
        else:
            cond, hints = controlled_conditions(restored, controls, padded)
        images = generate(padded, cond.model_input, hints)[:len(indices)]
        if main_process:
            write_shard(directory, indices, images,
                        None if cond.labels is None else cond.labels[:len(indices)],
                        None if cond.captions is None else cond.captions[:len(indices)],
                        None if hints is None else np.round(hints[:len(indices)] * 255).astype(np.uint8))
        logging.info("%s: %d of %d samples", directory.name, num_samples - len(todo) + first + len(indices), num_samples)
    seconds = time.perf_counter() - start
    if main_process:
        save_tiled(directory / "grid.png", first_images(directory, GRID_IMAGES))
    return {"samples": str(directory), "sampled_now": int(len(todo)), "num_samples": num_samples,
            "cfg_scale": settings.cfg_scale, "images_per_s": round(len(todo) / seconds, 2) if len(todo) else None}


def _conditions_text(restored: RestoredModel, controls: ControlSet | None) -> str:
    if controls is not None:
        condition = "label" if restored.num_classes else "caption"
        return f"the control image and {condition} of example j mod {len(controls)} of {controls.spec}"
    return "class j mod C" if restored.num_classes else "caption j mod len(captions)"


def _check_settings(settings: SampleSettings, restored: RestoredModel, captions: list[str] | None) -> None:
    """Everything that can be refused is refused before the output folder is touched."""
    if not restored.num_classes and not captions and restored.base is None:  # a personalized run's come with its controls
        raise UserError("this run is text-conditional; pass --captions=FILE with one caption per line")
    num_steps = restored.config.diffusion.num_steps
    if not 1 <= settings.steps <= num_steps:
        raise UserError(f"--steps={settings.steps}: the run was trained with {num_steps} diffusion steps; use 1 to {num_steps}")
    if settings.eta and (settings.sampler != "ddim" or not 0 < settings.eta <= 1):
        raise UserError(f"--eta={settings.eta:g} is DDIM's and lies in [0, 1]; use --sampler=ddim or drop --eta")
    grid = restored.config.distill.ddim_timesteps
    if settings.sampler == "lcm" and not restored.config.distill.teacher:
        raise UserError("--sampler=lcm is the sampler of a consistency-distilled run, and this run was not distilled "
                        "(it has no distill.teacher); use ddpm, ddim or dpm, or distil it first (docs/lcm.md)")
    if settings.sampler == "lcm" and settings.steps > grid:
        raise UserError(f"--steps={settings.steps}: the lcm sampler picks its steps from the {grid} timesteps the run "
                        f"was distilled on; use 1 to {grid} (1, 2, 4 or 8 as LCM)")
    distill = restored.config.distill
    if distill.teacher and not restored.config.model.guidance_dim and settings.cfg_scale != distill.cfg_min:
        raise UserError(f"--cfg_scale={settings.cfg_scale:g}: this run was distilled at the one guidance scale "
                        f"{distill.cfg_min:g} (model.guidance_dim=0), which its model has learnt; sample it at "
                        f"--cfg_scale={distill.cfg_min:g}")


def _given(flag, default):
    """The flag's value when it was given (``--eta=0`` included), else the run's default."""
    return default if flag is None else flag


def _scales(text: str | None, default: float) -> list[float]:
    if text is None:
        return [float(default)]
    try:
        scales = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--cfg_scale={text} is not a number or a comma-separated list of numbers, e.g. 1.5,4") from None
    if not scales or not all(1.0 <= scale < math.inf for scale in scales):
        raise UserError(f"--cfg_scale={text}: give scales >= 1 (1 is the conditional model without guidance)")
    return scales


def _mesh_config(text: str) -> ml_collections.ConfigDict:
    try:
        data, fsdp, tensor = (int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--mesh={text} is not three integers data,fsdp,tensor, e.g. -1,1,1") from None
    return ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor, "dcn_data": 1, "dcn_fsdp": 1})


def _read_captions(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--captions={path} does not exist; give a text file with one caption per line")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"--captions={path} is not UTF-8 text (byte {err.start}); save it as UTF-8, one caption "
                        "per line") from None
    captions = [line.strip() for line in text.splitlines() if line.strip()]
    if not captions:
        raise UserError(f"--captions={path} holds no caption; write one caption per line")
    return captions


if __name__ == "__main__":
    sys.exit(jobs.run("sample", main))
