"""Calibration and predictive uncertainty of class probabilities: pure NumPy functions, no I/O.

Notation: ``probs`` is an (n, K) array of class probabilities (rows sum to 1), ``labels`` the n true
classes. An example's *confidence* is its largest probability, ``conf_i = max_k p_ik``, and it is
*correct* when that class is its label.

- :func:`reliability_bins` / :func:`expected_calibration_error`: Guo et al. (2017), "On Calibration of
  Modern Neural Networks", with M equal-width confidence bins.
- :func:`mc_statistics`: the mean, spread and entropy of T stochastic forward passes (MC dropout, Gal &
  Ghahramani 2016).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confidences(probs: np.ndarray) -> np.ndarray:
    """``conf_i = max_k p_ik``, the probability of the predicted class."""
    return np.asarray(probs, dtype=np.float64).max(axis=1)


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of a reliability diagram. Bin b holds the examples whose confidence lies in
    ``(edges[b], edges[b + 1]]`` (the first bin also takes a confidence of exactly 0); an empty bin has
    ``count`` 0 and NaN accuracy and confidence."""

    edges: np.ndarray  # (M + 1,) from 0 to 1
    count: np.ndarray  # (M,) examples per bin, |B_b|
    accuracy: np.ndarray  # (M,) acc(B_b) = mean of 1[argmax p_i = y_i] over the bin
    confidence: np.ndarray  # (M,) conf(B_b) = mean of conf_i over the bin

    @property
    def n(self) -> int:
        return int(self.count.sum())

    @property
    def ece(self) -> float:
        """Σ_b (|B_b| / n) · |acc(B_b) − conf(B_b)| over the non-empty bins."""
        filled = self.count > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(self.count[filled] / self.n * gaps))

    def rows(self) -> list[dict[str, float | int | None]]:
        """One JSON-able row per bin (None for an empty bin's accuracy and confidence)."""

        def value(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        return [
            {"low": float(lo), "high": float(hi), "count": int(c), "accuracy": value(a), "confidence": value(f)}
            for lo, hi, c, a, f in zip(
                self.edges[:-1], self.edges[1:], self.count, self.accuracy, self.confidence, strict=True
            )
        ]


def _check(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != probs.shape[:1] or probs.shape[0] == 0:
        raise ValueError(f"need (n, K) probabilities and n labels, n > 0 (got {probs.shape} and {labels.shape})")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1 (got {n_bins})")
    return probs, labels


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    """Group the examples into ``n_bins`` equal-width confidence bins ``((b−1)/M, b/M]``, b = 1..M, and
    return each bin's size |B_b|, accuracy acc(B_b) = (1/|B_b|) Σ_{i∈B_b} 1[ŷ_i = y_i] and mean
    confidence conf(B_b) = (1/|B_b|) Σ_{i∈B_b} conf_i."""
    probs, labels = _check(probs, labels, n_bins)
    conf = confidences(probs)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted on the inner edges, side="left": edges[b] < conf <= edges[b + 1] -> bin b.
    index = np.searchsorted(edges[1:-1], conf, side="left")
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
        confidence = np.bincount(index, weights=conf, minlength=n_bins) / count
    return ReliabilityBins(edges, count, accuracy, confidence)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE = Σ_b (|B_b| / n) · |acc(B_b) − conf(B_b)| over the non-empty equal-width confidence bins of
    :func:`reliability_bins`: 0 for perfectly calibrated predictions, at most 1 (every example wrong
    with confidence 1)."""
    return reliability_bins(probs, labels, n_bins).ece


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy per row in nats, H(p) = −Σ_k p_k log p_k (0 log 0 = 0): 0 for a one-hot row,
    log K for the uniform one."""
    probs = np.asarray(probs, dtype=np.float64)
    return -np.sum(probs * np.log(np.where(probs > 0, probs, 1.0)), axis=-1)


@dataclass(frozen=True)
class MCStatistics:
    """What T stochastic passes say about each of n examples."""

    mean: np.ndarray  # (n, K) p̄_ik = (1/T) Σ_t p_tik, the MC-dropout prediction
    std: np.ndarray  # (n, K) per-class spread over the passes, sqrt((1/T) Σ_t (p_tik − p̄_ik)²)
    predicted: np.ndarray  # (n,) ŷ_i = argmax_k p̄_ik
    predicted_std: np.ndarray  # (n,) std[i, ŷ_i]: the spread of the predicted class's probability
    entropy: np.ndarray  # (n,) predictive entropy H(p̄_i) = −Σ_k p̄_ik log p̄_ik


def mc_statistics(samples: np.ndarray) -> MCStatistics:
    """Mean, per-class std (population: divided by T), the predicted class's std and the predictive
    entropy of ``samples``, the (T, n, K) class probabilities of T passes."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[0] == 0:
        raise ValueError(f"need (T, n, K) samples with T > 0 (got {samples.shape})")
    mean, std = samples.mean(axis=0), samples.std(axis=0)
    predicted = mean.argmax(axis=1)
    predicted_std = np.take_along_axis(std, predicted[:, None], axis=1)[:, 0]
    return MCStatistics(mean, std, predicted, predicted_std, entropy(mean))
