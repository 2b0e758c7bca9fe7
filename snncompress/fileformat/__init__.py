"""The compressed safetensors file format: packing of low-bit codes and the self-describing header."""
