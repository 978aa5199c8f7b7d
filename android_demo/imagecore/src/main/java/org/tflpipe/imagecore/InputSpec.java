package org.tflpipe.imagecore;

/** What a model's image input needs: size, element type, quantization and normalization. */
public final class InputSpec {
    /** Element types an image input can have. */
    public enum DType { UINT8, INT8, FLOAT32 }

    public final int height;
    public final int width;
    public final DType dtype;
    /** Input quantization scale and zero point; ignored for FLOAT32. */
    public final double scale;
    public final int zeroPoint;
    /** Normalization applied before quantization: (pixel - mean) / std. */
    public final double mean;
    public final double std;

    public InputSpec(int height, int width, DType dtype, double scale, int zeroPoint, double mean, double std) {
        if (height <= 0 || width <= 0) {
            throw new IllegalArgumentException("input size must be positive, got " + height + "x" + width);
        }
        if (dtype != DType.FLOAT32 && !(scale > 0)) {
            throw new IllegalArgumentException("quantized " + dtype + " input needs a positive scale, got " + scale);
        }
        if (std == 0) {
            throw new IllegalArgumentException("normalization std must not be 0");
        }
        this.height = height;
        this.width = width;
        this.dtype = dtype;
        this.scale = scale;
        this.zeroPoint = zeroPoint;
        this.mean = mean;
        this.std = std;
    }

    /** Parses "uint8", "int8" or "float32" as written in the exported model config. */
    public static DType parseDType(String name) {
        switch (name) {
            case "uint8": return DType.UINT8;
            case "int8": return DType.INT8;
            case "float32": return DType.FLOAT32;
            default: throw new IllegalArgumentException("unsupported tensor type " + name);
        }
    }

    /** Bytes of one input tensor (batch 1). */
    public int byteSize() {
        return height * width * 3 * (dtype == DType.FLOAT32 ? 4 : 1);
    }
}
