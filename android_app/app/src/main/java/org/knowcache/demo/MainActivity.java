package org.knowcache.demo;

import android.Manifest;
import android.app.Activity;
import android.content.Intent;
import android.content.SharedPreferences;
import android.content.pm.PackageManager;
import android.graphics.Bitmap;
import android.graphics.BitmapFactory;
import android.os.Bundle;
import android.provider.MediaStore;
import android.text.InputType;
import android.view.View;
import android.widget.Button;
import android.widget.EditText;
import android.widget.FrameLayout;
import android.widget.LinearLayout;
import android.widget.ScrollView;
import android.widget.TextView;
import java.io.InputStream;
import org.knowcache.logic.ImageInput;
import org.knowcache.logic.ResultText;
import org.knowcache.runtime.EngineStats;
import org.knowcache.runtime.InferenceResult;
import org.knowcache.runtime.KnowcacheException;

/**
 * The demo: four screens behind four buttons. Listen (live voice commands,
 * each word with where it was answered and how fast), Image (a photo from the
 * camera or the gallery, classified), Settings (cloud URL, token, slots) and
 * Cache (slots, downloads, local rate). Views are built in code: the app has
 * no layout resources to keep in step.
 */
public final class MainActivity extends Activity {
  private static final int PICK_IMAGE = 1;
  private static final int TAKE_PHOTO = 2;
  private static final int AUDIO_PERMISSION = 3;
  private EngineHolder engines;
  private FrameLayout content;
  private TextView listenLog;
  private TextView imageResult;
  private Listener listener;

  @Override
  protected void onCreate(Bundle state) {
    super.onCreate(state);
    engines = new EngineHolder(this);
    LinearLayout root = new LinearLayout(this);
    root.setOrientation(LinearLayout.VERTICAL);
    LinearLayout tabs = new LinearLayout(this);
    tabs.addView(tab("Listen", v -> showListen()));
    tabs.addView(tab("Image", v -> showImage()));
    tabs.addView(tab("Settings", v -> showSettings()));
    tabs.addView(tab("Cache", v -> showCache()));
    content = new FrameLayout(this);
    root.addView(tabs);
    root.addView(content, new LinearLayout.LayoutParams(LinearLayout.LayoutParams.MATCH_PARENT,
        LinearLayout.LayoutParams.MATCH_PARENT));
    setContentView(root);
    showListen();
  }

  @Override
  protected void onDestroy() {
    stopListening();
    engines.reset();
    super.onDestroy();
  }

  private Button tab(String label, View.OnClickListener onClick) {
    Button b = new Button(this);
    b.setText(label);
    b.setOnClickListener(onClick);
    return b;
  }

  private void show(View view) {
    content.removeAllViews();
    ScrollView scroll = new ScrollView(this);
    scroll.addView(view);
    content.addView(scroll);
  }

  private LinearLayout column() {
    LinearLayout c = new LinearLayout(this);
    c.setOrientation(LinearLayout.VERTICAL);
    c.setPadding(24, 24, 24, 24);
    return c;
  }

  // --- Listen -------------------------------------------------------------------------

  private void showListen() {
    LinearLayout c = column();
    Button toggle = new Button(this);
    toggle.setText(listener == null ? "Start listening" : "Stop listening");
    toggle.setOnClickListener(v -> {
      if (listener == null) {
        startListening();
      } else {
        stopListening();
      }
      showListen();
    });
    if (listenLog == null) {
      listenLog = new TextView(this);
      listenLog.setTypeface(android.graphics.Typeface.MONOSPACE);
    }
    if (listenLog.getParent() != null) {
      ((android.view.ViewGroup) listenLog.getParent()).removeView(listenLog);
    }
    c.addView(toggle);
    c.addView(listenLog);
    show(c);
  }

  private void startListening() {
    if (checkSelfPermission(Manifest.permission.RECORD_AUDIO)
        != PackageManager.PERMISSION_GRANTED) {
      requestPermissions(new String[] {Manifest.permission.RECORD_AUDIO}, AUDIO_PERMISSION);
      return;
    }
    try {
      listener = new Listener(engines.kws(), line -> runOnUiThread(() -> appendLine(line)));
    } catch (KnowcacheException e) {
      appendLine(e.getMessage());
      return;
    }
    new Thread(listener, "knowcache-listen").start();
  }

  private void stopListening() {
    if (listener != null) {
      listener.stop();
      listener = null;
    }
  }

  private void appendLine(String line) {
    listenLog.append(line + "\n");
  }

  @Override
  public void onRequestPermissionsResult(int code, String[] permissions, int[] results) {
    if (code == AUDIO_PERMISSION && results.length > 0
        && results[0] == PackageManager.PERMISSION_GRANTED) {
      startListening();
      showListen();
    }
  }

  // --- Image --------------------------------------------------------------------------

  private void showImage() {
    LinearLayout c = column();
    Button gallery = new Button(this);
    gallery.setText("Pick from the gallery");
    gallery.setOnClickListener(v -> startActivityForResult(
        new Intent(Intent.ACTION_GET_CONTENT).setType("image/*"), PICK_IMAGE));
    Button camera = new Button(this);
    camera.setText("Take a photo");
    camera.setOnClickListener(v -> startActivityForResult(
        new Intent(MediaStore.ACTION_IMAGE_CAPTURE), TAKE_PHOTO));
    imageResult = new TextView(this);
    c.addView(gallery);
    c.addView(camera);
    c.addView(imageResult);
    show(c);
  }

  @Override
  protected void onActivityResult(int code, int result, Intent data) {
    if (result != RESULT_OK || data == null) {
      return;
    }
    Bitmap bitmap = null;
    try {
      if (code == PICK_IMAGE && data.getData() != null) {
        try (InputStream in = getContentResolver().openInputStream(data.getData())) {
          bitmap = BitmapFactory.decodeStream(in);
        }
      } else if (code == TAKE_PHOTO && data.getExtras() != null) {
        bitmap = (Bitmap) data.getExtras().get("data");  // the camera's thumbnail
      }
    } catch (java.io.IOException e) {
      imageResult.setText("cannot read the picture: " + e.getMessage());
      return;
    }
    if (bitmap != null) {
      classify(bitmap);
    }
  }

  private void classify(Bitmap bitmap) {
    int w = bitmap.getWidth();
    int h = bitmap.getHeight();
    int[] argb = new int[w * h];
    bitmap.getPixels(argb, 0, w, 0, 0, w, h);
    try {
      float[] x = ImageInput.fromArgb(argb, w, h, 28);
      InferenceResult r = engines.vision().infer(x, new long[] {1, 1, 28, 28});
      imageResult.setText(ResultText.line(r.label, r.confidence,
          r.source.name().toLowerCase(java.util.Locale.ROOT), r.totalUs / 1000.0));
    } catch (KnowcacheException | IllegalArgumentException e) {
      imageResult.setText(e.getMessage());
    }
  }

  // --- Settings -----------------------------------------------------------------------

  private void showSettings() {
    SharedPreferences p = EngineHolder.prefs(this);
    LinearLayout c = column();
    EditText url = field(c, "Cloud URL (http://127.0.0.1:8000 with adb reverse; empty: none)",
        p.getString("cloud_url", ""), InputType.TYPE_TEXT_VARIATION_URI);
    EditText token = field(c, "Token", p.getString("token", ""),
        InputType.TYPE_TEXT_VARIATION_PASSWORD);
    EditText slots = field(c, "Slots", String.valueOf(p.getInt("slots", 2)),
        InputType.TYPE_CLASS_NUMBER);
    Button apply = new Button(this);
    apply.setText("Apply");
    TextView status = new TextView(this);
    apply.setOnClickListener(v -> {
      int n;
      try {
        n = Integer.parseInt(slots.getText().toString().trim());
      } catch (NumberFormatException e) {
        status.setText("Slots must be a whole number");
        return;
      }
      p.edit().putString("cloud_url", url.getText().toString().trim())
          .putString("token", token.getText().toString()).putInt("slots", n).apply();
      stopListening();
      engines.reset();
      status.setText("Saved; the engines restart with these settings.");
    });
    c.addView(apply);
    c.addView(status);
    show(c);
  }

  private EditText field(LinearLayout parent, String label, String value, int type) {
    TextView l = new TextView(this);
    l.setText(label);
    EditText e = new EditText(this);
    e.setInputType(InputType.TYPE_CLASS_TEXT | type);
    if (type == InputType.TYPE_CLASS_NUMBER) {
      e.setInputType(type);
    }
    e.setText(value);
    parent.addView(l);
    parent.addView(e);
    return e;
  }

  // --- Cache --------------------------------------------------------------------------

  private void showCache() {
    LinearLayout c = column();
    TextView text = new TextView(this);
    StringBuilder sb = new StringBuilder();
    try {
      for (String task : new String[] {"kws", "vision"}) {
        org.knowcache.runtime.Engine e = task.equals("kws") ? engines.kws() : engines.vision();
        EngineStats s = e.stats();
        sb.append(task).append(": ")
            .append(ResultText.cacheLine(s.cache.slotsUsed, s.cache.residentBytes, s.localRate()))
            .append("\n  cached ").append(e.cachedIds()).append(", active ").append(e.activeId())
            .append("\n  ").append(s.queries).append(" queries: ").append(s.local)
            .append(" local, ").append(s.cloud).append(" cloud, ").append(s.degraded)
            .append(" degraded, ").append(s.keptPrivate).append(" kept private, ")
            .append(s.keptLocalOnly).append(" kept offline\n  downloads ").append(s.fetches).append(" (")
            .append(s.fetchFailures).append(" failed, ").append(s.fetchedBytes)
            .append(" bytes)").append(s.lastFetchError.isEmpty() ? "" : ": " + s.lastFetchError)
            .append("\n\n");
      }
    } catch (KnowcacheException e) {
      sb.append(e.getMessage());
    }
    text.setText(sb.toString());
    Button refresh = new Button(this);
    refresh.setText("Refresh");
    refresh.setOnClickListener(v -> showCache());
    c.addView(refresh);
    c.addView(text);
    show(c);
  }
}
