/* compiler.h: a pool of compiler worker processes for one interpreter backend.
 *
 * Each worker is a separate process (by default `pycached-cpython-worker`, which embeds CPython
 * through libpython) that speaks the frame protocol of compiler/frame.h over its stdin/stdout.
 * A worker compiles with the semantics of compile(source_bytes, path, "exec", dont_inherit=True,
 * optimize=opt) and answers marshal.dumps(code), or a structured compile error. A worker that
 * crashes, hangs past the timeout, exceeds its memory limit or breaks the protocol is killed and
 * replaced; the request it held fails with a status saying why, and the pool stays usable.
 * docs/DESIGN.md has the bigger picture.
 */
#ifndef PCC_COMPILER_H
#define PCC_COMPILER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto.h"

typedef struct pcc_compiler pcc_compiler;

typedef enum {
  PCC_COMPILER_OK = 0,
  PCC_COMPILER_SPAWN,    /* a worker could not be started (exec failed, bad hello) */
  PCC_COMPILER_CRASHED,  /* the worker died while compiling (signal, exit, memory limit) */
  PCC_COMPILER_TIMEOUT,  /* the worker did not answer within timeout_ms; it was killed */
  PCC_COMPILER_PROTOCOL, /* the worker sent a malformed or oversized frame; it was killed */
  PCC_COMPILER_TOOBIG,   /* the request exceeds the frame limit */
  PCC_COMPILER_CLOSED,   /* the pool is shutting down */
  PCC_COMPILER_NOMEM,
  PCC_COMPILER_INVALID,  /* bad arguments */
} pcc_compiler_status;

const char *pcc_compiler_strerror(pcc_compiler_status rc);

typedef struct {
  /* argv of the worker command: argv[0] is the executable path (execv, no PATH search). For
   * the embedded CPython worker: {"/.../pycached-cpython-worker", NULL}; for another
   * interpreter: {"/usr/bin/pypy3", "/.../pycached_worker.py", NULL}. At most
   * PCC_WORKER_ARGS_MAX arguments. Copied by _open. */
  const char *const *argv;
  unsigned workers;         /* processes, at most PCC_WORKERS_MAX; 0 = one per online core
                             * (at most PCC_WORKERS_AUTO_MAX) */
  unsigned timeout_ms;      /* per compile; 0 = 10000 */
  uint64_t memory_limit;    /* RLIMIT_AS of each worker in bytes; 0 = no limit */
  size_t max_frame;         /* largest frame either way; 0 = PCC_FRAME_MAX (64 MiB) */
  bool drop_privileges;     /* run the workers as uid/gid (no supplementary groups) */
  uid_t uid;
  gid_t gid;
  unsigned max_compiles;    /* compiles after which a worker is replaced by a fresh one, so that a
                             * worker a hostile source may have subverted does not serve for
                             * long; 0 = PCC_WORKER_COMPILES_DEFAULT */
  uint64_t max_rss;         /* bytes of anonymous resident memory (RssAnon) of a worker after a
                             * compile past which it is replaced by a fresh one: an interpreter's
                             * heap keeps what its largest compile needed; 0 = no limit */
} pcc_compiler_config;

/* Every worker process is started the same way, whatever its program: in its own process group,
 * the socket on fds 0 and 1, stderr kept, every other descriptor closed, working directory /,
 * RLIMIT_CORE 0, RLIMIT_NOFILE PCC_WORKER_NOFILE, RLIMIT_AS memory_limit, the uid/gid of the
 * config without supplementary groups, and PR_SET_NO_NEW_PRIVS; then execv. When that uid cannot
 * reach argv[0] (pcc_compiler_unreachable), the worker first gets a private mount namespace that
 * exposes the interpreter's prefix (expose.h); when it cannot be exposed, _open fails with
 * PCC_COMPILER_SPAWN. The embedded-CPython
 * worker also confines itself with a seccomp filter once its interpreter is ready (sandbox.c);
 * other interpreters (worker.py) get the rest but no filter.
 *
 * Starts the workers and reads each one's hello. All workers of one pool must report the same
 * magic, else PCC_COMPILER_SPAWN. On success *out owns the processes; close with
 * pcc_compiler_close. */
pcc_compiler_status pcc_compiler_open(const pcc_compiler_config *config, pcc_compiler **out);

/* Kills and reaps the workers and frees the pool; waits for compiles in progress to end (they
 * fail with PCC_COMPILER_CLOSED or finish). NULL is fine. */
void pcc_compiler_close(pcc_compiler *compiler);

/* What the workers reported in their hello; valid as long as the pool. */
const pcc_magic *pcc_compiler_magic(const pcc_compiler *compiler);
const char *pcc_compiler_name(const pcc_compiler *compiler);    /* e.g. "cpython-3.11.2" */
unsigned pcc_compiler_workers(const pcc_compiler *compiler);
/* Workers replaced since open (crash, timeout, protocol error). */
uint64_t pcc_compiler_restarts(const pcc_compiler *compiler);
/* Workers replaced since open because they had run max_compiles compiles or passed max_rss (not
 * counted above). */
uint64_t pcc_compiler_recycles(const pcc_compiler *compiler);
/* Workers compiling (or being replaced) now, and workers alive (a process started). */
unsigned pcc_compiler_busy(const pcc_compiler *compiler);
unsigned pcc_compiler_alive(const pcc_compiler *compiler);
/* Process ids of the live workers (for operators and tests): writes up to max of them into out
 * (out may be NULL when max is 0) and returns how many are alive, which may exceed max. A slot
 * whose worker could not be restarted has no pid. The pids are a snapshot: a worker may be
 * replaced right after the call. Thread-safe. */
size_t pcc_compiler_worker_pids(const pcc_compiler *compiler, pid_t *out, size_t max);

/* The outcome of one compile. Either code (marshal bytes) or a compile error with the
 * exception's type, message, line and offset (0 when unknown).
 *
 * A compile error is the source's fault, and the same source always gets it again, when compile()
 * raised SyntaxError (IndentationError, TabError, a bad coding declaration or undecodable bytes)
 * or ValueError (3.11's null bytes): the caller may store it like code. Any other exception
 * (MemoryError under the worker's memory limit, RecursionError or the parser's MemoryError on a
 * deeply nested source, marshalled code over the frame limit) sets transient: the worker could not
 * compile the source this time, which says nothing certain about the source; the caller must not
 * store it and should answer as for a failed worker (the server: 503). */
typedef struct {
  bool ok;
  uint8_t *marshal;          /* ok: marshal.dumps(code) */
  size_t marshal_len;
  char *error_type;          /* !ok: e.g. "SyntaxError" */
  char *error_message;       /* !ok: e.g. "invalid syntax" */
  int error_line;
  int error_offset;
  bool transient;            /* !ok: not the source's fault (see above); never true when ok */
  uint32_t compile_us;       /* wall time of the compile as seen by the pool */
} pcc_compile_result;

/* Compiles src (len bytes, exactly the source file's bytes) as module `path` at optimization
 * level opt (0..2). Blocks until a worker is free and has answered, at most timeout_ms once the
 * worker has the request. An idle worker that died or was stopped is replaced before a request
 * is sent to it; a worker that fails a compile (or is recycled) is killed and its slot left for
 * pcc_compiler_repair. Thread-safe. On PCC_COMPILER_OK *out is set (a compile error is still
 * PCC_COMPILER_OK with result->ok false); the caller frees it with pcc_compile_result_free. */
pcc_compiler_status pcc_compiler_compile(pcc_compiler *compiler, int opt, const char *path,
                                         const void *src, size_t len,
                                         pcc_compile_result **out);

void pcc_compile_result_free(pcc_compile_result *result);

/* Retires an idle worker that died or was stopped, then starts a worker in each slot that has
 * none: its worker failed, was found dead or stopped while
 * idle, or was recycled (pcc_compiler_compile leaves the replacement to this function, so that
 * no answer waits for a worker's start), or could not be started before. Blocks for the starts
 * (each at most the 10 s a hello may take); stops at the first that fails. Without it, the next
 * compile that finds no idle worker starts one itself. Thread-safe; the server's dispatch
 * threads call it after each compile they answered. */
void pcc_compiler_repair(pcc_compiler *compiler);

/* Whether uid/gid (without supplementary groups, as the workers run) cannot search one of the
 * directories on the way to path (symbolic links resolved): true with the first such directory
 * in dir (len bytes) and its permission bits in *mode (mode may be NULL). The pool exposes an
 * interpreter behind such a directory in a private mount namespace of each worker (the
 * directory above its bin/ at the same path, read-only; the rest of the covered directory is
 * hidden), so the caller uses this to say why a start failed: no namespace could be made (no
 * CAP_SYS_ADMIN), or the blocking directory lies inside the prefix. */
bool pcc_compiler_unreachable(const char *path, uid_t uid, gid_t gid, char *dir, size_t len,
                              unsigned *mode);

#endif /* PCC_COMPILER_H */
