"""Weight-pruning masks (Schaefer et al.) and the gradual schedule, as pure tensor functions.

Every mask is boolean with the weight's shape, ``True`` keeps the weight. A ``keep`` mask (an
earlier pruning of the same weight) is honoured: what it pruned stays pruned, and counts towards
the asked sparsity (pruning 50 % of a weight already 30 % pruned prunes 20 % more).

* unstructured: the ``round(s * n)`` weights of least magnitude, ties broken by position (stable
  sort), so the same weights give the same mask;
* structured: whole output rows (the output neurons of a ``Linear``, the output channels of a
  conv), the ``round(s * rows)`` rows of least L2 norm; the row's bias goes with it (a removed
  neuron gets no input at all);
* N:M: in each group of M consecutive weights along the flattened fan-in of an output row
  (``in * kh * kw`` for a conv), the N of largest magnitude are kept; a last, shorter group keeps
  at most N.

The gradual schedule is Zhu & Gupta's cubic one, ``s(t) = s_f * (1 - (1 - t / n)^3)``: fast at
first, while the network still has slack, slow near the target.
"""

from __future__ import annotations

import torch

METHODS = ("unstructured", "structured", "nm")


def _keep_scores(weight: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """|w| as float, with weights an earlier mask pruned ranked below every live one."""
    score = weight.detach().abs().to(torch.float32)
    if keep is not None:
        score = torch.where(keep.reshape(weight.shape).bool(), score, torch.full_like(score, -1.0))
    return score


def unstructured_mask(weight: torch.Tensor, sparsity: float, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Prune the ``round(sparsity * numel)`` weights of least magnitude (see the module docstring)."""
    score = _keep_scores(weight, keep).reshape(-1)
    k = int(round(sparsity * score.numel()))
    mask = torch.ones(score.numel(), dtype=torch.bool)
    if k > 0:
        mask[torch.argsort(score.cpu(), stable=True)[:k]] = False
    if keep is not None:
        mask &= keep.reshape(-1).bool().cpu()
    return mask.reshape(weight.shape)


def structured_rows(weight: torch.Tensor, sparsity: float, keep: torch.Tensor | None = None) -> torch.Tensor:
    """The output rows to keep (bool, one per output neuron / channel): the lowest-norm rows pruned."""
    score = _keep_scores(weight, keep).clamp_min(0).reshape(weight.shape[0], -1)
    norms = score.pow(2).sum(dim=1).cpu()
    if keep is not None:  # a row an earlier mask emptied completely goes first
        alive = keep.reshape(weight.shape[0], -1).bool().any(dim=1).cpu()
        norms = torch.where(alive, norms, torch.full_like(norms, -1.0))
    k = int(round(sparsity * norms.numel()))
    rows = torch.ones(norms.numel(), dtype=torch.bool)
    if k > 0:
        rows[torch.argsort(norms, stable=True)[:k]] = False
    return rows


def structured_mask(weight: torch.Tensor, sparsity: float, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Whole output rows pruned (see :func:`structured_rows`), as a mask of the weight's shape."""
    rows = structured_rows(weight, sparsity, keep)
    mask = rows.reshape(-1, *([1] * (weight.dim() - 1))).expand(weight.shape).clone()
    if keep is not None:
        mask &= keep.reshape(weight.shape).bool().cpu()
    return mask


def nm_mask(weight: torch.Tensor, n: int, m: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the ``n`` largest of every ``m`` consecutive weights along each output row's fan-in."""
    if not 0 < n < m:
        raise ValueError(f"N:M needs 0 < N < M, got {n}:{m}")
    score = _keep_scores(weight, keep).reshape(weight.shape[0], -1).cpu()
    rows, fan_in = score.shape
    pad = (-fan_in) % m
    padded = torch.cat([score, torch.full((rows, pad), -2.0)], dim=1) if pad else score
    groups = padded.reshape(rows, -1, m)
    # stable: among equal scores the earlier position is kept
    order = torch.argsort(-groups, dim=2, stable=True)[..., :n]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, order, True)
    mask = mask.reshape(rows, -1)[:, :fan_in].reshape(weight.shape)
    if keep is not None:
        mask &= keep.reshape(weight.shape).bool().cpu()
    return mask


def cubic_sparsity(final: float, step: int, steps: int) -> float:
    """Zhu & Gupta's gradual sparsity after ``step`` of ``steps``: 0 at the start, ``final`` at the end."""
    if steps <= 0 or step >= steps:
        return final
    return final * (1.0 - (1.0 - step / steps) ** 3)


def layer_masks(layer: str, module: torch.nn.Module, method: str, amount: float | tuple[int, int],
                keep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The masks (by state-dict name) of one synaptic layer for ``method`` at ``amount``.

    Args:
        layer: the module's qualified name.
        amount: the sparsity (unstructured, structured) or ``(n, m)``.
        keep: the masks already in force, by state-dict name (honoured, see the module docstring).
    """
    wname = f"{layer}.weight" if layer else "weight"
    weight = module.weight
    if method == "unstructured":
        return {wname: unstructured_mask(weight, float(amount), keep.get(wname))}
    if method == "nm":
        n, m = amount
        return {wname: nm_mask(weight, n, m, keep.get(wname))}
    if method != "structured":
        raise ValueError(f"unknown pruning method '{method}' (choose from {', '.join(METHODS)})")
    rows = structured_rows(weight, float(amount), keep.get(wname))
    out = {wname: structured_mask(weight, float(amount), keep.get(wname))}
    if getattr(module, "bias", None) is not None:
        bname = f"{layer}.bias" if layer else "bias"
        bias_keep = rows.clone()
        if bname in keep:
            bias_keep &= keep[bname].reshape(-1).bool().cpu()
        out[bname] = bias_keep
    return out
