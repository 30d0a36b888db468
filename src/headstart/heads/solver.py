"""The batched L-BFGS solver of linear heads: many independent L2-regularised problems on the same standardised
codes (folds x C values, or one final fit) in one call, in the codes' principal-axis basis, each preconditioned by the
data's variance along each axis; the value and gradient by hand (two matrix products an evaluation: 16.2 ms against
autograd's 20.2 ms on the 100-class walks, bench/search.py scoring; the same gradient to float rounding)."""

from __future__ import annotations

import functools

import numpy as np

from .basis import Standardised


@functools.cache
def _lbfgs() -> type:
    """torch's L-BFGS, as is, but without importing ``torch._dynamo`` (0.8 s): ``Optimizer.add_param_group`` and
    ``zero_grad`` are wrapped to keep dynamo out of them, and that wrapper imports dynamo on first call. A solve that
    is never compiled needs none of it, so the class calls the unwrapped ``add_param_group`` (and :func:`solve` sets
    the gradients itself); where a torch release has no ``__wrapped__``, the wrapped one runs as before."""
    import torch

    add = torch.optim.Optimizer.add_param_group
    return type("LBFGS", (torch.optim.LBFGS,), {"add_param_group": getattr(add, "__wrapped__", add)})


def solve(data: Standardised, labels: np.ndarray, n_classes: int, row_weights, penalties, loss: str,
          iterations: int, start: tuple | None = None):
    """Batched L-BFGS: problem p minimises sum_i row_weights[p, i] * loss_i + penalties[p] / 2 * ||w_p||^2,
    from zero or from ``start`` (w, b) (a nearby solution: a warm start).

    Returns (w in z coordinates (P, rank, k), b (P, k)) as torch tensors.
    """
    import torch

    curvature = 2.0 if loss == "squared_hinge" else 0.25  # the loss's second derivative near the start
    penalties = penalties.float()
    per_output = penalties.dim() == 2  # (P, k): one penalty per output (sigmoid: per label)
    if per_output:
        scale = 1.0 / torch.sqrt(data.variance.float()[None, :, None] * curvature + penalties[:, None, :])
    else:
        scale = (1.0 / torch.sqrt(data.variance.float()[None, :] * curvature + penalties[:, None]))[:, :, None]
    if start is None:
        u = torch.zeros(len(penalties), data.z.shape[1], n_classes)
        b = torch.zeros(len(penalties), n_classes)
    else:
        u, b = (start[0] / scale).detach().clone(), start[1].detach().clone()
    optimiser = _lbfgs()([u, b], lr=1, max_iter=iterations, history_size=20, tolerance_grad=1e-7,
                         tolerance_change=1e-10, line_search_fn="strong_wolfe")
    z, weights = data.z, row_weights.T.contiguous()  # (rows, problems)
    (n, rank), problems = z.shape, len(penalties)
    shrink = penalties[:, None, :] if per_output else penalties[:, None, None]
    if loss == "logistic":  # each row's class, for every problem: the one logit its loss and slope single out
        truth = torch.from_numpy(labels).long()[:, None, None].expand(n, problems, 1)
    elif loss == "sigmoid":  # ``labels``: the (n, k) 0/1 label matrix
        truth = torch.from_numpy(np.asarray(labels, np.float32))[:, None, :]
    else:  # +1 for the row's class, -1 for the others
        truth = 2 * torch.nn.functional.one_hot(torch.from_numpy(labels).long(), n_classes).float()[:, None, :] - 1

    def objective():  # the value, and the gradient by hand: two matrix products, no autograd graph
        with torch.no_grad():
            w = u * scale
            logits = (z @ w.permute(1, 0, 2).reshape(rank, -1)).view(n, problems, n_classes) + b
            per_row, slope = _loss_slope(logits, truth, weights[:, :, None], loss)
            grad_w = (z.T @ slope.view(n, -1)).view(rank, problems, n_classes).permute(1, 0, 2) + shrink * w
            u.grad, b.grad = (grad_w * scale).contiguous(), slope.sum(0)
            return (per_row * weights).sum() + 0.5 * (shrink * w.pow(2)).sum()

    optimiser.step(objective)
    return u * scale, b


def _loss_slope(logits, truth, weights, loss: str):
    """(each row's loss summed over outputs, its derivative by each logit times the row's ``weights``): softmax
    cross-entropy ("logistic"; ``truth``: each row's class, as (rows, problems, 1) indices), one binary cross-entropy
    per output ("sigmoid"; ``truth``: the 0/1 targets), or the one-vs-rest squared hinge (``truth``: +-1 targets).
    The softmax takes one exponential pass and touches only the true class's logit: 1.3 ms against 2.2 ms for
    logsumexp, a second exponential and one-hot products (3000 rows, 5 problems, 100 classes)."""
    import torch

    if loss == "logistic":
        top = logits.amax(2, keepdim=True)
        slope = (logits - top).exp_()
        total = slope.sum(2, keepdim=True)
        per_row = (top + total.log() - logits.gather(2, truth)).squeeze(2)
        return per_row, slope.mul_(weights / total).scatter_add_(2, truth, -weights)
    if loss == "sigmoid":
        per_row = (torch.nn.functional.softplus(logits) - logits * truth).sum(2)
        return per_row, torch.sigmoid(logits).sub_(truth).mul_(weights)
    margin = torch.clamp(1 - truth * logits, min=0)
    return margin.pow(2).sum(2), (-2 * truth * margin).mul_(weights)
