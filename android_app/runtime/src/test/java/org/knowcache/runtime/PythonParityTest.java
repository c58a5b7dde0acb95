package org.knowcache.runtime;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * The Java library answers exactly as the Python runtime does: same labels,
 * sources and partitions, same confidences and entropies, on the shipped
 * models and tiny programs exported at test time; and it fails as the Python
 * runtime does, with the same exception class and the core's same sentence,
 * on missing, corrupt and tampered programs, wrong input shapes and bad
 * settings. tests/test_jni.py writes the Python side into parity.tsv and
 * errors.tsv.
 */
class PythonParityTest {
  private static final Map<String, Engine> engines = new HashMap<>();

  private static Engine engine(String dir, String plan, String cloud) {
    String key = dir + "|" + plan + "|" + cloud;
    return engines.computeIfAbsent(key, k -> Engine.fromModelsDir(dir, config(cloud),
        Fixtures.plan(plan)));
  }

  /** fetch hints off: a background download would change later answers. */
  private static EngineConfig config(String cloud) {
    return EngineConfig.builder("").cloudUrl(cloud.equals("-") ? "" : Fixtures.get(cloud))
        .fetchHints(false).build();
  }

  @AfterAll
  static void closeEngines() {
    engines.values().forEach(Engine::close);
  }

  // name models plan cloud input shape label index confidence entropy source partition hint
  @TestFactory
  Stream<DynamicTest> answersEqualPythons() throws IOException {
    List<DynamicTest> tests = new ArrayList<>();
    for (String[] row : Fixtures.rows("parity.tsv")) {
      tests.add(DynamicTest.dynamicTest(row[0], () -> {
        Engine engine = engine(row[1], row[2], row[3]);
        InferenceResult r = engine.infer(Fixtures.floats(Fixtures.dir().resolve(row[4])),
            Fixtures.shape(row[5]));
        assertEquals(row[6], r.label, "label");
        assertEquals(Integer.parseInt(row[7]), r.index, "index");
        assertEquals(Float.parseFloat(row[8]), r.confidence, 1e-5, "confidence");
        assertEquals(Float.parseFloat(row[9]), r.entropy, 1e-5, "entropy");
        assertEquals(row[10], r.source.name().toLowerCase(java.util.Locale.ROOT), "source");
        assertEquals(row[11], r.partitionId, "partition");
        assertEquals(row[12], r.partitionHint, "hint");
        assertTrue(r.totalUs > 0, "total_us");
      }));
    }
    assertTrue(tests.size() >= 10, "parity.tsv has too few cases: " + tests.size());
    return tests.stream();
  }

  // name models plan slots input shape python_class message
  @TestFactory
  Stream<DynamicTest> errorsEqualPythons() throws IOException {
    List<DynamicTest> tests = new ArrayList<>();
    for (String[] row : Fixtures.rows("errors.tsv")) {
      tests.add(DynamicTest.dynamicTest(row[0], () -> {
        Class<? extends KnowcacheException> expected = javaClassOf(row[6]);
        KnowcacheException e = assertThrows(KnowcacheException.class, () -> {
          EngineConfig config = EngineConfig.builder("").slots(Integer.parseInt(row[3])).build();
          try (Engine engine = Engine.fromModelsDir(row[1], config, Fixtures.plan(row[2]))) {
            engine.infer(Fixtures.floats(Fixtures.dir().resolve(row[4])), Fixtures.shape(row[5]));
          }
        });
        assertEquals(expected, e.getClass(), e.toString());
        assertEquals(row[7], e.getMessage());
      }));
    }
    assertTrue(tests.size() >= 6, "errors.tsv has too few cases: " + tests.size());
    return tests.stream();
  }

  /** InvalidInputError -> KnowcacheException.InvalidInputException; KnowcacheError -> base. */
  @SuppressWarnings("unchecked")
  private static Class<? extends KnowcacheException> javaClassOf(String pythonName)
      throws ClassNotFoundException {
    if (pythonName.equals("KnowcacheError")) {
      return KnowcacheException.class;
    }
    String simple = pythonName.replaceAll("Error$", "Exception");
    return (Class<? extends KnowcacheException>) Class.forName(
        "org.knowcache.runtime.KnowcacheException$" + simple);
  }
}
