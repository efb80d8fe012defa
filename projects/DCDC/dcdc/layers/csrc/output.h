// Output tensors of the native forward kernels.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace dcdc {

// A new tensor for a kernel to write, with transparent huge pages requested for its pages.
//
// Why: a large fresh tensor usually lands on pages the process has never touched. glibc serves
// every block above its mmap threshold (adaptive, at most 32 MiB) by a fresh mmap, unmaps it on
// free and trims the heap's free top, so the kernel's first write faults in one 4 KiB page at a
// time, every call, and on a VM a fault costs about as much as writing the page (the README's
// Performance section has the numbers). With MADV_HUGEPAGE (and
// the system's transparent huge pages in "madvise" or "always" mode) a first write faults in a
// 2 MiB page instead. Only the tensor's own whole pages are advised, and the advice is a hint:
// where it is refused or unsupported nothing changes.
inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kPage = 4096;
  constexpr size_t kMinBytes = size_t(4) << 20;  // at least two huge pages' worth
  const size_t bytes = out.nbytes();
  if (bytes >= kMinBytes) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(out.data_ptr());
    const uintptr_t first = (begin + kPage - 1) & ~(kPage - 1);
    const uintptr_t last = (begin + bytes) & ~(kPage - 1);
    madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
#endif
  return out;
}

}  // namespace dcdc
