/* pool.c: the compiler worker pool declared in compiler/compiler.h.
 *
 * Each slot holds one worker process reached through a socketpair on its fds 0 and 1 (the frame
 * protocol of compiler/frame.h). A compile takes an idle slot under the pool mutex, then talks to
 * its worker without the lock, bounded by poll() against a deadline. A worker that times out,
 * dies or breaks the protocol is killed and reaped by the thread that saw it fail, and its slot
 * marked dead; pcc_compiler_repair starts the replacement once the failure has been answered
 * (the server's dispatch threads call it), or the next compile that finds no idle worker does,
 * and fails fast with PCC_COMPILER_SPAWN when it cannot start instead of waiting for a worker
 * that will never come. Before taking an idle worker, a compile checks every idle one: one that
 * died or was stopped while idle, or that says something unasked, is killed and marked dead
 * too, so that no request is sent to it. A worker that has answered max_compiles compiles is
 * replaced the same way (recycled), so that one a hostile source may have subverted does not
 * keep serving, and so is one whose anonymous resident memory has passed max_rss after a
 * compile: an interpreter's heap keeps the peak of its largest compile (CPython's arenas and
 * glibc's heap give little back), so without this two workers stayed at 75 to 125 MB after a
 * prewarm of sympy. What a worker sends is decoded by reply.c.
 */
#include "compiler.h"

#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/capability.h>


#include "asan.h"
#include "expose.h"
#include "frame.h"
#include "reply.h"
#include "pcc_log.h"

/* Limits come from proto/pcc_limits.h (through frame.h); the pool's own are timeouts and sizes
 * derived from those limits. */
#define POOL_DEFAULT_TIMEOUT_MS 10000u
#define POOL_HELLO_TIMEOUT_MS 10000
#define POOL_START_TICK_MS 100 /* how often a start that has not said hello checks its worker */
#define POOL_NAME_MAX (2 * PCC_WORKER_NAME_PART_MAX + 2) /* "implementation-version" */
#define POOL_COMPILE_HEADER_LEN (PCC_FRAME_PREFIX_LEN + 1 + 4)

typedef enum {
  SLOT_DEAD, /* no process; the next compile that finds no idle slot starts one */
  SLOT_IDLE, /* a live worker waiting for a request */
  SLOT_BUSY, /* owned by one compile call (talking to it, or replacing it) */
} slot_state;

typedef struct {
  slot_state state;
  pid_t pid;         /* 0 when none */
  int fd;            /* the pool's end of the socketpair; -1 when none */
  unsigned compiles; /* answered by this worker */
} pool_slot;

struct pcc_compiler {
  pthread_mutex_t lock;
  pthread_cond_t changed; /* a slot went idle or dead, a compile left, or the pool closes */
  pool_slot *slots;
  unsigned nslots;
  unsigned active; /* compile calls inside the pool */
  bool closing;
  char **argv; /* owned copy, NULL-terminated */
  unsigned timeout_ms;
  uint64_t memory_limit;
  size_t max_frame;
  bool drop_privileges;
  uid_t uid;
  gid_t gid;
  unsigned max_compiles;
  uint64_t max_rss; /* bytes of RssAnon; 0: no limit */
  compiler_expose expose; /* argv[0] behind a directory the uid cannot search (expose.h) */
  pcc_magic magic;
  char name[POOL_NAME_MAX];
  _Atomic uint64_t restarts;
  _Atomic uint64_t recycles;
};

const char *pcc_compiler_strerror(pcc_compiler_status rc)
{
  switch (rc) {
  case PCC_COMPILER_OK: return "success";
  case PCC_COMPILER_SPAWN: return "a compiler worker could not be started";
  case PCC_COMPILER_CRASHED: return "the compiler worker died while compiling";
  case PCC_COMPILER_TIMEOUT: return "the compiler worker timed out and was killed";
  case PCC_COMPILER_PROTOCOL: return "the compiler worker broke the frame protocol";
  case PCC_COMPILER_TOOBIG: return "the request exceeds the frame limit";
  case PCC_COMPILER_CLOSED: return "the compiler pool is shutting down";
  case PCC_COMPILER_NOMEM: return "out of memory";
  case PCC_COMPILER_INVALID: return "invalid argument";
  }
  return "unknown compiler status";
}

/* ---- time and raw I/O -------------------------------------------------------------------- */

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t now_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Waits until fd is ready for events (or hung up) or the deadline passes. */
static pcc_compiler_status wait_fd(int fd, short events, int64_t deadline)
{
  for (;;) {
    struct pollfd p = {.fd = fd, .events = events, .revents = 0};
    int64_t left = deadline - now_ms();
    int n;
    if (left <= 0)
      return PCC_COMPILER_TIMEOUT;
    n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
    if (n > 0)
      return PCC_COMPILER_OK; /* readiness, POLLHUP or POLLERR: the next call tells */
    if (n < 0 && errno != EINTR)
      return PCC_COMPILER_CRASHED;
  }
}

/* Sends len bytes before the deadline. A closed peer is a crash; SIGPIPE is never raised. */
static pcc_compiler_status send_full(int fd, const void *buf, size_t len, int64_t deadline)
{
  const uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pcc_compiler_status rc = wait_fd(fd, POLLOUT, deadline);
      if (rc != PCC_COMPILER_OK)
        return rc;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return PCC_COMPILER_CRASHED; /* EPIPE, ECONNRESET, ... */
    }
  }
  return PCC_COMPILER_OK;
}

/* Receives exactly len bytes before the deadline. EOF is a crash. */
static pcc_compiler_status recv_full(int fd, void *buf, size_t len, int64_t deadline)
{
  uint8_t *p = buf;
  while (len > 0) {
    ssize_t n = recv(fd, p, len, MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pcc_compiler_status rc = wait_fd(fd, POLLIN, deadline);
      if (rc != PCC_COMPILER_OK)
        return rc;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      return PCC_COMPILER_CRASHED;
    }
  }
  return PCC_COMPILER_OK;
}

/* Reads one frame of at most max bytes (type + payload). On success *payload (caller frees) holds
 * *len bytes plus a NUL terminator that is not counted. */
static pcc_compiler_status read_frame(int fd, size_t max, int64_t deadline, uint8_t *type,
                                      uint8_t **payload, size_t *len)
{
  uint8_t prefix[PCC_FRAME_PREFIX_LEN];
  pcc_compiler_status rc = recv_full(fd, prefix, sizeof prefix, deadline);
  size_t payload_len = 0;
  uint8_t *buf;
  if (rc == PCC_COMPILER_OK)
    rc = pcc_reply_prefix(prefix, max, type, &payload_len);
  if (rc != PCC_COMPILER_OK)
    return rc;
  buf = malloc(payload_len + 1); /* the payload, plus the NUL */
  if (!buf)
    return PCC_COMPILER_NOMEM;
  rc = recv_full(fd, buf, payload_len, deadline);
  if (rc != PCC_COMPILER_OK) {
    free(buf);
    return rc;
  }
  buf[payload_len] = '\0';
  *payload = buf;
  *len = payload_len;
  return PCC_COMPILER_OK;
}

static void put_u32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)(v & 0xff);
  p[1] = (uint8_t)((v >> 8) & 0xff);
  p[2] = (uint8_t)((v >> 16) & 0xff);
  p[3] = (uint8_t)((v >> 24) & 0xff);
}

/* ---- worker processes -------------------------------------------------------------------- */

/* In the child between fork and exec: only async-signal-safe calls. Confines the process as
 * compiler.h promises for every worker, whatever its program, then execs it. Never returns. */
static void child_exec(const pcc_compiler *c, int fd)
{
  struct rlimit no_core = {0, 0};
  struct rlimit few_fds = {PCC_WORKER_NOFILE, PCC_WORKER_NOFILE};
  struct sigaction dfl;
  sigset_t none;
  int high;

  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig != SIGKILL && sig != SIGSTOP)
      (void)sigaction(sig, &dfl, NULL);
  }
  sigemptyset(&none);
  (void)sigprocmask(SIG_SETMASK, &none, NULL);
  /* Own process group: a terminal's ^C reaches the server, which then closes the pool. No
   * PR_SET_PDEATHSIG: it fires when the forking *thread* exits, and replacements are forked by
   * whichever request thread saw a worker fail. A worker outlives a killed server only until
   * its next read of the socket, which then returns EOF and makes it exit. */
  (void)setpgid(0, 0);
  /* Move the socket above 2 first so dup2 never sees fd == 0/1 (which would keep CLOEXEC). */
  high = fcntl(fd, F_DUPFD, 3);
  if (high < 0 || dup2(high, 0) < 0 || dup2(high, 1) < 0)
    _exit(126);
  if (close_range(3, ~0u, 0) != 0) {
    struct rlimit nofile;
    int limit = 1024;
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY &&
        nofile.rlim_cur < 65536)
      limit = (int)nofile.rlim_cur;
    for (int i = 3; i < limit; i++)
      (void)close(i);
  }
  if (chdir("/") != 0 || setrlimit(RLIMIT_CORE, &no_core) != 0 ||
      setrlimit(RLIMIT_NOFILE, &few_fds) != 0)
    _exit(126);
  if (c->memory_limit != 0) {
    struct rlimit as = {(rlim_t)c->memory_limit, (rlim_t)c->memory_limit};
    if (setrlimit(RLIMIT_AS, &as) != 0)
      _exit(126);
  }
  if (c->expose.active && compiler_expose_apply(&c->expose) != 0)
    _exit(125);
  if (c->drop_privileges &&
      (setgroups(0, NULL) != 0 || setgid(c->gid) != 0 || setuid(c->uid) != 0 || getuid() != c->uid))
    _exit(126);
  /* No capability survives into the worker: a server that is not root changes the user with
   * CAP_SETUID and CAP_SETGID (deploy/systemd/pycached.service gives them as ambient ones,
   * which an exec would pass on), and a change of user from root keeps the inheritable set.
   * Empty permitted and inheritable sets empty the ambient one too. */
  struct __user_cap_header_struct cap_header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct no_caps[2];
  memset(no_caps, 0, sizeof no_caps);
  if (syscall(SYS_capset, &cap_header, no_caps) != 0)
    _exit(126);
  /* Neither the program nor anything it runs can gain privileges (setuid bits, file
   * capabilities); the embedded worker's seccomp filter needs it too. */
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    _exit(126);
  execv(c->argv[0], c->argv);
  _exit(127);
}

/* Starts one worker process; its hello has not been read yet. */
static pcc_compiler_status worker_fork(const pcc_compiler *c, pid_t *pid_out, int *fd_out)
{
  int sv[2];
  pid_t pid;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return PCC_COMPILER_SPAWN;
  pid = fork();
  if (pid < 0) {
    close(sv[0]);
    close(sv[1]);
    return PCC_COMPILER_SPAWN;
  }
  if (pid == 0)
    child_exec(c, sv[1]);
  close(sv[1]);
  (void)setpgid(pid, pid); /* also in the child: whichever runs first wins the race */
  *pid_out = pid;
  *fd_out = sv[0];
  return PCC_COMPILER_OK;
}

/* Closes fd (when >= 0), kills pid's process group and pid itself, and reaps pid. */
static void worker_kill(pid_t pid, int fd)
{
  if (fd >= 0)
    close(fd);
  if (pid > 1) {
    (void)kill(-pid, SIGKILL);
    (void)kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
  }
}

/* Has worker pid neither exited nor been stopped (SIGSTOP, SIGTSTP...)? waitid with WNOWAIT: a
 * dead one stays to be reaped by worker_kill. Non-blocking. */
static bool worker_running(pid_t pid)
{
  siginfo_t info;
  memset(&info, 0, sizeof info);
  return waitid(P_PID, (id_t)pid, &info, WEXITED | WSTOPPED | WNOHANG | WNOWAIT) == 0 &&
         info.si_pid == 0;
}

/* Reads and validates the hello (reply.h) of worker pid, which is given up as soon as the worker
 * has exited or been stopped: one that will not speak is not waited for until the deadline
 * (POOL_HELLO_TIMEOUT_MS is long, for slow starts), which blocked its slot and whoever started it. */
static pcc_compiler_status worker_hello(pid_t pid, int fd, int64_t deadline, pcc_magic *magic,
                                        char *name, size_t name_size)
{
  uint8_t type = 0, *payload = NULL;
  size_t len = 0;
  for (;;) {
    int64_t tick = now_ms() + POOL_START_TICK_MS;
    pcc_compiler_status rc = wait_fd(fd, POLLIN, tick < deadline ? tick : deadline);
    if (rc == PCC_COMPILER_OK)
      break;
    if (rc != PCC_COMPILER_TIMEOUT || now_ms() >= deadline || !worker_running(pid))
      return PCC_COMPILER_SPAWN;
  }
  if (read_frame(fd, PCC_FRAME_HELLO_MAX, deadline, &type, &payload, &len) != PCC_COMPILER_OK)
    return PCC_COMPILER_SPAWN;
  pcc_compiler_status rc = pcc_reply_hello(type, payload, len, magic, name, name_size);
  free(payload);
  return rc;
}

/* Starts a replacement worker and checks that it speaks for the pool's magic. On success the
 * caller owns *pid and *fd. */
static pcc_compiler_status worker_start(const pcc_compiler *c, pid_t *pid, int *fd)
{
  pcc_magic magic;
  char name[POOL_NAME_MAX];
  pcc_compiler_status rc = worker_fork(c, pid, fd);
  if (rc != PCC_COMPILER_OK)
    return rc;
  rc = worker_hello(*pid, *fd, now_ms() + POOL_HELLO_TIMEOUT_MS, &magic, name, sizeof name);
  if (rc == PCC_COMPILER_OK && !pcc_magic_equal(&magic, &c->magic))
    rc = PCC_COMPILER_SPAWN;
  if (rc != PCC_COMPILER_OK) {
    worker_kill(*pid, *fd);
    *pid = 0;
    *fd = -1;
  }
  return rc;
}

/* Is the idle worker of slot fit to be sent a request? Not when it has died or been stopped,
 * nor when its socket is readable or hung up: an idle worker has nothing to say. Non-blocking. */
static bool idle_worker_fit(const pool_slot *slot)
{
  struct pollfd p = {.fd = slot->fd, .events = POLLIN, .revents = 0};
  return worker_running(slot->pid) && poll(&p, 1, 0) == 0;
}

/* Kills and reaps the worker of slot and marks the slot dead (for pcc_compiler_repair or the next
 * compile that finds no idle worker). Caller holds the lock and has the slot to itself. */
static void slot_retire_locked(pool_slot *slot)
{
  worker_kill(slot->pid, slot->fd);
  slot->pid = 0;
  slot->fd = -1;
  slot->compiles = 0;
  slot->state = SLOT_DEAD;
}

/* ---- the pool ---------------------------------------------------------------------------- */

static void pool_free(pcc_compiler *c)
{
  if (!c)
    return;
  if (c->slots) {
    for (unsigned i = 0; i < c->nslots; i++)
      worker_kill(c->slots[i].pid, c->slots[i].fd);
    free(c->slots);
  }
  if (c->argv) {
    for (char **a = c->argv; *a; a++)
      free(*a);
    free(c->argv);
  }
  pthread_cond_destroy(&c->changed);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

pcc_compiler_status pcc_compiler_open(const pcc_compiler_config *config, pcc_compiler **out)
{
  pcc_compiler *c;
  size_t argc = 0;
  unsigned workers;
  int64_t deadline;

  if (!config || !out || !config->argv || !config->argv[0])
    return PCC_COMPILER_INVALID;
  while (config->argv[argc]) {
    if (++argc > PCC_WORKER_ARGS_MAX)
      return PCC_COMPILER_INVALID;
  }
  workers = config->workers;
  if (workers == 0) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    workers = cores > 0 ? (unsigned)(cores > PCC_WORKERS_AUTO_MAX ? PCC_WORKERS_AUTO_MAX : cores)
                        : 1u;
  } else if (workers > PCC_WORKERS_MAX) {
    return PCC_COMPILER_INVALID;
  }
  if (config->max_frame != 0 && (config->max_frame < 64 || config->max_frame > UINT32_MAX))
    return PCC_COMPILER_INVALID;

  c = calloc(1, sizeof *c);
  if (!c)
    return PCC_COMPILER_NOMEM;
  if (pthread_mutex_init(&c->lock, NULL) != 0) {
    free(c);
    return PCC_COMPILER_NOMEM;
  }
  if (pthread_cond_init(&c->changed, NULL) != 0) {
    pthread_mutex_destroy(&c->lock);
    free(c);
    return PCC_COMPILER_NOMEM;
  }
  atomic_init(&c->restarts, 0);
  atomic_init(&c->recycles, 0);
  c->timeout_ms = config->timeout_ms ? config->timeout_ms : POOL_DEFAULT_TIMEOUT_MS;
  c->max_frame = config->max_frame ? config->max_frame : (size_t)PCC_FRAME_MAX;
  c->memory_limit = config->memory_limit;
  c->drop_privileges = config->drop_privileges;
  c->uid = config->uid;
  c->gid = config->gid;
  c->max_compiles = config->max_compiles ? config->max_compiles : PCC_WORKER_COMPILES_DEFAULT;
  c->max_rss = config->max_rss;
#ifdef PCC_ASAN
  if (c->memory_limit != 0) {
    pcc_logf(PCC_LOG_WARN, "built with AddressSanitizer, compiler worker memory limit "
                     "(RLIMIT_AS) disabled");
    c->memory_limit = 0;
  }
#endif
  if (c->drop_privileges &&
      !compiler_expose_plan(config->argv[0], c->uid, c->gid, &c->expose)) {
    pool_free(c);
    return PCC_COMPILER_SPAWN;
  }
  c->nslots = workers;
  c->slots = calloc(workers, sizeof *c->slots);
  c->argv = calloc(argc + 1, sizeof *c->argv);
  if (!c->slots || !c->argv) {
    pool_free(c);
    return PCC_COMPILER_NOMEM;
  }
  for (unsigned i = 0; i < workers; i++) {
    c->slots[i].state = SLOT_DEAD;
    c->slots[i].fd = -1;
  }
  for (size_t i = 0; i < argc; i++) {
    c->argv[i] = strdup(config->argv[i]);
    if (!c->argv[i]) {
      pool_free(c);
      return PCC_COMPILER_NOMEM;
    }
  }

  /* Start them all, then read the hellos: the interpreters initialise in parallel. */
  for (unsigned i = 0; i < workers; i++) {
    if (worker_fork(c, &c->slots[i].pid, &c->slots[i].fd) != PCC_COMPILER_OK) {
      pool_free(c);
      return PCC_COMPILER_SPAWN;
    }
  }
  deadline = now_ms() + POOL_HELLO_TIMEOUT_MS;
  for (unsigned i = 0; i < workers; i++) {
    pcc_magic magic;
    char name[POOL_NAME_MAX];
    if (worker_hello(c->slots[i].pid, c->slots[i].fd, deadline, &magic, name, sizeof name) !=
            PCC_COMPILER_OK ||
        (i > 0 && !pcc_magic_equal(&magic, &c->magic))) {
      pool_free(c);
      return PCC_COMPILER_SPAWN;
    }
    if (i == 0) {
      c->magic = magic;
      memcpy(c->name, name, sizeof name);
    }
    c->slots[i].state = SLOT_IDLE;
  }
  *out = c;
  return PCC_COMPILER_OK;
}

void pcc_compiler_close(pcc_compiler *c)
{
  if (!c)
    return;
  pthread_mutex_lock(&c->lock);
  c->closing = true;
  /* Cut conversations in progress short: their reads see EOF and they return CLOSED. */
  for (unsigned i = 0; i < c->nslots; i++) {
    if (c->slots[i].state == SLOT_BUSY && c->slots[i].fd >= 0)
      (void)shutdown(c->slots[i].fd, SHUT_RDWR);
  }
  pthread_cond_broadcast(&c->changed);
  while (c->active > 0)
    pthread_cond_wait(&c->changed, &c->lock);
  pthread_mutex_unlock(&c->lock);
  pool_free(c);
}

const pcc_magic *pcc_compiler_magic(const pcc_compiler *c)
{
  return c ? &c->magic : NULL;
}

const char *pcc_compiler_name(const pcc_compiler *c)
{
  return c ? c->name : NULL;
}

unsigned pcc_compiler_workers(const pcc_compiler *c)
{
  return c ? c->nslots : 0;
}

uint64_t pcc_compiler_restarts(const pcc_compiler *c)
{
  return c ? atomic_load(&c->restarts) : 0;
}

uint64_t pcc_compiler_recycles(const pcc_compiler *c)
{
  return c ? atomic_load(&c->recycles) : 0;
}

unsigned pcc_compiler_busy(const pcc_compiler *c)
{
  pcc_compiler *pool = (pcc_compiler *)(uintptr_t)c; /* the lock only, as worker_pids */
  unsigned n = 0;
  if (!pool)
    return 0;
  pthread_mutex_lock(&pool->lock);
  for (unsigned i = 0; i < pool->nslots; i++)
    n += pool->slots[i].state == SLOT_BUSY;
  pthread_mutex_unlock(&pool->lock);
  return n;
}

unsigned pcc_compiler_alive(const pcc_compiler *c)
{
  return (unsigned)pcc_compiler_worker_pids(c, NULL, 0);
}

size_t pcc_compiler_worker_pids(const pcc_compiler *c, pid_t *out, size_t max)
{
  /* The mutex is not part of the pool's logical state; locking it does not modify the pool. */
  pcc_compiler *pool = (pcc_compiler *)(uintptr_t)c;
  size_t n = 0;
  if (!pool)
    return 0;
  pthread_mutex_lock(&pool->lock);
  for (unsigned i = 0; i < pool->nslots; i++) {
    if (pool->slots[i].pid > 0) {
      if (out && n < max)
        out[n] = pool->slots[i].pid;
      n++;
    }
  }
  pthread_mutex_unlock(&pool->lock);
  return n;
}

/* One request/answer exchange with the worker on fd. On OK, *out is set. Any other status leaves
 * the worker in an unknown state: the caller must kill it. */
static pcc_compiler_status exchange(const pcc_compiler *c, int fd, int opt, const char *path,
                                    size_t path_len, const void *src, size_t len,
                                    pcc_compile_result **out)
{
  uint8_t header[POOL_COMPILE_HEADER_LEN + PCC_PATH_MAX];
  uint64_t start = now_us(), elapsed;
  int64_t deadline = now_ms() + c->timeout_ms;
  uint8_t type = 0, *payload = NULL;
  size_t payload_len = 0;
  pcc_compile_result *result = NULL;
  pcc_compiler_status rc;

  /* Frame length = type + opt + path length + path + source; checked against max_frame. */
  put_u32(header, (uint32_t)(1 + 1 + 4 + path_len + len));
  header[4] = PCC_FRAME_COMPILE;
  header[5] = (uint8_t)opt;
  put_u32(header + 6, (uint32_t)path_len);
  memcpy(header + POOL_COMPILE_HEADER_LEN, path, path_len);
  rc = send_full(fd, header, POOL_COMPILE_HEADER_LEN + path_len, deadline);
  if (rc == PCC_COMPILER_OK)
    rc = send_full(fd, src, len, deadline);
  if (rc == PCC_COMPILER_OK)
    rc = read_frame(fd, c->max_frame, deadline, &type, &payload, &payload_len);
  if (rc == PCC_COMPILER_OK)
    rc = pcc_reply_answer(type, payload, payload_len, &result);
  if (rc != PCC_COMPILER_OK)
    return rc;
  elapsed = now_us() - start;
  result->compile_us = elapsed > UINT32_MAX ? UINT32_MAX : (uint32_t)elapsed;
  *out = result;
  return PCC_COMPILER_OK;
}

/* The anonymous resident memory of process pid in bytes (RssAnon: /proc/PID/statm's resident
 * less its shared pages, which are the file-backed and shared-memory ones); 0 when it cannot be
 * read. One small read of procfs, a few microseconds. */
static uint64_t worker_rss_anon(pid_t pid)
{
  char path[64], text[128];
  unsigned long long size = 0, resident = 0, shared = 0;
  ssize_t n;
  int fd;
  snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  n = read(fd, text, sizeof text - 1);
  close(fd);
  if (n <= 0)
    return 0;
  text[n] = '\0';
  if (sscanf(text, "%llu %llu %llu", &size, &resident, &shared) != 3 || shared > resident)
    return 0;
  return (uint64_t)(resident - shared) * (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Leaves the pool: the caller holds the lock. */
static void pool_leave(pcc_compiler *c)
{
  c->active--;
  pthread_cond_broadcast(&c->changed);
  pthread_mutex_unlock(&c->lock);
}

pcc_compiler_status pcc_compiler_compile(pcc_compiler *c, int opt, const char *path,
                                         const void *src, size_t len, pcc_compile_result **out)
{
  pool_slot *slot = NULL;
  size_t path_len;
  pid_t pid;
  int fd;
  bool recycle, closing, too_big;
  pcc_compiler_status rc;

  if (!c || !path || !out || (!src && len > 0) || opt < 0 || opt > PCC_OPT_MAX)
    return PCC_COMPILER_INVALID;
  path_len = strlen(path);
  if (path_len > PCC_PATH_MAX)
    return PCC_COMPILER_INVALID;
  if (len > c->max_frame || 1 + 1 + 4 + path_len + len > c->max_frame)
    return PCC_COMPILER_TOOBIG;

  pthread_mutex_lock(&c->lock);
  if (c->closing) {
    pthread_mutex_unlock(&c->lock);
    return PCC_COMPILER_CLOSED;
  }
  c->active++;
  while (!slot) {
    pool_slot *dead = NULL;
    if (c->closing) {
      pool_leave(c);
      return PCC_COMPILER_CLOSED;
    }
    for (unsigned i = 0; i < c->nslots; i++) {
      if (c->slots[i].state == SLOT_IDLE && !idle_worker_fit(&c->slots[i])) {
        slot_retire_locked(&c->slots[i]);
        atomic_fetch_add(&c->restarts, 1);
      }
    }
    for (unsigned i = 0; i < c->nslots && !slot; i++) {
      if (c->slots[i].state == SLOT_IDLE)
        slot = &c->slots[i];
      else if (c->slots[i].state == SLOT_DEAD && !dead)
        dead = &c->slots[i];
    }
    if (slot) {
      slot->state = SLOT_BUSY;
    } else if (dead) {
      /* Replace a worker that could not be restarted earlier; fail fast if it still can't. */
      dead->state = SLOT_BUSY;
      pthread_mutex_unlock(&c->lock);
      rc = worker_start(c, &pid, &fd);
      pthread_mutex_lock(&c->lock);
      if (rc != PCC_COMPILER_OK) {
        dead->state = SLOT_DEAD;
        pool_leave(c);
        return rc;
      }
      dead->pid = pid;
      dead->fd = fd;
      slot = dead;
    } else {
      pthread_cond_wait(&c->changed, &c->lock);
    }
  }
  pid = slot->pid;
  fd = slot->fd;
  pthread_mutex_unlock(&c->lock);

  rc = exchange(c, fd, opt, path, path_len, src, len, out);
  too_big = rc == PCC_COMPILER_OK && c->max_rss != 0 && worker_rss_anon(pid) > c->max_rss;

  pthread_mutex_lock(&c->lock);
  if (rc == PCC_COMPILER_OK && ++slot->compiles < c->max_compiles && !too_big) {
    slot->state = SLOT_IDLE;
    pool_leave(c);
    return rc;
  }
  /* Retire the worker: after a failure it is in an unknown state; after its last compile or one
   * that left it over max_rss (a recycle) the result stands. Its replacement is
   * pcc_compiler_repair's, after the answer. */
  recycle = rc == PCC_COMPILER_OK;
  closing = c->closing;
  if (closing && !recycle)
    rc = PCC_COMPILER_CLOSED;
  slot->pid = 0;
  slot->fd = -1;
  slot->compiles = 0;
  pthread_mutex_unlock(&c->lock);
  worker_kill(pid, fd);
  if (!closing)
    atomic_fetch_add(recycle ? &c->recycles : &c->restarts, 1);
  pthread_mutex_lock(&c->lock);
  slot->state = SLOT_DEAD;
  pool_leave(c);
  return rc;
}

void pcc_compiler_repair(pcc_compiler *c)
{
  if (!c)
    return;
  pthread_mutex_lock(&c->lock);
  /* an idle worker that died or was stopped is found here too, not only by the next compile
   * that looks at the idle ones: with another worker idle first, it could wait for long */
  for (unsigned i = 0; i < c->nslots && !c->closing; i++) {
    if (c->slots[i].state == SLOT_IDLE && !idle_worker_fit(&c->slots[i])) {
      slot_retire_locked(&c->slots[i]);
      atomic_fetch_add(&c->restarts, 1);
    }
  }
  for (unsigned i = 0; i < c->nslots && !c->closing; i++) {
    pool_slot *slot = &c->slots[i];
    pcc_compiler_status rc;
    pid_t pid;
    int fd;
    if (slot->state != SLOT_DEAD)
      continue;
    slot->state = SLOT_BUSY;
    c->active++;
    pthread_mutex_unlock(&c->lock);
    rc = worker_start(c, &pid, &fd);
    pthread_mutex_lock(&c->lock);
    if (rc == PCC_COMPILER_OK) {
      slot->pid = pid;
      slot->fd = fd;
      slot->state = SLOT_IDLE;
    } else {
      slot->state = SLOT_DEAD;
    }
    c->active--;
    pthread_cond_broadcast(&c->changed);
    if (rc != PCC_COMPILER_OK)
      break;
  }
  pthread_mutex_unlock(&c->lock);
}
