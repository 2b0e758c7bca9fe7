"""Model I/O: loading snnTorch models, the supported layer set, neuron introspection, the demo model."""
