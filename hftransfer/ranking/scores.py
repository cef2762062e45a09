"""The scores of ``hftransfer rank``: how well each source model should transfer, before training.

Every function works on plain arrays (features or predictions of the target data, one row per
example, already computed by a source model) and is deterministic:

* :func:`logme` — LogME (You, Liu, Long, Wang, ICML 2021): the evidence of a Bayesian linear
  model from the features to each one-hot label column, maximised over its two hyper-parameters.
* :func:`leep` — LEEP (Nguyen, Hassner, Seeger, Archambeau, ICML 2020): the log-likelihood of
  the target labels under the source classifier's predictions, re-mapped by the empirical
  conditional P(target label | source label).
* :func:`probe_accuracy` — cross-validated accuracy of a logistic-regression probe (a cheap
  ground truth that actually trains something).
* :func:`kendall_tau` — agreement between a predicted ranking and the measured one.
* :func:`recommendation` — the top candidate and how sure the scores are about it.

Bad input (NaN features, too few examples, labels out of range) raises :class:`HFTransferError`
with one line saying what to fix.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hftransfer.errors import HFTransferError

LOGME_TOLERANCE = 1e-10
"""Relative change of both α and β below which the fixed-point iteration has converged. Tight,
because one iteration costs O(rank) and the converged point must be a true stationary point."""
LOGME_MAX_ITERATIONS = 10_000
"""Cap on fixed-point iterations per class; it is reached only when the evidence has no interior
maximum (its supremum is approached as β → ∞), and then the last iterate is reported."""
ROW_SUM_TOLERANCE = 1e-4
"""How far a row of source probabilities may sum from 1 (softmax in float16/32 rounds)."""


# --------------------------------------------------------------------------- checks


def _features(features: np.ndarray, min_rows: int = 2) -> np.ndarray:
    """The features as a finite float64 n×d matrix with at least ``min_rows`` rows."""
    array = np.asarray(features)
    if array.ndim != 2:
        raise HFTransferError(f"features must be a 2-D array (examples × dimensions), "
                              f"got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise HFTransferError(f"features must be numeric, got dtype {array.dtype}")
    # float64 throughout: LogME sums logs of singular values that span many orders of magnitude.
    array = array.astype(np.float64)
    n, d = array.shape
    if n < min_rows:
        raise HFTransferError(f"features have {n} example(s); scoring needs at least {min_rows}")
    if d == 0:
        raise HFTransferError("features have 0 dimensions; the source model produced empty vectors")
    bad = ~np.isfinite(array)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise HFTransferError(f"features hold {int(bad.sum())} NaN/inf value(s) (first in example {row}); "
                              "check the source model's outputs (fp16 overflow?)")
    return array


def _labels(labels: np.ndarray, n: int, num_classes: int | None = None) -> tuple[np.ndarray, int]:
    """The labels as int64 class indices matching ``n`` rows, and the number of classes."""
    array = np.asarray(labels)
    if array.ndim != 1:
        raise HFTransferError(f"labels must be a 1-D array of class indices, got shape {array.shape}")
    if array.shape[0] != n:
        raise HFTransferError(f"labels have {array.shape[0]} entries but there are {n} examples")
    if array.dtype == bool:
        array = array.astype(np.int64)
    elif np.issubdtype(array.dtype, np.floating):
        # Integral floats (e.g. read back from a CSV) are fine; 0.5 is not a class.
        if not (np.isfinite(array).all() and np.array_equal(array, np.round(array))):
            raise HFTransferError("labels must be integer class indices, got non-integer values")
        array = array.astype(np.int64)
    elif not np.issubdtype(array.dtype, np.integer):
        raise HFTransferError(f"labels must be integer class indices, got dtype {array.dtype}")
    array = array.astype(np.int64)
    if (array < 0).any():
        raise HFTransferError(f"labels must be class indices ≥ 0, got {int(array.min())}")
    top = int(array.max()) + 1
    if num_classes is None:
        num_classes = top
    elif num_classes < 1:
        raise HFTransferError(f"num_classes must be ≥ 1, got {num_classes}")
    elif top > num_classes:
        raise HFTransferError(f"label {top - 1} is out of range for {num_classes} classes "
                              f"(0..{num_classes - 1})")
    return array, int(num_classes)


# --------------------------------------------------------------------------- LogME


@dataclass(frozen=True)
class ClassEvidence:
    """LogME's fit of one class's one-hot column: the maximising hyper-parameters (prior
    precision ``alpha``, noise precision ``beta``), the maximum log evidence (total, not divided
    by n), and whether the iteration converged. A class without examples has ``evidence`` None
    (its all-zero target makes the evidence unbounded) and is left out of the mean."""

    label: int
    alpha: float
    beta: float
    evidence: float | None
    iterations: int
    converged: bool


def _spectrum(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U, σ): the left singular vectors and squared singular values of F for its non-zero
    singular values only (economy SVD, then numerical rank as in ``numpy.linalg.matrix_rank``).

    Dropping the zero singular values here is what keeps n < d, n ≥ d and rank-deficient F (e.g.
    constant features) one case: every formula below uses the r kept values plus explicit terms
    for the d − r zero eigenvalues of FᵀF and the n − r directions of y outside F's column space.
    """
    u, s, _ = np.linalg.svd(features, full_matrices=False)  # u: n×k, s: k, k = min(n, d)
    if s.size == 0 or s[0] == 0.0:
        return u[:, :0], s[:0]
    keep = s > s[0] * max(features.shape) * np.finfo(np.float64).eps
    return u[:, keep], s[keep] ** 2


def _log_evidence(alpha: float, beta: float, sigma: np.ndarray, x2: np.ndarray, rest: float,
                  n: int, d: int) -> float:
    """log p(y | F, α, β) of Bayesian linear regression, by the paper's formula (eq. 2 of LogME).

    With A = αI + βFᵀF (d×d), m = βA⁻¹Fᵀy:
        L = d/2·log α + n/2·log β − 1/2·log|A| − β/2·‖Fm − y‖² − α/2·‖m‖² − n/2·log 2π,
    where the eigenvalues of A are α + βσ_j for the r non-zero σ_j and α for the other d − r: so
    log|A| = Σ_r log(α + βσ_j) + (d − r)·log α. (Leaving that second term out, as an economy SVD
    with n < d invites, would count d/2·log α with only r eigenvalues and inflate L.) In U's
    coordinates x = Uᵀy, with t = α/β, ‖m‖² = Σ σx²/(t+σ)² and ‖Fm − y‖² = Σ x²/(1+σ/t)² + rest,
    ``rest`` = ‖y‖² − ‖x‖² being the part of y outside F's column space.
    """
    r = sigma.size
    t = alpha / beta
    m2 = float(np.sum(sigma * x2 / (t + sigma) ** 2))
    res2 = float(np.sum(x2 * (t / (t + sigma)) ** 2)) + rest
    log_det_a = float(np.sum(np.log(alpha + beta * sigma))) + (d - r) * math.log(alpha)
    return (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - log_det_a / 2
            - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * math.log(2 * math.pi))


def _noise_only(n: int, total: float, label: int, iterations: int) -> ClassEvidence:
    """The α → ∞ limit: weights pinned at 0, y ~ N(0, I/β), best β = n/‖y‖². Every α-dependent
    term of the evidence cancels in this limit (d/2·log α against log|A|, α‖m‖² → 0)."""
    beta = n / total
    evidence = n / 2 * math.log(beta) - n / 2 - n / 2 * math.log(2 * math.pi)
    return ClassEvidence(label, math.inf, beta, evidence, iterations, True)


def _noiseless(sigma: np.ndarray, x2: np.ndarray, n: int, label: int, iterations: int) -> ClassEvidence:
    """The β → ∞ limit, reachable only when F has rank n (n ≤ d: y is in F's column space):
    y ~ N(0, FFᵀ/α), whose log-density n/2·log α − α/2·Σ x²/σ − 1/2·Σ log σ − n/2·log 2π is
    largest at α = n / Σ x²/σ."""
    q = float(np.sum(x2 / sigma))
    alpha = n / q
    evidence = (n / 2 * math.log(alpha) - alpha / 2 * q - float(np.sum(np.log(sigma))) / 2
                - n / 2 * math.log(2 * math.pi))
    return ClassEvidence(label, alpha, math.inf, evidence, iterations, True)


def _fit_class(y: np.ndarray, u: np.ndarray, sigma: np.ndarray, d: int, label: int) -> ClassEvidence:
    """Maximise the evidence of one target column by MacKay's fixed point (LogME, Algorithm 1):
    γ = Σ σ/(σ + α/β),  α ← γ/‖m‖²,  β ← (n − γ)/‖Fm − y‖², until α and β stop moving.

    The maximum can lie on the boundary, where the iteration drifts instead of converging: α → ∞
    when y's projections on F's directions are below the noise level (common with few, useless
    features), β → ∞ when F has rank n and y can be fitted exactly. Once t = α/β leaves the
    spectrum by a factor of 1e12 the exact limit is returned instead; a drift too slow for that
    runs to the cap, and then the limits are compared with the last iterate.
    """
    n = y.shape[0]
    total = float(y @ y)
    x2 = (u.T @ y) ** 2
    # The part of y outside F's column space: ‖y‖² − ‖Uᵀy‖², computed once (clipped: rounding).
    rest = max(total - float(x2.sum()), 0.0)
    exact = sigma.size == n  # rank n: nothing of y is outside F's column space
    if exact:
        rest = 0.0
    # y orthogonal to every feature direction (zero features, or none that relate to y).
    if sigma.size == 0 or float(np.sum(sigma * x2)) <= 1e-24 * total * float(sigma.max()):
        return _noise_only(n, total, label, 0)
    alpha, beta = 1.0, 1.0  # the paper's start (scale-free: the features' scale only moves α)
    low, high = float(sigma.min()), float(sigma.max())
    for iterations in range(1, LOGME_MAX_ITERATIONS + 1):
        t = alpha / beta
        if t > 1e12 * high:
            return _noise_only(n, total, label, iterations)
        if exact and t < 1e-12 * low:
            return _noiseless(sigma, x2, n, label, iterations)
        gamma = float(np.sum(sigma / (sigma + t)))  # effective number of well-determined weights
        m2 = float(np.sum(sigma * x2 / (t + sigma) ** 2))
        res2 = float(np.sum(x2 * (t / (t + sigma)) ** 2)) + rest
        if m2 <= 0.0:
            return _noise_only(n, total, label, iterations)
        if res2 <= 0.0:
            return _noiseless(sigma, x2, n, label, iterations)
        new_alpha, new_beta = gamma / m2, (n - gamma) / res2
        step = max(abs(new_alpha - alpha) / alpha, abs(new_beta - beta) / beta)
        alpha, beta = new_alpha, new_beta
        if step < LOGME_TOLERANCE:
            break
    # The evidence at the final (α, β) itself, not at the previous iterate's m (the reference
    # code mixes the two; at convergence they agree, before it they do not).
    found = ClassEvidence(label, alpha, beta, _log_evidence(alpha, beta, sigma, x2, rest, n, d),
                          iterations, step < LOGME_TOLERANCE)
    # A slow drift to a boundary can outlast the cap, and a stationary point need not be the
    # highest: the boundary limits are exact values of the supremum, so the largest one wins.
    limits = [_noise_only(n, total, label, iterations)]
    if exact:
        limits.append(_noiseless(sigma, x2, n, label, iterations))
    best = max(limits, key=lambda c: c.evidence)
    return best if best.evidence > found.evidence else found


def logme_details(features: np.ndarray, labels: np.ndarray,
                  num_classes: int | None = None) -> list[ClassEvidence]:
    """Per class (0 .. num_classes − 1) the LogME fit of its one-hot column: see :func:`logme`."""
    f = _features(features)
    y, num_classes = _labels(labels, f.shape[0], num_classes)
    u, sigma = _spectrum(f)  # one SVD shared by every class
    out = []
    for c in range(num_classes):
        target = (y == c).astype(np.float64)
        if not target.any():
            # An all-zero target is fitted perfectly by β → ∞: unbounded evidence, no information
            # about the features. It is the same for every source model, so it is left out.
            out.append(ClassEvidence(c, math.nan, math.nan, None, 0, True))
            continue
        out.append(_fit_class(target, u, sigma, f.shape[1], c))
    return out


def logme(features: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> float:
    """LogME of a source model's ``features`` (n×d) for integer ``labels`` (n).

    You, Liu, Long, Wang: "LogME: Practical Assessment of Pre-trained Models for Transfer
    Learning", ICML 2021. For each class c the target is the one-hot column y_c; the model is
    Bayesian linear regression y_c = Fw + ε, w ~ N(0, α⁻¹I_d), ε ~ N(0, β⁻¹I_n), whose evidence
    p(y_c | F, α, β) = N(y_c; 0, FFᵀ/α + I/β) is maximised over (α, β) by the paper's fixed-point
    iteration on the SVD of F. LogME is the mean over classes of (maximum log evidence / n):
    higher is better, comparable across source models on the same target data.

    ``num_classes`` (default: largest label + 1) names classes that may be absent from
    ``labels``; classes without examples are skipped (see :class:`ClassEvidence`). Invariant to
    the order of the examples and to a global rescaling of the features.
    """
    details = logme_details(features, labels, num_classes)
    n = np.asarray(features).shape[0]
    values = [c.evidence / n for c in details if c.evidence is not None]
    return float(np.mean(values))


# --------------------------------------------------------------------------- LEEP


def leep(source_probs: np.ndarray, labels: np.ndarray, num_target_classes: int) -> float:
    """LEEP of a source classifier for target ``labels``.

    Nguyen, Hassner, Seeger, Archambeau: "LEEP: A New Measure to Evaluate Transferability of
    Learned Representations", ICML 2020. ``source_probs`` (n×z) is θ(x), the source model's
    predicted distribution over its own z labels (rows sum to 1). With the empirical joint
    P(y, z) = 1/n Σ_i θ(x_i)_z·[y_i = y], P(z) = Σ_y P(y, z) and P(y | z) = P(y, z)/P(z),
    LEEP = 1/n Σ_i log Σ_z P(y_i | z)·θ(x_i)_z: the average log-likelihood of the "expected
    empirical predictor". Always ≤ 0; 0 when the source labels map one-to-one onto the target's
    and the source model is certain and right.
    """
    theta = np.asarray(source_probs)
    if theta.ndim != 2:
        raise HFTransferError(f"source probabilities must be a 2-D array (examples × source classes), "
                              f"got shape {theta.shape}")
    theta = _features(theta, min_rows=1)
    if (theta < 0).any():
        raise HFTransferError("source probabilities must be ≥ 0; pass softmax outputs, not logits")
    sums = theta.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > ROW_SUM_TOLERANCE:
        raise HFTransferError(f"source probabilities of example {worst} sum to {sums[worst]:.6g}, not 1; "
                              "pass softmax outputs, not logits")
    theta = theta / sums[:, None]  # exact rows, so that LEEP ≤ 0 holds to rounding
    y, k = _labels(labels, theta.shape[0], num_target_classes)
    n = theta.shape[0]
    one_hot = np.zeros((n, k))
    one_hot[np.arange(n), y] = 1.0
    joint = one_hot.T @ theta / n  # P(y, z), k×z
    marginal = joint.sum(axis=0)  # P(z)
    # A source class no example puts mass on has P(z) = 0, and θ(x)_z = 0 for every x: its
    # column contributes nothing whatever P(y | z) is, so it is set to 0 (not 0/0).
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    eep = np.einsum("iz,iz->i", theta, conditional[y])  # Σ_z P(y_i | z) θ(x_i)_z
    # eep > 0 always: example i contributes θ_iz²/(n·P(z)) > 0 to its own term for some z.
    return float(np.mean(np.log(eep)))


# --------------------------------------------------------------------------- linear probe


def probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 5,
                   seed: int = 0) -> tuple[float, float]:
    """Cross-validated accuracy of a logistic-regression probe on the features: (mean, std).

    The linear-probe baseline of the transferability literature (e.g. Kornblith, Shlens, Le: "Do
    Better ImageNet Models Transfer Better?", CVPR 2019): standardized features, sklearn
    ``LogisticRegression`` (L2, C = 1), stratified K-fold shuffled with ``seed``. ``folds`` is
    lowered to the smallest class's count when that is smaller (each fold needs every class in
    its test part); a class with fewer than 2 examples is an error. The std is the sample std
    (ddof = 1) of the per-fold accuracies. Same inputs and seed → same numbers.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    f = _features(features)
    y, _ = _labels(labels, f.shape[0])
    present, counts = np.unique(y, return_counts=True)
    if present.size < 2:
        raise HFTransferError(f"a probe needs at least 2 classes in the labels, found {present.size}")
    if counts.min() < 2:
        lonely = int(present[np.argmin(counts)])
        raise HFTransferError(f"class {lonely} has {int(counts.min())} example; cross-validation needs "
                              "at least 2 per class")
    if folds < 2:
        raise HFTransferError(f"folds must be ≥ 2, got {folds}")
    folds = min(folds, int(counts.min()))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = []
    for train, test in splitter.split(f, y):
        # The scaler is fitted inside each fold, so the test part never informs it.
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        probe.fit(f[train], y[train])
        scores.append(float(probe.score(f[test], y[test])))
    return float(np.mean(scores)), float(np.std(scores, ddof=1))


# --------------------------------------------------------------------------- agreement, recommendation


def kendall_tau(predicted: Sequence[float], actual: Sequence[float]) -> float:
    """Kendall's τ-b between predicted scores and measured results of the same candidates.

    Kendall: "A New Measure of Rank Correlation", Biometrika 1938; τ-b (with ties) as in
    ``scipy.stats.kendalltau``. +1: same order, −1: reversed. When either list is all ties the
    statistic is undefined (0/0): this returns 0.0 (no evidence of agreement) instead of NaN.
    """
    from scipy import stats

    a = np.asarray(predicted, dtype=np.float64)
    b = np.asarray(actual, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.size != b.size:
        raise HFTransferError(f"kendall_tau needs two lists of the same length, got {a.size} and {b.size}")
    if a.size < 2:
        raise HFTransferError(f"kendall_tau needs at least 2 candidates, got {a.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise HFTransferError("kendall_tau got a NaN/inf score; every candidate needs a finite score")
    if np.all(a == a[0]) or np.all(b == b[0]):
        return 0.0
    tau = float(stats.kendalltau(a, b, variant="b").statistic)
    return 0.0 if math.isnan(tau) else tau


CLEAR = "clear"
NARROW = "narrow"
TOO_CLOSE = "too close to call"


def recommendation(scores: Mapping[str, float]) -> dict:
    """The candidate with the highest score, and how decisively the scores pick it.

    Returns ``best`` (name), ``ranking`` (names, best first; ties by name), ``gap`` (best minus
    runner-up; None with one candidate), ``spread`` (population std of all scores) and
    ``confidence``:

    * ``"clear"`` when gap > spread — the winner stands out by more than the scores vary;
    * ``"narrow"`` when spread/4 < gap ≤ spread;
    * ``"too close to call"`` when gap ≤ spread/4 (and whenever the top two tie);
    * ``"only candidate"`` with a single candidate.

    The rule is scale-free (it holds for LogME, LEEP or accuracies alike). With exactly two
    distinct scores the gap is twice the spread, so two candidates are always ``"clear"`` unless
    tied: the rule needs three or more to say anything subtle.
    """
    if not scores:
        raise HFTransferError("no candidates to recommend from")
    values = {}
    for name, value in scores.items():
        value = float(value)
        if not math.isfinite(value):
            raise HFTransferError(f"candidate {name!r} has score {value}; "
                                  "every candidate needs a finite score")
        values[str(name)] = value
    ranking = sorted(values, key=lambda name: (-values[name], name))
    spread = float(np.std(list(values.values())))
    if len(ranking) == 1:
        return {"best": ranking[0], "ranking": ranking, "gap": None, "spread": spread,
                "confidence": "only candidate"}
    gap = values[ranking[0]] - values[ranking[1]]
    if gap > 0 and gap > spread:
        confidence = CLEAR
    elif gap > 0 and gap > spread / 4:
        confidence = NARROW
    else:
        confidence = TOO_CLOSE
    return {"best": ranking[0], "ranking": ranking, "gap": gap, "spread": spread, "confidence": confidence}
