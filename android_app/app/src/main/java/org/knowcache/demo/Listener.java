package org.knowcache.demo;

import android.media.AudioFormat;
import android.media.AudioRecord;
import android.media.MediaRecorder;
import android.os.SystemClock;
import java.util.function.Consumer;
import org.knowcache.logic.ResultText;
import org.knowcache.logic.UtteranceWindow;
import org.knowcache.logic.VoiceActivityDetector;
import org.knowcache.runtime.Engine;
import org.knowcache.runtime.InferenceResult;
import org.knowcache.runtime.KnowcacheException;

/**
 * Live voice commands, as `knowcache listen` does them: AudioRecord at 16 kHz
 * (a rate the Android CDD requires every device to record, so nothing is
 * resampled), 50 ms blocks into the voice-activity detector, a 1 s window
 * around each utterance into the kws engine. Runs on its own thread; each
 * command's line goes to {@code onLine}.
 */
final class Listener implements Runnable {
  private static final int RATE = VoiceActivityDetector.SAMPLE_RATE;
  private static final int BLOCK = 800;
  private static final String SILENCE = "_silence_";
  private final Engine engine;
  private final Consumer<String> onLine;
  private volatile boolean running = true;

  Listener(Engine engine, Consumer<String> onLine) {
    this.engine = engine;
    this.onLine = onLine;
  }

  void stop() {
    running = false;
  }

  @Override
  public void run() {
    int min = AudioRecord.getMinBufferSize(RATE, AudioFormat.CHANNEL_IN_MONO,
        AudioFormat.ENCODING_PCM_FLOAT);
    AudioRecord record = new AudioRecord(MediaRecorder.AudioSource.VOICE_RECOGNITION, RATE,
        AudioFormat.CHANNEL_IN_MONO, AudioFormat.ENCODING_PCM_FLOAT, Math.max(min, 4 * BLOCK * 4));
    if (record.getState() != AudioRecord.STATE_INITIALIZED) {
      onLine.accept("the microphone cannot record 16 kHz mono here");
      return;
    }
    VoiceActivityDetector vad = new VoiceActivityDetector();
    UtteranceWindow ring = new UtteranceWindow();
    float[] block = new float[BLOCK];
    record.startRecording();
    try {
      while (running) {
        int n = record.read(block, 0, BLOCK, AudioRecord.READ_BLOCKING);
        if (n <= 0) {
          onLine.accept("the microphone stopped (AudioRecord error " + n + ")");
          return;
        }
        float[] got = n == BLOCK ? block : java.util.Arrays.copyOf(block, n);
        long arrived = SystemClock.elapsedRealtime();
        ring.write(got);
        for (VoiceActivityDetector.Segment seg : vad.push(got)) {
          classify(ring, seg, arrived);
        }
      }
    } finally {
      record.stop();
      record.release();
    }
  }

  private void classify(UtteranceWindow ring, VoiceActivityDetector.Segment seg, long arrived) {
    try {
      InferenceResult r = engine.infer(ring.windowFor(seg), new long[] {1, RATE});
      if (SILENCE.equals(r.label)) {
        return;
      }
      // Latency from the end of the utterance as captured to the answer.
      double sinceEnd = (ring.total() - seg.end) * 1000.0 / RATE;
      double latencyMs = SystemClock.elapsedRealtime() - arrived + sinceEnd;
      onLine.accept(ResultText.line(r.label, r.confidence,
          r.source.name().toLowerCase(java.util.Locale.ROOT), latencyMs));
    } catch (KnowcacheException e) {
      onLine.accept(e.getMessage());
    } catch (IllegalStateException closed) {  // the settings rebuilt the engine
      running = false;
    }
  }
}
