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

  // Called by runtime_cpp/bindings/jni/input_spec_jni.cc.
  InputSpec(String dtype, long[] shape, int sampleRate, int imageHeight, int imageWidth,
      int imageChannels) {
    this.dtype = dtype;
    this.shape = shape;
    this.sampleRate = sampleRate;
    this.imageHeight = imageHeight;
    this.imageWidth = imageWidth;
    this.imageChannels = imageChannels;
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
