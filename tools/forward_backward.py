"""Forward alone, and forward with backward, of our DiT and of diffusers' DiT of the same geometry:
the split that says whether a train-step gap to the peer is in the forward or the backward pass.

    .venv/bin/python tools/forward_backward.py --model=DiT-S/4 --input_shape=32,32,4 --batch_size=32

Prints one JSON line (seconds, medians of --repeats after a warm-up). Needs the peers extra
(``pip install -e '.[peers]'``); torch runs at its defaults, as in ``diffcorrupt bench peers``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Callable

import torch  # noqa: F401  (before anything loads TensorFlow: see diffcorrupt.benchmarks.peers.run)
import diffusers  # noqa: F401

from diffcorrupt.xla_cpu_flags import add_cpu_flags


def _median_s(call: Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="DiT-S/4")
    parser.add_argument("--input_shape", default="32,32,4")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=4)
    flags = parser.parse_args(argv)
    add_cpu_flags()
    import jax
    import jax.numpy as jnp

    from diffcorrupt.benchmarks.peers import BENCH_CONFIG, _dit
    from diffcorrupt.models.registry import make_model

    shape, batch = tuple(int(v) for v in flags.input_shape.split(",")), flags.batch_size
    model = make_model(flags.model, input_shape=shape, num_classes=flags.num_classes,
                       learned_sigma=BENCH_CONFIG.model.learned_sigma)
    x, t = jnp.ones((batch, *shape)), jnp.full((batch,), 3.0)
    labels, null = jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), bool)
    params = model.init(jax.random.key(0), x, t, labels, null)

    def loss(p, x):
        return jnp.mean((model.apply(p, x, t, labels, null, train=True)[..., :shape[-1]] - x) ** 2)

    forward = jax.jit(lambda p, x: model.apply(p, x, t, labels, null, train=True))
    gradient = jax.jit(jax.grad(loss))
    net = _dit(flags.model, shape, flags.num_classes).train()
    xt = torch.ones(batch, shape[-1], shape[0], shape[1])
    tt, yt = torch.full((batch,), 3, dtype=torch.long), torch.zeros(batch, dtype=torch.long)

    def peer_forward() -> None:
        with torch.no_grad():
            net(xt, timestep=tt, class_labels=yt)

    def peer_both() -> None:
        out = net(xt, timestep=tt, class_labels=yt).sample
        ((out[:, :shape[-1]] - xt) ** 2).mean().backward()

    print(json.dumps({
        "model": flags.model, "input_shape": list(shape), "batch_size": batch, "torch_threads": torch.get_num_threads(),
        "ours_forward_s": _median_s(lambda: jax.block_until_ready(forward(params, x)), flags.repeats),
        "ours_forward_backward_s": _median_s(lambda: jax.block_until_ready(gradient(params, x)), flags.repeats),
        "peer_forward_s": _median_s(peer_forward, flags.repeats),
        "peer_forward_backward_s": _median_s(peer_both, flags.repeats),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
