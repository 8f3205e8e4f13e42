"""Inception Score from classifier logits, split as the ADM evaluator splits it.

IS = exp(E_x KL(p(y|x) || p(y))), with p(y) the mean prediction over a split. It is high when each
sample is classified confidently (low conditional entropy) and the classes are balanced (high marginal
entropy); its maximum is the number of classes.
"""

import numpy as np
from scipy.special import log_softmax, logsumexp


def inception_score(logits: np.ndarray, split_size: int = 5000) -> tuple[float, float]:
    """Mean and standard deviation (ddof=0, as improved-gan) of IS over consecutive splits of ``logits`` (N, C).

    Splits are ``[0, split_size), [split_size, 2 split_size), ...`` as in ADM, so a final partial split is
    kept and N < split_size gives a single split (std 0); ADM reports the mean only. Everything is done in
    log space, so probabilities that underflow to 0 contribute 0 instead of ADM's 0 * log 0 = NaN.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or len(logits) == 0:
        raise ValueError(f"logits must have shape (N, C) with N >= 1, got {logits.shape}")
    if split_size < 1:
        raise ValueError(f"split_size must be positive, got {split_size}")
    log_p = log_softmax(logits, axis=1)
    scores = []
    for start in range(0, len(log_p), split_size):
        part = log_p[start : start + split_size]
        log_marginal = logsumexp(part, axis=0) - np.log(len(part))
        kl = np.sum(np.exp(part) * (part - log_marginal), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
