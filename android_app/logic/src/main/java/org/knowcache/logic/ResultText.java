package org.knowcache.logic;

import java.util.Locale;

/**
 * One recognized command as a line of text, the way {@code knowcache listen}
 * prints it: word, confidence, where it was answered, latency
 * ("yes         97.1%  local        12 ms").
 */
public final class ResultText {
  private ResultText() {}

  /** {@code source} is "local", "cloud", "degraded", "private" or "local_only". */
  public static String line(String word, float confidence, String source, double latencyMs) {
    return String.format(Locale.ROOT, "%-10s %5.1f%%  %-8s %6.0f ms", word, confidence * 100.0,
        source, latencyMs);
  }

  /** The cache's state in one line: "2 slots used, 1.2 MB; local rate 83%". */
  public static String cacheLine(int slotsUsed, long residentBytes, double localRate) {
    return String.format(Locale.ROOT, "%d slots used, %.1f MB; local rate %.0f%%", slotsUsed,
        residentBytes / 1e6, localRate * 100.0);
  }
}
