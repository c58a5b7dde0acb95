package org.knowcache.runtime;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * The Java Engine on tiny programs exported at test time: a real
 * `knowcache serve` as the cloud with a background partition download, a dead
 * cloud, the handle's life cycle and calls from several threads.
 */
class EngineTest {
  private static final float[] UNSURE = new float[16];

  private static Engine tiny(EngineConfig.Builder config) {
    return Engine.fromModelsDir(Fixtures.get("tiny"), config.build(), InstallPlan.cached());
  }

  @Test
  void confidentInputIsAnsweredLocally() {
    try (Engine engine = tiny(EngineConfig.builder("kws"))) {
      InferenceResult r = engine.infer(Fixtures.confident(1), Fixtures.TINY_SHAPE);
      assertEquals("no", r.label);
      assertEquals(1, r.index);
      assertEquals(InferenceResult.Source.LOCAL, r.source);
      assertEquals("cached", r.partitionId);
      assertTrue(r.confidence > 0.99f && r.entropy < 0.01f, r.toString());
      assertEquals(0, r.networkUs);
      InputSpec spec = engine.localInput();
      assertEquals("float32", spec.dtype);
      assertArrayEquals(Fixtures.TINY_SHAPE, spec.shape());
      assertFalse(spec.hasValueRange());  // the tiny manifest states none
      assertEquals("partitions", engine.mode());
      assertEquals(List.of("cached"), engine.cachedIds());
    }
  }

  @Test
  void imageProgramsStateTheirValueRange() {
    try (Engine engine = Engine.fromModelsDir(Fixtures.get("vision"),
        EngineConfig.builder("vision").build(), InstallPlan.cached())) {
      InputSpec spec = engine.localInput();
      assertTrue(spec.hasValueRange());
      assertEquals(0.0, spec.valueLow);
      assertEquals(1.0, spec.valueHigh);
      assertEquals(28, spec.imageHeight);
    }
  }

  @Test
  void sixteenBitAudioIsUploadedAsPcm16UnlessTurnedOff() throws Exception {
    float[] pcm = new float[16];
    pcm[4] = 9830 / 32768f;  // a 16-bit sample value; the cached model is unsure, as below
    try (Engine engine = tiny(EngineConfig.builder("kws").cloudUrl(Fixtures.get("cloud")))) {
      InferenceResult r = engine.infer(pcm, Fixtures.TINY_SHAPE);
      assertEquals(InferenceResult.Source.CLOUD, r.source, r.toString());
      assertEquals(Fixtures.get("cloud_label"), r.label);
      assertEquals(32, r.uplinkBytes);
    }
    EngineConfig.Builder raw =
        EngineConfig.builder("kws").cloudUrl(Fixtures.get("cloud")).pcm16Uploads(false);
    assertTrue(raw.build().toString().contains("pcm16Uploads=false"));
    try (Engine engine = tiny(raw)) {
      assertEquals(64, engine.infer(pcm, Fixtures.TINY_SHAPE).uplinkBytes);
    }
  }

  @Test
  void unsureInputGoesToTheCloudWhichHintsAPartitionDownloadedInTheBackground() throws Exception {
    float[] left = new float[16];
    left[4] = 0.3f;  // the cached model is unsure; the cloud's full model says "left"
    try (Engine engine = tiny(EngineConfig.builder("kws").cloudUrl(Fixtures.get("cloud")))) {
      InferenceResult r = engine.infer(left, Fixtures.TINY_SHAPE);
      assertEquals(InferenceResult.Source.CLOUD, r.source, r.toString());
      assertEquals(Fixtures.get("cloud_label"), r.label);
      assertEquals(Fixtures.get("cloud_hint"), r.partitionHint);
      assertEquals(64, r.uplinkBytes);
      assertTrue(r.networkUs > 0);
      assertTrue(engine.waitForFetches(20000), "the download did not finish in 20 s");
      EngineStats stats = engine.stats();
      assertEquals(1, stats.fetches, stats.lastFetchError);
      assertEquals(0, stats.fetchFailures);
      Path pte = Paths.get(Fixtures.get("tiny"), r.partitionHint + ".pte");
      assertEquals(Files.size(pte), stats.fetchedBytes);
      assertEquals(List.of(r.partitionHint, "cached"), engine.cachedIds());
      assertEquals(r.partitionHint, engine.activeId());
      assertEquals(2, stats.cache.slotsUsed);
      assertEquals(1, stats.cloud);
    }
  }

  @Test
  void deadCloudGivesDegradedAnswers() {
    try (Engine engine = tiny(EngineConfig.builder("kws").cloudUrl(Fixtures.get("dead_cloud"))
        .connectTimeoutMs(500))) {
      InferenceResult r = engine.infer(UNSURE, Fixtures.TINY_SHAPE);
      assertEquals(InferenceResult.Source.DEGRADED, r.source);
      assertTrue(List.of("yes", "no", "other").contains(r.label), r.label);
      assertTrue(r.degradedReason.contains("UNAVAILABLE"), r.degradedReason);
      EngineStats stats = engine.stats();
      assertEquals(1, stats.cloudErrors);
      assertEquals(1, stats.degraded);
      assertEquals(0.0, stats.localRate());
    }
  }

  @Test
  void privateAnswersAndLocalOnlyEnginesNeverAskTheCloud() {
    // "no" is private in these models; threshold 0: the gate rejects every answer.
    EngineConfig.Builder config = EngineConfig.builder("kws").cloudUrl(Fixtures.get("cloud"))
        .threshold(0.0f).fetchHints(false);
    try (Engine engine = Engine.fromModelsDir(Fixtures.get("private"), config.build(),
        InstallPlan.cached())) {
      InferenceResult r = engine.infer(Fixtures.confident(1), Fixtures.TINY_SHAPE);
      assertEquals(InferenceResult.Source.PRIVATE, r.source);
      assertEquals("no", r.label);
      assertTrue(r.isPrivate);
      assertTrue(r.privateMass > 0.99f, String.valueOf(r.privateMass));
      assertTrue(r.keptReason.contains("'no' is a private class"), r.keptReason);
      InferenceResult yes = engine.infer(Fixtures.confident(0), Fixtures.TINY_SHAPE);
      assertEquals(InferenceResult.Source.CLOUD, yes.source);
      assertFalse(yes.isPrivate);
      EngineStats stats = engine.stats();
      assertEquals(1, stats.keptPrivate);
      assertEquals(1, stats.cloud);
    }
    try (Engine engine = Engine.fromModelsDir(Fixtures.get("private"),
        config.localOnly(true).build(), InstallPlan.cached())) {
      InferenceResult r = engine.infer(Fixtures.confident(2), Fixtures.TINY_SHAPE);
      assertEquals(InferenceResult.Source.LOCAL_ONLY, r.source);
      assertFalse(r.isPrivate);
      EngineStats stats = engine.stats();
      assertEquals(1, stats.keptLocalOnly);
      assertEquals(0, stats.cloud);
      assertEquals(0, stats.uplinkBytes);
    }
  }

  @Test
  void closeTwiceIsSafeAndUseAfterCloseThrows() {
    Engine engine = tiny(EngineConfig.builder("kws"));
    assertFalse(engine.isClosed());
    engine.close();
    engine.close();
    assertTrue(engine.isClosed());
    IllegalStateException e = assertThrows(IllegalStateException.class,
        () -> engine.infer(Fixtures.confident(0), Fixtures.TINY_SHAPE));
    assertTrue(e.getMessage().contains("closed"), e.getMessage());
    assertThrows(IllegalStateException.class, engine::stats);
    assertThrows(IllegalStateException.class, engine::cachedIds);
    assertThrows(IllegalStateException.class, () -> engine.waitForFetches(10));
  }

  @Test
  void callsFromManyThreadsAreSerializedAndAllAnswered() throws Exception {
    ExecutorService pool = Executors.newFixedThreadPool(4);
    try (Engine engine = tiny(EngineConfig.builder("kws"))) {
      List<Future<InferenceResult>> futures = new ArrayList<>();
      for (int i = 0; i < 100; i++) {
        int index = i % 2;
        futures.add(pool.submit(() -> engine.infer(Fixtures.confident(index),
            Fixtures.TINY_SHAPE)));
      }
      for (int i = 0; i < futures.size(); i++) {
        InferenceResult r = futures.get(i).get(30, TimeUnit.SECONDS);
        assertEquals(i % 2 == 0 ? "yes" : "no", r.label);
      }
      assertEquals(100, engine.stats().queries);
      assertEquals(100, engine.stats().local);
    } finally {
      pool.shutdownNow();
    }
  }

  @Test
  void closeWaitsForACallInAnotherThread() throws Exception {
    Engine engine = tiny(EngineConfig.builder("kws"));
    ExecutorService pool = Executors.newSingleThreadExecutor();
    try {
      Future<?> running = pool.submit(() -> {
        for (int i = 0; i < 200; i++) {
          try {
            engine.infer(Fixtures.confident(0), Fixtures.TINY_SHAPE);
          } catch (IllegalStateException closed) {
            return;  // closed between two calls: the expected end
          }
        }
      });
      engine.close();
      running.get(30, TimeUnit.SECONDS);  // no crash, no other exception
      assertTrue(engine.isClosed());
    } finally {
      pool.shutdownNow();
    }
  }

  @Test
  void stagedProgramAnswersThroughItsExits() {
    EngineConfig config = EngineConfig.builder("vision").exitGate("confidence").build();
    try (Engine engine = Engine.fromModelsDir(Fixtures.get("vision"), config,
        InstallPlan.staged())) {
      assertEquals("staged", engine.mode());
      InferenceResult r = engine.infer(new float[28 * 28], new long[] {1, 1, 28, 28});
      assertEquals(InferenceResult.Source.LOCAL, r.source);
      assertTrue(r.flops > 0, r.toString());
    }
  }

  @Test
  void splitComputingUploadsNoRawInputAndRefusesWhatItCannotSplit() {
    // The shipped vision program, a dead cloud and a gate that rejects everything: the
    // activation at stage 4 is computed, its upload fails, and the answer is degraded.
    EngineConfig config = EngineConfig.builder("vision").cloudUrl(Fixtures.get("dead_cloud"))
        .connectTimeoutMs(500).threshold(0.0f).split("always", 4).build();
    assertTrue(config.toString().contains("split=always@4"), config.toString());
    try (Engine engine = Engine.fromModelsDir(Fixtures.get("vision"), config,
        InstallPlan.cached())) {
      assertEquals("partitions", engine.mode());
      InferenceResult r = engine.infer(new float[28 * 28], new long[] {1, 1, 28, 28});
      assertEquals(InferenceResult.Source.DEGRADED, r.source, r.toString());
      assertEquals("none", r.uplink);
      assertEquals(0, r.uplinkBytes);
      assertEquals(0, engine.stats().featureUploads);  // the upload did not go through
    }
    try (Engine engine = tiny(EngineConfig.builder("kws"))) {
      assertEquals("none", engine.infer(Fixtures.confident(1), Fixtures.TINY_SHAPE).uplink);
    }
    KnowcacheException.FailedPreconditionException noStaged = assertThrows(
        KnowcacheException.FailedPreconditionException.class,
        () -> tiny(EngineConfig.builder("kws").split("always", 1)));
    assertTrue(noStaged.getMessage().contains("knowcache export --staged"),
        noStaged.getMessage());
    KnowcacheException.InvalidInputException badMode = assertThrows(
        KnowcacheException.InvalidInputException.class,
        () -> tiny(EngineConfig.builder("kws").split("sometimes", 1)));
    assertEquals("split mode 'sometimes' is not one of off, auto, always", badMode.getMessage());
  }

  @Test
  void dataThatDoesNotFillTheShapeIsRejectedWithTheCoresSentence() {
    try (Engine engine = tiny(EngineConfig.builder("kws"))) {
      KnowcacheException.InvalidInputException e = assertThrows(
          KnowcacheException.InvalidInputException.class,
          () -> engine.infer(new float[15], Fixtures.TINY_SHAPE));
      assertEquals("tensor of shape 1x16 and dtype float32 needs 64 bytes, got 60", e.getMessage());
    }
  }

  @Test
  void nullArgumentsAreRejectedBeforeTheCore() {
    try (Engine engine = tiny(EngineConfig.builder("kws"))) {
      assertThrows(NullPointerException.class, () -> engine.infer(null, Fixtures.TINY_SHAPE));
      assertThrows(NullPointerException.class, () -> engine.infer(UNSURE, null));
    }
  }
}
