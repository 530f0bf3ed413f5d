/* sources.c: the source files pycached reads itself, confined to the source roots (sources.h).
 * Each root is opened once, at start, as a directory descriptor. A request's path is matched to
 * a root by its spelling alone; the kernel resolves the rest beneath the root's descriptor and
 * follows no symlink on the way (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS, or one
 * O_NOFOLLOW openat per component), so a directory swapped for a symlink between two steps
 * cannot lead outside. What follows (regular file, size, mtime) is asked of the descriptor. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "sources.h"
#include "pcc_log.h"

/* The one answer to every refusal about a path: it must not tell absent from outside. */
static const char refused[] = "path is not a readable regular file beneath a source root";

/* How the file itself is opened, by either resolver: never blocks (a FIFO), never becomes the
 * controlling terminal (a tty). */
#define FILE_FLAGS (O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY)
#define EAGAIN_TRIES 3 /* openat2 may ask to retry when a rename raced with the lookup */

typedef struct {
  int fd;         /* O_PATH directory, opened at start */
  char *names[2]; /* its realpath, and its spelling as given when absolute and different */
} root;

struct pcc_sources {
  root roots[PCC_MAX_SOURCE_ROOTS];
  unsigned n_roots;
  bool walk; /* resolve one component at a time (no openat2, or PCC_SOURCES_WALK=1) */
};

/* The given spelling of a root without trailing slashes ("/" stays), if absolute and not real;
 * else NULL. Allocated. */
static char *given_name(const char *given, const char *real)
{
  size_t n = strlen(given);
  while (n > 1 && given[n - 1] == '/')
    n--;
  if (given[0] != '/' || (strlen(real) == n && strncmp(given, real, n) == 0))
    return NULL;
  return strndup(given, n);
}

/* Does this kernel (and its seccomp filter) let us use openat2 beneath dirfd? */
static bool openat2_works(int dirfd)
{
  struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_BENEATH};
  int fd = (int)syscall(SYS_openat2, dirfd, ".", &how, sizeof how);
  if (fd < 0)
    return false;
  close(fd);
  return true;
}

pcc_sources *pcc_sources_open(const char *const *roots, unsigned n)
{
  pcc_sources *sources = calloc(1, sizeof *sources);
  if (sources == NULL || n > sizeof sources->roots / sizeof sources->roots[0]) {
    free(sources);
    return NULL;
  }
  for (unsigned i = 0; i < n; i++) {
    root *r = &sources->roots[i];
    r->fd = open(roots[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
    r->names[0] = r->fd >= 0 ? realpath(roots[i], NULL) : NULL;
    if (r->names[0] == NULL) {
      pcc_logf(PCC_LOG_ERROR, "--source-root %s: %s", roots[i], strerror(errno));
      if (r->fd >= 0)
        close(r->fd);
      pcc_sources_close(sources);
      return NULL;
    }
    r->names[1] = given_name(roots[i], r->names[0]);
    sources->n_roots++;
  }
  const char *force = getenv("PCC_SOURCES_WALK"), *why = NULL;
  if (n > 0 && force != NULL && strcmp(force, "1") == 0)
    why = "PCC_SOURCES_WALK=1";
  else if (n > 0 && !openat2_works(sources->roots[0].fd))
    why = strerror(errno);
  sources->walk = why != NULL;
  if (sources->walk)
    pcc_logf(PCC_LOG_WARN, "openat2: %s; --source-root paths are resolved one component at "
             "a time", why);
  return sources;
}

void pcc_sources_close(pcc_sources *sources)
{
  if (sources == NULL)
    return;
  for (unsigned i = 0; i < sources->n_roots; i++) {
    close(sources->roots[i].fd);
    free(sources->roots[i].names[0]);
    free(sources->roots[i].names[1]);
  }
  free(sources);
}

const char *pcc_sources_resolver(const pcc_sources *sources)
{
  return sources != NULL && sources->walk ? "walk" : "openat2";
}

/* The rest of path after prefix (an absolute directory path without a trailing '/', or "/")
 * and one '/', when that rest is plain: non-empty, no empty, "." or ".." component. Else NULL. */
static const char *beneath(const char *prefix, const char *path)
{
  size_t n = strcmp(prefix, "/") == 0 ? 0 : strlen(prefix);
  if (strncmp(path, prefix, n) != 0 || path[n] != '/')
    return NULL;
  const char *rest = path + n + 1;
  for (const char *c = rest;;) {
    const char *end = strchrnul(c, '/');
    size_t len = (size_t)(end - c);
    if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
      return NULL;
    if (*end == '\0')
      return rest;
    c = end + 1;
  }
}

/* Opens rel (plain) beneath dirfd in one call: -1 with errno when any component is a symlink
 * or the lookup would leave dirfd. */
static int open_openat2(int dirfd, const char *rel)
{
  struct open_how how = {
    .flags = FILE_FLAGS,
    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
  };
  int fd = -1;
  for (int i = 0; i < EAGAIN_TRIES && fd < 0; i++) {
    fd = (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
    if (fd < 0 && errno != EAGAIN)
      break;
  }
  return fd;
}

/* The same without openat2: each directory component by openat(O_NOFOLLOW | O_DIRECTORY) from
 * the one before, then the file. rel is plain, so no step goes up or follows a link. */
static int open_walk(int dirfd, const char *rel)
{
  char name[NAME_MAX + 1];
  int dir = dirfd;
  for (;;) {
    const char *end = strchrnul(rel, '/');
    size_t len = (size_t)(end - rel);
    int fd = -1;
    if (len > NAME_MAX) {
      errno = ENAMETOOLONG;
    } else {
      memcpy(name, rel, len);
      name[len] = '\0';
      fd = openat(dir, name, *end == '\0' ? FILE_FLAGS
                                           : O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (dir != dirfd) {
      int saved = errno;
      close(dir);
      errno = saved;
    }
    if (fd < 0 || *end == '\0')
      return fd;
    dir = fd;
    rel = end + 1;
  }
}

/* Opens path beneath the first root it names that lets it: a descriptor, or -1 with errno (0
 * when path names no root). */
static int open_beneath(const pcc_sources *sources, const char *path)
{
  int err = 0;
  for (unsigned i = 0; i < sources->n_roots; i++) {
    const root *r = &sources->roots[i];
    for (unsigned k = 0; k < 2 && r->names[k] != NULL; k++) {
      const char *rel = beneath(r->names[k], path);
      if (rel == NULL)
        continue;
      int fd = sources->walk ? open_walk(r->fd, rel) : open_openat2(r->fd, rel);
      if (fd >= 0)
        return fd;
      if (err != EMFILE && err != ENFILE && err != ENOMEM)
        err = errno; /* a shortage of the server's is what the caller must hear of */
    }
  }
  errno = err;
  return -1;
}

/* Reads the whole of fd (a regular file of size bytes), no more: a file that grows meanwhile is
 * cut at its size. */
static bool read_all(int fd, size_t size, uint8_t **out, size_t *out_len)
{
  pcc_dynbuf bytes;
  pcc_dynbuf_init(&bytes, size);
  bool ok = pcc_dynbuf_reserve(&bytes, size) == PCC_PROTO_OK || size == 0;
  while (ok && bytes.len < size) {
    ssize_t n = read(fd, (char *)bytes.data + bytes.len, size - bytes.len);
    if (n > 0)
      bytes.len += (size_t)n;
    else if (n == 0 || errno != EINTR)
      ok = false;
  }
  if (!ok) {
    pcc_dynbuf_free(&bytes);
    return false;
  }
  *out = pcc_dynbuf_take(&bytes, out_len);
  return true;
}

bool pcc_sources_read(const pcc_sources *sources, const char *path, int64_t mtime,
                      uint64_t max_source, uint8_t **out, size_t *out_len, pcc_answer *answer)
{
  if (sources == NULL || sources->n_roots == 0) {
    pcc_answer_error(answer, PCC_ERR_FORBIDDEN, "empty body: this server reads no files itself "
                     "(no --source-root); upload the source");
    return false;
  }
  int fd = open_beneath(sources, path);
  if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOMEM)) {
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "cannot open the source file: %s",
                     strerror(errno));
    return false;
  }
  struct stat st;
  bool ok = fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  if (!ok)
    pcc_answer_error(answer, PCC_ERR_FORBIDDEN, "%s", refused);
  else if ((uint64_t)st.st_size > max_source)
    pcc_answer_error(answer, PCC_ERR_TOO_LARGE, "source is %lld bytes; the limit is %llu",
                     (long long)st.st_size, (unsigned long long)max_source);
  else if (st.st_mtim.tv_sec != mtime) {
    pcc_answer_error(answer, PCC_ERR_MISMATCH, "mtime: the file's mtime is %lld",
                     (long long)st.st_mtim.tv_sec);
    pcc_answer_extra_string(answer, "param", "mtime");
  } else if (!read_all(fd, (size_t)st.st_size, out, out_len))
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "cannot read the source file");
  else {
    close(fd);
    return true;
  }
  if (fd >= 0)
    close(fd);
  return false;
}
