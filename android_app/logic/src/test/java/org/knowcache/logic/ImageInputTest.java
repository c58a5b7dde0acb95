package org.knowcache.logic;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

class ImageInputTest {
  private static final int WHITE = 0xffffffff;
  private static final int BLACK = 0xff000000;

  /** A light square on black, twice the model's size: each 2x2 block averages. */
  @Test
  void averagesBlocksAndKeepsLightObjectsOnBlack() {
    int[] argb = new int[56 * 56];
    java.util.Arrays.fill(argb, BLACK);
    for (int y = 20; y < 36; y++) {
      for (int x = 20; x < 36; x++) {
        argb[y * 56 + x] = WHITE;
      }
    }
    argb[0] = 0xff646464;  // grey 100 in one pixel of the top-left block
    float[] img = ImageInput.fromArgb(argb, 56, 56, 28);
    assertEquals(1.0f, img[12 * 28 + 12], 1e-6);
    assertEquals(0.0f, img[5 * 28 + 5], 1e-6);
    assertEquals(100 / 4.0 / 255, img[0], 1e-6);
  }

  @Test
  void invertsAPhotoOfADarkObjectOnAWhiteTable() {
    int[] argb = new int[28 * 28];
    java.util.Arrays.fill(argb, WHITE);
    argb[14 * 28 + 14] = BLACK;
    float[] img = ImageInput.fromArgb(argb, 28, 28, 28);
    assertEquals(1.0f, img[14 * 28 + 14], 1e-6);
    assertEquals(0.0f, img[0], 1e-6);
  }

  @Test
  void tooSmallAPictureSaysWhatItNeeds() {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> ImageInput.fromArgb(new int[10 * 10], 10, 10, 28));
    assertEquals("need at least 28x28 pixels, got 10x10 (100 values)", e.getMessage());
  }
}
