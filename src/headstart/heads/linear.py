"""Linear classifiers on CNN codes: standardised features, regularisation chosen by cross-validation.

Softmax regression (scikit-learn's ``LogisticRegression`` objective) and a linear SVM (``LinearSVC``'s squared
hinge, one-vs-rest) are solved by one batched L-BFGS in torch: every (fold, C) pair of the cross-validation is an
independent problem in the same call, in the codes' principal-axis basis, preconditioned by the data's variance along
each axis. On dtd10 (800 x 1280 codes, 10 classes) that searches 9 C values x 5 folds in about 0.6 s where
``LogisticRegressionCV`` took 8.5 s for 6 values, with the same C and validation accuracy (``bench/auto.py``).
C means what it means in scikit-learn: ``C * sum(loss) + ||w||^2 / 2``, the intercept unpenalised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..defaults import CLASSIFIERS
from ..errors import DataError
from .basis import Standardised
from .calibration import fit_temperature, log_losses
from .solver import solve

#: Candidate C values, half a decade apart, bracketing the optima measured on the shared datasets; a search whose
#: best C lies at an edge extends the grid on that side (at most EXTEND_STEPS more values, then stops).
C_GRIDS = {"logistic": tuple(float(c) for c in np.logspace(-3.5, 0.5, 9)),
           "svm": tuple(float(c) for c in np.logspace(-5, -1, 9))}
EXTEND_STEPS = 6
MAX_FOLDS = 5
#: The C search runs on at most this many codes (a stratified sample); the final fit always uses all of them.
SEARCH_MAX_ROWS = 8000
#: L-BFGS iterations per search, by loss. Measured on the shared datasets' codes: 100 for logistic and 50 for the
#: squared hinge change neither the chosen C nor the validation accuracy.
ITERATIONS = {"logistic": 50, "squared_hinge": 30, "sigmoid": 50}
FINAL_ITERATIONS = 300
#: From this many classes the default C search walks up the grid with warm starts (:func:`_walk`) instead of
#: solving every C at once. Measured with bench/search.py on a 100-class set of real images (3000 training images):
#: 6.4x faster over auto's 8 candidate layers (196 s -> 31 s; 3000 x 1984 codes: 53 s -> 8.3 s), the same C on every
#: layer, the same layer chosen, the same validation accuracy; out-of-fold log losses 0.01-0.03 higher (WARM_ITERATIONS
#: stops short of full convergence; the final fit always converges). Fewer classes keep the batched search.
PATH_CLASSES = 20
WARM_ITERATIONS = 12
#: A walk's first C is solved from zero for this many iterations. With WARM_ITERATIONS alone it stopped further from
#: convergence than the warm-started Cs after it (on the 100-class set of bench/search.py, Lite0's widest join: 0.06
#: above its converged out-of-fold loss at C = 0.01, 0.02-0.03 elsewhere), which biased every walk that started
#: above the strongest Cs against its first C: that join took C = 0.0316 where converged losses and the batched
#: search choose 0.01, 0.8 points lower on validation images (0.461 against 0.469).
FIRST_ITERATIONS = 2 * WARM_ITERATIONS
#: The walk stops this many C values past the lowest loss (out-of-fold log loss is unimodal in log C in every search
#: we measured; 2 chose as 1 on cifar_styles of bench/search.py and two sets like it, at 20% more solves).
PATIENCE = 1
#: The walk runs in the leading principal axes that hold this share of the standardised codes' variance (the final
#: fit uses them all). Measured on three 100-class sets of real images: auto's 8 layer searches 1.8x faster (22.3 ->
#: 12.4 s on 3000 training images), the same layer on two, and on the third a wider layer, 3.1 points better on
#: validation images; with PATIENCE 1, the whole cold fit on the bench's set took 42.4 s instead of 52.4 s, against
#: 30.2 s for --strategy feature-extractor (bench/search.py fit).
WALK_VARIANCE = 0.95
#: A walk with no C known starts at this index of the grid (0.00316): 2 fewer solves than 0, same Cs (README).
WALK_FROM = 2


@dataclass
class LinearHead:
    """``softmax(codes @ weight.T + bias)``: the whole classifier on raw codes (standardisation folded in)."""

    weight: np.ndarray
    bias: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def logits(self, codes: np.ndarray) -> np.ndarray:
        """Class scores of ``codes`` (rows of standardised-in-the-weights features)."""
        return codes.astype(np.float64) @ self.weight.T.astype(np.float64) + self.bias

    def predict_proba(self, codes: np.ndarray) -> np.ndarray:
        """Softmax of the logits."""
        z = self.logits(codes)
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)


@dataclass
class Search:
    """The cross-validated C search: scores per C, the chosen C, and out-of-fold results at that C."""

    classifier: str
    grid: list[float]
    log_loss: list[float]  # out-of-fold, per C (SVM decision values calibrated by a temperature first)
    accuracy: list[float]
    best: int
    folds: int
    rows: int  # codes the search ran on
    sample_losses: np.ndarray  # out-of-fold log loss of each searched image at the chosen C
    temperature: float = 1.0
    oof_logits: np.ndarray | None = None  # out-of-fold logits of each searched image at the chosen C (calibrated)
    rows_index: np.ndarray | None = None  # which of the given rows were searched (None: all of them)
    basis: Standardised | None = None  # the searched codes' basis, when all were searched: the final fit's too
    start: tuple | None = None  # the mean of the fold models at the chosen C (w, b in ``basis``): the final fit's start
    below: tuple | None = None  # (C, w, b): the walk's fold models half a decade below the chosen C, w on the
    # standardised columns (folds x columns x classes): a start for like codes' walks (:func:`search_C`'s ``start``)

    def oof_proba(self) -> np.ndarray:
        """Out-of-fold class probabilities of the searched rows at the chosen C."""
        z = self.oof_logits - self.oof_logits.max(1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    @property
    def C(self) -> float:
        """The chosen regularisation strength."""
        return self.grid[self.best]

    @property
    def cv_log_loss(self) -> float:
        """Out-of-fold log loss at the chosen C."""
        return self.log_loss[self.best]

    @property
    def cv_accuracy(self) -> float:
        """Out-of-fold accuracy at the chosen C."""
        return self.accuracy[self.best]

    def info(self) -> dict[str, Any]:
        """The search as JSON-ready values (fit info's ``classifier``)."""
        at_edge = self.best in (0, len(self.grid) - 1)
        return {"cv_folds": self.folds, "cv_metric": "log_loss", "cv_rows": self.rows, "C_at_grid_edge": at_edge,
                "cv_scores": {f"{c:.3g}": round(-v, 5) for c, v in zip(self.grid, self.log_loss)},
                "cv_accuracy": {f"{c:.3g}": round(v, 5) for c, v in zip(self.grid, self.accuracy)}}


def fold_logits(data: Standardised, labels: np.ndarray, n_classes: int, folds: list[tuple[np.ndarray, np.ndarray]],
                Cs: list[float], loss: str, iterations: int | None = None, start: tuple | None = None
                ) -> tuple[np.ndarray, tuple]:
    """(out-of-fold logits (len(Cs) x rows x outputs): each row's from the fold model that did not train on it, the
    solution (w, b)) of the model of each (fold, C) pair, fold-major, all solved in one batched L-BFGS run: problem
    ``f * len(Cs) + g`` trains on fold f's training rows at ``Cs[g]``, from zero or from ``start`` (a warm start),
    for ``iterations`` (default ITERATIONS[loss])."""
    import torch

    n = len(labels)
    weights = torch.zeros(len(folds) * len(Cs), n)
    penalties = torch.zeros(len(folds) * len(Cs))
    for f, (train, _test) in enumerate(folds):
        for g, c in enumerate(Cs):
            weights[f * len(Cs) + g, train] = 1.0 / len(train)
            penalties[f * len(Cs) + g] = 1.0 / (c * len(train))
    w, b = solve(data, labels, n_classes, weights, penalties, loss, iterations or ITERATIONS[loss], start)
    oof = np.zeros((len(Cs), n, w.shape[2]))
    with torch.no_grad():  # each fold's models on its held-out rows only
        for f, (_train, test) in enumerate(folds):
            models = slice(f * len(Cs), (f + 1) * len(Cs))
            held_out = torch.einsum("nr,grk->gnk", data.z[torch.from_numpy(test)], w[models]) + b[models, None, :]
            oof[:, test] = held_out.double().numpy()
    return oof, (w, b)


def _walk(data: Standardised, labels: np.ndarray, n_classes: int, folds: list[tuple[np.ndarray, np.ndarray]],
          loss: str, grid: tuple[float, ...], score, scores: dict, start: tuple | None = None) -> None:
    """The C search of many classes: up ``grid`` from its first value (solved from zero for FIRST_ITERATIONS), each
    C's fold models started from the previous C's for WARM_ITERATIONS, stopping PATIENCE values past the lowest loss,
    and down from the first value while the lowest loss is there (``data``: the leading axes, see WALK_VARIANCE);
    the grid is extended at the top like the batched search. ``start``: fold models for the first C (warm-started
    from them like the Cs after it). ``score(c, oof, solution)`` records a C's out-of-fold results in
    ``scores``, keyed by C."""

    def solve(c: float, start: tuple | None) -> tuple:
        iterations = WARM_ITERATIONS if start is not None else FIRST_ITERATIONS
        oof, solution = fold_logits(data, labels, n_classes, folds, [c], loss, iterations, start)
        score(c, oof[0], solution)
        return solution

    def lowest() -> float:
        return min(scores, key=lambda c: scores[c].loss)

    todo, first = list(grid), None
    while todo:
        start = solve(todo.pop(0), start)
        first = first or start
        done = sorted(scores)
        if sum(c > lowest() for c in done) >= PATIENCE:
            break
        if not todo and lowest() == done[-1] and len(done) < len(grid) + EXTEND_STEPS:
            todo.append(done[-1] * np.sqrt(10))
    start = first
    while lowest() == min(scores) and len(scores) < len(grid) + 2 * EXTEND_STEPS:
        start = solve(min(scores) / np.sqrt(10), start)


def _loss_of(classifier: str) -> str:
    return "logistic" if classifier == "logistic" else "squared_hinge"


def stratified_folds(labels: np.ndarray, seed: int, max_folds: int = MAX_FOLDS, groups: np.ndarray | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """(train, test) indices of shuffled stratified k-fold cross-validation, k = min(max_folds, smallest class);
    None when a class has a single image. Each class is dealt round-robin onto the folds after a seeded shuffle.

    ``groups`` (one id per row, e.g. duplicate sets): rows sharing an id always land in the same fold; a group is
    dealt with the class of its first row."""
    present = np.bincount(labels)
    n_folds = min(max_folds, int(present[present > 0].min()))
    if n_folds < 2:
        return None
    units = np.arange(len(labels)) if groups is None else np.unique(groups, return_inverse=True)[1]
    first = np.full(units.max() + 1, len(labels))
    np.minimum.at(first, units, np.arange(len(labels)))
    unit_labels = labels[first]
    rng = np.random.default_rng(seed)
    unit_fold = np.empty(len(first), np.int64)
    offset = 0
    for label in np.unique(unit_labels):
        members = rng.permutation(np.flatnonzero(unit_labels == label))
        unit_fold[members] = (np.arange(len(members)) + offset) % n_folds
        offset += len(members)  # spreads the remainders of successive classes over different folds
    fold_of = unit_fold[units]
    folds = [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(n_folds)]
    return folds if all(len(test) and len(train) for train, test in folds) else None


def _check(classifier: str, labels: np.ndarray, n_classes: int) -> None:
    if classifier not in CLASSIFIERS:
        raise DataError(f"unknown classifier {classifier!r}; choose from {', '.join(CLASSIFIERS)}")
    if len(np.unique(labels)) < n_classes:
        raise DataError(f"{n_classes - len(np.unique(labels))} class(es) have no usable training image; "
                        "check the skipped files")


def search_rows(labels: np.ndarray, seed: int, max_rows: int = SEARCH_MAX_ROWS) -> np.ndarray | None:
    """The rows a C search runs on: a stratified ``max_rows`` of them when there are more (None: all)."""
    if len(labels) <= max_rows:
        return None
    from ..data.splits import stratified_split

    return stratified_split(labels, max_rows / len(labels), seed)[1]


def search_C(codes: np.ndarray, labels: np.ndarray, n_classes: int, classifier: str = "logistic", seed: int = 0,
             data: Standardised | None = None, grid: list[float] | None = None, groups: np.ndarray | None = None,
             max_rows: int = SEARCH_MAX_ROWS, near: float | None = None, start: tuple | None = None
             ) -> Search | None:
    """Cross-validate every C of ``grid`` (default C_GRIDS) at once, extending the default grid while the best C
    lies at an edge.

    Scored by out-of-fold log loss (an SVM's decision values calibrated by one temperature per C). None when a
    class has fewer than two images (no fold could hold it out). ``groups``: rows that must share a fold
    (duplicates), one id per row of ``codes``. ``near``: a C found best for like codes (another layer of the same
    network); the walk of many classes then starts half a decade below it instead of at grid[WALK_FROM], from
    ``start`` if given: fold models at that C (C, w on the standardised columns of ``codes``, b), as another
    search's ``below`` (mapped onto these columns), which saves FIRST_ITERATIONS - WARM_ITERATIONS steps.
    """
    _check(classifier, labels, n_classes)
    keep = search_rows(labels, seed, max_rows)
    if keep is not None:
        codes, labels, data = codes[keep], labels[keep], None
        groups = None if groups is None else groups[keep]
    folds = stratified_folds(labels, seed, groups=groups)
    if folds is None:
        return None
    data = data or Standardised(codes)
    n, loss = len(labels), _loss_of(classifier)
    scores: dict[float, _Scored] = {}

    def score(c: float, oof: np.ndarray, solution: tuple, axes=None) -> None:  # oof: out-of-fold logits (rows, classes)
        temperature = 1.0 if classifier == "logistic" else fit_temperature(oof, labels)
        losses = log_losses(oof * temperature, labels)
        scores[c] = _Scored(float(losses.mean()), float((oof.argmax(1) == labels).mean()), losses, temperature,
                            (oof * temperature).astype(np.float32), solution, axes)

    below = None
    if grid is None and n_classes >= PATH_CLASSES:
        below = _walked(data, labels, n_classes, folds, loss, _walk_grid(classifier, near), start, score, scores)
    else:
        _batched(data, labels, n_classes, folds, loss, grid, C_GRIDS[classifier], score, scores)
    grid = sorted(scores)
    best = min(range(len(grid)), key=lambda i: scores[grid[i]].loss)
    chosen, every_row = scores[grid[best]], keep is None  # on every row, its basis and models serve the final fit
    return Search(classifier, grid, [scores[c].loss for c in grid], [scores[c].accuracy for c in grid], best,
                  len(folds), n, chosen.losses, chosen.temperature, chosen.oof, keep,
                  data.basis() if every_row else None,
                  _mean_model(chosen.solution, chosen.axes, data.axes.shape[1]) if every_row else None, below)


class _Scored(NamedTuple):
    """One C's out-of-fold results, and the fold models that gave them."""

    loss: float
    accuracy: float
    losses: np.ndarray  # each row's
    temperature: float
    oof: np.ndarray  # calibrated logits
    solution: tuple  # the fold models (w, b)
    axes: Any  # the axes of the basis they were solved on (None: all of them)


def _walk_grid(classifier: str, near: float | None) -> tuple[float, ...]:
    """The Cs a walk goes up: from grid[WALK_FROM], or from half a decade below ``near``."""
    walk = C_GRIDS[classifier]  # the walk goes down from its start too, if the lowest loss is there
    if near is None:
        return walk[WALK_FROM:]
    return tuple(c for c in walk if c >= near / np.sqrt(10) * (1 - 1e-9)) or walk[-1:]


def _walked(data: Standardised, labels: np.ndarray, n_classes: int, folds: list, loss: str, walk: tuple[float, ...],
            start: tuple | None, score, scores: dict) -> tuple | None:
    """The walk of many classes in the leading axes (:func:`_walk`), from ``start`` when it is at the walk's first C;
    returns the fold models half a decade below the chosen C on the standardised columns (Search.below), or None."""
    import torch

    leading = data.leading(WALK_VARIANCE)
    first = None if start is None or not np.isclose(start[0], walk[0]) else (
        torch.einsum("wr,fwk->frk", leading.axes.float(), start[1]), start[2])
    _walk(leading, labels, n_classes, folds, loss, walk,
          lambda c, oof, solution: score(c, oof, solution, leading.kept), scores, first)
    best = min(scores, key=lambda c: scores[c].loss)
    lower = [c for c in scores if c < best * 0.9]
    if not lower:
        return None
    w, b = scores[max(lower)].solution
    return max(lower), torch.einsum("wr,frk->fwk", leading.axes.float(), w), b


def _batched(data: Standardised, labels: np.ndarray, n_classes: int, folds: list, loss: str,
             grid: list[float] | None, default: tuple[float, ...], score, scores: dict) -> None:
    """Every C of ``grid`` solved at once; without one, ``default``'s, extended while its best C is at an edge."""
    todo = list(grid or default)
    for _ in range(EXTEND_STEPS + 1 if grid is None else 1):
        oof, (w, b) = fold_logits(data, labels, n_classes, folds, todo, loss)
        for g, c in enumerate(todo):
            score(c, oof[g], (w[g::len(todo)], b[g::len(todo)]))
        done = sorted(scores)
        best = min(done, key=lambda c: scores[c].loss)
        if best not in (done[0], done[-1]):
            break
        todo = [done[0] / np.sqrt(10)] if best == done[0] else [done[-1] * np.sqrt(10)]


def _mean_model(solution: tuple, axes, rank: int) -> tuple:
    """The mean of fold models (w (folds, rank', k), b (folds, k)) as one model on all ``rank`` axes (``axes``: the
    ones they were solved on, when only some: the walk's leading axes)."""
    import torch

    w, b = solution[0].mean(0), solution[1].mean(0)
    if axes is not None:
        full = torch.zeros(rank, w.shape[1])
        full[axes] = w
        w = full
    return w, b


def fit_linear(codes: np.ndarray, labels: np.ndarray, n_classes: int, classifier: str = "logistic",
               C: float | None = None, seed: int = 0, search: Search | None = None,
               groups: np.ndarray | None = None) -> LinearHead:
    """Fit a softmax regression or linear SVM on standardised ``codes``: C from ``search``, given, or searched."""
    import torch

    _check(classifier, labels, n_classes)
    info: dict[str, Any] = {"classifier": classifier}
    temperature = 1.0
    # searched on all the rows: standardised once for both (or the given search's basis reused); else on a sample,
    # and all the rows standardised after
    known = search.basis if search is not None and search.rows == len(codes) else None
    known = known if known is not None and known.axes.shape[0] == codes.shape[1] else None
    own_data = (known.on(codes) if known is not None else Standardised(codes)) if len(labels) <= SEARCH_MAX_ROWS \
        else None
    if C is None:
        search = search or search_C(codes, labels, n_classes, classifier, seed, own_data, groups=groups)
        if search is not None:
            C = search.C
            info.update(search.info())
        else:
            C = 1.0 if classifier == "logistic" else 0.01
            info["cv_note"] = "no cross-validation: a class has a single image"
    elif classifier == "svm":  # out-of-fold decisions at the given C calibrate the probabilities
        search = search_C(codes, labels, n_classes, classifier, seed, own_data, grid=[float(C)], groups=groups)
    if search is not None:
        temperature = search.temperature
    data = own_data or Standardised(codes)
    n = len(labels)
    start = None  # the search's fold models at this C, averaged: close to the solution, which takes 20% fewer steps
    if search is not None and search.start is not None and search.basis is not None and search.C == C and \
            search.basis.axes is data.axes:
        start = (search.start[0][None], search.start[1][None])
    w, b = solve(data, labels, n_classes, torch.full((1, n), 1.0 / n), torch.tensor([1.0 / (float(C) * n)]),
                 _loss_of(classifier), FINAL_ITERATIONS, start)
    weight, bias = data.on_raw_codes(w[0], b[0])
    if classifier == "svm":
        info["temperature"] = temperature
    weight, bias = weight * temperature, bias * temperature
    info["C"] = float(C)
    return LinearHead(weight.astype(np.float32), bias.astype(np.float32), info)
