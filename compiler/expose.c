/* expose.c: an unreachable interpreter made visible to the compiler workers in a private mount
 * namespace (expose.h has the contract; pool.c calls it). Nothing here weakens the worker's
 * confinement: the namespace is made by root before the uid drop and NO_NEW_PRIVS, and the
 * worker sees less of the file system than before (the covered directory holds only the prefix,
 * read-only).
 */
#include "compiler.h"
#include "expose.h"

#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

/* Whether uid/gid (no supplementary groups: the workers have none) may search directory st.
 * Access control lists are not read: a directory they open counts as closed. */
static bool searchable(const struct stat *st, uid_t uid, gid_t gid)
{
  if (uid == 0)
    return true;
  if (st->st_uid == uid)
    return (st->st_mode & S_IXUSR) != 0;
  if (st->st_gid == gid)
    return (st->st_mode & S_IXGRP) != 0;
  return (st->st_mode & S_IXOTH) != 0;
}

bool pcc_compiler_unreachable(const char *path, uid_t uid, gid_t gid, char *dir, size_t len,
                              unsigned *mode)
{
  char real[PATH_MAX], probe[PATH_MAX];
  if (realpath(path, real) == NULL)
    return false; /* the caller's exec reports a missing program */
  for (char *slash = real; (slash = strchr(slash + 1, '/')) != NULL;) {
    size_t n = (size_t)(slash - real);
    struct stat st;
    memcpy(probe, real, n);
    probe[n] = '\0';
    if (stat(probe, &st) == 0 && !searchable(&st, uid, gid)) {
      snprintf(dir, len, "%s", probe);
      if (mode)
        *mode = (unsigned)(st.st_mode & 07777);
      return true;
    }
  }
  struct stat root;
  if (stat("/", &root) == 0 && !searchable(&root, uid, gid)) {
    snprintf(dir, len, "/");
    if (mode)
      *mode = (unsigned)(root.st_mode & 07777);
    return true;
  }
  return false;
}

bool compiler_expose_plan(const char *program, uid_t uid, gid_t gid, compiler_expose *plan)
{
  char real[PATH_MAX];
  memset(plan, 0, sizeof *plan);
  if (!pcc_compiler_unreachable(program, uid, gid, plan->cover, sizeof plan->cover, NULL))
    return true;
  if (realpath(program, real) == NULL)
    return false;
  /* the prefix: the directory above the one holding the executable (PREFIX/bin/python3) */
  char *cut = strrchr(real, '/');
  if (cut == NULL || cut == real)
    return false;
  *cut = '\0';
  cut = strrchr(real, '/');
  if (cut == NULL || cut == real)
    return false;
  *cut = '\0';
  size_t cover_len = strlen(plan->cover);
  /* cover must be the prefix or one of its ancestors: what blocks inside the prefix (its bin/
   * closed to others) is not ours to open */
  if (strcmp(plan->cover, "/") == 0 || strncmp(real, plan->cover, cover_len) != 0 ||
      (real[cover_len] != '\0' && real[cover_len] != '/'))
    return false;
  snprintf(plan->prefix, sizeof plan->prefix, "%s", real);
  plan->active = true;
  return true;
}

/* "/proc/self/fd/N" into buf (no snprintf: async-signal-safe). */
static void fd_path(int fd, char *buf, size_t size)
{
  static const char head[] = "/proc/self/fd/";
  char digits[16];
  size_t n = 0, at = sizeof head - 1;
  do {
    digits[n++] = (char)('0' + fd % 10);
    fd /= 10;
  } while (fd > 0 && n < sizeof digits);
  if (at + n + 1 > size) {
    buf[0] = '\0';
    return;
  }
  memcpy(buf, head, at);
  while (n > 0)
    buf[at++] = digits[--n];
  buf[at] = '\0';
}

int compiler_expose_apply(const compiler_expose *plan)
{
  char path[PATH_MAX], source[32];
  size_t cover_len = strlen(plan->cover), prefix_len = strlen(plan->prefix);
  if (!plan->active)
    return 0;
  if (prefix_len >= sizeof path || unshare(CLONE_NEWNS) != 0 ||
      mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
    return -1;
  /* hold the prefix before the tmpfs hides it */
  int held = open(plan->prefix, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (held < 0)
    return -1;
  if (mount("pycached", plan->cover, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "mode=0755,size=64k,nr_inodes=256") != 0) {
    close(held);
    return -1;
  }
  /* the directories from cover down to the prefix, each 0755 in the tmpfs */
  memcpy(path, plan->prefix, prefix_len + 1);
  for (size_t i = cover_len + 1; i <= prefix_len; i++) {
    if (path[i] != '/' && path[i] != '\0')
      continue;
    char saved = path[i];
    path[i] = '\0';
    if (mkdir(path, 0755) != 0) {
      close(held);
      return -1;
    }
    path[i] = saved;
  }
  fd_path(held, source, sizeof source);
  int rc = mount(source, plan->prefix, NULL, MS_BIND | MS_REC, NULL);
  close(held);
  if (rc != 0 || mount(NULL, plan->prefix, NULL,
                       MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0)
    return -1;
  return 0;
}
