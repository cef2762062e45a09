"""The scoring math of ``hftransfer rank``, on small fixed arrays (no model, well under a second
each): LogME against an independent Gaussian log-density and its local maximum, LEEP against a
hand computation, the linear probe, Kendall's τ and the recommendation rule, and one clear line
for each kind of bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import user_error
from scipy import stats as scipy_stats

from hftransfer.ranking.scores import kendall_tau, leep, logme, logme_details, probe_accuracy, recommendation


def direct_log_evidence(features: np.ndarray, target: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, FFᵀ/α + I/β): the marginal likelihood of Bayesian linear regression written
    without any SVD, so it checks the module's formula independently."""
    n = features.shape[0]
    cov = features @ features.T / alpha + np.eye(n) / beta
    return float(scipy_stats.multivariate_normal(mean=np.zeros(n), cov=cov).logpdf(target))


def clustered(n: int, d: int, classes: int, strength: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features whose class means differ by ``strength`` (0: pure noise), with balanced labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, d))
    return rng.normal(size=(n, d)) + strength * centres[labels], labels


def interior(details):
    """The classes whose evidence maximum is an interior point (finite α and β)."""
    return [c for c in details if c.evidence is not None and math.isfinite(c.alpha) and math.isfinite(c.beta)]


# --------------------------------------------------------------------------- LogME


@pytest.mark.parametrize("n, d, strength, seed", [(30, 4, 1.5, 0), (40, 8, 1.5, 1), (25, 25, 1.5, 0),
                                                  (12, 40, 0.5, 0), (12, 40, 1.0, 1)])
def test_logme_evidence_equals_the_gaussian_marginal_likelihood(n, d, strength, seed):
    # n < d cases included: there the evidence needs the d − r zero eigenvalues of FᵀF.
    f, y = clustered(n, d, 3, strength, seed)
    details = logme_details(f, y)
    fits = interior(details)
    assert fits, "the fixture must have at least one interior maximum"
    for c in fits:
        assert c.converged
        target = (y == c.label).astype(float)
        assert c.evidence == pytest.approx(direct_log_evidence(f, target, c.alpha, c.beta), abs=1e-8)
    assert logme(f, y) == pytest.approx(np.mean([c.evidence / n for c in details]), rel=1e-12)


@pytest.mark.parametrize("n, d, strength, seed", [(30, 4, 1.5, 0), (12, 40, 0.5, 0)])
def test_logme_converges_to_a_local_maximum_of_the_evidence(n, d, strength, seed):
    f, y = clustered(n, d, 3, strength, seed)
    for c in interior(logme_details(f, y)):
        target = (y == c.label).astype(float)
        best = direct_log_evidence(f, target, c.alpha, c.beta)
        for a, b in [(1.01, 1), (0.99, 1), (1, 1.01), (1, 0.99)]:
            assert direct_log_evidence(f, target, c.alpha * a, c.beta * b) < best


def test_logme_boundary_maxima_are_the_supremum():
    # n < d with separable classes: y lies in F's column space and the evidence keeps rising as the
    # noise vanishes (β → ∞); the module returns the exact limit, which finite β approach from below.
    f, y = clustered(12, 40, 3, 1.5, 0)
    edge = [c for c in logme_details(f, y) if c.beta == math.inf]
    assert edge
    for c in edge:
        target = (y == c.label).astype(float)
        near = [direct_log_evidence(f, target, c.alpha, beta) for beta in (1e4, 1e6, 1e8)]
        assert near[0] < near[1] < near[2] <= c.evidence + 1e-9
        assert near[2] == pytest.approx(c.evidence, abs=1e-4)
    # Few useless features: the projection of y is below the noise, the weights are pinned at 0
    # (α → ∞) and the evidence is that of pure noise, y ~ N(0, I/β) with β = n/‖y‖².
    rng = np.random.default_rng(0)
    noise, labels = rng.normal(size=(100, 2)), rng.integers(0, 3, 100)
    pinned = [c for c in logme_details(noise, labels) if c.alpha == math.inf]
    assert pinned
    for c in pinned:
        target = (labels == c.label).astype(float)
        assert c.beta == pytest.approx(100 / target.sum())
        assert c.evidence == pytest.approx(direct_log_evidence(noise, target, 1e12, c.beta), abs=1e-6)


def test_logme_is_invariant_to_the_order_of_examples_and_the_feature_scale():
    f, y = clustered(60, 10, 4, 1.0, 3)
    order = np.random.default_rng(1).permutation(60)
    assert logme(f[order], y[order]) == pytest.approx(logme(f, y), rel=1e-10, abs=1e-12)
    assert logme(7.5 * f, y) == pytest.approx(logme(f, y), rel=1e-8)


def test_logme_prefers_features_that_separate_the_classes():
    separating, y = clustered(80, 16, 4, 2.0, 0)
    noise, _ = clustered(80, 16, 4, 0.0, 0)
    assert logme(separating, y) > logme(noise, y)
    # Same shape, the class signal in 6 of 16 dimensions versus in 1.
    rng = np.random.default_rng(5)
    base = rng.normal(size=(80, 16))
    centres = rng.normal(size=(4, 16))
    more, fewer = base.copy(), base.copy()
    more[:, :6] += 2.0 * centres[y][:, :6]
    fewer[:, :1] += 2.0 * centres[y][:, :1]
    assert logme(more, y) > logme(fewer, y) > logme(noise, y) - 1e-3


def test_logme_absent_class_zero_and_constant_features():
    f, y = clustered(30, 5, 3, 1.0, 0)
    details = logme_details(f, y, num_classes=5)
    assert [c.evidence is None for c in details] == [False, False, False, True, True]
    assert logme(f, y, num_classes=5) == pytest.approx(logme(f, y))
    # Zero features carry nothing: every class scores as pure noise, exactly.
    zero = logme_details(np.zeros((30, 5)), y)
    for c in zero:
        beta = 30 / np.sum(y == c.label)
        assert c.alpha == math.inf and c.beta == pytest.approx(beta)
        assert c.evidence == pytest.approx(15 * math.log(beta) - 15 - 15 * math.log(2 * math.pi))
    # Constant features (rank 1): finite, and not better than the noise-only value.
    constant = logme(np.ones((30, 5)), y)
    assert math.isfinite(constant) and constant >= logme(np.zeros((30, 5)), y) - 1e-12


def test_logme_bad_input_is_one_clear_line():
    f, y = clustered(10, 3, 2, 1.0, 0)
    nan = f.copy()
    nan[4, 1] = np.nan
    user_error("NaN/inf", "example 4", call=lambda: logme(nan, y))
    inf = f.copy()
    inf[0, 0] = np.inf
    user_error("NaN/inf", call=lambda: logme(inf, y))
    user_error("at least 2", call=lambda: logme(f[:1], y[:1]))
    user_error("2-D", call=lambda: logme(f[:, 0], y))
    user_error("9 entries", "10 examples", call=lambda: logme(f, y[:9]))
    user_error("out of range", call=lambda: logme(f, y, num_classes=1))
    user_error("≥ 0", call=lambda: logme(f, y - 1))
    user_error("integer", call=lambda: logme(f, y + 0.5))
    user_error("0 dimensions", call=lambda: logme(np.zeros((10, 0)), y))


# --------------------------------------------------------------------------- LEEP


def test_leep_matches_a_hand_computation():
    theta = np.array([[0.7, 0.2, 0.1],
                      [0.1, 0.8, 0.1],
                      [0.3, 0.3, 0.4],
                      [0.5, 0.0, 0.5]])
    y = np.array([0, 1, 1, 0])
    n, z, k = 4, 3, 2
    # The definitions, loop by loop.
    joint = [[sum(theta[i][j] for i in range(n) if y[i] == a) / n for j in range(z)] for a in range(k)]
    marginal = [sum(joint[a][j] for a in range(k)) for j in range(z)]
    cond = [[joint[a][j] / marginal[j] for j in range(z)] for a in range(k)]
    expected = sum(math.log(sum(cond[y[i]][j] * theta[i][j] for j in range(z))) for i in range(n)) / n
    assert leep(theta, y, 2) == pytest.approx(expected, rel=1e-12)
    # And by numbers worked out on paper: P(y=0, z=0) = (0.7 + 0.5)/4 = 0.3, P(z=0) = 1.6/4, ...
    assert joint[0][0] == pytest.approx(0.3) and marginal[0] == pytest.approx(0.4)
    assert cond[0][0] == pytest.approx(0.75)


def test_leep_bounds():
    rng = np.random.default_rng(0)
    theta = rng.dirichlet(np.ones(6), size=50)
    y = rng.integers(0, 3, 50)
    assert leep(theta, y, 3) <= 0
    # Source labels map one-to-one onto target labels and the source model is right and certain:
    # the perfect predictor, log-likelihood 0 (also under a relabelling of the source classes).
    labels = np.arange(12) % 3
    assert leep(np.eye(3)[labels], labels, 3) == pytest.approx(0.0, abs=1e-12)
    assert leep(np.eye(3)[(labels + 1) % 3], labels, 3) == pytest.approx(0.0, abs=1e-12)
    # Uninformative source predictions: exactly the log of the target's class frequencies.
    flat = np.full((12, 4), 0.25)
    assert leep(flat, labels, 3) == pytest.approx(math.log(1 / 3))
    # A source class nobody predicts (a zero column) changes nothing.
    padded = np.hstack([theta, np.zeros((50, 1))])
    assert leep(padded, y, 3) == pytest.approx(leep(theta, y, 3), rel=1e-12)


def test_leep_bad_input_is_one_clear_line():
    theta = np.array([[0.5, 0.5], [0.2, 0.8]])
    user_error("sum to", "example 1", call=lambda: leep(np.array([[0.5, 0.5], [2.0, 1.0]]), [0, 1], 2))
    user_error("≥ 0", call=lambda: leep(np.array([[1.5, -0.5], [0.2, 0.8]]), [0, 1], 2))
    user_error("2-D", call=lambda: leep(theta[0], [0], 2))
    user_error("out of range", call=lambda: leep(theta, [0, 2], 2))
    user_error("NaN/inf", call=lambda: leep(np.array([[np.nan, 1.0], [0.2, 0.8]]), [0, 1], 2))


# --------------------------------------------------------------------------- probe, τ, recommendation


def test_probe_accuracy_on_separable_data_and_on_noise():
    separable, y = clustered(120, 8, 2, 3.0, 0)
    mean, std = probe_accuracy(separable, y)
    assert mean >= 0.97 and 0 <= std < 0.05
    noise, _ = clustered(120, 8, 2, 0.0, 0)
    chance, _ = probe_accuracy(noise, y)
    assert abs(chance - 0.5) < 0.15
    assert probe_accuracy(separable, y, seed=3) == probe_accuracy(separable, y, seed=3)


def test_probe_accuracy_fewer_folds_and_errors():
    f, _ = clustered(13, 3, 2, 3.0, 0)
    y = np.array([0] * 10 + [1] * 3)  # the smallest class has 3: folds drop from 5 to 3
    mean, std = probe_accuracy(f, y)
    assert 0 <= mean <= 1 and math.isfinite(std)
    user_error("class 1", "at least 2", call=lambda: probe_accuracy(f, np.array([0] * 12 + [1])))
    user_error("at least 2 classes", call=lambda: probe_accuracy(f, np.zeros(13, dtype=int)))
    user_error("folds", call=lambda: probe_accuracy(f, y, folds=1))


def test_kendall_tau_on_known_orders():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # One adjacent swap among 4: 5 concordant, 1 discordant pair of 6.
    assert kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    # With ties: τ-b = (C − D)/sqrt((n0 − n1)(n0 − n2)) = (5 − 0)/sqrt((6 − 1)(6 − 0)).
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))
    assert kendall_tau([1, 1, 1], [1, 2, 3]) == 0.0  # undefined (all tied): 0, never NaN
    user_error("at least 2", call=lambda: kendall_tau([1.0], [2.0]))
    user_error("same length", call=lambda: kendall_tau([1, 2], [1, 2, 3]))
    user_error("NaN/inf", call=lambda: kendall_tau([1, float("nan")], [1, 2]))


def test_recommendation_phrases():
    clear = recommendation({"bert": 0.9, "roberta": 0.5, "distil": 0.45, "tiny": 0.4})
    assert clear["best"] == "bert" and clear["confidence"] == "clear"
    assert clear["gap"] == pytest.approx(0.4)
    assert clear["spread"] == pytest.approx(np.std([0.9, 0.5, 0.45, 0.4]))
    assert clear["ranking"] == ["bert", "roberta", "distil", "tiny"]
    # spread ≈ 0.192: a gap of 0.1 is over a quarter of it but under all of it.
    narrow = recommendation({"a": 0.8, "b": 0.7, "c": 0.4, "d": 0.35})
    assert narrow["confidence"] == "narrow"
    close = recommendation({"a": 0.81, "b": 0.8, "c": 0.4, "d": 0.35})
    assert close["confidence"] == "too close to call"
    assert recommendation({"a": 0.5, "b": 0.5})["confidence"] == "too close to call"
    assert recommendation({"a": 0.1, "b": 0.5})["confidence"] == "clear"
    alone = recommendation({"only": -1.0})
    assert alone["best"] == "only" and alone["gap"] is None and alone["confidence"] == "only candidate"
    user_error("no candidates", call=lambda: recommendation({}))
    user_error("'b'", "finite", call=lambda: recommendation({"a": 1.0, "b": float("nan")}))
