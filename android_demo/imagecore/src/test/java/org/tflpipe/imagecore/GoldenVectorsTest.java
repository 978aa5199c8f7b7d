package org.tflpipe.imagecore;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotNull;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.zip.GZIPInputStream;
import org.junit.Test;

/**
 * Frames, input tensors and top-k written by android_demo/tools/make_golden.py from the Python
 * pipeline: this module must produce the same input bytes and the same top-k.
 */
public class GoldenVectorsTest {
    private static InputStream resource(String name) {
        InputStream in = GoldenVectorsTest.class.getResourceAsStream("/golden/" + name);
        assertNotNull("missing golden resource " + name, in);
        return in;
    }

    private static byte[] readAll(InputStream in) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] chunk = new byte[1 << 16];
        for (int n; (n = in.read(chunk)) > 0; ) {
            out.write(chunk, 0, n);
        }
        in.close();
        return out.toByteArray();
    }

    private static byte[] gz(String name) throws IOException {
        return readAll(new GZIPInputStream(resource(name)));
    }

    private static List<String> caseNames() throws IOException {
        List<String> names = Labels.parse(new String(readAll(resource("cases.txt")), "UTF-8"));
        assertFalse("no golden cases", names.isEmpty());
        return names;
    }

    private static int integer(Properties p, String key) {
        String value = p.getProperty(key);
        assertNotNull("missing key " + key, value);
        return Integer.parseInt(value);
    }

    @Test
    public void inputTensorsAndTopKMatchPython() throws IOException {
        List<String> labels = Labels.read(resource("labels.txt"));
        for (String name : caseNames()) {
            Properties p = new Properties();
            p.load(resource(name + ".properties"));
            byte[] frame = gz(name + ".frame.gz");
            int yLen = integer(p, "frame.yLength");
            int uLen = integer(p, "frame.uLength");
            int vLen = integer(p, "frame.vLength");
            assertEquals(name + " frame size", yLen + uLen + vLen, frame.length);
            int width = integer(p, "frame.width");
            int height = integer(p, "frame.height");
            byte[] rgb = new byte[width * height * 3];
            YuvConverter.toRgb(ByteBuffer.wrap(frame, 0, yLen).slice(), ByteBuffer.wrap(frame, yLen, uLen).slice(),
                    ByteBuffer.wrap(frame, yLen + uLen, vLen).slice(), width, height, integer(p, "frame.yRowStride"),
                    integer(p, "frame.uvRowStride"), integer(p, "frame.uvPixelStride"), rgb);

            InputSpec spec = new InputSpec(integer(p, "input.height"), integer(p, "input.width"),
                    InputSpec.parseDType(p.getProperty("input.dtype")), Double.parseDouble(p.getProperty("input.scale")),
                    integer(p, "input.zeroPoint"), Double.parseDouble(p.getProperty("input.mean")),
                    Double.parseDouble(p.getProperty("input.std")));
            ByteBuffer input = ByteBuffer.allocate(spec.byteSize()).order(ByteOrder.LITTLE_ENDIAN);
            new FramePreprocessor(spec).preprocess(rgb, width, height, integer(p, "rotation"), input);
            byte[] expected = gz(name + ".input.gz");
            assertArrayEquals(name + ": input tensor differs from Python's", expected, input.array());

            if (p.getProperty("top.count") == null) {
                continue;
            }
            byte[] raw = gz(name + ".output.gz");
            float[] scores = Classifications.dequantize(raw, InputSpec.parseDType(p.getProperty("output.dtype")),
                    Float.parseFloat(p.getProperty("output.scale")), integer(p, "output.zeroPoint"));
            int k = integer(p, "top.count");
            List<Classifications.Recognition> top = Classifications.topK(scores, labels, k, Float.NEGATIVE_INFINITY);
            List<String> want = new ArrayList<>();
            List<String> got = new ArrayList<>();
            for (int i = 0; i < k; i++) {
                want.add(p.getProperty("top." + i + ".index") + "|" + p.getProperty("top." + i + ".label") + "|"
                        + Float.parseFloat(p.getProperty("top." + i + ".score")));
                Classifications.Recognition r = top.get(i);
                got.add(r.index + "|" + r.label + "|" + r.score);
            }
            assertEquals(name + ": top-k differs from Python's", want, got);
        }
    }
}
