"""Small in-process passes for the recipe, pipeline and CLI tests (registered with ``registered``).

* ``scale``: multiplies synaptic weights by ``factor`` (a visible, checkable change).
* ``sparsify``: magnitude pruning to ``sparsity`` with masks in the compression state; declares
  ordering rules as data (after ``scale``, at most once).
* ``explode``: raises, to test how a failing pass is reported.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from snncompress.models.layers import SYNAPTIC_TYPES
from snncompress.passes.base import PassConfig, PassContext, PassResult, PassSpec, check_targets
from snncompress.state import get_state


def _synaptic(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SYNAPTIC_TYPES)]


class ScaleConfig(PassConfig):
    factor: float = Field(1.0, gt=0, le=10, description="Multiply weights by this.")


def _scale(model: nn.Module, config: ScaleConfig, ctx: PassContext) -> PassResult:
    check_targets(model, config, [n for n, _ in _synaptic(model)])
    done = []
    for name, module in _synaptic(model):
        if config.applies_to(name):
            with torch.no_grad():
                module.weight.mul_(config.for_layer(name).factor)
            done.append(name)
    return PassResult(metrics={"layers": done, "factor": torch.tensor(config.factor)}, notes=["scaled"])


class SparsifyConfig(PassConfig):
    sparsity: float = Field(0.5, ge=0, lt=1, description="Fraction of weights set to zero.")


def _sparsify(model: nn.Module, config: SparsifyConfig, ctx: PassContext) -> PassResult:
    state = get_state(model)
    zeroed = 0
    for name, module in _synaptic(model):
        if not config.applies_to(name):
            continue
        w = module.weight.detach()
        k = int(config.for_layer(name).sparsity * w.numel())
        if k == 0:
            continue
        threshold = w.abs().reshape(-1).kthvalue(k).values
        mask = w.abs() > threshold
        with torch.no_grad():
            module.weight.mul_(mask)
        state.masks[f"{name}.weight"] = mask
        zeroed += int((~mask).sum())
    return PassResult(metrics={"zeroed": zeroed, "seen_accuracy": ctx.before.accuracy if ctx.before else None})


class ExplodeConfig(PassConfig):
    pass


def _explode(model: nn.Module, config: ExplodeConfig, ctx: PassContext) -> PassResult:
    raise RuntimeError("boom")


SCALE = PassSpec(name="scale", config_class=ScaleConfig, apply=_scale, summary="Scale weights.", version="2",
                 origin="tests")
SPARSIFY = PassSpec(name="sparsify", config_class=SparsifyConfig, apply=_sparsify,
                    summary="Magnitude pruning.", origin="tests", after=("scale",), max_per_recipe=1)
EXPLODE = PassSpec(name="explode", config_class=ExplodeConfig, apply=_explode, summary="Always fails.",
                   origin="tests")
ALL = (SCALE, SPARSIFY, EXPLODE)
