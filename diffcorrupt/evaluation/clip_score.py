"""The CLIP score: how well each sample matches the text it was generated for.

CLIPScore (Hessel et al. 2021) as torchmetrics and the text-to-image literature report it:
100 x max(cos(E_image(x), E_text(c)), 0), averaged over the samples, in CLIP's joint space. A text
run's samples are scored against their own captions. A class run's are scored against a caption
made from the class name with ``TEMPLATE``, OpenAI's single prompt for zero-shot ImageNet ("a photo
of a {}."); the paper does not say which it used. ImageNet's class names in TFDS are WordNet ids,
which say nothing to CLIP: such runs need ``--class_names=FILE`` (one name per line, in label order).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffcorrupt.errors import UserError

TEMPLATE = "a photo of a {}."
_WORDNET_ID = re.compile(r"^n\d{8}$")


def clip_score(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> dict[str, float]:
    """``clip_score`` (the mean of 100 max(cos, 0)) and ``clip_score_std`` over the samples, row i of
    each set paired with row i of the other."""
    if image_embeddings.shape != text_embeddings.shape or not len(image_embeddings):
        raise ValueError(f"need one text per image, got {image_embeddings.shape} and {text_embeddings.shape}")
    images = image_embeddings / np.linalg.norm(image_embeddings, axis=1, keepdims=True)
    texts = text_embeddings / np.linalg.norm(text_embeddings, axis=1, keepdims=True)
    scores = 100.0 * np.maximum(np.sum(images.astype(np.float64) * texts, axis=1), 0.0)
    return {"clip_score": float(scores.mean()), "clip_score_std": float(scores.std())}


def read_class_names(path: str | Path) -> list[str]:
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"--class_names={path} cannot be read ({error}); give a text file, one class name per line") from None
    if not names:
        raise UserError(f"--class_names={path} is empty; give one class name per line, in label order")
    return names


def sample_captions(conditions: np.ndarray | Sequence[str] | None,
                    class_names: Sequence[str] | None) -> tuple[list[str] | None, str | None]:
    """The caption each sample is scored against, or None and the reason it cannot be."""
    if conditions is None or not len(conditions):
        return None, "not computed: the samples carry no labels or captions to score against"
    conditions = np.asarray(conditions)
    if conditions.dtype.kind not in "iu":
        return [str(caption) for caption in conditions], None
    if class_names is None:
        return None, "not computed: the samples' class names are unknown; pass --config or --class_names=FILE"
    if conditions.max() >= len(class_names):
        return None, (f"not computed: the samples hold label {conditions.max()} but {len(class_names)} class names "
                      "are known; pass --class_names=FILE with one name per class")
    if all(_WORDNET_ID.match(name) for name in class_names):
        return None, ("not computed: the dataset names its classes by WordNet id (n01440764, ...), which CLIP cannot "
                      "read; pass --class_names=FILE, one name per line in label order")
    return [TEMPLATE.format(class_names[label].replace("_", " ")) for label in conditions], None
