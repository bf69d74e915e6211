// Peak memory of a GPU's caching allocator (what torch.cuda.max_memory_allocated reads),
// through c10's device-agnostic allocator interface: no CUDA headers needed to build, and
// a process without CUDA answers "unavailable" instead of failing.
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
