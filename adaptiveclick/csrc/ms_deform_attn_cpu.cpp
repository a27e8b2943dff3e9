// C++ CPU kernels of multi-scale deformable attention (forward and backward), parallelised with
// at::parallel_for.  fp32/fp64/fp16/bf16 inputs; fp16/bf16 accumulate in fp32 (at::opmath_type).
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "ms_deform_attn.h"

namespace adaptiveclick {
namespace {

struct Dims {
  int64_t N, S, M, D, Lq, L, P;
};

Dims dims_of(const at::Tensor& value, const at::Tensor& sampling_loc) {
  return {value.size(0),        value.size(1),        value.size(2),       value.size(3),
          sampling_loc.size(1), sampling_loc.size(3), sampling_loc.size(4)};
}

template <typename scalar_t>
void forward_kernel(const scalar_t* value, const int64_t* shapes, const int64_t* starts, const scalar_t* loc,
                    const scalar_t* attn, scalar_t* out, const Dims& d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t tasks = d.N * d.Lq * d.M;  // one task = one (n, q, m): an output row of D values
  at::parallel_for(0, tasks, 16, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(d.D);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t m = t % d.M;
      const int64_t n = t / (d.Lq * d.M);
      std::fill(acc.begin(), acc.end(), acc_t(0));
      const int64_t lp_base = t * d.L * d.P;  // index of (n, q, m, 0, 0) in attn; loc is twice that
      for (int64_t l = 0; l < d.L; ++l) {
        const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
        const scalar_t* vlevel = value + ((n * d.S + starts[l]) * d.M + m) * d.D;
        for (int64_t p = 0; p < d.P; ++p) {
          const int64_t i = lp_base + l * d.P + p;
          const acc_t w = static_cast<acc_t>(attn[i]);
          const auto b = Bilinear<acc_t>::make(static_cast<acc_t>(loc[2 * i]), static_cast<acc_t>(loc[2 * i + 1]), H, W);
          if (!b.any) continue;
          for (int c = 0; c < 4; ++c) {
            if (!b.inside(c, H, W)) continue;
            const acc_t cw = w * b.weight(c);
            const scalar_t* v = vlevel + (b.cy(c) * W + b.cx(c)) * d.M * d.D;
            for (int64_t k = 0; k < d.D; ++k) acc[k] += cw * static_cast<acc_t>(v[k]);
          }
        }
      }
      scalar_t* o = out + t * d.D;
      for (int64_t k = 0; k < d.D; ++k) o[k] = static_cast<scalar_t>(acc[k]);
    }
  });
}

// grad_value is accumulated in acc_t; each task owns one (n, m) pair, so the columns of grad_value it writes
// (all S tokens of head m of sample n) belong to no other task and no atomics are needed.
template <typename scalar_t>
void backward_kernel(const scalar_t* value, const int64_t* shapes, const int64_t* starts, const scalar_t* loc,
                     const scalar_t* attn, const scalar_t* grad_out, at::opmath_type<scalar_t>* grad_value,
                     scalar_t* grad_loc, scalar_t* grad_attn, const Dims& d) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, d.N * d.M, 1, [&](int64_t begin, int64_t end) {
    for (int64_t nm = begin; nm < end; ++nm) {
      const int64_t n = nm / d.M, m = nm % d.M;
      for (int64_t q = 0; q < d.Lq; ++q) {
        const int64_t t = (n * d.Lq + q) * d.M + m;
        const scalar_t* g = grad_out + t * d.D;
        for (int64_t l = 0; l < d.L; ++l) {
          const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
          const int64_t row0 = (n * d.S + starts[l]) * d.M + m;  // row of (n, level start, m)
          for (int64_t p = 0; p < d.P; ++p) {
            const int64_t i = t * d.L * d.P + l * d.P + p;
            const acc_t w = static_cast<acc_t>(attn[i]);
            const auto b = Bilinear<acc_t>::make(static_cast<acc_t>(loc[2 * i]), static_cast<acc_t>(loc[2 * i + 1]), H, W);
            acc_t dot[4] = {0, 0, 0, 0};  // <grad_out, value at corner c>
            if (b.any) {
              for (int c = 0; c < 4; ++c) {
                if (!b.inside(c, H, W)) continue;
                const int64_t off = (row0 + (b.cy(c) * W + b.cx(c)) * d.M) * d.D;
                const scalar_t* v = value + off;
                acc_t* gv = grad_value + off;
                const acc_t cw = w * b.weight(c);
                acc_t s = 0;
                for (int64_t k = 0; k < d.D; ++k) {
                  const acc_t gk = static_cast<acc_t>(g[k]);
                  s += gk * static_cast<acc_t>(v[k]);
                  gv[k] += cw * gk;
                }
                dot[c] = s;
              }
            }
            // d(sample)/dw = sum_c weight_c * v_c; d(sample)/dx_pix, d/dy_pix from the bilinear form,
            // and x_pix = loc_x * W - 0.5 so d/dloc_x = W * d/dx_pix (likewise for y with H).
            acc_t ga = 0;
            for (int c = 0; c < 4; ++c) ga += b.weight(c) * dot[c];
            const acc_t gx = w * ((acc_t(1) - b.fy) * (dot[1] - dot[0]) + b.fy * (dot[3] - dot[2]));
            const acc_t gy = w * ((acc_t(1) - b.fx) * (dot[2] - dot[0]) + b.fx * (dot[3] - dot[1]));
            grad_attn[i] = static_cast<scalar_t>(ga);
            grad_loc[2 * i] = static_cast<scalar_t>(gx * static_cast<acc_t>(W));
            grad_loc[2 * i + 1] = static_cast<scalar_t>(gy * static_cast<acc_t>(H));
          }
        }
      }
    }
  });
}

}  // namespace

at::Tensor ms_deform_attn_cpu_forward(const at::Tensor& value_in, const at::Tensor& spatial_shapes_in,
                                      const at::Tensor& level_start_index_in, const at::Tensor& sampling_loc_in,
                                      const at::Tensor& attn_weight_in) {
  const auto value = value_in.contiguous();
  const auto shapes = spatial_shapes_in.to(at::kLong).contiguous();
  const auto starts = level_start_index_in.to(at::kLong).contiguous();
  const auto loc = sampling_loc_in.contiguous();
  const auto attn = attn_weight_in.contiguous();
  const Dims d = dims_of(value, loc);
  auto out = at::empty({d.N, d.Lq, d.M * d.D}, value.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cpu_forward", [&] {
    forward_kernel<scalar_t>(value.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
                             loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), d);
  });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_cpu_backward(const at::Tensor& value_in, const at::Tensor& spatial_shapes_in,
                                                    const at::Tensor& level_start_index_in,
                                                    const at::Tensor& sampling_loc_in, const at::Tensor& attn_weight_in,
                                                    const at::Tensor& grad_output_in) {
  const auto value = value_in.contiguous();
  const auto shapes = spatial_shapes_in.to(at::kLong).contiguous();
  const auto starts = level_start_index_in.to(at::kLong).contiguous();
  const auto loc = sampling_loc_in.contiguous();
  const auto attn = attn_weight_in.contiguous();
  const auto grad_out = grad_output_in.contiguous();
  const Dims d = dims_of(value, loc);
  const auto acc_type = at::toOpMathType(value.scalar_type());
  auto grad_value = at::zeros(value.sizes(), value.options().dtype(acc_type));
  auto grad_loc = at::empty_like(loc);
  auto grad_attn = at::empty_like(attn);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cpu_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_kernel<scalar_t>(value.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
                              loc.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(),
                              grad_value.data_ptr<acc_t>(), grad_loc.data_ptr<scalar_t>(),
                              grad_attn.data_ptr<scalar_t>(), d);
  });
  return {grad_value.to(value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace adaptiveclick
