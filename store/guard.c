/* guard.c: contains SIGBUS and SIGSEGV raised by reads of a damaged LMDB map (see guard.h for
 * how store.c uses it, docs/OPERATIONS.md, "A damaged store", for what the server then does).
 *
 * The approach (the one SQLite's mmap users and LMDB users take for a file truncated under
 * them): a thread-local pointer to a sigjmp_buf, set only around a read section of the store;
 * one handler for SIGBUS and SIGSEGV, installed with SA_SIGINFO | SA_ONSTACK | SA_NODEFER.
 *   - armed on this thread, and the fault address lies inside a registered LMDB map, or the
 *     faulting instruction lies in LMDB's own code (a damaged node flag can make LMDB 0.9.24
 *     follow a NULL sub-cursor: a write to address 0x190 inside mdb_cursor_get): the frame is
 *     disarmed and the handler siglongjmps back into the read section, which ends its read-only
 *     transaction and reports the store damaged. SA_NODEFER leaves the signal unblocked after
 *     the jump, so sigsetjmp need not save the mask (no system call per read). A fault of our
 *     own code (store.c, a caller's callback) outside the map is never contained.
 *   - LMDB's own assertions (built into Debian's liblmdb: "Assertion 'IS_LEAF(mp)' failed in
 *     mdb_cursor_next()" on a damaged branch page) call store_guard_escape through
 *     mdb_env_set_assert: armed, it jumps back the same way; not armed, LMDB aborts.
 *   - otherwise (a real bug, or a fault outside the map): the handler that was installed before
 *     ours is called (AddressSanitizer's, which reports and aborts), or, when that was the
 *     default action, the default is restored and the handler returns: the faulting instruction
 *     runs again and the process dies of the signal with a core, as it would have without us.
 *     A signal sent by kill() (not a fault) is raised again under the default action.
 * Everything the handler touches is async-signal-safe: thread-local and atomic loads,
 * sigaction, raise, siglongjmp. */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "guard.h"

#define MAPS_MAX 16

static _Thread_local store_guard_frame *armed;
static _Atomic(uintptr_t) map_base[MAPS_MAX];
static _Atomic(size_t) map_len[MAPS_MAX];
static _Atomic(uintptr_t) code_start, code_end; /* LMDB's text, when it is a library of its own */
static struct sigaction previous_bus, previous_segv;
static pthread_once_t installed = PTHREAD_ONCE_INIT;
static bool install_ok;

static bool in_a_map(const void *addr)
{
  uintptr_t a = (uintptr_t)addr;
  for (int i = 0; i < MAPS_MAX; i++) {
    uintptr_t base = atomic_load(&map_base[i]);
    if (base != 0 && a >= base && a - base < atomic_load(&map_len[i]))
      return true;
  }
  return false;
}

/* The instruction that faulted, from the signal's context (0 where we do not know how). */
static uintptr_t fault_pc(const void *context)
{
  const ucontext_t *uc = context;
  if (uc == NULL)
    return 0;
#if defined(__x86_64__)
  return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
  return (uintptr_t)uc->uc_mcontext.pc;
#else
  return 0;
#endif
}

static bool in_code(uintptr_t pc)
{
  return pc != 0 && pc >= atomic_load(&code_start) && pc < atomic_load(&code_end);
}

static void on_fault(int sig, siginfo_t *info, void *context)
{
  store_guard_frame *frame = armed;
  if (frame != NULL && info != NULL && info->si_code > 0 &&
      (in_a_map(info->si_addr) || in_code(fault_pc(context)))) {
    armed = frame->prev;
    frame->sig = sig;
    frame->addr = info->si_addr;
    siglongjmp(frame->jmp, 1);
  }
  const struct sigaction *previous = sig == SIGBUS ? &previous_bus : &previous_segv;
  if ((previous->sa_flags & SA_SIGINFO) && previous->sa_sigaction != NULL) {
    previous->sa_sigaction(sig, info, context);
    return;
  }
  if (!(previous->sa_flags & SA_SIGINFO) && previous->sa_handler != SIG_DFL &&
      previous->sa_handler != SIG_IGN) {
    previous->sa_handler(sig);
    return;
  }
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, NULL);
  if (info == NULL || info->si_code <= 0)
    raise(sig); /* sent, not a fault: it would not come again */
}

static void install(void)
{
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = on_fault;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  install_ok = sigaction(SIGBUS, &action, &previous_bus) == 0 &&
               sigaction(SIGSEGV, &action, &previous_segv) == 0;
}

bool store_guard_install(void)
{
  pthread_once(&installed, install);
  return install_ok;
}

void store_guard_code(const void *function)
{
  Dl_info where;
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (dladdr(function, &where) == 0 || where.dli_fname == NULL || n <= 0)
    return;
  self[n] = '\0';
  if (strcmp(where.dli_fname, self) == 0)
    return; /* linked into the program: its text is ours too */
  FILE *maps = fopen("/proc/self/maps", "re");
  char line[PATH_MAX + 256];
  uintptr_t at = (uintptr_t)function;
  while (maps != NULL && fgets(line, sizeof line, maps) != NULL) {
    char *end;
    uintptr_t start = (uintptr_t)strtoull(line, &end, 16), stop;
    if (*end != '-')
      continue;
    stop = (uintptr_t)strtoull(end + 1, &end, 16);
    if (at >= start && at < stop && strncmp(end, " r-x", 4) == 0) {
      atomic_store(&code_start, start);
      atomic_store(&code_end, stop);
    }
  }
  if (maps != NULL)
    fclose(maps);
}

bool store_guard_map(const void *base, size_t len)
{
  for (int i = 0; i < MAPS_MAX; i++) {
    uintptr_t expected = 0;
    if (atomic_compare_exchange_strong(&map_base[i], &expected, (uintptr_t)1)) {
      atomic_store(&map_len[i], len);
      atomic_store(&map_base[i], (uintptr_t)base);
      return true;
    }
  }
  return false;
}

void store_guard_forget(const void *base)
{
  for (int i = 0; i < MAPS_MAX; i++)
    if (atomic_load(&map_base[i]) == (uintptr_t)base) {
      atomic_store(&map_len[i], 0);
      atomic_store(&map_base[i], 0);
    }
}

void store_guard_escape(void)
{
  store_guard_frame *frame = armed;
  if (frame == NULL)
    return;
  armed = frame->prev;
  frame->sig = SIGABRT;
  frame->addr = NULL;
  siglongjmp(frame->jmp, 1);
}

void store_guard_arm(store_guard_frame *frame)
{
  frame->prev = armed;
  frame->sig = 0;
  frame->addr = NULL;
  armed = frame;
}

void store_guard_disarm(store_guard_frame *frame)
{
  armed = frame->prev;
}
