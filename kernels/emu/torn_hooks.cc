// The hooks GCC's -fsanitize=thread instrumentation calls in the torn mutants' units
// (kernels/emu/mutants.rs, built by build_emu.rs's torn_build). No sanitizer runtime is linked:
// these definitions are the only ones. The emulator notes where each thread loads from, and a
// store back there may switch to another block (runtime.cc's before_plain_store), which is what
// lets a plain read-modify-write lose an update there.
#include <stddef.h>

#include "cuda_emu.h"

#define TANDEM_LOADS(N)                                      \
    void __tsan_read##N(void* p) { ::tandem_emu::before_plain_load(p); }                  \
    void __tsan_unaligned_read##N(void* p) { ::tandem_emu::before_plain_load(p); }
#define TANDEM_STORES(N)                                                                  \
    void __tsan_write##N(void* p) { ::tandem_emu::before_plain_store(p); }                \
    void __tsan_unaligned_write##N(void* p) { ::tandem_emu::before_plain_store(p); }

extern "C" {
void __tsan_init() {}
TANDEM_LOADS(1)
TANDEM_LOADS(2)
TANDEM_LOADS(4)
TANDEM_LOADS(8)
TANDEM_LOADS(16)
TANDEM_STORES(1)
TANDEM_STORES(2)
TANDEM_STORES(4)
TANDEM_STORES(8)
TANDEM_STORES(16)
void __tsan_read_range(void* p, size_t) { ::tandem_emu::before_plain_load(p); }
void __tsan_write_range(void* p, size_t) { ::tandem_emu::before_plain_store(p); }
void __tsan_vptr_read(void**) {}
void __tsan_vptr_update(void**, void*) {}
}
