/* sandbox.c: the seccomp filter pycached-cpython-worker installs once its interpreter is ready
 * (sandbox.h), and the probes its tests use to see that it holds.
 *
 * compile() never runs the source, but a hostile source that finds a memory bug in the parser
 * could make the worker do whatever its user may: write files, connect out, start programs, and
 * answer later requests with code of its choosing. Once the interpreter has loaded what a compile
 * may need (worker.c, preload), a compile only reads frames, computes, allocates and writes
 * answers, so the filter is an allow-list of exactly that; every other call kills the process
 * (SCMP_ACT_KILL_PROCESS), the pool sees the worker die, answers PCC_COMPILER_CRASHED and starts a
 * fresh one. A few calls that Python makes lazily and survives failing are refused with an error
 * instead (EACCES, as for an unreadable file): an import the preload did not foresee, linecache
 * looking up a warning's source line, the parser reading the line of a SyntaxError from disk, an
 * unknown coding declaration's module search. So a compile behaves as on a host whose files are
 * unreadable, which for the sources it is given is the same as anywhere (tests/unit/
 * test_compiler.c compares against the reference interpreter).
 *
 * Under AddressSanitizer (asan.h) the runtime needs calls a compile does not: LeakSanitizer
 * clones a tracer and ptraces the process at exit, a report reads /proc/self/maps. There the
 * filter is a deny-list instead: everything is allowed but what would change the file system,
 * reach the network, start a program or fork; those still kill, so the probes hold in both builds.
 * The allow-list is what release builds, and the tests of release builds, run.
 */
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "asan.h"

/* Open flags that write, create or truncate: an open with any of them kills. */
#define WRITE_FLAGS (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND)

#define ALLOW SCMP_ACT_ALLOW
#define REFUSE SCMP_ACT_ERRNO(EACCES)
#define KILL SCMP_ACT_KILL_PROCESS

/* One rule: a call, its action, and at most one condition, (argument & mask) == value. */
typedef struct {
  int nr; /* SCMP_SYS(name): negative when this architecture has no such call (skipped) */
  uint32_t action;
  unsigned n_args; /* 0 or 1 */
  struct scmp_arg_cmp arg;
} rule;

#define ANY 0, {0, SCMP_CMP_EQ, 0, 0}
#define ARG(i, mask, value) 1, {(i), SCMP_CMP_MASKED_EQ, (mask), (value)}

#ifndef PCC_ASAN
/* What a compile needs, whatever the source. Writes (to the frame socket and stderr only) and
 * tgkill (abort(), on the process itself) are added with their arguments at run time. */
static const rule allowed[] = {
  {SCMP_SYS(read), ALLOW, ANY}, /* frames; no descriptor but the socket is worth reading */
  /* memory, never executable: nothing can map new code */
  {SCMP_SYS(brk), ALLOW, ANY},
  {SCMP_SYS(mmap), ALLOW, ARG(2, PROT_EXEC, 0)},
  {SCMP_SYS(mprotect), ALLOW, ARG(2, PROT_EXEC, 0)},
  {SCMP_SYS(munmap), ALLOW, ANY},
  {SCMP_SYS(mremap), ALLOW, ANY},
  {SCMP_SYS(madvise), ALLOW, ANY},
  /* descriptors already open. glibc's fstat is newfstatat(fd, "", AT_EMPTY_PATH); the flag
   * does not stop a path from being given instead, which leaks metadata only */
  {SCMP_SYS(close), ALLOW, ANY},
  {SCMP_SYS(lseek), ALLOW, ANY},
  {SCMP_SYS(fstat), ALLOW, ANY},
  {SCMP_SYS(newfstatat), ALLOW, ARG(3, AT_EMPTY_PATH, AT_EMPTY_PATH)},
  /* time, locks, randomness, signals returning, the process itself, leaving */
  {SCMP_SYS(clock_gettime), ALLOW, ANY},
  {SCMP_SYS(clock_getres), ALLOW, ANY},
  {SCMP_SYS(gettimeofday), ALLOW, ANY},
  {SCMP_SYS(futex), ALLOW, ANY},
  {SCMP_SYS(getrandom), ALLOW, ANY},
  {SCMP_SYS(rt_sigreturn), ALLOW, ANY},
  {SCMP_SYS(rt_sigprocmask), ALLOW, ANY},
  {SCMP_SYS(restart_syscall), ALLOW, ANY},
  {SCMP_SYS(getpid), ALLOW, ANY},
  {SCMP_SYS(gettid), ALLOW, ANY},
  {SCMP_SYS(exit), ALLOW, ANY},
  {SCMP_SYS(exit_group), ALLOW, ANY},
  /* lazy reads Python survives failing: refused as if unreadable (see the top of the file) */
  {SCMP_SYS(open), REFUSE, ARG(1, WRITE_FLAGS, 0)},
  {SCMP_SYS(openat), REFUSE, ARG(2, WRITE_FLAGS, 0)},
  {SCMP_SYS(newfstatat), REFUSE, ARG(3, AT_EMPTY_PATH, 0)},
  {SCMP_SYS(stat), REFUSE, ANY},
  {SCMP_SYS(lstat), REFUSE, ANY},
  {SCMP_SYS(statx), REFUSE, ANY},
  {SCMP_SYS(access), REFUSE, ANY},
  {SCMP_SYS(faccessat), REFUSE, ANY},
  {SCMP_SYS(faccessat2), REFUSE, ANY},
  {SCMP_SYS(readlink), REFUSE, ANY},
  {SCMP_SYS(readlinkat), REFUSE, ANY},
  {SCMP_SYS(getcwd), REFUSE, ANY},
  {SCMP_SYS(getdents64), REFUSE, ANY},
  {SCMP_SYS(ioctl), SCMP_ACT_ERRNO(ENOTTY), ANY}, /* isatty() on a file that was open */
};
#define DEFAULT_ACTION KILL
#define RULES allowed
#else
/* The deny-list of ASan builds (see the top of the file): what the release filter kills and a
 * subverted worker would want first. */
static const rule killed[] = {
  {SCMP_SYS(open), KILL, ARG(1, O_WRONLY, O_WRONLY)},
  {SCMP_SYS(open), KILL, ARG(1, O_RDWR, O_RDWR)},
  {SCMP_SYS(open), KILL, ARG(1, O_CREAT, O_CREAT)},
  {SCMP_SYS(open), KILL, ARG(1, O_TRUNC, O_TRUNC)},
  {SCMP_SYS(open), KILL, ARG(1, O_APPEND, O_APPEND)},
  {SCMP_SYS(openat), KILL, ARG(2, O_WRONLY, O_WRONLY)},
  {SCMP_SYS(openat), KILL, ARG(2, O_RDWR, O_RDWR)},
  {SCMP_SYS(openat), KILL, ARG(2, O_CREAT, O_CREAT)},
  {SCMP_SYS(openat), KILL, ARG(2, O_TRUNC, O_TRUNC)},
  {SCMP_SYS(openat), KILL, ARG(2, O_APPEND, O_APPEND)},
  {SCMP_SYS(openat2), KILL, ANY},
  {SCMP_SYS(open_by_handle_at), KILL, ANY},
  {SCMP_SYS(creat), KILL, ANY},
  {SCMP_SYS(truncate), KILL, ANY},
  {SCMP_SYS(ftruncate), KILL, ANY},
  {SCMP_SYS(link), KILL, ANY},
  {SCMP_SYS(linkat), KILL, ANY},
  {SCMP_SYS(symlink), KILL, ANY},
  {SCMP_SYS(symlinkat), KILL, ANY},
  {SCMP_SYS(unlink), KILL, ANY},
  {SCMP_SYS(unlinkat), KILL, ANY},
  {SCMP_SYS(rename), KILL, ANY},
  {SCMP_SYS(renameat), KILL, ANY},
  {SCMP_SYS(renameat2), KILL, ANY},
  {SCMP_SYS(mkdir), KILL, ANY},
  {SCMP_SYS(mkdirat), KILL, ANY},
  {SCMP_SYS(rmdir), KILL, ANY},
  {SCMP_SYS(mknod), KILL, ANY},
  {SCMP_SYS(mknodat), KILL, ANY},
  {SCMP_SYS(chmod), KILL, ANY},
  {SCMP_SYS(fchmod), KILL, ANY},
  {SCMP_SYS(fchmodat), KILL, ANY},
  {SCMP_SYS(chown), KILL, ANY},
  {SCMP_SYS(fchown), KILL, ANY},
  {SCMP_SYS(lchown), KILL, ANY},
  {SCMP_SYS(fchownat), KILL, ANY},
  {SCMP_SYS(socket), KILL, ANY},
  {SCMP_SYS(socketpair), KILL, ANY},
  {SCMP_SYS(connect), KILL, ANY},
  {SCMP_SYS(bind), KILL, ANY},
  {SCMP_SYS(listen), KILL, ANY},
  {SCMP_SYS(accept), KILL, ANY},
  {SCMP_SYS(accept4), KILL, ANY},
  {SCMP_SYS(execve), KILL, ANY},
  {SCMP_SYS(execveat), KILL, ANY},
  {SCMP_SYS(fork), KILL, ANY},
  {SCMP_SYS(vfork), KILL, ANY},
  {SCMP_SYS(clone3), KILL, ANY},
  {SCMP_SYS(clone), KILL, ARG(0, CLONE_VM, 0)}, /* a new process; LeakSanitizer's tracer shares
                                                  * the memory (CLONE_VM) */
};
#define DEFAULT_ACTION ALLOW
#define RULES killed
#endif

/* Adds rule r to ctx; 0 or a negative errno value. */
static int add_rule(scmp_filter_ctx ctx, const rule *r)
{
  if (r->nr < 0)
    return 0;
  return seccomp_rule_add_array(ctx, r->action, r->nr, r->n_args, &r->arg);
}

/* Adds the rules whose arguments are known only at run time. */
static int add_runtime_rules(scmp_filter_ctx ctx, int frame_out)
{
#ifndef PCC_ASAN
  const int writable[] = {frame_out, 1, 2};
  int rc = 0;
  for (size_t i = 0; i < sizeof writable / sizeof writable[0] && rc == 0; i++)
    rc = seccomp_rule_add(ctx, ALLOW, SCMP_SYS(write), 1,
                          SCMP_A0_32(SCMP_CMP_EQ, (uint32_t)writable[i]));
  if (rc == 0)
    rc = seccomp_rule_add(ctx, ALLOW, SCMP_SYS(tgkill), 1,
                          SCMP_A0_32(SCMP_CMP_EQ, (uint32_t)getpid()));
  return rc;
#else
  (void)ctx;
  (void)frame_out;
  return 0;
#endif
}

int compiler_sandbox_install(int frame_out)
{
  scmp_filter_ctx ctx;
  int rc;

  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return errno;
  ctx = seccomp_init(DEFAULT_ACTION);
  if (!ctx)
    return ENOMEM;
  /* a call through another ABI (i386's int 0x80, x32) is never allowed */
  rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, KILL);
  for (size_t i = 0; i < sizeof RULES / sizeof RULES[0] && rc == 0; i++)
    rc = add_rule(ctx, &RULES[i]);
  if (rc == 0)
    rc = add_runtime_rules(ctx, frame_out);
  if (rc == 0)
    rc = seccomp_load(ctx);
  seccomp_release(ctx);
  return rc < 0 ? -rc : rc;
}

/* ---- probes ------------------------------------------------------------------------------ */

#define PROBE_PATH "/nonexistent/pycached-sandbox-probe"

/* Each probe attempts its call and returns 0 or the errno it failed with. */
static int probe_open(void)
{
  int fd = open(PROBE_PATH, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return errno;
  close(fd);
  return 0;
}

static int probe_socket(void)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return errno;
  close(fd);
  return 0;
}

static int probe_exec(void)
{
  char *const argv[] = {(char *)PROBE_PATH, NULL};
  char *const envp[] = {NULL};
  (void)execve(PROBE_PATH, argv, envp);
  return errno;
}

static int probe_fork(void)
{
  pid_t pid = fork();
  if (pid < 0)
    return errno;
  if (pid == 0)
    _exit(0);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
  return 0;
}

static const struct {
  const char *kind;
  int (*attempt)(void);
} probes[] = {
  {"open", probe_open},
  {"socket", probe_socket},
  {"exec", probe_exec},
  {"fork", probe_fork},
};
#define N_PROBES (sizeof probes / sizeof probes[0])

bool compiler_sandbox_probe_known(const char *kind)
{
  for (size_t i = 0; i < N_PROBES; i++)
    if (strcmp(probes[i].kind, kind) == 0)
      return true;
  return false;
}

void compiler_sandbox_probe(const char *kind)
{
  for (size_t i = 0; i < N_PROBES; i++) {
    if (strcmp(probes[i].kind, kind) == 0) {
      int err = probes[i].attempt();
      fprintf(stderr, "pycached-cpython-worker: sandbox probe %s was not stopped (%s)\n", kind,
              err ? strerror(err) : "it succeeded");
      return;
    }
  }
}
