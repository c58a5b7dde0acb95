package org.knowcache.runtime;

import java.util.Objects;

/**
 * Settings of an {@link Engine}: the C++ {@code knowcache::EngineConfig}
 * (with its SlotCacheConfig and CloudClientConfig) with the same defaults as
 * the Python runtime's keyword arguments. Immutable; build with
 * {@link #builder(String)}. The core validates it when the engine is made and
 * throws {@link KnowcacheException.InvalidInputException} naming the bad field.
 */
public final class EngineConfig {
  // Read by name from runtime_cpp/bindings/jni/engine_config_jni.cc.
  private final String task;
  private final int slots;
  private final long budgetBytes;
  private final String cloudUrl;
  private final String token;
  private final String caFile;
  private final int connectTimeoutMs;
  private final int readTimeoutMs;
  private final boolean pcm16Uploads;
  private final boolean fetchHints;
  private final int maxLocalAttempts;
  private final float threshold;
  private final int admitAfterHints;
  private final int hintWindow;
  private final String exitGate;
  private final int activationEntries;
  private final long activationBytes;
  private final float privateShare;
  private final boolean localOnly;
  private final String[] trustedKeys;
  private final boolean requireSignature;
  private final String split;
  private final int splitCut;

  private EngineConfig(Builder b) {
    task = b.task;
    slots = b.slots;
    budgetBytes = b.budgetBytes;
    cloudUrl = b.cloudUrl;
    token = b.token;
    caFile = b.caFile;
    connectTimeoutMs = b.connectTimeoutMs;
    readTimeoutMs = b.readTimeoutMs;
    pcm16Uploads = b.pcm16Uploads;
    fetchHints = b.fetchHints;
    maxLocalAttempts = b.maxLocalAttempts;
    threshold = b.threshold;
    admitAfterHints = b.admitAfterHints;
    hintWindow = b.hintWindow;
    exitGate = b.exitGate;
    activationEntries = b.activationEntries;
    activationBytes = b.activationBytes;
    privateShare = b.privateShare;
    localOnly = b.localOnly;
    trustedKeys = b.trustedKeys.clone();
    requireSignature = b.requireSignature;
    split = b.split;
    splitCut = b.splitCut;
  }

  /** {@code task} may be "" to take the manifest's. */
  public static Builder builder(String task) {
    return new Builder(task);
  }

  public String task() {
    return task;
  }

  public int slots() {
    return slots;
  }

  public String cloudUrl() {
    return cloudUrl;
  }

  /** The trusted manifest-signing keys (a copy). */
  public String[] trustedKeys() {
    return trustedKeys.clone();
  }

  @Override
  public String toString() {  // never prints the token
    return "EngineConfig(task=" + task + ", slots=" + slots + ", budgetBytes=" + budgetBytes
        + ", cloudUrl=" + (cloudUrl.isEmpty() ? "none" : cloudUrl)
        + (pcm16Uploads ? "" : ", pcm16Uploads=false") + ", fetchHints=" + fetchHints
        + ", maxLocalAttempts=" + maxLocalAttempts + ", threshold=" + threshold
        + ", privateShare=" + privateShare + ", localOnly=" + localOnly
        + ", trustedKeys=" + trustedKeys.length + ", requireSignature=" + requireSignature
        + ", split=" + split + (split.equals("off") ? "" : "@" + splitCut) + ")";
  }

  /** Builder with the defaults of the C++ structs. */
  public static final class Builder {
    private final String task;
    private int slots = 2;
    private long budgetBytes = 64L << 20;
    private String cloudUrl = "";
    private String token = "";
    private String caFile = "";
    private int connectTimeoutMs = 1000;
    private int readTimeoutMs = 5000;
    private boolean pcm16Uploads = true;
    private boolean fetchHints = true;
    private int maxLocalAttempts = 1;
    private float threshold = -1.0f;
    private int admitAfterHints = 1;
    private int hintWindow = 8;
    private String exitGate = "learned";
    private int activationEntries = 512;
    private long activationBytes = 1L << 20;
    private float privateShare = 0.2f;
    private boolean localOnly = false;
    private String[] trustedKeys = new String[0];
    private boolean requireSignature = false;
    private String split = "off";
    private int splitCut = 0;

    private Builder(String task) {
      this.task = Objects.requireNonNull(task, "task");
    }

    public Builder slots(int slots) {
      this.slots = slots;
      return this;
    }

    public Builder budgetBytes(long budgetBytes) {
      this.budgetBytes = budgetBytes;
      return this;
    }

    /** "http://host:port" of a {@code knowcache serve}; "" (the default) for device only. */
    public Builder cloudUrl(String cloudUrl) {
      this.cloudUrl = Objects.requireNonNull(cloudUrl, "cloudUrl");
      return this;
    }

    public Builder token(String token) {
      this.token = Objects.requireNonNull(token, "token");
      return this;
    }

    /** https cloud: PEM file of the CAs its certificate must chain to; "" for the system's. */
    public Builder caFile(String caFile) {
      this.caFile = Objects.requireNonNull(caFile, "caFile");
      return this;
    }

    public Builder connectTimeoutMs(int ms) {
      this.connectTimeoutMs = ms;
      return this;
    }

    public Builder readTimeoutMs(int ms) {
      this.readTimeoutMs = ms;
      return this;
    }

    /**
     * Upload an input that 16-bit PCM holds exactly (16-bit audio) as int16, half the bytes
     * (default true); false for a cloud older than that encoding.
     */
    public Builder pcm16Uploads(boolean pcm16Uploads) {
      this.pcm16Uploads = pcm16Uploads;
      return this;
    }

    /** Download the partitions the cloud hints at, in the background (default true). */
    public Builder fetchHints(boolean fetchHints) {
      this.fetchHints = fetchHints;
      return this;
    }

    public Builder maxLocalAttempts(int n) {
      this.maxLocalAttempts = n;
      return this;
    }

    /** Replaces every partition's calibrated gate threshold (in [0, 1]). */
    public Builder threshold(float threshold) {
      this.threshold = threshold;
      return this;
    }

    public Builder admitAfterHints(int n) {
      this.admitAfterHints = n;
      return this;
    }

    public Builder hintWindow(int n) {
      this.hintWindow = n;
      return this;
    }

    /** The staged model's exit gate: "learned", "confidence", "entropy", "activation". */
    public Builder exitGate(String exitGate) {
      this.exitGate = Objects.requireNonNull(exitGate, "exitGate");
      return this;
    }

    public Builder activationEntries(int n) {
      this.activationEntries = n;
      return this;
    }

    public Builder activationBytes(long bytes) {
      this.activationBytes = bytes;
      return this;
    }

    /**
     * Ed25519 public keys (base64 of the 32 raw bytes: the line of a
     * {@code knowcache keys generate} .pub file) that sign the manifests; several
     * for key rotation. With any, the models folder's manifest.json must verify
     * against its manifest.sig, every manifest fetched from the cloud must be
     * signed by one of them, and one older than the installed version is refused
     * (docs/security.md).
     */
    public Builder trustedKeys(String... keys) {
      String[] copy = Objects.requireNonNull(keys, "keys").clone();
      for (String k : copy) {
        Objects.requireNonNull(k, "a trusted key");
      }
      this.trustedKeys = copy;
      return this;
    }

    /** Refuse to build an engine without trusted keys (default false). */
    public Builder requireSignature(boolean require) {
      this.requireSignature = require;
      return this;
    }

    /**
     * Privacy routing: answer on the device when the manifest's private classes hold more
     * than this share of a local answer (default 0.2), as when the answer is one of them.
     */
    public Builder privateShare(float share) {
      this.privateShare = share;
      return this;
    }

    /** Never ask the cloud: what the gate rejects comes back {@code LOCAL_ONLY}. */
    public Builder localOnly(boolean localOnly) {
      this.localOnly = localOnly;
      return this;
    }

    /**
     * Split computing (docs/security.md): "off" (default), "always" or "auto". On a gate
     * miss the engine uploads the staged program's int8 activation at stage {@code cutStage}
     * instead of the raw input ("auto": when that is fewer bytes); the models folder must
     * hold a staged program, and a cut before a stage that reads the raw input is refused.
     */
    public Builder split(String mode, int cutStage) {
      this.split = Objects.requireNonNull(mode, "mode");
      this.splitCut = cutStage;
      return this;
    }

    public EngineConfig build() {
      return new EngineConfig(this);
    }
  }
}
