// The emulator's kernel table: build.rs writes one translation unit per kernels/*.cu (and one
// per mutant, mutants.rs) that includes it after cuda_emu.h and lists its kernels with
// TANDEM_EMU_KERNEL_AS, and one that collects the tables (find_entry).
#pragma once

#include <stddef.h>

#include <utility>

namespace tandem_emu {

struct Entry {
    const char* name;
    void (*call)(void** args);  // unpacks the argument pointers and runs the kernel body
    size_t nargs;
    size_t sizes[32];
};

template <typename... A, size_t... I>
void call_with(void (*k)(A...), void** args, std::index_sequence<I...>) {
    k(*static_cast<typename std::remove_reference<A>::type*>(args[I])...);
}

template <typename... A> constexpr Entry make_entry(const char* name, void (*k)(A...),
                                                     void (*call)(void**)) {
    static_assert(sizeof...(A) <= 32, "at most 32 kernel arguments");
    return Entry{name, call, sizeof...(A), {sizeof(A)...}};
}

const Entry* find_entry(const char* name);

}  // namespace tandem_emu

// The kernel `k` (a C++ name), registered as `name` (a string literal).
#define TANDEM_EMU_KERNEL_AS(name, k)                                                         \
    ::tandem_emu::make_entry(name, &k, [](void** a) {                                         \
        ::tandem_emu::call_with(&k, a, std::make_index_sequence<                              \
                                           ::tandem_emu::Arity<decltype(&k)>::value>{});      \
    })

namespace tandem_emu {
template <typename F> struct Arity;
template <typename... A> struct Arity<void (*)(A...)> {
    static constexpr size_t value = sizeof...(A);
};
}  // namespace tandem_emu
