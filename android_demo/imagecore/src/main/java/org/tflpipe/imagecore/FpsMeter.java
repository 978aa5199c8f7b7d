package org.tflpipe.imagecore;

/** Frames per second over the last {@code window} frames, from frame-end timestamps. */
public final class FpsMeter {
    private final long[] stamps;
    private int count;
    private int next;

    public FpsMeter(int window) {
        if (window < 2) {
            throw new IllegalArgumentException("an FPS window needs at least 2 frames, got " + window);
        }
        stamps = new long[window];
    }

    /** Records a frame that ended at {@code nanos} (e.g. System.nanoTime()) and returns the new rate. */
    public double tick(long nanos) {
        stamps[next] = nanos;
        next = (next + 1) % stamps.length;
        count = Math.min(count + 1, stamps.length);
        return fps();
    }

    public double fps() {
        if (count < 2) {
            return 0.0;
        }
        long newest = stamps[(next - 1 + stamps.length) % stamps.length];
        long oldest = stamps[(next - count + stamps.length) % stamps.length];
        return newest > oldest ? (count - 1) * 1e9 / (newest - oldest) : 0.0;
    }
}
