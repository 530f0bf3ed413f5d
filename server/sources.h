/* sources.h: the source files pycached reads itself (a compile with an empty body), confined to
 * the --source-root directories. Every refusal that could tell whether a path exists outside the
 * roots is the same 403. */
#ifndef PCC_SOURCES_H
#define PCC_SOURCES_H

#include <stdbool.h>
#include <stdint.h>

#include "answer.h"

typedef struct pcc_sources pcc_sources;

/* Opens the roots (n of them; at least 0). On failure prints why and returns NULL. The result is
 * the caller's (pcc_sources_close). */
pcc_sources *pcc_sources_open(const char *const *roots, unsigned n);
void pcc_sources_close(pcc_sources *sources); /* NULL is fine */

/* Reads the regular file at path (absolute) if it lies beneath a root, its mtime (seconds) is
 * mtime and it holds at most max_source bytes. On success *out (the caller frees it; NULL for an
 * empty file) and *out_len are set; otherwise answer gets the error (403 forbidden for anything
 * outside the roots or absent, 413, 409 mismatch on the mtime) and false is returned. */
bool pcc_sources_read(const pcc_sources *sources, const char *path, int64_t mtime,
                      uint64_t max_source, uint8_t **out, size_t *out_len, pcc_answer *answer);

#endif
