// What tch does not wrap, for fusion-core: the peak memory of a GPU's caching allocator
// (what torch.cuda.max_memory_allocated reads) through c10's device-agnostic allocator
// interface, so no CUDA headers are needed to build and a process without CUDA answers
// "unavailable" instead of failing; and autocast in a chosen precision.
#include <cstdint>

#include <c10/core/CachingDeviceAllocator.h>

extern "C" {

// Writes the peak allocated and peak reserved bytes of CUDA device `index`; returns 0, or
// -1 where no CUDA allocator is registered (no GPU, or libtorch_cuda not loaded).
int fusion_cuda_peak_bytes(int index, int64_t* allocated, int64_t* reserved) {
  try {
    auto* allocator = c10::GetAllocator(c10::DeviceType::CUDA);
    auto* device = dynamic_cast<c10::DeviceAllocator*>(allocator);
    if (device == nullptr || !device->initialized()) {
      return -1;
    }
    auto stats = device->getDeviceStats(static_cast<c10::DeviceIndex>(index));
    auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *allocated = stats.allocated_bytes[all].peak;
    *reserved = stats.reserved_bytes[all].peak;
    return 0;
  } catch (...) {
    return -1;
  }
}

// Starts the peaks afresh from the current use.
int fusion_cuda_reset_peak(int index) {
  try {
    auto* device = dynamic_cast<c10::DeviceAllocator*>(c10::GetAllocator(c10::DeviceType::CUDA));
    if (device == nullptr || !device->initialized()) {
      return -1;
    }
    device->resetPeakStats(static_cast<c10::DeviceIndex>(index));
    return 0;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"

// Mixed precision: autocast on `device_type` (0 CPU, 1 CUDA) in `dtype` (0 float16,
// 1 bfloat16), as torch.autocast does on entering and leaving its block.
#include <ATen/autocast_mode.h>

extern "C" {

int fusion_autocast_enter(int device_type, int dtype) {
  try {
    auto device = device_type == 1 ? at::kCUDA : at::kCPU;
    at::autocast::set_autocast_dtype(device, dtype == 1 ? at::kBFloat16 : at::kHalf);
    at::autocast::set_autocast_enabled(device, true);
    at::autocast::increment_nesting();
    return 0;
  } catch (...) {
    return -1;
  }
}

// Turns autocast on `device_type` on or off inside an autocast scope (0; -1 on failure).
int fusion_autocast_set_enabled(int device_type, int enabled) {
  try {
    auto device = device_type == 1 ? at::kCUDA : at::kCPU;
    at::autocast::set_autocast_enabled(device, enabled != 0);
    return 0;
  } catch (...) {
    return -1;
  }
}

int fusion_autocast_exit(int device_type) {
  try {
    auto device = device_type == 1 ? at::kCUDA : at::kCPU;
    at::autocast::set_autocast_enabled(device, false);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    return 0;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"

// AdamW over many parameters in one pass per parameter (torch.optim.AdamW(fused=True)):
// the update reads and writes each tensor once where the step written out in Rust makes
// about ten passes. All tensors on one device and of one type; returns 0, or -1 when the
// fused kernel refused them (the caller then steps parameter by parameter).
#include <vector>

#include <ATen/ops/_fused_adamw.h>

extern "C" {

int fusion_fused_adamw(at::Tensor* const* params, at::Tensor* const* grads, at::Tensor* const* exp_avgs,
                       at::Tensor* const* exp_avg_sqs, at::Tensor* const* steps, int64_t count, double lr,
                       double beta1, double beta2, double weight_decay, double eps) {
  try {
    std::vector<at::Tensor> p, g, m, v, s;
    for (int64_t i = 0; i < count; ++i) {
      p.push_back(*params[i]);
      g.push_back(*grads[i]);
      m.push_back(*exp_avgs[i]);
      v.push_back(*exp_avg_sqs[i]);
      s.push_back(*steps[i]);
    }
    at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps, false, false);
    return 0;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
