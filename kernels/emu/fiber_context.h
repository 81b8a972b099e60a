// Switching the emulator's fibers (runtime.cc): a context is a saved stack pointer (x86-64) or a
// ucontext, and `make_context` starts one on a given stack in a function that never returns.
#pragma once

#include <stddef.h>
#include <stdint.h>

// Switching fibers: on x86-64, a few instructions that save the callee-saved registers and swap
// stacks (ucontext's swapcontext also saves the signal mask, a system call per switch, which made
// the attention tests ~3x slower); elsewhere, ucontext.
#if defined(__x86_64__)
extern "C" void tandem_emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .globl tandem_emu_switch
    .type tandem_emu_switch, @function
tandem_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size tandem_emu_switch, .-tandem_emu_switch
)");
struct Context {
    void* sp = nullptr;
};
// A fresh context on `stack` that starts in `entry` (which must never return).
inline void make_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
    uintptr_t top = ((uintptr_t)(stack + bytes)) & ~(uintptr_t)15;
    void** sp = (void**)top;
    *--sp = nullptr;           // entry's return address slot: entry never returns
    *--sp = (void*)entry;      // popped by `ret`: rsp is then 8 mod 16, as after a call
    for (int i = 0; i < 6; ++i) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
    c.sp = sp;
}
inline void switch_context(Context& from, Context& to) { tandem_emu_switch(&from.sp, to.sp); }
#else
#include <ucontext.h>
namespace tandem_emu_ctx {
struct Context {
    ucontext_t uc;
};
inline void make_context(Context& c, char* stack, size_t bytes, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
inline void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
}  // namespace tandem_emu_ctx
using namespace tandem_emu_ctx;
#endif
