/* sources.c: the source files pycached reads itself, confined to the source roots (sources.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "sources.h"

struct pcc_sources {
  char *roots[PCC_MAX_SOURCE_ROOTS]; /* realpath of each root */
  unsigned n_roots;
};

pcc_sources *pcc_sources_open(const char *const *roots, unsigned n)
{
  pcc_sources *sources = calloc(1, sizeof *sources);
  if (sources == NULL || n > sizeof sources->roots / sizeof sources->roots[0]) {
    free(sources);
    return NULL;
  }
  for (unsigned i = 0; i < n; i++) {
    sources->roots[i] = realpath(roots[i], NULL);
    if (sources->roots[i] == NULL) {
      fprintf(stderr, "pycached: --source-root %s: %s\n", roots[i], strerror(errno));
      pcc_sources_close(sources);
      return NULL;
    }
    sources->n_roots++;
  }
  return sources;
}

void pcc_sources_close(pcc_sources *sources)
{
  if (sources == NULL)
    return;
  for (unsigned i = 0; i < sources->n_roots; i++)
    free(sources->roots[i]);
  free(sources);
}

/* Is resolved (a realpath) equal to or below one of the roots? */
static bool under_root(const pcc_sources *sources, const char *resolved)
{
  for (unsigned i = 0; i < sources->n_roots; i++) {
    size_t n = strlen(sources->roots[i]);
    if (strncmp(resolved, sources->roots[i], n) == 0 &&
        (resolved[n] == '/' || resolved[n] == '\0' || (n == 1 && resolved[0] == '/')))
      return true;
  }
  return false;
}

bool pcc_sources_read(const pcc_sources *sources, const char *path, int64_t mtime,
                      uint64_t max_source, uint8_t **out, size_t *out_len, pcc_answer *answer)
{
  char resolved[PATH_MAX];
  if (sources == NULL || sources->n_roots == 0) {
    pcc_answer_error(answer, PCC_ERR_FORBIDDEN, "empty body: this server reads no files itself "
                     "(no --source-root); upload the source");
    return false;
  }
  if (realpath(path, resolved) == NULL) {
    /* do not tell what exists outside the roots */
    pcc_answer_error(answer, PCC_ERR_FORBIDDEN,
                     "path is not a readable file under a source root");
    return false;
  }
  if (!under_root(sources, resolved)) {
    pcc_answer_error(answer, PCC_ERR_FORBIDDEN, "path resolves outside every source root");
    return false;
  }
  int fd = open(resolved, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    if (fd >= 0)
      close(fd);
    pcc_answer_error(answer, PCC_ERR_NOT_FOUND, "no regular file at this path");
    return false;
  }
  if ((uint64_t)st.st_size > max_source) {
    close(fd);
    pcc_answer_error(answer, PCC_ERR_TOO_LARGE, "source is %lld bytes; the limit is %llu",
                     (long long)st.st_size, (unsigned long long)max_source);
    return false;
  }
  if (st.st_mtim.tv_sec != mtime) {
    close(fd);
    pcc_answer_error(answer, PCC_ERR_MISMATCH, "mtime: the file's mtime is %lld",
                     (long long)st.st_mtim.tv_sec);
    pcc_answer_extra_string(answer, "param", "mtime");
    return false;
  }
  /* read what fstat promised, and no more: a file that grows meanwhile is cut at its size */
  pcc_dynbuf bytes;
  pcc_dynbuf_init(&bytes, (size_t)st.st_size);
  bool ok = pcc_dynbuf_reserve(&bytes, (size_t)st.st_size) == PCC_PROTO_OK || st.st_size == 0;
  while (ok && bytes.len < (size_t)st.st_size) {
    ssize_t n = read(fd, (char *)bytes.data + bytes.len, (size_t)st.st_size - bytes.len);
    if (n > 0)
      bytes.len += (size_t)n;
    else if (n == 0 || errno != EINTR)
      ok = false;
  }
  close(fd);
  if (!ok) {
    pcc_dynbuf_free(&bytes);
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "cannot read the source file");
    return false;
  }
  *out = pcc_dynbuf_take(&bytes, out_len);
  return true;
}

