package org.knowcache.logic;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * The app's platform-free listening logic finds what {@code knowcache listen}
 * finds: the same utterances (start, end, level), the same noise bursts
 * dropped, the same 1 s windows, the same printed lines. tests/test_android_logic.py
 * writes the recordings and the Python side into the folder -Dknowcache.fixtures.
 */
class ListenParityTest {
  private static final int BLOCK = 800;  // 50 ms, as the Python side feeds them

  private static Path dir() {
    String dir = System.getProperty("knowcache.fixtures");
    if (dir == null) {
      throw new IllegalStateException("run by tests/test_android_logic.py (make test-java)");
    }
    return Paths.get(dir);
  }

  private static float[] floats(Path path) throws IOException {
    ByteBuffer bytes = ByteBuffer.wrap(Files.readAllBytes(path)).order(ByteOrder.LITTLE_ENDIAN);
    float[] out = new float[bytes.remaining() / 4];
    bytes.asFloatBuffer().get(out);
    return out;
  }

  private static List<String[]> rows(String name) throws IOException {
    List<String[]> out = new ArrayList<>();
    for (String line : Files.readAllLines(dir().resolve(name))) {
      out.add(line.split("\t", -1));
    }
    return out;
  }

  // streams.tsv: stream, dropped; segments.tsv: stream, start, end, level_db, window_start
  @TestFactory
  Stream<DynamicTest> detectorFindsThePythonUtterances() throws IOException {
    List<String[]> segments = rows("segments.tsv");
    List<DynamicTest> tests = new ArrayList<>();
    for (String[] stream : rows("streams.tsv")) {
      tests.add(DynamicTest.dynamicTest(stream[0], () -> {
        float[] audio = floats(dir().resolve(stream[0] + ".f32"));
        VoiceActivityDetector vad = new VoiceActivityDetector();
        UtteranceWindow ring = new UtteranceWindow();
        List<String[]> expected = new ArrayList<>();
        for (String[] s : segments) {
          if (s[0].equals(stream[0])) {
            expected.add(s);
          }
        }
        int found = 0;
        for (int i = 0; i < audio.length; i += BLOCK) {
          float[] block = Arrays.copyOfRange(audio, i, Math.min(audio.length, i + BLOCK));
          ring.write(block);
          for (VoiceActivityDetector.Segment seg : vad.push(block)) {
            assertTrue(found < expected.size(), "an extra utterance: " + seg);
            String[] want = expected.get(found);
            assertEquals(Long.parseLong(want[1]), seg.start, "start of utterance " + found);
            assertEquals(Long.parseLong(want[2]), seg.end, "end of utterance " + found);
            assertEquals(Double.parseDouble(want[3]), seg.levelDb, 1e-6, "level");
            assertEquals(Long.parseLong(want[4]), UtteranceWindow.windowStart(seg));
            float[] window = floats(dir().resolve(stream[0] + "-window" + found + ".f32"));
            assertArrayEquals(window, ring.windowFor(seg), "window " + found);
            found++;
          }
        }
        assertEquals(expected.size(), found, "utterances found");
        assertEquals(Integer.parseInt(stream[1]), vad.dropped(), "noise bursts dropped");
      }));
    }
    assertTrue(tests.size() >= 2, "streams.tsv lists " + tests.size() + " recordings");
    return tests.stream();
  }

  // lines.tsv: word, confidence, source, latency_ms, the line knowcache listen prints
  @TestFactory
  Stream<DynamicTest> linesAreKnowcacheListens() throws IOException {
    List<DynamicTest> tests = new ArrayList<>();
    for (String[] row : rows("lines.tsv")) {
      tests.add(DynamicTest.dynamicTest(row[4], () -> assertEquals(row[4],
          ResultText.line(row[0], Float.parseFloat(row[1]), row[2], Double.parseDouble(row[3])))));
    }
    return tests.stream();
  }
}
