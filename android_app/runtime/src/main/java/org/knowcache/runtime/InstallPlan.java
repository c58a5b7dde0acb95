package org.knowcache.runtime;

import java.util.Arrays;
import java.util.Objects;

/**
 * What {@link Engine#fromModelsDir} loads from the models folder before the
 * first query: the C++ {@code knowcache::InstallPlan}. Immutable.
 */
public final class InstallPlan {
  // Read by name from runtime_cpp/bindings/jni/engine_config_jni.cc.
  private final String kind;
  private final String[] ids;
  private final boolean pinned;

  private InstallPlan(String kind, String[] ids, boolean pinned) {
    this.kind = kind;
    this.ids = ids;
    this.pinned = pinned;
  }

  /** Every partition with role "cached" (the default), pinned when {@code pinned}. */
  public static InstallPlan cached(boolean pinned) {
    return new InstallPlan("cached", new String[0], pinned);
  }

  public static InstallPlan cached() {
    return cached(true);
  }

  /** These partitions, in order; the first is active. */
  public static InstallPlan ids(boolean pinned, String... ids) {
    Objects.requireNonNull(ids, "ids");
    if (ids.length == 0) {
      throw new IllegalArgumentException("InstallPlan.ids needs at least one partition id");
    }
    return new InstallPlan("ids", ids.clone(), pinned);
  }

  public static InstallPlan ids(String... ids) {
    return ids(true, ids);
  }

  /** The staged program: the engine answers through its exits (layer caching). */
  public static InstallPlan staged() {
    return new InstallPlan("staged", new String[0], true);
  }

  /** Nothing: a cold device that fills its slots from the cloud's hints. */
  public static InstallPlan none() {
    return new InstallPlan("none", new String[0], true);
  }

  @Override
  public String toString() {
    return "InstallPlan(" + kind + (ids.length > 0 ? " " + Arrays.toString(ids) : "")
        + ", pinned=" + pinned + ")";
  }
}
