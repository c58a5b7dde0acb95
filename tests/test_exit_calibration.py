"""Exit thresholds (layer_cache.calibrate) and the sequence cache head, without
a trained model: calibration outputs are built by hand so that the right
thresholds are known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from knowcache.layer_cache import calibrate
from knowcache.layer_cache.calibrate import ExitOutputs
from knowcache.layer_cache.heads import HeadConfig, SequenceExitHead, make


def _exit(answers: np.ndarray, peak: np.ndarray, classes: int = 5) -> ExitOutputs:
    """Logits whose argmax is ``answers`` and whose softmax peak grows with ``peak``."""
    logits = np.zeros((len(answers), classes), np.float32)
    logits[np.arange(len(answers)), answers] = peak
    return ExitOutputs(logits, np.zeros(len(answers), np.float32),
                       np.zeros((len(answers), 2), np.float32))


def _one_exit_stream(n: int = 1000, wrong: tuple[int, ...] = (900, 901, 902)):
    """One exit that agrees with the reference everywhere but at ``wrong``, where
    it is surer than anywhere else."""
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 5, n)
    answers = reference.copy()
    peak = rng.uniform(3.0, 6.0, n).astype(np.float32)
    for i in wrong:
        answers[i] = (reference[i] + 1) % 5
        peak[i] = 9.0
    return [_exit(answers, peak)], reference


def test_a_subset_that_disagrees_keeps_an_exit_off_the_whole_set_would_allow():
    """3 confident errors in 1,000 answers meet 99.5% agreement overall, but all
    three are among the 100 real recordings, where 99.5% allows none."""
    exits, reference = _one_exit_stream()
    real = np.zeros(len(reference), bool)
    real[900:] = True
    kw = dict(kinds=("confidence",), costs=[0.3], z=0.0)
    assert calibrate.calibrate(exits, reference, 0.995, **kw)[0]["confidence"] is not None
    assert calibrate.calibrate(exits, reference, 0.995, subset=real, **kw)[0]["confidence"] is None
    # errors elsewhere than in the subset: the subset's own rate holds again
    real[:] = False
    real[:100] = True
    assert calibrate.calibrate(exits, reference, 0.995, subset=real,
                               **kw)[0]["confidence"] is not None
    with pytest.raises(ValueError, match="subset"):
        calibrate.calibrate(exits, reference, 0.995, subset=real[:10], **kw)


def test_an_exit_that_costs_more_than_it_saves_stays_off():
    """Running an exit is paid by every query that reaches it: one that answers
    after 30% of the model but itself costs 75% saves nothing."""
    exits, reference = _one_exit_stream(wrong=())
    kw = dict(kinds=("confidence",), costs=[0.3], z=0.0)
    assert calibrate.calibrate(exits, reference, 0.995, exit_costs=[0.05],
                               **kw)[0]["confidence"] is not None
    assert calibrate.calibrate(exits, reference, 0.995, exit_costs=[0.75],
                               **kw)[0]["confidence"] is None


def _graded_exits(n: int, costs: list[float], seed: int) -> tuple[list[ExitOutputs], np.ndarray]:
    """Exits that agree with the reference more often the surer they are, later
    exits more than earlier ones."""
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 5, n)
    exits = []
    for i in range(len(costs)):
        peak = rng.uniform(0.0, 6.0, n) * (0.6 + 0.2 * i)
        right = rng.random(n) < 1 - 0.6 * np.exp(-1.2 * peak)
        exits.append(_exit(np.where(right, reference, rng.integers(0, 5, n)), peak))
    return exits, reference


def _spent(exits, reference, thresholds, costs, kind="confidence") -> float:
    where, _ = calibrate.simulate(exits, reference, thresholds, kind)
    return float(np.where(where >= 0, np.asarray(costs)[where], 1.0).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_exit_takes_the_cheapest_threshold_of_all_its_scores(seed):
    """With one exit the search is exact: no threshold among all the exit's own
    scores meets the same rules at a lower cost (checked here by trying each)."""
    exits, reference = _graded_exits(2000, [0.4], seed)
    target, z = 0.995, 1.0
    got = calibrate.calibrate(exits, reference, target, kinds=("confidence",), costs=[0.4], z=z)
    score, answer = calibrate.scores("confidence", exits[0], reference, 512)
    n, best = len(reference), 1.0
    for t in np.unique(score):
        hit = score >= t
        k, wrong = int(hit.sum()), int((hit & (answer != reference)).sum())
        if (k >= calibrate.MIN_ACCEPTED and k - wrong >= calibrate.PER_EXIT_AGREEMENT * k
                and calibrate.lower_bound(np.array(n - wrong, float), np.array(n, float), z)
                >= target):
            best = min(best, (0.4 * k + n - k) / n)
    assert best < 1.0, "the stream should let the exit answer something"
    assert _spent(exits, reference, got, [0.4]) == pytest.approx(best)
    # the accepted answers keep the target on the calibration stream itself
    _, given = calibrate.simulate(exits, reference, got, "confidence")
    assert (given == reference).mean() >= target


def test_refined_search_never_costs_more_than_the_quantile_grid():
    """Three exits: the thresholds cost no more than the best on the plain grid of
    score quantiles (all exits), and every accepted slice keeps its agreement."""
    costs = [0.2, 0.5, 0.75]
    exits, reference = _graded_exits(3000, costs, 3)
    target = 0.995
    got = calibrate.calibrate(exits, reference, target, kinds=("confidence",), costs=costs,
                              z=0.0)
    per = [calibrate.scores("confidence", e, reference, 512) for e in exits]
    grids = [[None, *np.unique(np.quantile(s, np.linspace(0, 1, calibrate.QUANTILES)))]
             for s, _ in per]
    agree = [answer == reference for _, answer in per]
    grid_best = 1.0
    for combo in itertools.product(*grids):
        left, spent, wrong, ok = np.ones(len(reference), bool), 0.0, 0, True
        for (score, _), right, t, cost in zip(per, agree, combo, costs):
            if t is None:
                continue
            hit = left & (score >= t)
            k = int(hit.sum())
            ok &= k >= calibrate.MIN_ACCEPTED and (right[hit].mean() if k else 0) \
                >= calibrate.PER_EXIT_AGREEMENT
            spent, wrong, left = spent + cost * k, wrong + int((hit & ~right).sum()), left & ~hit
        if ok and wrong <= (1 - target) * len(reference):
            grid_best = min(grid_best, (spent + left.sum()) / len(reference))
    assert grid_best < 1.0
    assert _spent(exits, reference, got, costs) <= grid_best + 1e-12
    where, given = calibrate.simulate(exits, reference, got, "confidence")
    assert (given == reference).mean() >= target
    for i in range(3):
        if got[i]["confidence"] is not None:
            assert (given == reference)[where == i].mean() >= calibrate.PER_EXIT_AGREEMENT


def test_sequence_head_pools_a_wide_activation_and_reads_it_over_time():
    """On a (B, C, T, F) activation the feature is the (T', F') average pool, and
    the predictor's convolutions see each time step's C x F' cells as channels:
    a head built by hand from the same weights gives the same logits."""
    torch.manual_seed(0)
    act = torch.randn(3, 4, 10, 6)
    head = make((1, 4, 10, 6), 7, HeadConfig(kind="sequence", grid=(5, 2), hidden=8)).eval()
    assert isinstance(head, SequenceExitHead) and head.feature_dim == 4 * 5 * 2
    pooled = torch.nn.functional.adaptive_avg_pool2d(act, (5, 2))
    torch.testing.assert_close(head.feature(act), pooled.flatten(1))
    seq = pooled.permute(0, 1, 3, 2).reshape(3, 8, 5)       # (B, C x F', T')
    with torch.no_grad():
        want = head.out(head.hidden(seq).amax(dim=2))
        logits, _, _ = head(act)
    torch.testing.assert_close(logits, want)
    # a (T, 1) sequence is read whole, whatever grid the config names
    whole = make((1, 4, 10, 1), 7, HeadConfig(kind="sequence", grid=(5, 2)))
    assert whole.grid == (10, 1) and whole.feature_dim == 40
    with pytest.raises(ValueError, match="finer than its activation"):
        make((1, 4, 10, 6), 7, HeadConfig(kind="sequence", grid=(20, 2)))
