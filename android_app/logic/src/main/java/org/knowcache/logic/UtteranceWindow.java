package org.knowcache.logic;

/**
 * The last seconds of a 16 kHz stream, addressed by absolute sample index, and
 * the 1 s window the kws models classify around an utterance: the Ring and
 * window_for of {@code knowcache listen} (host_tools/knowcache/listen/recognizer.py).
 * Not thread-safe: the audio thread writes and reads it.
 */
public final class UtteranceWindow {
  /** The models classify 1 s. */
  public static final int WINDOW = VoiceActivityDetector.SAMPLE_RATE;

  private final float[] ring;
  private long total;  // samples written so far

  public UtteranceWindow(double seconds) {
    ring = new float[(int) (seconds * VoiceActivityDetector.SAMPLE_RATE)];
  }

  public UtteranceWindow() {
    this(4.0);
  }

  public void write(float[] x) {
    for (float s : x) {
      ring[(int) (total % ring.length)] = s;
      total++;
    }
  }

  public long total() {
    return total;
  }

  /** Samples [start, start + length), zero where the ring no longer (or not yet) has them. */
  public float[] read(long start, int length) {
    float[] out = new float[length];
    long first = total - ring.length;
    long lo = Math.max(start, first);
    long hi = Math.min(start + length, total);
    for (long i = Math.max(lo, 0); i < hi; i++) {
      out[(int) (i - start)] = ring[(int) (i % ring.length)];
    }
    return out;
  }

  /** Start of the 1 s window: centred on the utterance, or its first second when longer. */
  public static long windowStart(VoiceActivityDetector.Segment seg) {
    if (seg.end - seg.start >= WINDOW) {
      return seg.start;
    }
    return Math.max(0, Math.floorDiv(seg.start + seg.end, 2) - WINDOW / 2);
  }

  /** The model input for an utterance: 1 s of samples. */
  public float[] windowFor(VoiceActivityDetector.Segment seg) {
    return read(windowStart(seg), WINDOW);
  }
}
