package org.tflpipe.imagecore;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/** Label files: one label per line, surrounding whitespace and blank lines dropped (the pipeline's rule; trim() rather than strip() because Android lacks strip() before API 33). */
public final class Labels {
    private Labels() {}

    public static List<String> parse(String text) {
        List<String> labels = new ArrayList<>();
        for (String line : text.split("\r\n|\r|\n")) {
            String label = line.trim();
            if (!label.isEmpty()) {
                labels.add(label);
            }
        }
        return labels;
    }

    public static List<String> read(InputStream in) throws IOException {
        StringBuilder text = new StringBuilder();
        try (BufferedReader reader = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
            char[] chunk = new char[8192];
            for (int n; (n = reader.read(chunk)) > 0; ) {
                text.append(chunk, 0, n);
            }
        }
        return parse(text.toString());
    }
}
