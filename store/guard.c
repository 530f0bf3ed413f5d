/* guard.c: contains SIGBUS and SIGSEGV raised by reads of a damaged LMDB map (see guard.h for
 * how store.c uses it, docs/OPERATIONS.md, "A damaged store", for what the server then does).
 *
 * The approach (the one SQLite's mmap users and LMDB users take for a file truncated under
 * them): a thread-local pointer to a sigjmp_buf, set only around a read section of the store;
 * one handler for SIGBUS and SIGSEGV, installed with SA_SIGINFO | SA_ONSTACK | SA_NODEFER.
 *   - armed on this thread, and the fault address lies inside a registered LMDB map: the frame is
 *     disarmed and the handler siglongjmps back into the read section, which ends its read-only
 *     transaction and reports the store damaged. SA_NODEFER leaves the signal unblocked after
 *     the jump, so sigsetjmp need not save the mask (no system call per read).
 *   - otherwise (a real bug, or a fault outside the map): the handler that was installed before
 *     ours is called (AddressSanitizer's, which reports and aborts), or, when that was the
 *     default action, the default is restored and the handler returns: the faulting instruction
 *     runs again and the process dies of the signal with a core, as it would have without us.
 *     A signal sent by kill() (not a fault) is raised again under the default action.
 * Everything the handler touches is async-signal-safe: thread-local and atomic loads,
 * sigaction, raise, siglongjmp. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "guard.h"

#define MAPS_MAX 16

static _Thread_local store_guard_frame *armed;
static _Atomic(uintptr_t) map_base[MAPS_MAX];
static _Atomic(size_t) map_len[MAPS_MAX];
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

static void on_fault(int sig, siginfo_t *info, void *context)
{
  store_guard_frame *frame = armed;
  if (frame != NULL && info != NULL && info->si_code > 0 && in_a_map(info->si_addr)) {
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
