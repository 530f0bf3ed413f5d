/* store.h: the LMDB store of compiled code.
 *
 * Two tables (docs/DESIGN.md, "Keys"):
 *   paths: (magic, opt, path)   -> {mtime, size, hash, digest}
 *   blobs: (magic, opt, digest) -> {kind, hash, size, created, compile time, compiler,
 *                                   checksum, payload}
 * so one source seen at many paths, or with many mtimes across hosts, is compiled and stored
 * once. A blob's payload is marshal bytes, or for a source that does not compile, the error as
 * JSON, so a broken source is not recompiled on every request. Every blob read verifies an
 * XXH3-64 checksum over the whole record; a mismatch drops the blob and answers
 * PCC_STORE_CORRUPT, never the bytes. Reads use read-only transactions only.
 */
#ifndef PCC_STORE_H
#define PCC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

typedef struct pcc_store pcc_store;

typedef enum {
  PCC_STORE_OK = 0,
  PCC_STORE_NOTFOUND,
  PCC_STORE_CORRUPT, /* a record failed its checksum or does not parse; it was dropped */
  PCC_STORE_FULL,    /* the map is full (MDB_MAP_FULL): nothing was written */
  PCC_STORE_IO,      /* any other LMDB or file-system error */
  PCC_STORE_NOMEM,
  PCC_STORE_INVALID, /* bad arguments, e.g. a path over PCC_PATH_MAX */
} pcc_store_status;

const char *pcc_store_strerror(pcc_store_status rc);

#define PCC_STORE_DEFAULT_MAP_SIZE (4ull << 30) /* sparse: costs disk only as it fills */

/* Opens (creating when needed) the store in directory dir, which must exist. map_size 0 means
 * PCC_STORE_DEFAULT_MAP_SIZE. On success *out owns the environment; close it with
 * pcc_store_close. One process at a time should open a directory for writing. */
pcc_store_status pcc_store_open(const char *dir, uint64_t map_size, pcc_store **out);
void pcc_store_close(pcc_store *store); /* NULL is fine */

typedef struct {
  int64_t mtime;
  uint64_t size;
  int32_t hash;
  pcc_digest digest;
} pcc_path_record;

typedef enum {
  PCC_BLOB_CODE = 1,          /* payload: marshal bytes */
  PCC_BLOB_COMPILE_ERROR = 2, /* payload: the error as JSON (type, message, line, offset) */
} pcc_blob_kind;

#define PCC_COMPILER_NAME_MAX 63

typedef struct {
  pcc_blob_kind kind;
  int32_t hash;           /* Java hash of the source */
  uint64_t size;          /* source size in bytes */
  int64_t created;        /* unix seconds */
  uint32_t compile_us;
  char compiler[PCC_COMPILER_NAME_MAX + 1];
  const uint8_t *payload; /* see pcc_store_get_blob for who owns it */
  size_t payload_len;
} pcc_blob;

/* Looks up the path entry of (magic, opt, path). PCC_STORE_NOTFOUND when absent. */
pcc_store_status pcc_store_get_path(pcc_store *store, const pcc_magic *magic, int opt,
                                    const char *path, size_t path_len, pcc_path_record *out);

/* Looks up the blob of (magic, opt, digest) and verifies its checksum. On PCC_STORE_OK *out is
 * a heap copy (the payload lives in the same allocation); free it with free(). On
 * PCC_STORE_CORRUPT the blob and nothing else has been deleted. */
pcc_store_status pcc_store_get_blob(pcc_store *store, const pcc_magic *magic, int opt,
                                    const pcc_digest *digest, pcc_blob **out);

/* Stores blob (when not NULL) under (magic, opt, record->digest) and the path entry
 * (magic, opt, path) -> record, in one write transaction: both or neither. */
pcc_store_status pcc_store_put(pcc_store *store, const pcc_magic *magic, int opt,
                               const char *path, size_t path_len, const pcc_path_record *record,
                               const pcc_blob *blob);

typedef struct {
  uint64_t paths;     /* path entries */
  uint64_t blobs;     /* stored code objects and compile errors */
  uint64_t bytes;     /* bytes of blob records */
  uint64_t used;      /* bytes of the map in use (pages) */
  uint64_t map_size;
} pcc_store_stats;

pcc_store_status pcc_store_stat(pcc_store *store, pcc_store_stats *out);

#endif /* PCC_STORE_H */
