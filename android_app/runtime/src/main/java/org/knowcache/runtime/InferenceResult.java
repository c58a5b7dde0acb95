package org.knowcache.runtime;

/**
 * One answer of {@link Engine#infer}: the C++ {@code knowcache::InferenceResult}.
 * Immutable; made only by the JNI layer.
 */
public final class InferenceResult {
  /** Where the answer came from. */
  public enum Source {
    /** A cached partition (or the staged model) on the device was sure enough. */
    LOCAL,
    /** The cloud answered. */
    CLOUD,
    /** The cloud was needed but failed: this is the local answer; see degradedReason. */
    DEGRADED,
    /** A private class (the manifest's private_labels): answered locally, never uploaded. */
    PRIVATE,
    /** The engine is local-only: answered locally although the gate was unsure. */
    LOCAL_ONLY;

    static Source fromName(String name) {
      return valueOf(name.toUpperCase(java.util.Locale.ROOT));
    }
  }

  public final String label;
  /** In the task's label set; -1 for "other" or unknown. */
  public final int index;
  /** Probability of the answer. */
  public final float confidence;
  /** Normalized entropy of the local answer, 1 if none. */
  public final float entropy;
  public final Source source;
  /** The partition that answered or was consulted. */
  public final String partitionId;
  /** The partition the cloud suggested caching; "" when none. */
  public final String partitionHint;
  /** Why the cloud could not answer; "" unless source is DEGRADED. */
  public final String degradedReason;
  public final int localAttempts;
  public final long localUs;
  public final long networkUs;
  public final long totalUs;
  public final long uplinkBytes;
  /** What was sent to the cloud: "none", "raw" (the input) or "features" (split computing). */
  public final String uplink;
  /** Split computing on, yet the raw input or nothing was sent: why; "" otherwise. */
  public final String splitReason;
  /** Staged model: the exit that answered, -1 the whole model. */
  public final int exitIndex;
  /** Staged model: FLOPs this query spent on the device. */
  public final long flops;
  /** Staged model: time in exit heads and gates. */
  public final long lookupUs;
  /** A private class, or private classes hold too much of the answer: never uploaded. */
  public final boolean isPrivate;
  /** The most probability private classes held in one local model's answer. */
  public final float privateMass;
  /** Why the query stayed on the device; "" unless source is PRIVATE or LOCAL_ONLY. */
  public final String keptReason;

  // The one constructor runtime_cpp/bindings/jni/inference_result_jni.cc calls.
  InferenceResult(String label, int index, float confidence, float entropy, String source,
      String partitionId, String partitionHint, String degradedReason, int localAttempts,
      long localUs, long networkUs, long totalUs, long uplinkBytes, String uplink,
      String splitReason, int exitIndex, long flops, long lookupUs, boolean isPrivate,
      float privateMass, String keptReason) {
    this.label = label;
    this.index = index;
    this.confidence = confidence;
    this.entropy = entropy;
    this.source = Source.fromName(source);
    this.partitionId = partitionId;
    this.partitionHint = partitionHint;
    this.degradedReason = degradedReason;
    this.localAttempts = localAttempts;
    this.localUs = localUs;
    this.networkUs = networkUs;
    this.totalUs = totalUs;
    this.uplinkBytes = uplinkBytes;
    this.uplink = uplink;
    this.splitReason = splitReason;
    this.exitIndex = exitIndex;
    this.flops = flops;
    this.lookupUs = lookupUs;
    this.isPrivate = isPrivate;
    this.privateMass = privateMass;
    this.keptReason = keptReason;
  }

  @Override
  public String toString() {
    return "InferenceResult(label='" + label + "', source=" + source + ", confidence="
        + confidence + ", partition='" + partitionId + "', totalUs=" + totalUs + ")";
  }
}
