/* sources.h: the source files pycached reads itself (a compile with an empty body), confined to
 * the --source-root directories. Every refusal that could tell anything about a path outside the
 * roots (absent, outside, a symlink, `..`, not a regular file, unreadable) is the same 403. */
#ifndef PCC_SOURCES_H
#define PCC_SOURCES_H

#include <stdbool.h>
#include <stdint.h>

#include "answer.h"

typedef struct pcc_sources pcc_sources;

/* Opens the roots (n of them; at least 0), each once, as a directory descriptor kept until
 * pcc_sources_close. On failure prints why and returns NULL. The result is the caller's
 * (pcc_sources_close).
 *
 * Paths beneath a root are resolved by openat2() when the kernel has it, else one openat() per
 * component; the environment variable PCC_SOURCES_WALK=1 forces the second (for its tests). */
pcc_sources *pcc_sources_open(const char *const *roots, unsigned n);
void pcc_sources_close(pcc_sources *sources); /* NULL is fine */

/* How paths are resolved: "openat2" or "walk" (static storage). */
const char *pcc_sources_resolver(const pcc_sources *sources);

/* Reads the regular file at path (absolute) if it lies beneath a root, its mtime (seconds) is
 * mtime and it holds at most max_source bytes. "Beneath" is decided on the spelling of path: it
 * starts with a root's path (as resolved at start, or as given when that was absolute) and the
 * rest has no empty, "." or ".." component; the kernel then resolves the rest beneath that
 * root's descriptor following no symlink at all, and everything else is checked on the opened
 * descriptor. On success *out (the caller frees it; NULL for an empty file) and *out_len are
 * set; otherwise answer gets the error and false is returned: 403 forbidden for every refusal
 * about the path (one message), 413 too-large, 409 mismatch on the mtime (only for a readable
 * regular file beneath a root), 500 internal when the server is out of descriptors or memory,
 * or a read fails. */
bool pcc_sources_read(const pcc_sources *sources, const char *path, int64_t mtime,
                      uint64_t max_source, uint8_t **out, size_t *out_len, pcc_answer *answer);

#endif
