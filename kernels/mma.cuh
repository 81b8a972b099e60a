// One warp-wide tensor-core product, written against the PTX instruction rather than
// nvcuda::wmma because its register layout is specified (PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type"), so a kernel can build operands straight from loaded
// registers and reuse one product's result as the next one's operand without a trip through
// shared memory. The emulator (kernels/emu/cuda_emu.h) implements the same layout.
//
// mma_bf16_16816(d, a, b): d += A B for A 16 x 16 and B 16 x 8 bf16, d 16 x 8 f32. With
// g = lane / 4 and t = lane % 4, each 32-bit register holds two bf16, the lower-indexed element
// in the low half:
//   a[0] = A[g][2t, 2t+1]      a[1] = A[g+8][2t, 2t+1]
//   a[2] = A[g][2t+8, 2t+9]    a[3] = A[g+8][2t+8, 2t+9]
//   b[0] = B[2t, 2t+1][g]      b[1] = B[2t+8, 2t+9][g]
//   d[0], d[1] = D[g][2t, 2t+1]    d[2], d[3] = D[g+8][2t, 2t+1]
// Every lane of the warp must call it together (sm_80 and later).
#pragma once

#include <stdint.h>

#ifndef TANDEM_EMU
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4],
                                               const uint32_t (&b)[2]) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif
