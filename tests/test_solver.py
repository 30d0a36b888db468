"""The linear heads' solver: its hand-written gradient, the candidates' shared Gram, and the final fit reusing the
chosen layer's basis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import headstart.auto.layers as layers
import headstart.heads.linear as linear
import headstart.heads.solver as solver
from headstart.auto.layers import score_layers
from headstart.auto.measure import Measured
from headstart.data.folders import ImageSet
from headstart.heads.basis import Standardised, column_gram
from headstart.heads.linear import fit_linear, search_C


def _objective(data: Standardised, labels: np.ndarray, k: int, weights, penalties, loss: str, start):
    """The closure ``solve`` hands to L-BFGS, and its parameters, without running the optimiser."""
    captured = {}

    class Capture:
        def __init__(self, params, **_options):
            captured["params"] = params

        def step(self, closure):
            captured["closure"] = closure

    kept = solver._lbfgs
    solver._lbfgs = lambda: Capture
    try:
        solver.solve(data, labels, k, weights, penalties, loss, 5, start)
    finally:
        solver._lbfgs = kept
    return captured["closure"], captured["params"]


@pytest.mark.parametrize("loss", ["logistic", "sigmoid", "squared_hinge"])
def test_the_hand_written_gradient_is_autograds(loss):
    rng = np.random.default_rng(0)
    n, k, problems = 60, 4, 3
    data = Standardised(rng.normal(size=(n, 12)).astype(np.float32))
    labels = rng.integers(0, 2, (n, k)).astype(np.float32) if loss == "sigmoid" else rng.integers(0, k, n)
    weights = torch.rand(problems, n)
    penalties = torch.rand(problems, k) if loss == "sigmoid" else torch.rand(problems)  # per label, or per problem
    start = (torch.randn(problems, data.z.shape[1], k) * 0.3, torch.randn(problems, k) * 0.3)
    closure, (u, b) = _objective(data, labels, k, weights, penalties, loss, start)
    value = float(closure())

    u_, b_ = u.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()  # the objective, by autograd
    curvature = 2.0 if loss == "squared_hinge" else 0.25
    shrink = penalties[:, None, :] if penalties.dim() == 2 else penalties[:, None, None]
    w = u_ / torch.sqrt(data.variance.float()[None, :, None] * curvature + shrink)
    logits = torch.einsum("nr,prk->pnk", data.z, w) + b_[:, None, :]
    target = torch.from_numpy(labels) if loss == "sigmoid" else torch.nn.functional.one_hot(
        torch.from_numpy(labels), k).float()
    if loss == "logistic":
        per_row = torch.logsumexp(logits, 2) - (logits * target).sum(2)
    elif loss == "sigmoid":
        per_row = (torch.nn.functional.softplus(logits) - logits * target).sum(2)
    else:
        per_row = torch.clamp(1 - (2 * target - 1) * logits, min=0).pow(2).sum(2)
    reference = (per_row * weights).sum() + 0.5 * (shrink * w.pow(2)).sum()
    reference.backward()
    assert value == pytest.approx(float(reference.detach()), rel=1e-5)
    np.testing.assert_allclose(u.grad.numpy(), u_.grad.numpy(), rtol=1e-4, atol=1e-5 * float(u_.grad.abs().max()))
    np.testing.assert_allclose(b.grad.numpy(), b_.grad.numpy(), rtol=1e-4, atol=1e-5 * float(b_.grad.abs().max()))
    assert float(u_.grad.abs().max()) > 1e-2  # a gradient worth comparing


def _codes(rows: int = 300, classes: int = 4, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), rows // classes)
    centres = rng.normal(0, 1, (classes, 50))
    joined = np.maximum(centres[labels] + rng.normal(0, 1.5, (len(labels), 50)), 0).astype(np.float32)
    return {"blocks.5": joined[:, :20], "penultimate": joined[:, 20:]}, labels


def test_a_part_standardised_from_its_joins_gram_is_the_part_standardised_alone():
    parts, _ = _codes()
    joined = np.concatenate([parts["blocks.5"], parts["penultimate"]], 1)
    mean, scale, gram = column_gram(joined)
    columns = np.arange(20, 50)
    shared = Standardised(parts["penultimate"], (mean[columns], scale[columns], gram[columns][:, columns]))
    alone = Standardised(parts["penultimate"])
    np.testing.assert_allclose(shared.variance.numpy(), alone.variance.numpy(), rtol=1e-9)
    np.testing.assert_allclose((shared.z @ shared.z.T).numpy(), (alone.z @ alone.z.T).numpy(), atol=1e-3)
    other = Standardised(parts["penultimate"], (mean[columns], scale[columns], 2 * gram[columns][:, columns]))
    assert not np.allclose(other.variance.numpy(), alone.variance.numpy())  # the given Gram is the one used


def test_the_float32_basis_is_orthonormal_and_keeps_every_axis_the_float64_one_resolves():
    parts, _ = _codes(rows=400)
    data = Standardised(parts["penultimate"])
    mean, scale, gram = column_gram(parts["penultimate"])
    exact = torch.linalg.eigvalsh(gram)  # float64
    axes = data.axes
    assert axes.dtype == torch.float64 and axes.shape == (30, 30)
    np.testing.assert_allclose((axes.T @ axes).numpy(), np.eye(30), atol=1e-5)
    np.testing.assert_allclose(np.sort(data.variance.numpy()), exact.numpy() / 400, rtol=1e-4)
    np.testing.assert_allclose(data.z.T @ data.z / 400, np.diag(data.variance.numpy()), atol=1e-4)
    # a column repeated: the Gram loses one rank, and that axis (float32 noise) is dropped, not kept
    repeated = Standardised(np.concatenate([parts["penultimate"], parts["penultimate"][:, :1]], 1))
    assert repeated.axes.shape == (31, 30)


def test_the_leading_axes_alone_are_projected_until_all_are_needed():
    parts, _ = _codes(rows=400)
    data = Standardised(parts["penultimate"])
    lead = data.leading(0.8)
    assert data._z is None  # the other axes were not projected
    full = Standardised(parts["penultimate"]).z
    assert lead.z.shape[1] < full.shape[1]
    np.testing.assert_allclose(lead.z.numpy(), full[:, lead.kept].numpy(), atol=1e-5)
    np.testing.assert_allclose(data.z.numpy(), full.numpy(), atol=1e-5)  # all of them, once asked for
    np.testing.assert_allclose(data.basis().on(parts["penultimate"]).z.numpy(), full.numpy(), atol=1e-5)


def test_scoring_shares_one_gram_and_the_final_fit_reuses_the_chosen_layers_basis(monkeypatch):
    parts, labels = _codes()
    images = ImageSet([Path(f"{i}.jpg") for i in range(len(labels))], labels, ["a", "b", "c", "d"])
    measured = Measured(parts, images, [], len(labels), True, 0.0)
    candidates = ["penultimate", "blocks.5", "blocks.5+penultimate"]
    grams = []
    monkeypatch.setattr(layers, "column_gram", lambda codes: grams.append(codes.shape) or column_gram(codes))
    searches = score_layers(measured, candidates, groups=np.arange(len(labels)))
    assert grams == [(300, 50)]  # one Gram, the widest join's, for all three candidates
    for layer in candidates:
        alone = search_C(measured.codes(layer), labels, 4, groups=np.arange(len(labels)))
        assert searches[layer].C == alone.C
        assert searches[layer].cv_log_loss == pytest.approx(alone.cv_log_loss, rel=1e-3)

    codes = measured.codes("blocks.5+penultimate")
    search = searches["blocks.5+penultimate"]
    eigh = torch.linalg.eigh
    solved = []
    monkeypatch.setattr(torch.linalg, "eigh", lambda a: solved.append(a.shape) or eigh(a))
    starts = []
    solve = solver.solve
    monkeypatch.setattr(linear, "solve", lambda *args: starts.append(args[-1]) or solve(*args))
    reused = fit_linear(codes, labels, 4, search=search)
    assert solved == []  # the search's basis, no second eigenproblem
    assert starts[0] is not None and torch.equal(starts[0][0][0], search.start[0])  # from the fold models' mean
    fresh = fit_linear(codes, labels, 4, C=search.C)
    assert solved == [(50, 50)] and starts[-1] is None  # a C given: solved from zero
    np.testing.assert_allclose(reused.predict_proba(codes), fresh.predict_proba(codes), atol=1e-3)
    narrower = fit_linear(parts["penultimate"], labels, 4, search=search)  # not these codes' basis: solved anew
    assert solved == [(50, 50), (30, 30)] and narrower.weight.shape == (4, 30)


def test_the_joins_walks_start_from_the_penultimate_layers_fold_models(monkeypatch):
    from headstart.heads.linear import FIRST_ITERATIONS, PATH_CLASSES, WARM_ITERATIONS

    rng = np.random.default_rng(1)
    k = PATH_CLASSES + 2
    labels = np.repeat(np.arange(k), 12)
    joined = np.maximum(rng.normal(0, 1, (k, 40))[labels] + rng.normal(0, 1.5, (len(labels), 40)), 0)
    parts = {"blocks.5": joined[:, :10].astype(np.float32), "penultimate": joined[:, 10:].astype(np.float32)}
    images = ImageSet([Path(f"{i}.jpg") for i in range(len(labels))], labels, [str(c) for c in range(k)])
    measured = Measured(parts, images, [], len(labels), True, 0.0)
    first_steps = {}
    fold_logits = linear.fold_logits
    calls = []
    monkeypatch.setattr(linear, "fold_logits", lambda *args: calls.append(args[-2:]) or fold_logits(*args))
    searches = {}
    for layer in ("penultimate", "blocks.5", "blocks.5+penultimate"):  # scored in this order: the penultimate first
        calls.clear()
        searches[layer] = score_layers(measured, ["penultimate", layer], groups=np.arange(len(labels)))[layer]
        first_steps[layer] = calls[-len(searches[layer].grid)][0]
    below = searches["penultimate"].below
    assert below is not None and below[0] == pytest.approx(searches["penultimate"].C / np.sqrt(10))
    assert below[1].shape == (5, 30, k)  # the fold models on the penultimate's 30 standardised columns
    assert first_steps["blocks.5+penultimate"] == WARM_ITERATIONS  # started from them
    assert first_steps["blocks.5"] == FIRST_ITERATIONS  # no penultimate in it: from zero
    alone = search_C(measured.codes("blocks.5+penultimate"), labels, k, groups=np.arange(len(labels)),
                     near=searches["penultimate"].C)  # from zero
    assert searches["blocks.5+penultimate"].C == alone.C
    assert searches["blocks.5+penultimate"].cv_log_loss == pytest.approx(alone.cv_log_loss, abs=0.02)
