package org.knowcache.runtime;

/** Counters of the engine's slot cache: the C++ {@code knowcache::SlotCacheStats}. Immutable. */
public final class SlotCacheStats {
  public final long hits;
  public final long misses;
  public final long installs;
  public final long evictions;
  public final long residentBytes;
  public final int slotsUsed;

  // Called by runtime_cpp/bindings/jni/engine_stats_jni.cc.
  SlotCacheStats(long hits, long misses, long installs, long evictions, long residentBytes,
      int slotsUsed) {
    this.hits = hits;
    this.misses = misses;
    this.installs = installs;
    this.evictions = evictions;
    this.residentBytes = residentBytes;
    this.slotsUsed = slotsUsed;
  }

  @Override
  public String toString() {
    return "SlotCacheStats(slotsUsed=" + slotsUsed + ", residentBytes=" + residentBytes
        + ", hits=" + hits + ", misses=" + misses + ", installs=" + installs + ", evictions="
        + evictions + ")";
  }
}
