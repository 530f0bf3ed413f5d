/* asan.h: PCC_ASAN is defined when this file is compiled with AddressSanitizer (gcc or clang).
 * The compiler module relaxes two things under it, each saying why where it does: the workers'
 * RLIMIT_AS (pool.c; ASan's shadow memory needs terabytes of address space) and the seccomp
 * filter (sandbox.c; the sanitizer runtime needs calls a compile does not). */
#ifndef PCC_COMPILER_ASAN_H
#define PCC_COMPILER_ASAN_H

#if defined(__SANITIZE_ADDRESS__)
#define PCC_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PCC_ASAN 1
#endif
#endif

#endif /* PCC_COMPILER_ASAN_H */
