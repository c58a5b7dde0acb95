package org.knowcache.logic;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Voice-activity detection for live keyword spotting, the same detector as
 * {@code knowcache listen} (host_tools/knowcache/listen/vad.py, whose docstring
 * explains the method): speech-band energy per 10 ms frame against an adaptive
 * noise floor with hysteresis; utterances longer than a keyword or spectrally
 * flat (steady noise) are dropped. Feed float samples in [-1, 1] at 16 kHz;
 * get finished utterances. Not thread-safe: one detector per audio stream.
 */
public final class VoiceActivityDetector {
  public static final int SAMPLE_RATE = 16000;
  public static final int FRAME = 160;  // 10 ms
  private static final int BAND_LO_HZ = 200;
  private static final int BAND_HI_HZ = 4000;

  /** The Python VadConfig's fields and defaults. */
  public static final class Config {
    public double onDb = 12.0;
    public double offDb = 6.0;
    public double minLevelDb = -50.0;
    public double minFloorDb = -70.0;
    public int minOnFrames = 3;
    public int hangoverFrames = 25;
    public int prerollFrames = 15;
    public double maxUtteranceS = 1.5;
    public double maxFlatness = 0.45;
    public double floorRise = 0.02;
  }

  /** An utterance: sample indices in the stream (start includes the pre-roll). */
  public static final class Segment {
    public final long start;
    public final long end;  // one past the last voiced sample
    public final double levelDb;

    Segment(long start, long end, double levelDb) {
      this.start = start;
      this.end = end;
      this.levelDb = levelDb;
    }

    @Override
    public String toString() {
      return "Segment(" + start + ", " + end + ", " + levelDb + " dB)";
    }
  }

  private static final double[] WINDOW = new double[FRAME];
  private static final double WINDOW_SUM;
  private static final int[] BINS;  // rfft bins of the speech band
  private static final double[][] COS;
  private static final double[][] SIN;

  static {
    double sum = 0;
    for (int n = 0; n < FRAME; n++) {  // numpy.hanning: symmetric
      WINDOW[n] = 0.5 - 0.5 * Math.cos(2 * Math.PI * n / (FRAME - 1));
      sum += WINDOW[n];
    }
    WINDOW_SUM = sum;
    List<Integer> bins = new ArrayList<>();
    for (int k = 0; k <= FRAME / 2; k++) {
      double hz = k * (double) SAMPLE_RATE / FRAME;
      if (hz >= BAND_LO_HZ && hz <= BAND_HI_HZ) {
        bins.add(k);
      }
    }
    BINS = bins.stream().mapToInt(Integer::intValue).toArray();
    COS = new double[BINS.length][FRAME];
    SIN = new double[BINS.length][FRAME];
    for (int b = 0; b < BINS.length; b++) {
      for (int n = 0; n < FRAME; n++) {
        double angle = 2 * Math.PI * BINS[b] * n / FRAME;
        COS[b][n] = Math.cos(angle);
        SIN[b][n] = Math.sin(angle);
      }
    }
  }

  private final Config config;
  private final float[] pending = new float[FRAME];
  private int pendingCount;
  private long frameIndex;
  private Double floor;
  private int runOn;
  private int runOff;
  private Long activeStart;  // frame index of the onset
  private final List<double[]> activeFrames = new ArrayList<>();  // {db, flatness}
  private int dropped;

  public VoiceActivityDetector(Config config) {
    this.config = config;
  }

  public VoiceActivityDetector() {
    this(new Config());
  }

  /** Utterances rejected as noise so far. */
  public int dropped() {
    return dropped;
  }

  /** Feeds samples; returns the utterances that ended in them. */
  public List<Segment> push(float[] samples) {
    List<Segment> out = new ArrayList<>();
    double[] spectrum = new double[BINS.length];
    for (float s : samples) {
      pending[pendingCount++] = s;
      if (pendingCount < FRAME) {
        continue;
      }
      pendingCount = 0;
      bandPower(pending, spectrum);
      Segment seg = step(frameDb(spectrum), flatness(spectrum));
      if (seg != null) {
        out.add(seg);
      }
      frameIndex++;
    }
    return out;
  }

  /** Power per speech-band bin of a Hann-windowed frame (numpy's rfft, squared). */
  private static void bandPower(float[] frame, double[] out) {
    for (int b = 0; b < BINS.length; b++) {
      double re = 0;
      double im = 0;
      for (int n = 0; n < FRAME; n++) {
        double x = frame[n] * WINDOW[n];
        re += x * COS[b][n];
        im -= x * SIN[b][n];
      }
      out[b] = re * re + im * im + 1e-12;
    }
  }

  private static double frameDb(double[] spectrum) {
    double sum = 0;
    for (double p : spectrum) {
      sum += p;
    }
    double power = sum * 2 / (FRAME * WINDOW_SUM);
    return 10 * Math.log10(power + 1e-10);
  }

  private static double flatness(double[] spectrum) {
    double logSum = 0;
    double sum = 0;
    for (double p : spectrum) {
      logSum += Math.log(p);
      sum += p;
    }
    return Math.exp(logSum / spectrum.length) / (sum / spectrum.length);
  }

  private Segment step(double db, double flat) {
    Config c = config;
    if (floor == null) {
      floor = Math.max(db, c.minFloorDb);
    }
    if (activeStart == null) {
      if (db > floor + c.onDb && db > c.minLevelDb) {
        runOn++;
        activeFrames.add(new double[] {db, flat});
        if (runOn >= c.minOnFrames) {
          activeStart = frameIndex - runOn + 1;
          runOff = 0;
        }
        return null;
      }
      runOn = 0;
      activeFrames.clear();
      // follow the floor down at once, up slowly
      floor = db < floor ? db : floor + c.floorRise * (db - floor);
      floor = Math.max(floor, c.minFloorDb);
      return null;
    }
    activeFrames.add(new double[] {db, flat});
    runOff = db < floor + c.offDb ? runOff + 1 : 0;
    double lengthS = (frameIndex - activeStart + 1) * (double) FRAME / SAMPLE_RATE;
    if (lengthS > c.maxUtteranceS) {
      return drop();
    }
    if (runOff >= c.hangoverFrames) {
      return finish();
    }
    return null;
  }

  private Segment finish() {
    List<double[]> voiced = activeFrames.subList(0, activeFrames.size() - runOff);
    long endFrame = frameIndex - runOff + 1;
    long startFrame = Math.max(0, activeStart - config.prerollFrames);
    double level = Double.NEGATIVE_INFINITY;
    double[] flats = new double[voiced.size()];
    for (int i = 0; i < voiced.size(); i++) {
      level = Math.max(level, voiced.get(i)[0]);
      flats[i] = voiced.get(i)[1];
    }
    double flat = flats.length > 0 ? median(flats) : 1.0;
    reset();
    if (flat > config.maxFlatness) {
      dropped++;
      return null;
    }
    return new Segment(startFrame * FRAME, endFrame * FRAME, level);
  }

  private Segment drop() {
    double[] levels = activeFrames.stream().mapToDouble(f -> f[0]).toArray();
    floor = Math.max(median(levels), config.minFloorDb);  // the new background
    dropped++;
    reset();
    return null;
  }

  private void reset() {
    activeStart = null;
    activeFrames.clear();
    runOn = 0;
    runOff = 0;
  }

  /** numpy.median: the mean of the two middle values for an even count. */
  static double median(double[] values) {
    double[] v = values.clone();
    Arrays.sort(v);
    int m = v.length / 2;
    return v.length % 2 == 1 ? v[m] : (v[m - 1] + v[m]) / 2;
  }
}
