"""Calibration error, reliability bins and MC-dropout statistics on cases with known answers."""

import math

import numpy as np
import pytest

from deeprun.reports.calibration import entropy, expected_calibration_error, mc_statistics, reliability_bins


def rows_with_confidence(confidence: float, n: int, k: int, n_correct: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples predicting class 0 with probability ``confidence`` (the rest spread evenly), the
    first ``n_correct`` of them labelled 0 (correct), the others 1 (wrong)."""
    probs = np.full((n, k), (1 - confidence) / (k - 1))
    probs[:, 0] = confidence
    labels = np.where(np.arange(n) < n_correct, 0, 1)
    return probs, labels


def test_perfectly_calibrated_predictions_have_zero_ece():
    # In each bin a fraction c of the examples predicted with confidence c is right.
    parts = [rows_with_confidence(c, 20, 10, round(c * 20)) for c in (0.25, 0.45, 0.65, 0.85, 0.95)]
    probs = np.concatenate([p for p, _ in parts])
    labels = np.concatenate([y for _, y in parts])
    assert expected_calibration_error(probs, labels, 15) == pytest.approx(0, abs=1e-12)
    assert expected_calibration_error(probs, labels, 5) == pytest.approx(0, abs=1e-12)


def test_confident_and_always_wrong_has_ece_one():
    probs, labels = rows_with_confidence(1.0, 50, 10, n_correct=0)
    assert expected_calibration_error(probs, labels) == pytest.approx(1.0)


def test_hand_computed_two_bin_example():
    probs = np.array(
        [
            [0.40, 0.30, 0.30],  # label 0: right, confidence 0.40 -> bin (0, 0.5]
            [0.20, 0.45, 0.35],  # label 2: wrong, 0.45 -> bin (0, 0.5]
            [0.90, 0.05, 0.05],  # label 0: right, 0.90 -> bin (0.5, 1]
            [0.10, 0.80, 0.10],  # label 1: right, 0.80 -> bin (0.5, 1]
            [0.10, 0.20, 0.70],  # label 0: wrong, 0.70 -> bin (0.5, 1]
        ]
    )
    labels = np.array([0, 2, 0, 1, 0])
    bins = reliability_bins(probs, labels, 2)
    np.testing.assert_allclose(bins.edges, [0, 0.5, 1])
    np.testing.assert_array_equal(bins.count, [2, 3])
    np.testing.assert_allclose(bins.accuracy, [1 / 2, 2 / 3])
    np.testing.assert_allclose(bins.confidence, [0.425, 0.8])
    # 2/5 * |0.5 - 0.425| + 3/5 * |2/3 - 0.8| = 0.03 + 0.08
    assert expected_calibration_error(probs, labels, 2) == pytest.approx(0.11)
    assert bins.rows()[1] == {
        "low": 0.5,
        "high": 1.0,
        "count": 3,
        "accuracy": pytest.approx(2 / 3),
        "confidence": pytest.approx(0.8),
    }


def test_bins_are_closed_on_the_right_and_empty_bins_do_not_count():
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25]])
    bins = reliability_bins(probs, np.array([0, 1, 0]), 4)
    np.testing.assert_array_equal(bins.count, [0, 1, 1, 1])  # 0.5 in (0.25, 0.5], 0.75 in (0.5, 0.75], 1 last
    assert bins.rows()[0]["accuracy"] is None and math.isnan(bins.confidence[0])
    # |1 - 0.5| + |1 - 0.75| + |0 - 1|, each weighted 1/3
    assert expected_calibration_error(probs, np.array([0, 1, 0]), 4) == pytest.approx((0.5 + 0.25 + 1) / 3)


def test_one_bin_ece_is_the_gap_between_accuracy_and_mean_confidence():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=200)
    labels = rng.integers(0, 4, size=200)
    accuracy = np.mean(probs.argmax(1) == labels)
    assert expected_calibration_error(probs, labels, 1) == pytest.approx(abs(accuracy - probs.max(1).mean()))


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="need"):
        expected_calibration_error(np.ones((3, 2)) / 2, np.zeros(4))
    with pytest.raises(ValueError, match="n_bins"):
        reliability_bins(np.ones((3, 2)) / 2, np.zeros(3), 0)


@pytest.mark.parametrize("k", [2, 10])
def test_entropy_of_uniform_is_log_k_and_of_one_hot_zero(k):
    np.testing.assert_allclose(entropy(np.full((3, k), 1 / k)), math.log(k))
    np.testing.assert_allclose(entropy(np.eye(k)), 0)


def test_mc_statistics_of_two_passes():
    samples = np.array([[[0.2, 0.8]], [[0.6, 0.4]]])  # T = 2 passes, n = 1 example, K = 2
    stats = mc_statistics(samples)
    np.testing.assert_allclose(stats.mean, [[0.4, 0.6]])
    np.testing.assert_allclose(stats.std, [[0.2, 0.2]])
    assert stats.predicted.tolist() == [1]
    np.testing.assert_allclose(stats.predicted_std, [0.2])
    np.testing.assert_allclose(stats.entropy, [-(0.4 * math.log(0.4) + 0.6 * math.log(0.6))])


def test_identical_passes_have_zero_spread():
    probs = np.random.default_rng(1).dirichlet(np.ones(5), size=7)
    stats = mc_statistics(np.stack([probs] * 4))
    np.testing.assert_allclose(stats.mean, probs)
    np.testing.assert_array_equal(stats.std, 0)
    np.testing.assert_allclose(stats.entropy, entropy(probs))
