"""tflpipe: Keras lightweight CNNs to pruned, quantized, metadata-carrying int8 TFLite models."""

__version__ = "0.1.0"
