package org.tflpipe.imagecore;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;

import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.List;
import org.junit.Test;

/** Small hand-checkable cases for each step; the golden test covers the steps together. */
public class ImageCoreTest {
    private static final InputSpec UINT8 = new InputSpec(2, 2, InputSpec.DType.UINT8, 1 / 128.0, 128, 127.5, 127.5);

    @Test
    public void cropBoxKeepsTheCentreAtTheOutputAspect() {
        assertArrayEquals(new int[] {0, 80, 480, 480}, FramePreprocessor.cropBox(480, 640, 224, 224));
        assertArrayEquals(new int[] {80, 0, 480, 480}, FramePreprocessor.cropBox(640, 480, 224, 224));
        assertArrayEquals(new int[] {0, 0, 30, 40}, FramePreprocessor.cropBox(30, 40, 3, 4));
    }

    @Test
    public void resizeMapUsesHalfPixelCentres() {
        int[][] halve = FramePreprocessor.resizeMap(4, 2); // source positions 0.5 and 2.5
        assertArrayEquals(new int[] {0, 2}, halve[0]);
        assertArrayEquals(new int[] {1, 3}, halve[1]);
        assertArrayEquals(new int[] {1024, 1024}, halve[2]);
        int[][] same = FramePreprocessor.resizeMap(5, 5);
        assertArrayEquals(new int[] {0, 1, 2, 3, 4}, same[0]);
        assertArrayEquals(new int[] {0, 0, 0, 0, 0}, same[2]);
        int[][] up = FramePreprocessor.resizeMap(2, 4); // -0.25 clamps to 0; 1.25 clamps to 1
        assertArrayEquals(new int[] {0, 0, 0, 1}, up[0]);
        assertArrayEquals(new int[] {0, 512, 1536, 0}, up[2]);
    }

    @Test
    public void rotationMovesTheTopLeftPixelClockwise() {
        // 2x3 frame, pixel values = index; after 90 degrees clockwise the frame is 3x2.
        byte[] rgb = new byte[2 * 3 * 3];
        for (int i = 0; i < 6; i++) {
            Arrays.fill(rgb, i * 3, i * 3 + 3, (byte) (i * 10));
        }
        FramePreprocessor pre = new FramePreprocessor(new InputSpec(3, 2, InputSpec.DType.UINT8, 1, 0, 0, 1));
        byte[] out = pre.resize(rgb, 3, 2, 90);
        byte[] firstChannel = new byte[6];
        for (int i = 0; i < 6; i++) {
            firstChannel[i] = out[i * 3];
        }
        assertArrayEquals(new byte[] {30, 0, 40, 10, 50, 20}, firstChannel);
        assertThrows(IllegalArgumentException.class, () -> pre.resize(rgb, 3, 2, 45));
    }

    @Test
    public void quantizationTableRoundsHalfToEvenAndClamps() {
        byte[] lut = FramePreprocessor.quantizedLut(UINT8);
        assertEquals(0, lut[0] & 0xFF); // -1 / (1/128) + 128 = 0
        assertEquals(255, lut[255] & 0xFF); // 1 * 128 + 128 = 256, clamped
        assertEquals(129, lut[128] & 0xFF); // 0.5 / 127.5 * 128 = 0.502 rounds to 1
        byte[] halves = FramePreprocessor.quantizedLut(new InputSpec(1, 1, InputSpec.DType.INT8, 2, 0, 0, 1));
        assertEquals(0, halves[1]); // 0.5 -> 0 (to even)
        assertEquals(2, halves[3]); // 1.5 -> 2
        assertEquals(127, halves[255]); // 127.5 -> 128, clamped to int8
    }

    @Test
    public void yuvGreyAndPrimaries() {
        // 2x2 frame, one chroma sample: neutral chroma gives grey, V=255 pushes red up.
        byte[] rgb = new byte[12];
        ByteBuffer y = ByteBuffer.wrap(new byte[] {0, 100, (byte) 200, (byte) 255});
        YuvConverter.toRgb(y, ByteBuffer.wrap(new byte[] {(byte) 128}), ByteBuffer.wrap(new byte[] {(byte) 128}), 2, 2, 2, 1, 1, rgb);
        assertArrayEquals(new byte[] {0, 0, 0, 100, 100, 100, (byte) 200, (byte) 200, (byte) 200, (byte) 255, (byte) 255, (byte) 255}, rgb);
        YuvConverter.toRgb(y, ByteBuffer.wrap(new byte[] {(byte) 128}), ByteBuffer.wrap(new byte[] {(byte) 255}), 2, 2, 2, 1, 1, rgb);
        assertEquals(255, rgb[3] & 0xFF); // 100 + 1.402 * 127 = 278, clamped
        assertEquals(9, rgb[4] & 0xFF); // 100 - 0.714136 * 127 = 9.3
        assertThrows(IllegalArgumentException.class, () ->
                YuvConverter.toRgb(y, ByteBuffer.allocate(1), ByteBuffer.allocate(1), 2, 2, 4, 1, 1, new byte[12]));
    }

    @Test
    public void topKBreaksTiesByIndexAndAppliesThreshold() {
        float[] scores = Classifications.dequantize(new byte[] {10, 30, 30, (byte) 200}, InputSpec.DType.UINT8, 0.5f, 10);
        assertArrayEquals(new float[] {0f, 10f, 10f, 95f}, scores, 0f);
        List<Classifications.Recognition> top = Classifications.topK(scores, Arrays.asList("a", "b", "c"), 3, 5f);
        assertEquals(3, top.size());
        assertEquals(3, top.get(0).index);
        assertEquals("3", top.get(0).label); // no label for index 3
        assertEquals("b", top.get(1).label);
        assertEquals("c", top.get(2).label);
        assertEquals(1, Classifications.topK(scores, List.of(), 3, 50f).size());
        float[] signed = Classifications.dequantize(new byte[] {-128, 127}, InputSpec.DType.INT8, 1f, -128);
        assertArrayEquals(new float[] {0f, 255f}, signed, 0f);
    }

    @Test
    public void labelsDropBlankLinesAndWhitespace() {
        assertEquals(Arrays.asList("background", "tench, Tinca tinca", "goldfish"),
                Labels.parse("background\r\n  tench, Tinca tinca \n\n goldfish\n"));
    }

    @Test
    public void fpsMeterAveragesOverItsWindow() {
        FpsMeter meter = new FpsMeter(3);
        assertEquals(0.0, meter.tick(0), 0);
        assertEquals(10.0, meter.tick(100_000_000L), 1e-9);
        assertEquals(10.0, meter.tick(200_000_000L), 1e-9);
        assertEquals(4.0, meter.tick(600_000_000L), 1e-9); // window now 100 ms .. 600 ms: 2 frames in 0.5 s
        assertThrows(IllegalArgumentException.class, () -> new FpsMeter(1));
    }
}
