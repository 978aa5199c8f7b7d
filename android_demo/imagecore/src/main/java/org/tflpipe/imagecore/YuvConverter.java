package org.tflpipe.imagecore;

import java.nio.ByteBuffer;

/**
 * Android YUV_420_888 to interleaved RGB, bit-exact with pipeline/frames.py yuv420_to_rgb:
 * full-range BT.601 in Q16 fixed point, chroma sample (row / 2, col / 2), any row and pixel stride.
 */
public final class YuvConverter {
    private static final int SHIFT = 16;
    private static final int HALF = 1 << (SHIFT - 1);
    private static final int R_V = 91881;
    private static final int G_U = 22554;
    private static final int G_V = 46802;
    private static final int B_U = 116130;

    private YuvConverter() {}

    /**
     * Converts the planes of one frame into {@code out} (width * height * 3 bytes, RGB order).
     * Planes are read with absolute gets, so their positions do not matter and are left unchanged.
     */
    public static void toRgb(ByteBuffer y, ByteBuffer u, ByteBuffer v, int width, int height,
                             int yRowStride, int uvRowStride, int uvPixelStride, byte[] out) {
        int needY = (height - 1) * yRowStride + width;
        int needUv = ((height - 1) / 2) * uvRowStride + ((width - 1) / 2) * uvPixelStride + 1;
        if (y.limit() < needY || u.limit() < needUv || v.limit() < needUv) {
            throw new IllegalArgumentException("YUV planes too short for " + width + "x" + height + " with the given strides");
        }
        if (out.length < width * height * 3) {
            throw new IllegalArgumentException("RGB buffer holds " + out.length + " bytes, need " + width * height * 3);
        }
        int o = 0;
        for (int row = 0; row < height; row++) {
            int yBase = row * yRowStride;
            int uvBase = (row >> 1) * uvRowStride;
            for (int col = 0; col < width; col++) {
                int luma = (y.get(yBase + col) & 0xFF) << SHIFT;
                int uvIndex = uvBase + (col >> 1) * uvPixelStride;
                int du = (u.get(uvIndex) & 0xFF) - 128;
                int dv = (v.get(uvIndex) & 0xFF) - 128;
                out[o++] = clamp((luma + R_V * dv + HALF) >> SHIFT);
                out[o++] = clamp((luma - G_U * du - G_V * dv + HALF) >> SHIFT);
                out[o++] = clamp((luma + B_U * du + HALF) >> SHIFT);
            }
        }
    }

    private static byte clamp(int value) {
        return (byte) (value < 0 ? 0 : (value > 255 ? 255 : value));
    }
}
