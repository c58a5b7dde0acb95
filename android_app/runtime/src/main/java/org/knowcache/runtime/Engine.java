package org.knowcache.runtime;

import java.util.Arrays;
import java.util.List;
import java.util.Objects;

/**
 * Two-stage inference on the device: cached partitions answer what they are
 * sure of, the cloud the rest. A thin owner of the C++ {@code knowcache::Engine}
 * (built by the core's one factory, {@code Engine::FromModelsDir}), like
 * ExecuTorch's Android {@code Module}.
 *
 * <p>{@link #infer} never fails because the cloud is down or slow: it returns
 * the local answer with source {@link InferenceResult.Source#DEGRADED}. Core
 * errors arrive as {@link KnowcacheException} subclasses carrying the core's
 * sentence.
 *
 * <p>Ownership and threads: the engine owns the native handle and frees it in
 * {@link #close} (which waits for the background download thread). Every
 * method may be called from any thread; calls on one engine are serialized.
 * After close, every method but close throws IllegalStateException; close
 * may be called again and does nothing.
 */
public final class Engine implements AutoCloseable {
  static {
    System.loadLibrary("knowcache_jni");
  }

  private final Object lock = new Object();
  private long handle;  // a knowcache::Engine*; 0 once closed
  private final EngineConfig config;

  private Engine(long handle, EngineConfig config) {
    this.handle = handle;
    this.config = config;
  }

  /**
   * An engine for {@code directory}/manifest.json with {@code plan} installed
   * from that folder. The config's task may be "" (the manifest's) and must
   * match the manifest's when set.
   */
  public static Engine fromModelsDir(String directory, EngineConfig config, InstallPlan plan) {
    Objects.requireNonNull(directory, "directory");
    Objects.requireNonNull(config, "config");
    Objects.requireNonNull(plan, "plan");
    return new Engine(nativeFromModelsDir(config, directory, plan), config);
  }

  /** {@link #fromModelsDir(String, EngineConfig, InstallPlan)} with the cached partitions. */
  public static Engine fromModelsDir(String directory, EngineConfig config) {
    return fromModelsDir(directory, config, InstallPlan.cached());
  }

  /**
   * Classifies one input: {@code data} holds the float32 tensor of {@code shape}
   * in row-major order (see {@link #localInput}).
   */
  public InferenceResult infer(float[] data, long[] shape) {
    Objects.requireNonNull(data, "data");
    Objects.requireNonNull(shape, "shape");
    synchronized (lock) {
      return nativeInfer(alive(), data, shape);
    }
  }

  /** Loads a partition named in the manifest from the models folder into a slot. */
  public void installFromManifest(String partitionId, boolean pinned) {
    Objects.requireNonNull(partitionId, "partitionId");
    synchronized (lock) {
      nativeInstallFromManifest(alive(), partitionId, pinned);
    }
  }

  /** Makes a cached partition the one infer runs first. */
  public void activate(String partitionId) {
    Objects.requireNonNull(partitionId, "partitionId");
    synchronized (lock) {
      nativeActivate(alive(), partitionId);
    }
  }

  /** Blocks until background partition downloads finish; false on timeout. */
  public boolean waitForFetches(int timeoutMs) {
    synchronized (lock) {
      return nativeWaitForFetches(alive(), timeoutMs);
    }
  }

  /** Cached partition ids, most recently used first. */
  public List<String> cachedIds() {
    synchronized (lock) {
      return Arrays.asList(nativeCachedIds(alive()));
    }
  }

  public String activeId() {
    synchronized (lock) {
      return nativeActiveId(alive());
    }
  }

  /** "partitions" or "staged" (layer caching). */
  public String mode() {
    synchronized (lock) {
      return nativeMode(alive());
    }
  }

  /** The input the local model expects. */
  public InputSpec localInput() {
    synchronized (lock) {
      return nativeLocalInput(alive());
    }
  }

  public EngineStats stats() {
    synchronized (lock) {
      return nativeStats(alive());
    }
  }

  public EngineConfig config() {
    return config;
  }

  public boolean isClosed() {
    synchronized (lock) {
      return handle == 0;
    }
  }

  /** Frees the native engine; a second call does nothing. */
  @Override
  public void close() {
    synchronized (lock) {
      if (handle != 0) {
        nativeDestroy(handle);
        handle = 0;
      }
    }
  }

  private long alive() {
    if (handle == 0) {
      throw new IllegalStateException("this Engine is closed; make a new one with fromModelsDir");
    }
    return handle;
  }

  // runtime_cpp/bindings/jni/engine_jni.cc
  private static native long nativeFromModelsDir(EngineConfig config, String directory,
      InstallPlan plan);

  private static native void nativeDestroy(long handle);

  private static native InferenceResult nativeInfer(long handle, float[] data, long[] shape);

  private static native void nativeInstallFromManifest(long handle, String id, boolean pinned);

  private static native void nativeActivate(long handle, String id);

  private static native boolean nativeWaitForFetches(long handle, int timeoutMs);

  private static native String[] nativeCachedIds(long handle);

  private static native String nativeActiveId(long handle);

  private static native String nativeMode(long handle);

  private static native InputSpec nativeLocalInput(long handle);

  private static native EngineStats nativeStats(long handle);
}
