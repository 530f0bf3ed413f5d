/* guard.h: fault containment for reads of the LMDB map (guard.c), internal to store/.
 *
 * A damaged data.mdb can make LMDB compute a page or a value that lies past the end of the file
 * (SIGBUS when touched) or a wild offset inside the map (SIGSEGV). store.c checks every value
 * against the file's bounds before it reads it; this is the backstop for what that check cannot
 * see (a damaged branch page that LMDB itself follows). Usage, in the function that runs the
 * read (the frame must stay live while armed):
 *
 *   store_guard_frame frame;
 *   if (sigsetjmp(frame.jmp, 0) == 0) {
 *     store_guard_arm(&frame);
 *     ... reads in a read-only transaction ...
 *     store_guard_disarm(&frame);
 *   } else {
 *     ... frame.sig, frame.addr: the fault; the frame is disarmed; end the transaction ...
 *   }
 *
 * Only read-only transactions are guarded: LMDB links cursors on the stack into a write
 * transaction, which cannot be unwound safely after a jump out of it. */
#ifndef PCC_STORE_GUARD_H
#define PCC_STORE_GUARD_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct store_guard_frame {
  sigjmp_buf jmp;
  struct store_guard_frame *prev; /* the frame armed before this one on this thread */
  int sig;                        /* after a fault: SIGBUS or SIGSEGV */
  const void *addr;               /* after a fault: the address that faulted */
} store_guard_frame;

/* Installs the SIGBUS and SIGSEGV handlers once per process (the handlers that were there
 * before, e.g. AddressSanitizer's, are chained to). False when sigaction fails. */
bool store_guard_install(void);

/* Declares the executable mapping that holds function (LMDB's: mdb_cursor_get) code whose faults
 * may be contained too, when it is a shared library (not the program itself). */
void store_guard_code(const void *function);

/* Declares [base, base + len) a map whose faults may be contained (at most 16 maps at once);
 * store_guard_forget takes it back. False when the table is full. */
bool store_guard_map(const void *base, size_t len);
void store_guard_forget(const void *base);

/* Called outside a signal handler when LMDB's own assertion fails (mdb_env_set_assert): with a
 * frame armed on this thread, jumps back to it (frame.sig SIGABRT, frame.addr NULL) and does not
 * return; returns when none is (LMDB then aborts). */
void store_guard_escape(void);

/* Arms frame on this thread (frames nest); store_guard_disarm takes it off again. */
void store_guard_arm(store_guard_frame *frame);
void store_guard_disarm(store_guard_frame *frame);

#endif
