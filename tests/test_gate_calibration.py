"""The entropy gate (C++) and threshold calibration built on it."""

import numpy as np
import pytest

from knowcache import runtime
from knowcache.build.calibration import calibrate_threshold


def numpy_gate(logits):
    p = np.exp(logits - logits.max())
    p /= p.sum()
    h = -(p[p > 0] * np.log(p[p > 0])).sum() / np.log(len(p))
    top2 = np.sort(p)[-2:]
    return p, h, top2[1] - top2[0]


@pytest.mark.parametrize("seed", range(5))
def test_gate_matches_numpy(seed):
    logits = np.random.default_rng(seed).normal(scale=3, size=7).astype(np.float32)
    d = runtime.gate_evaluate(logits, 0.5)
    p, h, margin = numpy_gate(logits.astype(np.float64))
    np.testing.assert_allclose(d.probs, p, atol=1e-6)
    assert d.entropy == pytest.approx(h, abs=1e-5)
    assert d.margin == pytest.approx(margin, abs=1e-6)
    assert d.index == int(np.argmax(logits))
    assert d.accept == (h <= 0.5)


def test_gate_rejects_non_finite_and_bad_threshold():
    with pytest.raises(runtime.InvalidInputError, match="non-finite"):
        runtime.gate_evaluate(np.array([np.nan, 1.0], np.float32), 0.5)
    with pytest.raises(runtime.InvalidInputError, match="threshold"):
        runtime.gate_evaluate(np.array([0.0, 1.0], np.float32), 2.0)


def test_calibration_meets_target_and_is_maximal():
    rng = np.random.default_rng(0)
    n, c = 2000, 4
    reference = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)).astype(np.float32)
    # Confidence correlates with correctness: correct rows get a larger boost.
    correct = rng.random(n) < 0.85
    boost = np.where(correct, rng.uniform(1, 8, n), rng.uniform(0, 3, n))
    answer = np.where(correct, reference, (reference + 1) % c)
    logits[np.arange(n), answer] += boost
    cal = calibrate_threshold(logits, reference, target=0.99)
    # Judged with NumPy's entropies, not the runtime gate calibration runs on; the
    # runtime computes in float32, so a row within 1e-6 of the threshold counts as on it.
    ent = np.array([numpy_gate(row)[1] for row in logits.astype(np.float64)])
    arg = logits.argmax(1)
    accepted = ent <= cal.threshold + 1e-6
    assert accepted.mean() == pytest.approx(cal.accept_rate, abs=1 / n)
    assert (arg[accepted] == reference[accepted]).mean() >= 0.99
    assert 0.05 < cal.accept_rate < 0.95
    # Accepting the next-most-confident answers too would break the target.
    looser = ent <= np.min(ent[ent > cal.threshold + 1e-6]) + 1e-6
    assert (arg[looser] == reference[looser]).mean() < 0.99


def test_calibration_never_accepts_other():
    logits = np.array([[0, 0, 30.0], [30.0, 0, 0]], np.float32)
    cal = calibrate_threshold(logits, np.array([2, 0]), other_index=2)
    assert cal.accept_rate == 0.5


def test_calibration_with_no_reachable_target():
    logits = np.array([[5.0, 0.0], [5.0, 0.0]], np.float32)
    cal = calibrate_threshold(logits, np.array([1, 1]))
    assert cal.threshold == 0.0 and cal.accept_rate == 0.0


def test_calibration_input_errors():
    with pytest.raises(ValueError, match=r"logits must be \(N, C\) and reference \(N,\)"):
        calibrate_threshold(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match=r"target agreement must be in \(0, 1\]"):
        calibrate_threshold(np.zeros((3, 2)), np.zeros(3), target=1.5)


def _confident_logits(rng, n: int, c: int, correct_share: float):
    """Rows whose answer is right for ``correct_share`` of them, right answers more confident."""
    reference = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)).astype(np.float32)
    correct = rng.random(n) < correct_share
    answer = np.where(correct, reference, (reference + 1) % c)
    logits[np.arange(n), answer] += np.where(correct, rng.uniform(1, 8, n), rng.uniform(0, 3, n))
    return logits, reference


def test_peers_share_one_threshold_fitted_on_their_answers_pooled():
    from knowcache.build.calibration import at_threshold, calibrate_shared, candidate_answers
    rng = np.random.default_rng(1)
    # Three peers with few rows each (and different class counts), one less reliable.
    parts = [(*_confident_logits(rng, 40, 4, 0.9), -1), (*_confident_logits(rng, 40, 5, 0.9), -1),
             (*_confident_logits(rng, 40, 4, 0.7), -1)]
    t = calibrate_shared(parts, target=0.99)
    ent = np.concatenate([[numpy_gate(r)[1] for r in lg.astype(np.float64)] for lg, _, _ in parts])
    arg = np.concatenate([lg.argmax(1) for lg, _, _ in parts])
    ref = np.concatenate([r for _, r, _ in parts])
    accepted = ent <= t + 1e-6
    assert accepted.any() and (arg[accepted] == ref[accepted]).mean() >= 0.99
    looser = ent <= np.min(ent[ent > t + 1e-6]) + 1e-6
    assert (arg[looser] == ref[looser]).mean() < 0.99        # the largest such threshold
    # Each peer's figures at the shared threshold.
    lg, r, _ = parts[0]
    cal = at_threshold(lg, r, t, shared=True)
    own = np.array([numpy_gate(row)[1] for row in lg.astype(np.float64)]) <= t + 1e-6
    assert cal.shared and cal.threshold == t
    assert cal.accept_rate == pytest.approx(own.mean(), abs=1 / len(lg))
    # "other" answers are never candidates.
    logits = np.array([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 4.0, 0.0]], np.float32)
    assert candidate_answers(logits, other_index=2) == 2
    with pytest.raises(ValueError, match="at least one model"):
        calibrate_shared([])
