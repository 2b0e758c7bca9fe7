"""Quantization math for snncompress: weight schemes, fixed point and integer membranes.

Pure tensor functions and config objects; no model or file I/O lives here.
"""

from snncompress.quant.encoded import EncodedTensor
from snncompress.quant.fixed_point import integer_bits_for_range, parse_fixed_format, quantize_fixed
from snncompress.quant.membrane import MembraneQuantizer, parse_membrane_quant
from snncompress.quant.schemes import (
    AnyWeightScheme,
    ApotScheme,
    FixedPointScheme,
    Fp32Scheme,
    IntScheme,
    PotScheme,
    TernaryScheme,
    WeightScheme,
    parse_weight_scheme,
    scheme_from_dict,
)

__all__ = [
    "AnyWeightScheme",
    "ApotScheme",
    "EncodedTensor",
    "FixedPointScheme",
    "Fp32Scheme",
    "IntScheme",
    "MembraneQuantizer",
    "PotScheme",
    "TernaryScheme",
    "WeightScheme",
    "integer_bits_for_range",
    "parse_fixed_format",
    "parse_membrane_quant",
    "parse_weight_scheme",
    "quantize_fixed",
    "scheme_from_dict",
]
