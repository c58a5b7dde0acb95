package org.knowcache.logic;

/**
 * A photo as the vision models' input: grey levels, box-averaged down to
 * size x size, scaled to [0, 1], and inverted when the picture's border is
 * light, since Fashion-MNIST shows light objects on black. Returns the
 * float[1 * 1 * size * size] that Engine.infer takes with shape {1, 1, size, size}.
 */
public final class ImageInput {
  private ImageInput() {}

  /** {@code argb}: width * height pixels, row-major, as Android's Bitmap.getPixels gives. */
  public static float[] fromArgb(int[] argb, int width, int height, int size) {
    if (argb.length != width * height || width < size || height < size) {
      throw new IllegalArgumentException("need at least " + size + "x" + size + " pixels, got "
          + width + "x" + height + " (" + argb.length + " values)");
    }
    float[] out = new float[size * size];
    for (int y = 0; y < size; y++) {
      int y0 = y * height / size;
      int y1 = (y + 1) * height / size;
      for (int x = 0; x < size; x++) {
        int x0 = x * width / size;
        int x1 = (x + 1) * width / size;
        double sum = 0;
        for (int yy = y0; yy < y1; yy++) {
          for (int xx = x0; xx < x1; xx++) {
            sum += grey(argb[yy * width + xx]);
          }
        }
        out[y * size + x] = (float) (sum / ((y1 - y0) * (x1 - x0)) / 255.0);
      }
    }
    if (borderMean(out, size) > 0.5) {
      for (int i = 0; i < out.length; i++) {
        out[i] = 1.0f - out[i];
      }
    }
    return out;
  }

  /** ITU-R BT.601 luma, as PIL's convert("L"). */
  static double grey(int argb) {
    int r = (argb >> 16) & 0xff;
    int g = (argb >> 8) & 0xff;
    int b = argb & 0xff;
    return (r * 299 + g * 587 + b * 114) / 1000.0;
  }

  private static double borderMean(float[] img, int size) {
    double sum = 0;
    for (int i = 0; i < size; i++) {
      sum += img[i] + img[(size - 1) * size + i] + img[i * size] + img[i * size + size - 1];
    }
    return sum / (4 * size);
  }
}
