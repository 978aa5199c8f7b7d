package org.tflpipe.imagecore;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;

/** Output side: dequantize raw scores and pick the top k, as pipeline/frames.py does. */
public final class Classifications {
    /** One class the model recognized. */
    public static final class Recognition {
        public final int index;
        public final String label;
        public final float score;

        public Recognition(int index, String label, float score) {
            this.index = index;
            this.label = label;
            this.score = score;
        }

        @Override
        public String toString() {
            return label + " (" + index + "): " + score;
        }
    }

    private Classifications() {}

    /** (q - zeroPoint) * scale in float arithmetic; uint8 outputs are read unsigned, int8 signed. */
    public static float[] dequantize(byte[] raw, InputSpec.DType dtype, float scale, int zeroPoint) {
        if (dtype == InputSpec.DType.FLOAT32) {
            throw new IllegalArgumentException("float32 outputs need no dequantization");
        }
        float[] scores = new float[raw.length];
        for (int i = 0; i < raw.length; i++) {
            int q = dtype == InputSpec.DType.UINT8 ? raw[i] & 0xFF : raw[i];
            scores[i] = (float) (q - zeroPoint) * scale;
        }
        return scores;
    }

    /** The k best scores at or above {@code threshold}, best first; ties go to the lower index. */
    public static List<Recognition> topK(float[] scores, List<String> labels, int k, float threshold) {
        Integer[] order = new Integer[scores.length];
        for (int i = 0; i < order.length; i++) {
            order[i] = i;
        }
        Arrays.sort(order, (a, b) -> scores[a] != scores[b] ? Float.compare(scores[b], scores[a]) : Integer.compare(a, b));
        List<Recognition> result = new ArrayList<>();
        for (int i = 0; i < Math.min(k, order.length) && scores[order[i]] >= threshold; i++) {
            int index = order[i];
            String label = index < labels.size() ? labels.get(index) : Integer.toString(index);
            result.add(new Recognition(index, label, scores[index]));
        }
        return Collections.unmodifiableList(result);
    }
}
