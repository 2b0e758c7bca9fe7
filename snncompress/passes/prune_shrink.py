"""The prune pass's ``shrink`` step: structured pruning made physical (:mod:`snncompress.models.shrink`).

:func:`prepare` runs before any pruning or fine-tuning, so a model that cannot be shrunk is refused before the
work is spent; for a user module with its own time loop it finds the chain of its layers on one sample of the
data (:func:`snncompress.export.chain.layer_chain`). :func:`shrink` runs after the fine-tuning.
"""

from __future__ import annotations

from torch import nn

from snncompress.errors import ConfigError
from snncompress.models.shrink import chain_synaptic, check_shrinkable, shrink_model
from snncompress.passes.base import PassContext


def prepare(model: nn.Module, ctx: PassContext) -> list[str | None] | None:
    """The chain of a user module's layers (None for an ``nn.Sequential``), after the up-front checks.

    Raises:
        ConfigError: the model cannot be shrunk (one line naming why).
    """
    chain = None
    if not isinstance(model, nn.Sequential):
        from snncompress.export.chain import layer_chain

        data = ctx.data or ctx.train_data
        if data is None:
            raise ConfigError(f"shrinking {type(model).__name__}, a user module, needs data to find the chain of "
                              "its layers: pass --data")
        sample = data.sample_input()
        chain = layer_chain(model, sample[0] if data.is_sequence else sample, "shrinking")
    check_shrinkable(model, chain)
    return chain


def shrink(model: nn.Module, layers: list[str], notes: list[str], chain: list[str | None] | None) -> dict:
    """Shrink the pruned ``layers`` (the last synaptic layer is left to its masks: its outputs are the classes)
    and say what it did in ``notes``; returns the metrics.

    Raises:
        ConfigError: as :func:`snncompress.models.shrink.shrink_model`.
    """
    last = chain_synaptic(model, chain)[-1]
    result = shrink_model(model, [n for n in layers if n != last], chain)
    removed = sum(before - after for before, after in result.layers.values())
    if removed:
        notes.append(f"shrink: {removed} pruned outputs removed from {len(result.layers)} layers, parameters "
                     f"{result.parameters_before:,} -> {result.parameters_after:,}; "
                     f"{len(result.masks_dropped)} masks no longer needed")
    else:  # not a failure: the model is the masked one, exactly; say so rather than print a zero-sized win
        kept = any(note.startswith("layer '") for note in result.notes)
        why = "every pruned hidden output can fire without input (below)" if kept else "no hidden output is pruned"
        notes.append(f"shrink: nothing removed, the model keeps its sizes and masks "
                     f"({result.parameters_before:,} parameters): {why}")
    notes.extend(result.notes)
    return result.to_dict()
