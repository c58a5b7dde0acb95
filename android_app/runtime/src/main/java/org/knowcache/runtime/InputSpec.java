package org.knowcache.runtime;

/** The input the engine's local model expects: the C++ {@code knowcache::InputSpec}. */
public final class InputSpec {
  /** "float32" for every shipped program. */
  public final String dtype;
  private final long[] shape;
  /** Audio tasks; 0 otherwise. */
  public final int sampleRate;
  /** Image tasks; 0 otherwise. */
  public final int imageHeight;
  public final int imageWidth;
  public final int imageChannels;
  /**
   * The values the model was trained on (the manifest's "value_range"): image pixels are
   * scaled to [valueLow, valueHigh] (uint8 0 to valueLow, 255 to valueHigh); both 0 when the
   * manifest states no range. {@link Engine#infer} refuses a value outside it.
   */
  public final double valueLow;
  public final double valueHigh;

  // Called by runtime_cpp/bindings/jni/input_spec_jni.cc.
  InputSpec(String dtype, long[] shape, int sampleRate, int imageHeight, int imageWidth,
      int imageChannels, double valueLow, double valueHigh) {
    this.dtype = dtype;
    this.shape = shape;
    this.sampleRate = sampleRate;
    this.imageHeight = imageHeight;
    this.imageWidth = imageWidth;
    this.imageChannels = imageChannels;
    this.valueLow = valueLow;
    this.valueHigh = valueHigh;
  }

  /** Whether the manifest states a value range. */
  public boolean hasValueRange() {
    return valueHigh > valueLow;
  }

  public long[] shape() {
    return shape.clone();
  }

  /** Number of elements, the length of the float[] that {@link Engine#infer} takes. */
  public int numElements() {
    long n = 1;
    for (long d : shape) {
      n *= d;
    }
    return Math.toIntExact(n);
  }
}
