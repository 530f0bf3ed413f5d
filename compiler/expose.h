/* expose.h: making an interpreter the workers' uid cannot reach visible to them, inside the
 * compiler module (pool.c). An interpreter under a directory the uid cannot traverse (pyenv's
 * tree under /root, mode 0700) is exposed in a private mount namespace of each worker: a tmpfs
 * over the topmost such directory and, at the same path as outside, a read-only bind of the
 * interpreter's prefix (the directory above its bin/), so that the interpreter finds its prefix
 * and its libpython (an absolute RUNPATH) where it was built for. The rest of that directory is
 * hidden from the worker. docs/DESIGN.md, "Backends", has the bigger picture.
 */
#ifndef PCC_EXPOSE_H
#define PCC_EXPOSE_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

typedef struct {
  bool active;           /* false: the program is reachable, nothing to do */
  char cover[PATH_MAX];  /* the topmost directory the uid cannot traverse: a tmpfs goes over it */
  char prefix[PATH_MAX]; /* below cover (or equal): bound read-only at the same path */
} compiler_expose;

/* Plans what the workers of program need, in the parent. Returns true with plan->active false
 * when uid/gid can traverse every directory to program (or without privilege drop), true with
 * plan->active when the prefix of program can be exposed, false when it cannot (the blocking
 * directory lies inside the prefix, or program cannot be resolved). */
bool compiler_expose_plan(const char *program, uid_t uid, gid_t gid, compiler_expose *plan);

/* In the forked child, as root, before the privileges are dropped: only system calls
 * (async-signal-safe). Returns 0, or -1 when the namespace or a mount could not be made. */
int compiler_expose_apply(const compiler_expose *plan);

#endif /* PCC_EXPOSE_H */
