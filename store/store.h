/* store.h: the LMDB store of compiled code.
 *
 * The tables (docs/DESIGN.md, "Keys and validation"):
 *   paths:    (ns, magic, opt, path)   -> up to 16 versions {mtime, size, hash, digest}
 *   blobs:    (magic, opt, digest)     -> {kind, hash, size, created, compile time, compiler,
 *                                          checksum, payload}
 *   refs:     blob key -> the keys of the path entries naming it (DUPSORT: its reference set)
 *   uses:     blob key -> last use, payload bytes;  lru: (last use, blob key), oldest first
 *   profiles: (ns, magic, opt, name)   -> paths (DUPSORT); profile_info: -> updated, count
 *   meta:     the format, and per magic the figures (entries, blobs, payload bytes)
 * so one source seen at many paths, or with many mtimes across hosts, is compiled and stored
 * once, and a blob goes when the last path entry naming it goes (deletion, invalidation,
 * eviction). A blob's payload is marshal bytes, or for a source that does not compile, the error
 * as JSON, so a broken source is not recompiled on every request. Every blob read verifies an
 * XXH3-64 checksum over the whole record; a mismatch answers PCC_STORE_CORRUPT, never the bytes
 * (and writes nothing: the next compile of the source replaces the record). Reads use read-only
 * transactions only; a blob read records its use in memory, and pcc_store_flush_uses writes the
 * uses in batches (docs/DESIGN.md, "Eviction").
 *
 * A damaged file (docs/OPERATIONS.md, "A damaged store"): every key and value LMDB hands back is
 * checked to lie inside the file before it is read, and a SIGBUS or SIGSEGV inside the map during
 * a read is contained (store/guard.c). Either marks the store damaged: from then on every call
 * answers PCC_STORE_DAMAGED at once without touching the file (lookups miss, nothing is written),
 * pcc_store_stat says so, and one line on stderr tells the operator to run
 * `pycached --verify-store` (pcc_store_verify).
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
  PCC_STORE_FULL,    /* the map is full, or the write would use the pages kept for deletions:
                        nothing was written (deletions still work) */
  PCC_STORE_IO,      /* any other LMDB or file-system error */
  PCC_STORE_NOMEM,
  PCC_STORE_INVALID, /* bad arguments, e.g. a path over PCC_PATH_MAX */
  PCC_STORE_FORMAT,  /* written by a newer pycached: not opened */
  PCC_STORE_NOSPACE, /* the file system holding the store is full (ENOSPC, EDQUOT): nothing was
                        written */
  PCC_STORE_DAMAGED, /* the file is damaged (a record past its end, a page LMDB cannot read, a
                        contained fault; at open: not a sound LMDB file): nothing was read or
                        written, and nothing will be until the store is opened again */
} pcc_store_status;

const char *pcc_store_strerror(pcc_store_status rc);

#define PCC_STORE_DEFAULT_MAP_SIZE (4ull << 30) /* sparse: costs disk only as it fills */

typedef struct {
  uint64_t map_size;     /* the LMDB map: the most the file may grow to; 0: the default */
  uint64_t max_size;     /* payload bytes pcc_store_evict keeps the store under; 0: no eviction */
  uint64_t max_profiles; /* profiles kept; 0: PCC_PROFILES_MAX_DEFAULT */
  bool no_sync;          /* commits are not flushed to disk (MDB_NOSYNC): benchmarks only */
  bool compress;         /* code blobs stored from now on are compressed with zstd where it pays
                            (PCC_STORE_ZSTD_*); blobs read come back plain either way, and the
                            store reads both kinds whatever this says */
  int64_t (*now)(void);  /* unix seconds for profile ages and the age of uses; NULL: time().
                            For tests. */
  bool read_only;        /* open read-only (MDB_RDONLY): pcc_store_verify of a stopped or running
                            server's store; writes fail. A store that is new or of another format
                            is not opened (PCC_STORE_NOTFOUND, PCC_STORE_FORMAT). */
} pcc_store_config;

/* Opens (creating when needed) the store in directory dir, which must exist, with config (NULL:
 * every default). A store of an older format is emptied (saying so on stderr), a newer one is
 * refused (PCC_STORE_FORMAT); a file LMDB cannot open, or whose meta page or table of tables is
 * damaged, is PCC_STORE_DAMAGED (nothing written). Opening an existing store of this format
 * writes nothing. On success *out owns the environment; close it with pcc_store_close. One
 * process at a time should open a directory for writing. Installs the fault handlers of
 * store/guard.c (once per process). */
pcc_store_status pcc_store_open(const char *dir, const pcc_store_config *config,
                                pcc_store **out);
void pcc_store_close(pcc_store *store); /* NULL is fine */

typedef struct {
  int64_t mtime;
  uint64_t size;
  int32_t hash;
  pcc_digest digest;
} pcc_path_record;

/* The versions of one path: the (mtime, size) -> digest records that compiles have stored for
 * it, newest first (v[0]), at most PCC_PATH_VERSIONS_MAX: hosts that see other mtimes for the
 * same path each find theirs, so that their hits stay read-only. */
typedef struct {
  unsigned n;
  pcc_path_record v[PCC_PATH_VERSIONS_MAX];
} pcc_path_versions;

typedef enum {
  PCC_BLOB_CODE = 1,          /* payload: marshal bytes */
  PCC_BLOB_COMPILE_ERROR = 2, /* payload: the error as JSON (type, message, line, offset) */
} pcc_blob_kind;

#define PCC_COMPILER_NAME_MAX 63
/* Bytes of a blob's allocation right before its payload that its holder may overwrite: room for
 * a pyc header, so that a served pyc is built in place (server/answer.c), without a copy. */
#define PCC_BLOB_HEADROOM PCC_PYC_HEADER_LEN

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

/* Namespaces: path entries and profiles live in a namespace (ns: at most PCC_NAMESPACE_MAX bytes;
 * NULL or "" is the default namespace); blobs are shared by all (they are named by their
 * source's content). */

/* Looks up the versions of the path entry (ns, magic, opt, path). PCC_STORE_NOTFOUND when
 * absent. Read-only. */
pcc_store_status pcc_store_get_versions(pcc_store *store, const char *ns, const pcc_magic *magic,
                                        int opt, const char *path, size_t path_len,
                                        pcc_path_versions *out);
/* The newest version only. */
pcc_store_status pcc_store_get_path(pcc_store *store, const char *ns, const pcc_magic *magic,
                                    int opt, const char *path, size_t path_len,
                                    pcc_path_record *out);

/* Looks up the blob of (magic, opt, digest) and verifies its checksum. On PCC_STORE_OK *out is
 * a heap copy (the payload lives in the same allocation, after PCC_BLOB_HEADROOM bytes the caller
 * may overwrite); free it with free(), and the use is
 * recorded (pcc_store_touch). PCC_STORE_CORRUPT: the record fails its checksum or does not
 * parse; it is counted and nothing is written (a lookup never writes): every read of it answers
 * PCC_STORE_CORRUPT until a pcc_store_put with the blob replaces it. */
pcc_store_status pcc_store_get_blob(pcc_store *store, const pcc_magic *magic, int opt,
                                    const pcc_digest *digest, pcc_blob **out);

/* Adds record as the newest version of the path entry (ns, magic, opt, path), replacing a
 * version of the same mtime and size and dropping the oldest past PCC_PATH_VERSIONS_MAX, and
 * stores blob (when not NULL and not stored yet) under (magic, opt, record->digest), in one write
 * transaction: both or neither. With blob NULL the blob must be stored already:
 * PCC_STORE_NOTFOUND (nothing written) when it is not (e.g. evicted meanwhile). A blob no version
 * names any more (the dropped or replaced ones) is deleted in the same transaction.
 * PCC_STORE_FULL when the write would use the pages kept for deletions. Safe to call from many
 * threads: concurrent puts share one commit (store.c, "puts"), each durable when it answers OK
 * and each with its own status (one that fails is undone alone). Blocks until its commit. */
pcc_store_status pcc_store_put(pcc_store *store, const char *ns, const pcc_magic *magic, int opt,
                               const char *path, size_t path_len, const pcc_path_record *record,
                               const pcc_blob *blob);

/* The figures of docs/OPERATIONS.md, "What the figures mean". */
typedef struct {
  uint64_t entries;   /* path entries */
  uint64_t blobs;     /* stored code objects and compile errors */
  uint64_t bytes;     /* payload bytes of the blobs (marshal bytes, error JSON): what
                         max_size bounds */
  uint64_t profiles;
  uint64_t page_size;
  uint64_t used;      /* bytes of the LMDB pages in use (the file's pages less the free ones) */
  uint64_t free;      /* bytes of free pages: freed by deletions, reused by later writes */
  uint64_t map_size;  /* the most the file may grow to */
  uint64_t max_size;  /* the payload bytes eviction keeps the store under; 0: none */
  uint64_t evictions; /* blobs evicted since the store was opened */
  uint64_t evicted_bytes; /* their payload bytes */
  uint64_t puts;      /* pcc_store_put calls that committed since the store was opened */
  uint64_t put_commits; /* the write transactions they took: fewer when concurrent puts shared
                           one (group commits, store.c "puts") */
  bool damaged;        /* the file is damaged: every call answers PCC_STORE_DAMAGED */
  uint64_t corruptions; /* damaged records and faults met since the store was opened */
} pcc_store_stats;

/* The figures. Read-only; counts the free pages (a scan of LMDB's free list). A damaged store
 * answers the figures last read (with damaged set) without reading the file. */
pcc_store_status pcc_store_stat(pcc_store *store, pcc_store_stats *out);

/* A number that changes whenever a write of content commits (compiles, deletions, evictions,
 * profiles; not the flushes of last uses): what was computed from the store at one generation is
 * still right while it stays the same. */
uint64_t pcc_store_generation(pcc_store *store);

/* ---- uses and eviction (docs/DESIGN.md, "Eviction") ----------------------------------------
 * A blob read records its use in a bounded table in memory (PCC_USE_TABLE_SLOTS; a use that
 * finds no slot is lost, which only makes the blob look older); no lookup writes. */

/* Records a use of the blob of (magic, opt, digest), e.g. for a bundle served from memory. Safe
 * from any thread; takes no LMDB lock. */
void pcc_store_touch(pcc_store *store, const pcc_magic *magic, int opt, const pcc_digest *digest);

/* Writes the recorded uses into the store (uses, lru) in write transactions of at most
 * PCC_USE_TABLE_SLOTS / 16 uses and empties the table; *flushed (may be NULL) gets how many were
 * looked at. A blob whose recorded use is recent (PCC_USE_UPDATE_SECONDS to twice that) is not
 * moved again, so the order is exact to about that and recently used blobs cost a read; uses of
 * blobs that are gone are dropped. Does not change the generation. */
pcc_store_status pcc_store_flush_uses(pcc_store *store, size_t *flushed);

/* How many uses wait in the table (a hint for when to flush). */
size_t pcc_store_pending_uses(pcc_store *store);

/* When the payload bytes are over config.max_size: flushes the uses, then evicts the least
 * recently used blobs, with the path entries (versions) that name them, until the bytes are at
 * most 95% of max_size, in write transactions of at most PCC_EVICT_BATCH references each.
 * *evicted (may be NULL) gets the number of blobs evicted. Nothing to do: PCC_STORE_OK at once
 * (no transaction). Never called on the lookup path: a lookup of an evicted entry misses. */
pcc_store_status pcc_store_evict(pcc_store *store, uint64_t *evicted);

/* ---- administration (server/ admin API) --------------------------------------------------- */

/* One path entry with what its blob says about it, as listings show it. */
typedef struct {
  pcc_magic magic;
  int opt;
  char ns[PCC_NAMESPACE_MAX + 1];
  const char *path; /* valid during the callback only; not NUL-terminated: use path_len */
  size_t path_len;
  pcc_path_record record; /* the newest version */
  unsigned versions;      /* how many the entry holds */
  bool has_blob;    /* false when the blob is gone (the entry would miss) */
  pcc_blob_kind kind;
  uint64_t bytes;   /* payload bytes of the blob */
  uint32_t compile_us;
  int64_t created;
  char compiler[PCC_COMPILER_NAME_MAX + 1];
} pcc_store_entry;

/* Which entries an operation applies to; a field that is not set matches everything. */
typedef struct {
  bool has_magic;
  pcc_magic magic;
  int opt;          /* -1: any */
  const char *ns;   /* NULL: any namespace */
  const char *prefix; /* NULL or "": any path */
  size_t prefix_len;
} pcc_store_filter;

#define PCC_STORE_CURSOR_MAX (PCC_MAGIC_LEN + 2 + PCC_NAMESPACE_MAX + 400) /* the longest key */

/* Calls visit(entry, ctx) for up to `limit` matching entries in key order, starting after the
 * key in cursor (cursor_len 0: from the start), looking at no more than max_scan entries.
 * *next_len gets the length of the key to continue from (written to next, which holds
 * PCC_STORE_CURSOR_MAX bytes), or 0 when the scan reached the end. Read-only. */
pcc_store_status pcc_store_scan(pcc_store *store, const pcc_store_filter *filter,
                                const uint8_t *cursor, size_t cursor_len, size_t limit,
                                size_t max_scan,
                                void (*visit)(const pcc_store_entry *entry, void *ctx), void *ctx,
                                uint8_t *next, size_t *next_len);

/* Looks up one entry as pcc_store_scan would show it. PCC_STORE_NOTFOUND when absent. */
pcc_store_status pcc_store_get_entry(pcc_store *store, const char *ns, const pcc_magic *magic,
                                     int opt, const char *path, size_t path_len,
                                     void (*visit)(const pcc_store_entry *entry, void *ctx),
                                     void *ctx);

/* Deletes the matching path entries and the blobs no other entry names, in write transactions
 * of at most PCC_DELETE_BATCH entries (fewer when a transaction does not fit in the map); with a
 * filter without prefix, also the profiles of its magic, opt and namespace. *removed gets the
 * number of path entries deleted. With filter NULL: everything, profiles too (purge). Deleting
 * never needs more than the pages the store keeps for it, so it works at a full map. */
pcc_store_status pcc_store_delete(pcc_store *store, const pcc_store_filter *filter,
                                  uint64_t *removed);

/* Deletes one path entry and the blobs its versions name that no other entry names; *removed
 * gets 0 or 1. */
pcc_store_status pcc_store_delete_one(pcc_store *store, const char *ns, const pcc_magic *magic,
                                      int opt, const char *path, size_t path_len,
                                      uint64_t *removed);

/* Calls visit(magic, entries, bytes, ctx) for each magic the store holds (entries: path
 * entries; bytes: payload bytes of its blobs), in key order. Read-only; reads the figures kept
 * per magic (no scan). */
pcc_store_status pcc_store_magics(pcc_store *store,
                                  void (*visit)(const pcc_magic *magic, uint64_t entries,
                                                uint64_t bytes, void *ctx),
                                  void *ctx);

/* ---- import profiles (docs/API.md, "Warm start") -------------------------------------------
 * A profile is the set of source paths a program imports, kept per (ns, magic, opt, name),
 * merged over runs and bounded: at most PCC_PROFILE_PATHS_MAX paths (a merge that would pass it
 * starts the profile again from the paths it brings), paths of at most PCC_PROFILE_PATH_MAX bytes
 * (longer ones are left out), at most config.max_profiles profiles (a new one replaces the least
 * recently updated), and pcc_store_profiles_expire drops those not updated for long. */

/* PCC_PROFILE_NAME_MAX, PCC_PROFILE_PATHS_MAX, PCC_PROFILE_PATH_MAX: proto/pcc_limits.h */

/* Adds paths (n of them, each NUL-terminated, absolute) to the profile, in write transactions of
 * at most PCC_PROFILE_BATCH paths (so a compile never waits long behind a merge), and marks it
 * updated; *total gets the number of paths it then holds. PCC_STORE_FULL as pcc_store_put. */
pcc_store_status pcc_store_profile_merge(pcc_store *store, const char *ns,
                                         const pcc_magic *magic, int opt, const char *name,
                                         const char *const *paths, size_t n, size_t *total);

/* Calls visit(path, path_len, ctx) for each path of the profile, in byte order, inside one read
 * transaction (the path is valid during the call only). PCC_STORE_NOTFOUND: no such profile. */
pcc_store_status pcc_store_profile_read(pcc_store *store, const char *ns,
                                        const pcc_magic *magic, int opt, const char *name,
                                        void (*visit)(const char *path, size_t path_len,
                                                      void *ctx),
                                        void *ctx);

/* One profile as listings show it. */
typedef struct {
  pcc_magic magic;
  int opt;
  char ns[PCC_NAMESPACE_MAX + 1];
  char name[PCC_PROFILE_NAME_MAX + 1];
  uint64_t paths;   /* how many it holds */
  int64_t updated;  /* unix seconds of its last merge */
} pcc_store_profile;

#define PCC_STORE_PROFILE_CURSOR_MAX (PCC_MAGIC_LEN + 2 + PCC_NAMESPACE_MAX + PCC_PROFILE_NAME_MAX)

/* Calls visit(profile, ctx) for up to `limit` profiles matching filter (its magic, opt and ns;
 * the prefix is not used) in key order, after the key in cursor (cursor_len 0: from the start);
 * *next_len as pcc_store_scan (next holds PCC_STORE_PROFILE_CURSOR_MAX bytes). Read-only. */
pcc_store_status pcc_store_profiles_scan(pcc_store *store, const pcc_store_filter *filter,
                                         const uint8_t *cursor, size_t cursor_len, size_t limit,
                                         void (*visit)(const pcc_store_profile *profile,
                                                       void *ctx),
                                         void *ctx, uint8_t *next, size_t *next_len);

/* The profile's figures into *out. PCC_STORE_NOTFOUND: no such profile. */
pcc_store_status pcc_store_profile_get(pcc_store *store, const char *ns, const pcc_magic *magic,
                                       int opt, const char *name, pcc_store_profile *out);

/* Deletes one profile; *removed gets 0 or 1. */
pcc_store_status pcc_store_profile_delete(pcc_store *store, const char *ns,
                                          const pcc_magic *magic, int opt, const char *name,
                                          uint64_t *removed);

/* Deletes the profiles last updated before older_than (unix seconds), in bounded write
 * transactions; *removed gets how many. */
pcc_store_status pcc_store_profiles_expire(pcc_store *store, int64_t older_than,
                                           uint64_t *removed);

/* A compacted copy of the environment (mdb_env_copy2 / mdb_env_copyfd2 with MDB_CP_COMPACT):
 * into directory dir (which must exist and be empty), or written to fd (which the caller
 * closes). Readers and writers go on meanwhile. A damaged store is not copied
 * (PCC_STORE_DAMAGED): the copy's walk of the trees is not guarded. */
pcc_store_status pcc_store_backup_dir(pcc_store *store, const char *dir);
pcc_store_status pcc_store_backup_fd(pcc_store *store, int fd);

/* ---- verification (pycached --verify-store; docs/OPERATIONS.md, "A damaged store") -------- */

typedef struct {
  uint64_t records;    /* records of every table looked at (LMDB's free list and tables too) */
  uint64_t entries;    /* path entries */
  uint64_t blobs;      /* blobs (their first chunks) */
  uint64_t damaged;    /* records that fail their checks: a lookup misses them, a compile of the
                          source replaces them */
  uint64_t structural; /* problems of the file: a record past its end, a page LMDB cannot read, a
                          contained fault, counts LMDB keeps that disagree with the records, a
                          free page past the last one. The store is then damaged. */
  bool complete;       /* every table was walked to its end (false: out of time) */
} pcc_store_report;

/* Walks every table (LMDB's free list and table of tables, meta, paths, blobs, refs, uses, lru,
 * profiles, profile_info) in read-only transactions with faults contained, and checks every
 * record: inside the file, of the right size, path entries decode and match their keys, the
 * chunks of each blob come in order and complete it, and, with full, each blob's checksum and
 * header. report(line, ctx) (may be NULL) gets one line per problem ("table: key: what"); *out
 * the counts. seconds > 0: stops after about that long (out->complete false). Structural
 * problems mark the store damaged. PCC_STORE_OK whenever the walk ran, damaged or not. */
pcc_store_status pcc_store_verify(pcc_store *store, bool full, unsigned seconds,
                                  void (*report)(const char *line, void *ctx), void *ctx,
                                  pcc_store_report *out);

#endif /* PCC_STORE_H */
