"""Canny edge maps: the control image of the paper's personalization (ControlNet's 'canny' condition).

OpenCV's Canny, because the paper's thresholds (100 and 200, the ControlNet and diffusers recipe)
are OpenCV's: hysteresis on the L1 norm of a 3x3 Sobel gradient, with no smoothing first, and on a
colour image the strongest channel's gradient at each pixel. scikit-image's Canny smooths with a
Gaussian first and reads its thresholds on another scale, so the same numbers would draw other edges.
"""

from __future__ import annotations

import cv2
import numpy as np

PAPER_THRESHOLDS = (100, 200)  # paper.md section 3.5: Canny's low and high hysteresis thresholds


def canny_edges(image: np.ndarray, low: int = PAPER_THRESHOLDS[0], high: int = PAPER_THRESHOLDS[1]) -> np.ndarray:
    """uint8 HW, HW1 or HW3 image -> bool HW edge map."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3)):
        raise ValueError(f"Canny edges need a uint8 image of shape HW, HW1 or HW3, not {image.dtype} {image.shape}; "
                         "pass the image as stored, before scaling to [-1, 1]")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return cv2.Canny(np.ascontiguousarray(image), low, high) > 0
