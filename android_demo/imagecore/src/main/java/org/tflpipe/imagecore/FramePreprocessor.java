package org.tflpipe.imagecore;

import java.nio.ByteBuffer;

/**
 * Camera frame to model input, bit-exact with pipeline/frames.py: rotate clockwise by the camera's
 * rotationDegrees, centre-crop to the model's aspect ratio, bilinear resize (half-pixel centres,
 * Q16 positions, Q11 weights), then normalize and quantize through a 256-entry table.
 *
 * <p>Rotation, crop and resize are folded into a gather plan computed once per frame size, so a
 * frame costs four reads, a few integer operations and a table lookup per output value.
 */
public final class FramePreprocessor {
    private static final int POS_BITS = 16;
    private static final int W_BITS = 11;
    private static final int ONE = 1 << W_BITS;
    private static final int SHIFT = 2 * W_BITS;
    private static final int ROUND = 1 << (SHIFT - 1);

    private final InputSpec spec;
    private final byte[] byteLut;
    private final float[] floatLut;
    private int planWidth = -1;
    private int planHeight = -1;
    private int planRotation = -1;
    private int[][] taps;
    private int[] weightX;
    private int[] weightY;

    public FramePreprocessor(InputSpec spec) {
        this.spec = spec;
        if (spec.dtype == InputSpec.DType.FLOAT32) {
            floatLut = floatLut(spec);
            byteLut = null;
        } else {
            byteLut = quantizedLut(spec);
            floatLut = null;
        }
    }

    public InputSpec spec() {
        return spec;
    }

    /** Normalized float input value for each pixel value 0..255. */
    public static float[] floatLut(InputSpec spec) {
        float[] lut = new float[256];
        for (int p = 0; p < 256; p++) {
            lut[p] = (float) ((p - spec.mean) / spec.std);
        }
        return lut;
    }

    /** Quantized input byte for each pixel value: rint((p - mean) / std / scale) + zero point, clamped. */
    public static byte[] quantizedLut(InputSpec spec) {
        int lo = spec.dtype == InputSpec.DType.INT8 ? -128 : 0;
        int hi = spec.dtype == InputSpec.DType.INT8 ? 127 : 255;
        byte[] lut = new byte[256];
        for (int p = 0; p < 256; p++) {
            double x = (p - spec.mean) / spec.std;
            double q = Math.rint(x / spec.scale) + spec.zeroPoint;
            lut[p] = (byte) (int) Math.max(lo, Math.min(hi, q));
        }
        return lut;
    }

    /** {top, left, cropHeight, cropWidth}: the largest centred region with the output's aspect ratio. */
    public static int[] cropBox(int height, int width, int outHeight, int outWidth) {
        int ch;
        int cw;
        if ((long) width * outHeight > (long) height * outWidth) {
            ch = height;
            cw = (int) ((long) height * outWidth / outHeight);
        } else {
            ch = (int) ((long) width * outHeight / outWidth);
            cw = width;
        }
        return new int[] {(height - ch) / 2, (width - cw) / 2, ch, cw};
    }

    /**
     * For each output index: {first source index, second source index, Q11 weight of the second}.
     * Source position (d + 0.5) * src / dst - 0.5 in Q16, floored, clamped to [0, src - 1].
     */
    public static int[][] resizeMap(int src, int dst) {
        int[] i0 = new int[dst];
        int[] i1 = new int[dst];
        int[] w = new int[dst];
        long max = (long) (src - 1) << POS_BITS;
        for (int d = 0; d < dst; d++) {
            long pos = Math.floorDiv(((2L * d + 1) * src) << POS_BITS, 2L * dst) - (1L << (POS_BITS - 1));
            pos = Math.max(0, Math.min(max, pos));
            i0[d] = (int) (pos >> POS_BITS);
            i1[d] = Math.min(i0[d] + 1, src - 1);
            w[d] = (int) ((pos & ((1L << POS_BITS) - 1)) >> (POS_BITS - W_BITS));
        }
        return new int[][] {i0, i1, w};
    }

    /** Pixel index in the unrotated frame of pixel (r, c) of the frame rotated clockwise. */
    static int sourceIndex(int r, int c, int height, int width, int rotation) {
        switch (rotation) {
            case 0: return r * width + c;
            case 90: return (height - 1 - c) * width + r;
            case 180: return (height - 1 - r) * width + (width - 1 - c);
            case 270: return c * width + (width - 1 - r);
            default: throw new IllegalArgumentException("rotation must be 0, 90, 180 or 270, got " + rotation);
        }
    }

    private void plan(int height, int width, int rotation) {
        if (height == planHeight && width == planWidth && rotation == planRotation) {
            return;
        }
        boolean swap = rotation == 90 || rotation == 270;
        sourceIndex(0, 0, height, width, rotation); // validates the rotation before any work
        int rh = swap ? width : height;
        int rw = swap ? height : width;
        int[] box = cropBox(rh, rw, spec.height, spec.width);
        int[][] ys = resizeMap(box[2], spec.height);
        int[][] xs = resizeMap(box[3], spec.width);
        int n = spec.height * spec.width;
        taps = new int[4][n];
        for (int oy = 0; oy < spec.height; oy++) {
            for (int ox = 0; ox < spec.width; ox++) {
                int i = oy * spec.width + ox;
                for (int t = 0; t < 4; t++) {
                    int r = box[0] + ys[t >> 1][oy];
                    int c = box[1] + xs[t & 1][ox];
                    taps[t][i] = sourceIndex(r, c, height, width, rotation);
                }
            }
        }
        weightY = ys[2];
        weightX = xs[2];
        planHeight = height;
        planWidth = width;
        planRotation = rotation;
    }

    /** Resized RGB (spec height x width x 3) of an interleaved RGB frame, before normalization. */
    public byte[] resize(byte[] rgb, int width, int height, int rotationDegrees) {
        if (rgb.length < width * height * 3) {
            throw new IllegalArgumentException("RGB frame holds " + rgb.length + " bytes, need " + width * height * 3);
        }
        plan(height, width, rotationDegrees);
        byte[] out = new byte[spec.height * spec.width * 3];
        int[] t00 = taps[0];
        int[] t01 = taps[1];
        int[] t10 = taps[2];
        int[] t11 = taps[3];
        int o = 0;
        for (int oy = 0; oy < spec.height; oy++) {
            int wy = weightY[oy];
            for (int ox = 0; ox < spec.width; ox++) {
                int wx = weightX[ox];
                int i = oy * spec.width + ox;
                int a = t00[i] * 3;
                int b = t01[i] * 3;
                int c = t10[i] * 3;
                int d = t11[i] * 3;
                for (int ch = 0; ch < 3; ch++) {
                    int top = (rgb[a + ch] & 0xFF) * (ONE - wx) + (rgb[b + ch] & 0xFF) * wx;
                    int bottom = (rgb[c + ch] & 0xFF) * (ONE - wx) + (rgb[d + ch] & 0xFF) * wx;
                    out[o++] = (byte) ((top * (ONE - wy) + bottom * wy + ROUND) >> SHIFT);
                }
            }
        }
        return out;
    }

    /**
     * Writes the model input for one RGB frame into {@code out} from its current position: one byte
     * per value for quantized inputs, one float (in the buffer's byte order) for FLOAT32.
     */
    public void preprocess(byte[] rgb, int width, int height, int rotationDegrees, ByteBuffer out) {
        byte[] resized = resize(rgb, width, height, rotationDegrees);
        if (out.remaining() < spec.byteSize()) {
            throw new IllegalArgumentException("input buffer has " + out.remaining() + " bytes left, need " + spec.byteSize());
        }
        if (floatLut != null) {
            for (byte value : resized) {
                out.putFloat(floatLut[value & 0xFF]);
            }
        } else {
            for (byte value : resized) {
                out.put(byteLut[value & 0xFF]);
            }
        }
    }
}
