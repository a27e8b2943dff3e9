// CUDA kernels of multi-scale deformable attention (forward and backward).
// One warp per (n, q, m) output row; lane k handles channels k, k+32, ...  Loads and stores of value,
// output and grad_value are therefore contiguous across the lanes of a warp.  Inputs fp32/fp64/fp16/bf16,
// accumulation in fp32 (fp64 for fp64).  The backward reduces the per-channel terms of the location and
// weight gradients with warp shuffles and scatters grad_value with atomicAdd into an accumulator of the
// accumulation type (one extra cast at the end for fp16/bf16).
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "ms_deform_attn.h"

namespace adaptiveclick {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;

struct Dims {
  int64_t N, S, M, D, Lq, L, P;
};

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts, const scalar_t* __restrict__ loc,
                               const scalar_t* __restrict__ attn, scalar_t* __restrict__ out, Dims d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t t = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (t >= d.N * d.Lq * d.M) return;
  const int64_t m = t % d.M;
  const int64_t n = t / (d.Lq * d.M);
  for (int64_t k0 = 0; k0 < d.D; k0 += kWarp) {
    const int64_t k = k0 + lane;
    acc_t acc = 0;
    for (int64_t l = 0; l < d.L; ++l) {
      const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
      const scalar_t* vlevel = value + ((n * d.S + starts[l]) * d.M + m) * d.D;
      for (int64_t p = 0; p < d.P; ++p) {
        const int64_t i = (t * d.L + l) * d.P + p;
        const auto b = Bilinear<acc_t>::make(static_cast<acc_t>(loc[2 * i]), static_cast<acc_t>(loc[2 * i + 1]), H, W);
        if (!b.any || k >= d.D) continue;
        const acc_t w = static_cast<acc_t>(attn[i]);
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          if (!b.inside(c, H, W)) continue;
          acc += w * b.weight(c) * static_cast<acc_t>(vlevel[(b.cy(c) * W + b.cx(c)) * d.M * d.D + k]);
        }
      }
    }
    if (k < d.D) out[t * d.D + k] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                                const int64_t* __restrict__ starts, const scalar_t* __restrict__ loc,
                                const scalar_t* __restrict__ attn, const scalar_t* __restrict__ grad_out,
                                at::opmath_type<scalar_t>* __restrict__ grad_value, scalar_t* __restrict__ grad_loc,
                                scalar_t* __restrict__ grad_attn, Dims d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t t = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (t >= d.N * d.Lq * d.M) return;  // whole warps exit together: t is uniform within a warp
  const int64_t m = t % d.M;
  const int64_t n = t / (d.Lq * d.M);
  const scalar_t* g = grad_out + t * d.D;
  for (int64_t l = 0; l < d.L; ++l) {
    const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
    const int64_t row0 = (n * d.S + starts[l]) * d.M + m;
    for (int64_t p = 0; p < d.P; ++p) {
      const int64_t i = (t * d.L + l) * d.P + p;
      const auto b = Bilinear<acc_t>::make(static_cast<acc_t>(loc[2 * i]), static_cast<acc_t>(loc[2 * i + 1]), H, W);
      const acc_t w = static_cast<acc_t>(attn[i]);
      acc_t dot[4] = {0, 0, 0, 0};
      if (b.any) {
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          if (!b.inside(c, H, W)) continue;
          const int64_t off = (row0 + (b.cy(c) * W + b.cx(c)) * d.M) * d.D;
          const acc_t cw = w * b.weight(c);
          for (int64_t k = lane; k < d.D; k += kWarp) {
            const acc_t gk = static_cast<acc_t>(g[k]);
            dot[c] += gk * static_cast<acc_t>(value[off + k]);
            atomicAdd(grad_value + off + k, cw * gk);
          }
        }
      }
#pragma unroll
      for (int c = 0; c < 4; ++c) dot[c] = warp_sum(dot[c]);
      if (lane == 0) {
        acc_t ga = 0;
#pragma unroll
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

Dims dims_of(const at::Tensor& value, const at::Tensor& loc) {
  return {value.size(0), value.size(1), value.size(2), value.size(3), loc.size(1), loc.size(3), loc.size(4)};
}

int64_t num_blocks(const Dims& d) {
  const int64_t threads = d.N * d.Lq * d.M * kWarp;
  return (threads + kThreads - 1) / kThreads;
}

}  // namespace

at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value_in, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                       const at::Tensor& attn_weight) {
  const c10::cuda::CUDAGuard guard(value_in.device());
  const auto value = value_in.contiguous();
  const auto shapes = spatial_shapes.contiguous();
  const auto starts = level_start_index.contiguous();
  const auto loc = sampling_loc.contiguous();
  const auto attn = attn_weight.contiguous();
  const Dims d = dims_of(value, loc);
  auto out = at::empty({d.N, d.Lq, d.M * d.D}, value.options());
  if (out.numel() == 0) return out.zero_();
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_forward", [&] {
    forward_kernel<scalar_t><<<num_blocks(d), kThreads, 0, stream>>>(
        value.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(), loc.data_ptr<scalar_t>(),
        attn.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), d);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_cuda_backward(const at::Tensor& value_in, const at::Tensor& spatial_shapes,
                                                     const at::Tensor& level_start_index,
                                                     const at::Tensor& sampling_loc, const at::Tensor& attn_weight,
                                                     const at::Tensor& grad_output) {
  const c10::cuda::CUDAGuard guard(value_in.device());
  const auto value = value_in.contiguous();
  const auto shapes = spatial_shapes.contiguous();
  const auto starts = level_start_index.contiguous();
  const auto loc = sampling_loc.contiguous();
  const auto attn = attn_weight.contiguous();
  const auto grad_out = grad_output.contiguous();
  const Dims d = dims_of(value, loc);
  auto grad_value = at::zeros(value.sizes(), value.options().dtype(at::toOpMathType(value.scalar_type())));
  auto grad_loc = at::zeros_like(loc);
  auto grad_attn = at::zeros_like(attn);
  if (d.N * d.Lq * d.M > 0) {
    const auto stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_backward", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      backward_kernel<scalar_t><<<num_blocks(d), kThreads, 0, stream>>>(
          value.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(), loc.data_ptr<scalar_t>(),
          attn.data_ptr<scalar_t>(), grad_out.data_ptr<scalar_t>(), grad_value.data_ptr<acc_t>(),
          grad_loc.data_ptr<scalar_t>(), grad_attn.data_ptr<scalar_t>(), d);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_value.to(value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace adaptiveclick
