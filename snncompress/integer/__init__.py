"""Integer-only reference execution of a compressed model, and its check against the torch model.

:mod:`.program` compiles a quantized stepwise model into integer tensors and constants (weight levels,
requantization multipliers, the membrane in fixed point); :mod:`.execute` runs that program on numpy
integer arrays; :mod:`.verify` compares its spike trains with the torch model's, spike for spike;
:mod:`.bundle` writes and reads the program as a deployment bundle (JSON + binary).
"""
