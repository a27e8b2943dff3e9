// Python bindings of adaptiveclick._C: device dispatch and argument checks of the MSDeformAttn kernels.
// The Python entry point (adaptiveclick/layers/ms_deform_attn/function.py) checks shapes with detailed
// messages first; the checks here guard direct callers of the extension.
#include "ms_deform_attn.h"

namespace adaptiveclick {
namespace {

void check_args(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                const at::Tensor& sampling_loc, const at::Tensor& attn_weight) {
  TORCH_CHECK(value.dim() == 4, "value must be (N, S, M, D), got ", value.sizes());
  TORCH_CHECK(sampling_loc.dim() == 6 && sampling_loc.size(5) == 2,
              "sampling_locations must be (N, Lq, M, L, P, 2), got ", sampling_loc.sizes());
  TORCH_CHECK(attn_weight.dim() == 5, "attention_weights must be (N, Lq, M, L, P), got ", attn_weight.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2 &&
                  spatial_shapes.size(0) == sampling_loc.size(3),
              "spatial_shapes must be (L, 2) with L = ", sampling_loc.size(3), ", got ", spatial_shapes.sizes());
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == spatial_shapes.size(0),
              "level_start_index must be (L,), got ", level_start_index.sizes());
  TORCH_CHECK(sampling_loc.size(0) == value.size(0) && sampling_loc.size(2) == value.size(2),
              "sampling_locations ", sampling_loc.sizes(), " does not match value ", value.sizes());
  for (int i = 0; i < 5; ++i)
    TORCH_CHECK(attn_weight.size(i) == sampling_loc.size(i), "attention_weights ", attn_weight.sizes(),
                " does not match sampling_locations ", sampling_loc.sizes());
  TORCH_CHECK(sampling_loc.scalar_type() == value.scalar_type() && attn_weight.scalar_type() == value.scalar_type(),
              "value, sampling_locations and attention_weights must share one dtype");
  TORCH_CHECK(sampling_loc.device() == value.device() && attn_weight.device() == value.device() &&
                  spatial_shapes.device() == value.device() && level_start_index.device() == value.device(),
              "all tensors must be on the device of value (", value.device(), ")");
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
              "spatial_shapes and level_start_index must be int64");
}

at::Tensor forward(const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
                   const at::Tensor& sampling_loc, const at::Tensor& attn_weight) {
  check_args(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return ms_deform_attn_cuda_forward(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
#else
    TORCH_CHECK(false, "adaptiveclick._C was built without CUDA support");
#endif
  }
  TORCH_CHECK(value.device().is_cpu(), "unsupported device ", value.device());
  return ms_deform_attn_cpu_forward(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
}

std::vector<at::Tensor> backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index, const at::Tensor& sampling_loc,
                                 const at::Tensor& attn_weight, const at::Tensor& grad_output) {
  check_args(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == value.size(0) &&
                  grad_output.size(1) == sampling_loc.size(1) && grad_output.size(2) == value.size(2) * value.size(3),
              "grad_output must be (N, Lq, M*D), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == value.scalar_type() && grad_output.device() == value.device(),
              "grad_output must match value in dtype and device");
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return ms_deform_attn_cuda_backward(value, spatial_shapes, level_start_index, sampling_loc, attn_weight,
                                        grad_output);
#else
    TORCH_CHECK(false, "adaptiveclick._C was built without CUDA support");
#endif
  }
  TORCH_CHECK(value.device().is_cpu(), "unsupported device ", value.device());
  return ms_deform_attn_cpu_backward(value, spatial_shapes, level_start_index, sampling_loc, attn_weight,
                                     grad_output);
}

bool compiled_with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace
}  // namespace adaptiveclick

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "adaptiveclick compiled operators (multi-scale deformable attention)";
  m.def("ms_deform_attn_forward", &adaptiveclick::forward, "MSDeformAttn forward");
  m.def("ms_deform_attn_backward", &adaptiveclick::backward, "MSDeformAttn backward: grad value, loc, weights");
  m.def("compiled_with_cuda", &adaptiveclick::compiled_with_cuda, "whether the CUDA kernels were built");
}
