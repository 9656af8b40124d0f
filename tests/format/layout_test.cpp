// Scale-factor layout offsets of src/common/format.h (SPEC.md §4) against brute-force enumeration,
// SPEC's check values and the public scale_shape().
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "common/format.h"
#include "nvfp4kv/quantize.h"

namespace {

namespace fmt = nvfp4kv::fmt;
using nvfp4kv::Recipe;
using nvfp4kv::SfLayout;

constexpr int kLinear = 0, k128x4 = 1, k8x4 = 2;

TEST(SfLayout, SpecCheckValues128x4) {
  // SPEC.md §4, Kv = 6.
  EXPECT_EQ(fmt::sf_offset(k128x4, 0, 0, 6), 0);
  EXPECT_EQ(fmt::sf_offset(k128x4, 0, 3, 6), 3);
  EXPECT_EQ(fmt::sf_offset(k128x4, 0, 4, 6), 512);
  EXPECT_EQ(fmt::sf_offset(k128x4, 1, 0, 6), 16);
  EXPECT_EQ(fmt::sf_offset(k128x4, 32, 0, 6), 4);
  EXPECT_EQ(fmt::sf_offset(k128x4, 127, 7, 6), 1023);
  EXPECT_EQ(fmt::sf_offset(k128x4, 128, 0, 6), 1024);
}

TEST(SfLayout, HandValues8x4AndLinear) {
  // 8x4 with Kv = 6 (Kt = 2): a tile is 8 rows × 4 columns = 32 bytes, row-major inside.
  EXPECT_EQ(fmt::sf_offset(k8x4, 0, 0, 6), 0);
  EXPECT_EQ(fmt::sf_offset(k8x4, 0, 3, 6), 3);
  EXPECT_EQ(fmt::sf_offset(k8x4, 1, 0, 6), 4);
  EXPECT_EQ(fmt::sf_offset(k8x4, 7, 3, 6), 31);
  EXPECT_EQ(fmt::sf_offset(k8x4, 0, 4, 6), 32);
  EXPECT_EQ(fmt::sf_offset(k8x4, 7, 7, 6), 63);
  EXPECT_EQ(fmt::sf_offset(k8x4, 8, 0, 6), 64);
  EXPECT_EQ(fmt::sf_offset(kLinear, 3, 5, 6), 23);
}

// Every (m, k) of the padded grid maps into [0, rows · cols) and no two share an offset, so the
// map is a bijection onto the padded buffer (the counts are equal).
TEST(SfLayout, OffsetsAreABijectionOntoThePaddedGrid) {
  for (int layout : {kLinear, k128x4, k8x4}) {
    for (int64_t m_count : {1, 2, 7, 8, 9, 31, 32, 33, 100, 127, 128, 129, 255, 256, 300}) {
      for (int64_t kv : {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 17}) {
        const int64_t rows = fmt::sf_padded_rows(layout, m_count);
        const int64_t cols = fmt::sf_padded_cols(layout, kv);
        std::vector<int> hits(static_cast<size_t>(rows * cols), 0);
        for (int64_t m = 0; m < rows; ++m) {
          for (int64_t k = 0; k < cols; ++k) {
            const int64_t off = fmt::sf_offset(layout, m, k, kv);
            ASSERT_GE(off, 0);
            ASSERT_LT(off, rows * cols) << "layout " << layout << " M " << m_count << " Kv " << kv;
            ++hits[static_cast<size_t>(off)];
          }
        }
        for (int64_t i = 0; i < rows * cols; ++i) {
          ASSERT_EQ(hits[static_cast<size_t>(i)], 1)
              << "layout " << layout << " M " << m_count << " Kv " << kv << " offset " << i;
        }
      }
    }
  }
}

// The branch-free form the quantize block kernel uses (sf_offset_by_terms over sf_offset_terms)
// gives sf_offset's offset for every layout, on the padded grid of many row and column counts,
// and on rows far out (several 128-row bands, large column counts).
TEST(SfLayout, OffsetByTermsMatchesOffset) {
  for (int layout : {kLinear, k128x4, k8x4}) {
    for (int64_t kv : {1, 2, 3, 4, 5, 7, 8, 12, 17, 64, 100, 257, 2048}) {
      const fmt::SfOffsetTerms t = fmt::sf_offset_terms(layout, kv);
      const int64_t rows = fmt::sf_padded_rows(layout, 300), cols = fmt::sf_padded_cols(layout, kv);
      for (int64_t m = 0; m < rows; ++m)
        for (int64_t k = 0; k < cols; ++k)
          ASSERT_EQ(static_cast<int64_t>(fmt::sf_offset_by_terms(t, static_cast<uint32_t>(m), static_cast<uint32_t>(k))),
                    fmt::sf_offset(layout, m, k, kv))
              << "layout " << layout << " Kv " << kv << " m " << m << " k " << k;
      for (int64_t m : {1023, 4096, 65535, 131071})
        for (int64_t k : {int64_t(0), cols - 1})
          ASSERT_EQ(static_cast<int64_t>(fmt::sf_offset_by_terms(t, static_cast<uint32_t>(m), static_cast<uint32_t>(k))),
                    fmt::sf_offset(layout, m, k, kv))
              << "layout " << layout << " Kv " << kv << " m " << m << " k " << k;
    }
  }
}

// The padding itself: rows to 128 / 8, columns to 4; linear has none.
TEST(SfLayout, PaddedShape) {
  EXPECT_EQ(fmt::sf_padded_rows(kLinear, 300), 300);
  EXPECT_EQ(fmt::sf_padded_cols(kLinear, 6), 6);
  EXPECT_EQ(fmt::sf_padded_rows(k128x4, 1), 128);
  EXPECT_EQ(fmt::sf_padded_rows(k128x4, 128), 128);
  EXPECT_EQ(fmt::sf_padded_rows(k128x4, 129), 256);
  EXPECT_EQ(fmt::sf_padded_cols(k128x4, 6), 8);
  EXPECT_EQ(fmt::sf_padded_cols(k128x4, 4), 4);
  EXPECT_EQ(fmt::sf_padded_rows(k8x4, 9), 16);
  EXPECT_EQ(fmt::sf_padded_cols(k8x4, 1), 4);
}

// Brute-force description of the 128x4 layout from the cuBLAS block-scaling documentation:
// 128×4 tiles laid out row of tiles after row of tiles; inside a tile, row r goes to
// 16·(r % 32) + 4·(r / 32), and the 4 columns are consecutive bytes.
TEST(SfLayout, MatchesTileDescription) {
  for (int64_t kv : {1, 3, 4, 6, 9}) {
    const int64_t kt = (kv + 3) / 4;
    int64_t tile_base = 0;
    for (int64_t tile_m = 0; tile_m < 3; ++tile_m) {
      for (int64_t tile_k = 0; tile_k < kt; ++tile_k, tile_base += 512) {
        for (int64_t r = 0; r < 128; ++r) {
          for (int64_t c = 0; c < 4; ++c) {
            ASSERT_EQ(fmt::sf_offset(k128x4, tile_m * 128 + r, tile_k * 4 + c, kv),
                      tile_base + 16 * (r % 32) + 4 * (r / 32) + c);
          }
        }
      }
    }
    int64_t base8 = 0;
    for (int64_t tile_m = 0; tile_m < 5; ++tile_m) {
      for (int64_t tile_k = 0; tile_k < kt; ++tile_k, base8 += 32) {
        for (int64_t r = 0; r < 8; ++r) {
          for (int64_t c = 0; c < 4; ++c) {
            ASSERT_EQ(fmt::sf_offset(k8x4, tile_m * 8 + r, tile_k * 4 + c, kv), base8 + 4 * r + c);
          }
        }
      }
    }
  }
}

TEST(SfLayout, PublicScaleShape) {
  // nvfp4: K = 96 → Kv = 6; mxfp4: K = 96 → Kv = 3.
  auto s = nvfp4kv::scale_shape(Recipe::kNvfp4, SfLayout::kLinear, 300, 96);
  EXPECT_EQ(s.rows, 300);
  EXPECT_EQ(s.cols, 6);
  s = nvfp4kv::scale_shape(Recipe::kNvfp4, SfLayout::k128x4, 300, 96);
  EXPECT_EQ(s.rows, 384);
  EXPECT_EQ(s.cols, 8);
  EXPECT_EQ(s.bytes(), 384 * 8);
  s = nvfp4kv::scale_shape(Recipe::kMxfp4, SfLayout::k128x4, 300, 96);
  EXPECT_EQ(s.rows, 384);
  EXPECT_EQ(s.cols, 4);
  s = nvfp4kv::scale_shape(Recipe::kFp4Block16, SfLayout::k8x4, 9, 16);
  EXPECT_EQ(s.rows, 16);
  EXPECT_EQ(s.cols, 4);
  s = nvfp4kv::scale_shape(Recipe::kNvfp4FourOverSix, SfLayout::k8x4, 0, 64);
  EXPECT_EQ(s.rows, 0);
  EXPECT_EQ(s.cols, 4);
}

TEST(RecipeNames, ParseAndPrintRoundTrip) {
  for (Recipe r : {Recipe::kNvfp4, Recipe::kNvfp4FourOverSix, Recipe::kMxfp4, Recipe::kFp4Block16}) {
    Recipe parsed{};
    ASSERT_TRUE(nvfp4kv::parse_recipe(nvfp4kv::recipe_name(r), &parsed));
    EXPECT_EQ(parsed, r);
  }
  Recipe r{};
  EXPECT_FALSE(nvfp4kv::parse_recipe("nvfp8", &r));
  EXPECT_STREQ(nvfp4kv::recipe_name(Recipe::kNvfp4FourOverSix), "nvfp4_4over6");
  EXPECT_EQ(nvfp4kv::recipe_block_elems(Recipe::kMxfp4), 32);
  EXPECT_EQ(nvfp4kv::recipe_block_elems(Recipe::kFp4Block16), 16);
  EXPECT_TRUE(nvfp4kv::recipe_has_global_scale(Recipe::kNvfp4FourOverSix));
  EXPECT_FALSE(nvfp4kv::recipe_has_global_scale(Recipe::kFp4Block16));
  for (SfLayout l : {SfLayout::kLinear, SfLayout::k128x4, SfLayout::k8x4}) {
    SfLayout parsed{};
    ASSERT_TRUE(nvfp4kv::parse_sf_layout(nvfp4kv::sf_layout_name(l), &parsed));
    EXPECT_EQ(parsed, l);
  }
  SfLayout l{};
  EXPECT_FALSE(nvfp4kv::parse_sf_layout("4x128", &l));
  nvfp4kv::ErrorMetric metric{};
  ASSERT_TRUE(nvfp4kv::parse_error_metric("mae", &metric));
  EXPECT_EQ(metric, nvfp4kv::ErrorMetric::kMae);
  EXPECT_FALSE(nvfp4kv::parse_error_metric("max", &metric));
}

}  // namespace
