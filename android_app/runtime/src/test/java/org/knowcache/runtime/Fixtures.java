package org.knowcache.runtime;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;

/**
 * What tests/test_jni.py prepares before it runs these tests on the host JVM:
 * tiny programs exported at test time, a real `knowcache serve`, inputs as
 * raw float32 files, and the Python runtime's answers and error sentences on
 * them (parity.tsv, errors.tsv). The folder is the system property
 * knowcache.fixtures; fixtures.properties names the rest.
 */
final class Fixtures {
  private static Properties properties;

  private Fixtures() {}

  static Path dir() {
    String dir = System.getProperty("knowcache.fixtures");
    if (dir == null) {
      throw new IllegalStateException("set -Dknowcache.fixtures: these tests are run by "
          + "tests/test_jni.py (make test-java), which prepares that folder");
    }
    return Paths.get(dir);
  }

  /** A value of fixtures.properties: tiny (models folder), cloud (URL), dead_cloud (URL)... */
  static synchronized String get(String key) {
    if (properties == null) {
      properties = new Properties();
      try (InputStream in = Files.newInputStream(dir().resolve("fixtures.properties"))) {
        properties.load(in);
      } catch (IOException e) {
        throw new IllegalStateException("cannot read fixtures.properties", e);
      }
    }
    String value = properties.getProperty(key);
    if (value == null) {
      throw new IllegalStateException("fixtures.properties has no " + key);
    }
    return value;
  }

  /** The rows of a tab-separated file under the fixtures folder, header skipped. */
  static List<String[]> rows(String name) throws IOException {
    List<String> lines = Files.readAllLines(dir().resolve(name));
    List<String[]> out = new ArrayList<>();
    for (String line : lines.subList(1, lines.size())) {
      if (!line.isEmpty()) {
        out.add(line.split("\t", -1));
      }
    }
    return out;
  }

  /** A little-endian float32 file. */
  static float[] floats(Path path) throws IOException {
    ByteBuffer bytes = ByteBuffer.wrap(Files.readAllBytes(path)).order(ByteOrder.LITTLE_ENDIAN);
    float[] out = new float[bytes.remaining() / 4];
    bytes.asFloatBuffer().get(out);
    return out;
  }

  /** "1,16" -> {1, 16}. */
  static long[] shape(String text) {
    return Arrays.stream(text.split(",")).mapToLong(Long::parseLong).toArray();
  }

  /** "cached", "ids:full,p1", "staged", "none". */
  static InstallPlan plan(String text) {
    if (text.startsWith("ids:")) {
      return InstallPlan.ids(text.substring(4).split(","));
    }
    switch (text) {
      case "cached":
        return InstallPlan.cached();
      case "staged":
        return InstallPlan.staged();
      case "none":
        return InstallPlan.none();
      default:
        throw new IllegalArgumentException("unknown plan " + text);
    }
  }

  /** The Python tiny-model input that the Pick models answer with class index at entropy ~0. */
  static float[] confident(int index) {
    float[] x = new float[16];
    x[index] = 2.0f;
    return x;
  }

  static final long[] TINY_SHAPE = {1, 16};
}
