"""What a quantized model's NIR nodes carry besides NIR's float parameters: codes, scales, membrane levels.

NIR has no integer types and no membrane quantization, so the NIR parameters hold the dequantized
float32 values. Each node of a quantized layer also gets, under the metadata key
``snncompress_quantization`` (a JSON string), what integer hardware needs:

* Linear / Conv nodes of a quantized weight: ``{"tensor": "<layer>.weight", "scheme": {...}, "bits": b,
  "shape": [...], "codes": [...], "params": {"scale" | "exponent" | "alpha": value or list}}``; ``codes``
  flat in C order, each in ``[0, 2**bits)``, decoded as the scheme's docstring says
  (``snncompress.quant``; integer levels: ``snncompress.integer.levels``).
* neuron nodes with a quantized stored membrane: ``{"membrane": {"levels_low": c, "levels_high": g,
  "grid": n, "unit": u}}``: the stored membrane is an integer level in ``[c, g]``, ``u`` (= Vth / n at
  quantization) apart, post-reset and pre-leak (``snncompress.models.membrane``).
"""

from __future__ import annotations

import json
from typing import Any

from torch import nn

from snncompress.models.membrane import membrane_quantizers
from snncompress.quant.encoded import EncodedTensor
from snncompress.state import get_state, has_state

QUANT_KEY = "snncompress_quantization"


def node_quantization(model: nn.Module, layer: str) -> str | None:
    """The ``snncompress_quantization`` metadata value of ``layer``'s node, or None when it has none."""
    if not has_state(model):
        return None
    out: dict[str, Any] = {}
    enc = get_state(model).tensors.get(f"{layer}.weight")
    if isinstance(enc, EncodedTensor):
        out.update(tensor=f"{layer}.weight", scheme=enc.scheme, bits=enc.bits, shape=list(enc.codes.shape),
                   codes=enc.codes.reshape(-1).tolist(),
                   params={k: v.detach().cpu().tolist() for k, v in enc.params.items()})
    membrane = membrane_quantizers(model).get(layer)
    if membrane is not None:
        out["membrane"] = {k: membrane[k] for k in ("levels_low", "levels_high", "grid", "unit")}
    return json.dumps(out) if out else None
