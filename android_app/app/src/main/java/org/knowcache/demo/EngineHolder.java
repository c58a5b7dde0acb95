package org.knowcache.demo;

import android.content.Context;
import android.content.SharedPreferences;
import java.io.File;
import org.knowcache.runtime.Engine;
import org.knowcache.runtime.EngineConfig;

/**
 * The app's engines, one per task, built from files/models/<task> (where
 * `knowcache flash --adb --apk` copies the programs) with the settings screen's
 * cloud URL, token and slot count. Rebuilt when the settings change. Used from
 * the UI thread and the audio thread; the Engine serializes its own calls.
 */
final class EngineHolder {
  static final String PREFS = "settings";
  private final Context context;
  private Engine kws;
  private Engine vision;

  EngineHolder(Context context) {
    this.context = context.getApplicationContext();
  }

  static SharedPreferences prefs(Context context) {
    return context.getSharedPreferences(PREFS, Context.MODE_PRIVATE);
  }

  synchronized Engine kws() {
    if (kws == null) {
      kws = build("kws");
    }
    return kws;
  }

  synchronized Engine vision() {
    if (vision == null) {
      vision = build("vision");
    }
    return vision;
  }

  /** Closes both engines; the next call builds them with the current settings. */
  synchronized void reset() {
    if (kws != null) {
      kws.close();
      kws = null;
    }
    if (vision != null) {
      vision.close();
      vision = null;
    }
  }

  private Engine build(String task) {
    SharedPreferences p = prefs(context);
    File dir = new File(context.getFilesDir(), "models/" + task);
    EngineConfig config = EngineConfig.builder(task)
        .cloudUrl(p.getString("cloud_url", ""))
        .token(p.getString("token", ""))
        .slots(p.getInt("slots", 2))
        .build();
    // Throws KnowcacheException with the core's sentence (no models yet, bad settings...).
    return Engine.fromModelsDir(dir.getPath(), config);
  }
}
