package org.knowcache.runtime;

/** Counters of an {@link Engine}: the C++ {@code knowcache::EngineStats}. Immutable. */
public final class EngineStats {
  public final long queries;
  public final long local;
  public final long cloud;
  public final long degraded;
  public final long cloudErrors;
  public final long fetches;
  public final long fetchFailures;
  public final long fetchedBytes;
  public final long uplinkBytes;
  /** Cloud answers to an uploaded activation instead of the raw input (split computing). */
  public final long featureUploads;
  /** Queries the gate would have uploaded, answered on the device: a private class. */
  public final long keptPrivate;
  /** Queries the gate would have uploaded, answered on the device: local-only mode. */
  public final long keptLocalOnly;
  /** "" when no download failed. */
  public final String lastFetchError;
  public final SlotCacheStats cache;

  // Called by runtime_cpp/bindings/jni/engine_stats_jni.cc.
  EngineStats(long queries, long local, long cloud, long degraded, long cloudErrors, long fetches,
      long fetchFailures, long fetchedBytes, long uplinkBytes, long featureUploads,
      long keptPrivate, long keptLocalOnly, String lastFetchError, SlotCacheStats cache) {
    this.queries = queries;
    this.local = local;
    this.cloud = cloud;
    this.degraded = degraded;
    this.cloudErrors = cloudErrors;
    this.fetches = fetches;
    this.fetchFailures = fetchFailures;
    this.fetchedBytes = fetchedBytes;
    this.uplinkBytes = uplinkBytes;
    this.featureUploads = featureUploads;
    this.keptPrivate = keptPrivate;
    this.keptLocalOnly = keptLocalOnly;
    this.lastFetchError = lastFetchError;
    this.cache = cache;
  }

  /** Share of queries answered on the device. */
  public double localRate() {
    return queries == 0 ? 0.0 : (double) local / queries;
  }
}
