// Multi-scale deformable attention kernels of adaptiveclick (our own implementation).
// Semantics: adaptiveclick/layers/ms_deform_attn/reference.py (bilinear, align_corners=False, zero padding).
// Layouts: value (N, S, M, D); spatial_shapes (L, 2) int64 [H, W]; level_start_index (L,) int64;
// sampling_loc (N, Lq, M, L, P, 2) normalised (x, y); attn_weight (N, Lq, M, L, P); output (N, Lq, M*D).
#pragma once
#include <torch/extension.h>

#include <cmath>
#include <vector>

#ifdef __CUDACC__
#define AC_HD __host__ __device__
#else
#define AC_HD
#endif

namespace adaptiveclick {

at::Tensor ms_deform_attn_cpu_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                      const at::Tensor& attn_weight);

std::vector<at::Tensor> ms_deform_attn_cpu_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_loc,
                                                    const at::Tensor& attn_weight, const at::Tensor& grad_output);

#ifdef WITH_CUDA
at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                       const at::Tensor& attn_weight);

std::vector<at::Tensor> ms_deform_attn_cuda_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                     const at::Tensor& level_start_index,
                                                     const at::Tensor& sampling_loc,
                                                     const at::Tensor& attn_weight, const at::Tensor& grad_output);
#endif

// Bilinear corner weights of the continuous pixel coordinate (x, y) = (loc_x * W - 0.5, loc_y * H - 0.5).
// Corners outside the map get valid = false (they contribute zero, like grid_sample's zero padding).
template <typename acc_t>
struct Bilinear {
  int64_t x0, y0;
  acc_t fx, fy;  // fractional parts
  bool any;      // false when the sample lies entirely outside the map (or is not finite)

  inline AC_HD static Bilinear make(acc_t loc_x, acc_t loc_y, int64_t H, int64_t W) {
    Bilinear b;
    const acc_t x = loc_x * static_cast<acc_t>(W) - acc_t(0.5);
    const acc_t y = loc_y * static_cast<acc_t>(H) - acc_t(0.5);
    // Written so that NaN compares false and is skipped; beyond [-1, W] no corner can be inside.
    b.any = (x >= acc_t(-1)) && (x <= static_cast<acc_t>(W)) && (y >= acc_t(-1)) && (y <= static_cast<acc_t>(H));
    if (b.any) {
      const acc_t xf = std::floor(x), yf = std::floor(y);
      b.x0 = static_cast<int64_t>(xf);
      b.y0 = static_cast<int64_t>(yf);
      b.fx = x - xf;
      b.fy = y - yf;
    } else {
      b.x0 = b.y0 = 0;
      b.fx = b.fy = acc_t(0);
    }
    return b;
  }
  // Corner c in {0: (y0, x0), 1: (y0, x0+1), 2: (y0+1, x0), 3: (y0+1, x0+1)}.
  inline AC_HD int64_t cx(int c) const { return x0 + (c & 1); }
  inline AC_HD int64_t cy(int c) const { return y0 + (c >> 1); }
  inline AC_HD bool inside(int c, int64_t H, int64_t W) const {
    const int64_t xx = cx(c), yy = cy(c);
    return any && xx >= 0 && xx < W && yy >= 0 && yy < H;
  }
  inline AC_HD acc_t weight(int c) const {
    const acc_t wx = (c & 1) ? fx : acc_t(1) - fx;
    const acc_t wy = (c >> 1) ? fy : acc_t(1) - fy;
    return wx * wy;
  }
};

}  // namespace adaptiveclick
