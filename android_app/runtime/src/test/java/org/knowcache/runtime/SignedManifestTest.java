package org.knowcache.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Signed manifests through JNI: tests/test_jni.py signs a copy of the tiny
 * models with a key generated at test time (signed_tiny, trusted_key) and
 * breaks copies of it (tampered_manifest: one byte added to manifest.json
 * after signing; unsigned_tiny: no manifest.sig; other_key_tiny: signed by
 * another key). The core refuses each with its sentence; nothing is installed.
 */
class SignedManifestTest {
  private static final float[] UNSURE = new float[16];

  private static Engine open(String folder, EngineConfig.Builder config) {
    return Engine.fromModelsDir(Fixtures.get(folder), config.build(), InstallPlan.cached());
  }

  private static EngineConfig.Builder trusting() {
    return EngineConfig.builder("kws").trustedKeys(Fixtures.get("trusted_key"))
        .requireSignature(true);
  }

  @Test
  void aManifestSignedByATrustedKeyLoadsAndAnswers() {
    try (Engine engine = open("signed_tiny", trusting())) {
      InferenceResult r = engine.infer(Fixtures.confident(1), Fixtures.TINY_SHAPE);
      assertEquals("no", r.label);
      assertEquals(InferenceResult.Source.LOCAL, r.source);
    }
  }

  @Test
  void rotationTrustsEitherOfTwoKeys() {
    EngineConfig.Builder both = EngineConfig.builder("kws")
        .trustedKeys(Fixtures.get("other_key"), Fixtures.get("trusted_key"));
    try (Engine a = open("signed_tiny", both); Engine b = open("other_key_tiny", both)) {
      assertEquals(List.of("cached"), a.cachedIds());
      assertEquals(List.of("cached"), b.cachedIds());
    }
  }

  @Test
  void aTamperedManifestIsRefused() {
    KnowcacheException.CorruptPartitionException e = assertThrows(
        KnowcacheException.CorruptPartitionException.class,
        () -> open("tampered_manifest", trusting()));
    assertTrue(e.getMessage().contains("does not verify"), e.getMessage());
  }

  @Test
  void anUnsignedManifestIsRefused() {
    KnowcacheException.FailedPreconditionException e = assertThrows(
        KnowcacheException.FailedPreconditionException.class,
        () -> open("unsigned_tiny", trusting()));
    assertTrue(e.getMessage().contains("is not signed"), e.getMessage());
  }

  @Test
  void aManifestSignedByAnUntrustedKeyIsRefused() {
    KnowcacheException.FailedPreconditionException e = assertThrows(
        KnowcacheException.FailedPreconditionException.class,
        () -> open("other_key_tiny", trusting()));
    assertTrue(e.getMessage().contains("which is not trusted"), e.getMessage());
  }

  @Test
  void requireSignatureWithoutKeysAndAKeyThatIsNotBase64AreRefused() {
    KnowcacheException.InvalidInputException missing = assertThrows(
        KnowcacheException.InvalidInputException.class,
        () -> open("signed_tiny", EngineConfig.builder("kws").requireSignature(true)));
    assertTrue(missing.getMessage().contains("no trusted key"), missing.getMessage());
    assertThrows(KnowcacheException.InvalidInputException.class,
        () -> open("signed_tiny", EngineConfig.builder("kws").trustedKeys("not a key")));
    assertThrows(NullPointerException.class,
        () -> EngineConfig.builder("kws").trustedKeys((String) null));
  }

  @Test
  void unsignedModelsStillLoadWithoutKeys() {
    try (Engine engine = open("unsigned_tiny", EngineConfig.builder("kws"))) {
      assertEquals("partitions", engine.mode());
      engine.infer(UNSURE, Fixtures.TINY_SHAPE);
    }
  }
}
