"""The control images a personalized run is sampled with: those of a dataset's examples, each with
its own clean label or caption, as the paper samples its personalized models on the validation
set's controls and classes. A latent run's controls are named in the pixel dataset its latents
were encoded from (``dataset:test`` is that dataset's test split).

Sample j takes example ``j mod N`` of the ``--controls`` set (``dataset[:split[:subset]]``, as
``--reference`` names one), its control map drawn exactly as training draws it (same Canny
thresholds, or the same user folder) but never flipped. Like everything else about sample j, it
depends on j alone.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from diffcorrupt.data.preprocess import Preprocess
from diffcorrupt.data.latent_encoding import pixel_data_config
from diffcorrupt.data.sources.registry import make_source
from diffcorrupt.errors import UserError
from diffcorrupt.evaluation.reference import dataset_config


class ControlSet:
    def __init__(self, spec: str, run_data: ml_collections.ConfigDict):
        if spec.partition(":")[0] != "dataset":
            raise UserError(f"--controls={spec}: name the examples whose control images to sample with as "
                            "dataset[:split[:subset]], e.g. dataset:test")
        # controls are drawn from pixels: a latent run's, those its latents encode
        data = dataset_config(spec, pixel_data_config(run_data), "--controls")
        self.spec = spec
        self.source = make_source(data)
        meta = getattr(self.source, "meta", None) or {}
        self.preprocess = Preprocess(meta.get("image_size", data.image_size), meta.get("channels", data.channels),
                                     False, 0, control=data.control)

    def __len__(self) -> int:
        return len(self.source)

    def examples(self, indices: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """(control maps float32 NHWC in [0, 1], the examples) of samples ``indices``."""
        rows = [int(j) % len(self.source) for j in indices]
        elements = [self.preprocess(dict(self.source[row], index=row), 0) for row in rows]
        return np.stack([element["control"] for element in elements]), elements
