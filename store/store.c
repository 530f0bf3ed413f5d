/* store.c: the LMDB store of compiled code (see store.h for the model, docs/DESIGN.md, "Keys and
 * validation" and "Eviction", for why). How a damaged file is kept from crashing the server is
 * the section "bounds and fault containment" below (with guard.c); pcc_store_verify is at the
 * end.
 *
 * Record layouts (native byte order: an LMDB file is not portable across architectures anyway):
 *
 *   paths key:   magic[4] opt[1] ns_len[1] ns path            (paths up to PATH_KEY_INLINE bytes)
 *                magic[4] opt[1] ns_len[1] ns 0x00 sha256[32] (longer paths; 0x00 never starts
 *                                                              a path)
 *   paths value: count u8 | (mtime i64 | size u64 | hash i32 | digest[32]) x count, newest
 *                first | path (full, to verify)
 *
 *   blobs key:   magic[4] opt[1] digest[32] (SHA-256 of the source) | chunk be16
 *   blobs value: the record, cut into chunks 0, 1, ... of at most page size - 16 bytes each (so
 *                that each is one LMDB overflow page: a blob never needs contiguous free pages,
 *                and every page a deletion frees can be reused):
 *                checksum u64 (XXH3-64 of every byte after it) | version u8 | kind u8 |
 *                compiler_len u8 | 0 u8 | hash i32 | size u64 | created i64 |
 *                compile_us u32 | record length u32 | compiler | payload
 *                A record of version BLOB_VERSION_ZSTD (config.compress) holds the payload as
 *                one zstd frame that states its size; the checksum is the one of the plain
 *                record (version BLOB_VERSION, the plain length): reading decompresses it into
 *                exactly that record and checks it there. Plain records (version 2) are read
 *                as before; a binary older than compression sees a compressed record as damaged
 *                (a miss, replaced by the next compile), never serves its frame.
 *
 *   refs (DUPSORT): blob key -> paths key, one value per path entry a version of which names
 *                the blob: the blob's references. The blob goes when its last one does.
 *   uses:        blob key -> last_use u64 | payload bytes u64 (exists exactly when the blob does)
 *   lru:         last_use be64 | blob key -> (empty): the blobs, least recently used first.
 *                last_use is a logical clock: one tick per use or stored blob.
 *
 *   profiles (DUPSORT): magic[4] opt[1] ns_len[1] ns name -> path (one value per path)
 *   profile_info:       the same key -> updated i64 (unix seconds) | count u64 | tick u64
 *                       (the clock of uses at the update: the order of updates)
 *
 *   meta "format": u32 STORE_FORMAT. A store of another format (1: XXH3-128 digests, one
 *   version a path, no namespaces, no meta table; 2: no references, profiles as one value) is
 *   emptied at open: it is a cache, its entries come back. A meta without a well-formed format
 *   record, or a store of this format with a table missing, is damaged (open_in).
 *   meta "fig" magic[4]: entries u64 | blobs u64 | bytes u64, the figures of one magic, updated
 *   in the transaction that changes them (so that stats need no scan).
 */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <time.h>

#include <lmdb.h>
#include <zstd.h>

#include "guard.h"
#include "store.h"
#include "pcc_log.h"

#define PATH_KEY_INLINE 400 /* LMDB's default key limit is 511 bytes */
#define SCOPE_MAX (PCC_MAGIC_LEN + 2 + PCC_NAMESPACE_MAX) /* magic, opt, ns_len, ns */
#define PATH_KEY_MAX (SCOPE_MAX + PATH_KEY_INLINE)
#define BLOB_KEY_LEN (PCC_MAGIC_LEN + 1 + PCC_DIGEST_LEN)
#define LRU_KEY_LEN (8 + BLOB_KEY_LEN)
#define PROFILE_KEY_MAX (SCOPE_MAX + PCC_PROFILE_NAME_MAX)
#define STORE_FORMAT 3

#define PATH_VERSION_LEN (8 + 8 + 4 + PCC_DIGEST_LEN)
#define CHUNK_KEY_LEN (BLOB_KEY_LEN + 2)
#define CHUNKS_MAX 65535
#define PAGE_HEADER 16     /* LMDB's page header: an overflow page holds page size - 16 bytes */
#define BLOB_VERSION 2
#define BLOB_VERSION_ZSTD 3 /* the payload compressed (see the layouts above) */
#define BLOB_HEADER_LEN 40
_Static_assert(BLOB_HEADER_LEN >= PCC_BLOB_HEADROOM, "a blob's headroom is its parsed header");
#define USE_VALUE_LEN 16
#define INFO_VALUE_LEN 24
#define FIG_KEY_LEN (3 + PCC_MAGIC_LEN)
#define FIG_VALUE_LEN 24

#define MAGICS_MAX 64      /* magics pcc_store_magics reports */
#define FIG_DELTAS 16      /* magics one transaction accumulates figures for before writing them */
#define USE_STRIPES 16     /* locks of the use table */
#define USE_PROBES 8       /* slots a use looks at before it is lost */
#define USE_STRIPE_SLOTS (PCC_USE_TABLE_SLOTS / USE_STRIPES)
#define WRITE_PAGES 24     /* pages one small write may dirty, besides its value */
#define PROFILE_DELETE_BATCH 64 /* profiles one transaction deletes */
#define DISK_FULL_BYTES (1u << 20) /* a file system with less free is full */

static const char *const TABLE_NAMES[] = {"paths", "blobs", "refs", "uses", "lru",
                                          "profiles", "profile_info"};
static const unsigned TABLE_FLAGS[] = {0, 0, MDB_DUPSORT, 0, 0, MDB_DUPSORT, 0};
enum { T_PATHS, T_BLOBS, T_REFS, T_USES, T_LRU, T_PROFILES, T_INFO, N_TABLES };

typedef struct {
  uint8_t key[BLOB_KEY_LEN];
  bool used;
  uint64_t tick;
} use_slot;

typedef struct {
  pthread_mutex_t lock;
  size_t n;
  use_slot slots[USE_STRIPE_SLOTS];
} use_stripe;

struct pcc_store {
  MDB_env *env;
  MDB_dbi dbi[N_TABLES];
  MDB_dbi meta;
  pcc_store_config config;
  uint64_t page_size;
  atomic_uint_fast64_t generation; /* bumped by every committed write of content */
  atomic_uint_fast64_t clock;      /* the next last-use tick */
  atomic_uint_fast64_t bytes;      /* payload bytes, as of the last commit */
  atomic_uint_fast64_t evictions;
  atomic_uint_fast64_t evicted_bytes;
  atomic_uint_fast64_t puts;        /* puts committed since open */
  atomic_uint_fast64_t put_commits; /* the commits they took (fewer: group commits) */
  atomic_int write_state;          /* the outcome of the last write that needed room */
  use_stripe *uses;                /* USE_STRIPES of them */
  pthread_mutex_t flush_lock;      /* one flush of uses at a time; guards the marks below */
  uint64_t recent_tick;            /* a stored use at or after it is recent: not moved again */
  uint64_t mark_tick;              /* the clock at mark_time: recent_tick once that is old */
  int64_t mark_time;               /* 0: none yet */
  char *dir;
  /* bounds and damage (see "bounds and fault containment" below) */
  const uint8_t *map;              /* LMDB's map of data.mdb, map_len bytes; NULL: not found */
  size_t map_len;
  int fd;                          /* data.mdb (LMDB's descriptor) */
  atomic_uint_fast64_t file_size;  /* of data.mdb, as last seen */
  atomic_bool damaged;             /* the file is damaged: no more reads or writes */
  atomic_uint_fast64_t corruptions; /* damaged records and faults met since open */
  bool verifying;                  /* pcc_store_verify reports damage itself: no log line */
  pthread_mutex_t stats_lock;      /* guards last_stats */
  pcc_store_stats last_stats;      /* the last figures read, for a damaged store */
  /* group commits (see "puts"): the puts waiting, and whether one of them is committing */
  pthread_mutex_t group_lock;
  pthread_cond_t group_done;       /* a group was committed, or its leader left */
  struct put_request *waiting;     /* oldest first */
  struct put_request **waiting_tail;
  bool leading;
};

const char *pcc_store_strerror(pcc_store_status rc)
{
  switch (rc) {
  case PCC_STORE_OK: return "ok";
  case PCC_STORE_NOTFOUND: return "not found";
  case PCC_STORE_CORRUPT: return "corrupt record (dropped)";
  case PCC_STORE_FULL: return "the store's map is full";
  case PCC_STORE_IO: return "store I/O error";
  case PCC_STORE_NOMEM: return "out of memory";
  case PCC_STORE_INVALID: return "invalid argument";
  case PCC_STORE_FORMAT: return "the store was written by a newer pycached";
  case PCC_STORE_NOSPACE: return "no space left on the store's file system";
  case PCC_STORE_DAMAGED: return "the store's file is damaged (run pycached --verify-store)";
  }
  return "unknown store status";
}

static pcc_store_status from_mdb(int mdb_rc)
{
  switch (mdb_rc) {
  case MDB_SUCCESS: return PCC_STORE_OK;
  case MDB_NOTFOUND: return PCC_STORE_NOTFOUND;
  case MDB_MAP_FULL:
  case MDB_TXN_FULL: return PCC_STORE_FULL;
  case ENOSPC:
  case EDQUOT: return PCC_STORE_NOSPACE;
  case ENOMEM: return PCC_STORE_NOMEM;
  case EINVAL: return PCC_STORE_INVALID;
  case MDB_CORRUPTED:
  case MDB_PAGE_NOTFOUND:
  case MDB_INVALID:
  case MDB_VERSION_MISMATCH: return PCC_STORE_DAMAGED;
  default: return PCC_STORE_IO;
  }
}

/* Is mdb_rc one a smaller transaction may not meet (a deletion tries again with fewer)? */
static bool too_big(int mdb_rc)
{
  return mdb_rc == MDB_MAP_FULL || mdb_rc == MDB_TXN_FULL;
}

/* Says on stderr what a write met when it differs from what the last one met (full map, full
 * disk, an I/O error, and when writes that need room succeed again), so that the log tells what
 * happened without a line per refused request. needs_room: a write other than a deletion.
 * Returns the status of mdb_rc. */
static pcc_store_status note_write(pcc_store *store, int mdb_rc, const char *what,
                                   bool needs_room)
{
  struct statvfs fs; /* LMDB reports a short write as EIO: a full file system is one */
  if (mdb_rc == EIO && statvfs(store->dir, &fs) == 0 &&
      (uint64_t)fs.f_bavail * fs.f_frsize < DISK_FULL_BYTES)
    mdb_rc = ENOSPC;
  pcc_store_status rc = from_mdb(mdb_rc);
  if (rc == PCC_STORE_NOTFOUND || rc == PCC_STORE_INVALID || rc == PCC_STORE_NOMEM ||
      (rc == PCC_STORE_OK && !needs_room))
    return rc;
  int before = atomic_exchange(&store->write_state, (int)rc);
  if (before == (int)rc && rc != PCC_STORE_IO)
    return rc;
  if (rc == PCC_STORE_FULL)
    pcc_logf(PCC_LOG_ERROR, "store: %s refused: the map (--map-size %llu) is full but for the "
             "pages kept for deletions; writes are refused until space is freed (evict with a "
             "lower --max-size, or invalidate, purge; or raise --map-size)", what,
             (unsigned long long)store->config.map_size);
  else if (rc == PCC_STORE_NOSPACE)
    pcc_logf(PCC_LOG_ERROR, "store: %s failed: no space left on the file system of the store "
             "(%s); nothing was written, free disk space", what, mdb_strerror(mdb_rc));
  else if (rc == PCC_STORE_IO)
    pcc_logf(PCC_LOG_ERROR, "store: %s failed: %s", what, mdb_strerror(mdb_rc));
  else if (rc == PCC_STORE_OK && before != PCC_STORE_OK)
    pcc_logf(PCC_LOG_INFO, "store: writes succeed again");
  return rc;
}

/* Begins a transaction, adopting a map size grown by another process (MDB_MAP_RESIZED). */
static int txn_begin(pcc_store *store, unsigned flags, MDB_txn **txn)
{
  int mdb_rc = mdb_txn_begin(store->env, NULL, flags, txn);
  if (mdb_rc == MDB_MAP_RESIZED) {
    mdb_env_set_mapsize(store->env, 0);
    mdb_rc = mdb_txn_begin(store->env, NULL, flags, txn);
  }
  return mdb_rc;
}

/* ---- bounds and fault containment (docs/OPERATIONS.md, "A damaged store") ----------------
 * A damaged data.mdb can hand back a value whose size reaches past the end of the file (a read
 * of it is a SIGBUS) or make LMDB follow a wild offset (SIGSEGV). Three defences:
 *   - every key and value LMDB returns (checked_get, checked_cget) is checked to lie inside the
 *     file (the map's address from /proc/self/maps, the file's size from fstat) before anyone
 *     reads it; one that does not, or an MDB_CORRUPTED / MDB_PAGE_NOTFOUND, marks the store
 *     damaged (MDB_CORRUPTED in here, PCC_STORE_DAMAGED outside) and is never read;
 *   - every read-only transaction runs through guarded_read, which arms guard.c's handler: a
 *     SIGBUS or SIGSEGV inside the map jumps back, the transaction ends, the store is damaged;
 *   - a damaged store answers every read and write at once with PCC_STORE_DAMAGED, without
 *     touching the file again (lookups miss, compiles are answered without being stored), so
 *     nothing is written into a damaged tree, and logs once what the operator should do.
 * Write transactions are not guarded (LMDB links stack cursors into them; no jump out of one is
 * safe): they run only on a store that pcc_store_open and the reads before them found sound. */

#define READER_CURSORS 8

/* A guarded read-only transaction and the cursors opened in it (closed by guarded_read, also
 * after a fault). */
typedef struct reader {
  pcc_store *store;
  MDB_txn *txn;
  MDB_cursor *cursors[READER_CURSORS];
  unsigned n;
  bool commit; /* end with mdb_txn_commit (keeps the table handles opened in it) */
  bool faulted;
  void *owned; /* an allocation in progress, freed after a fault (blob_read) */
  struct reader *prev;
  store_guard_frame frame;
} reader;

static _Thread_local reader *current_reader;

typedef int (*read_fn)(reader *r, void *arg);

/* Marks the store damaged (what: why; addr: a faulting address or NULL) and counts it; logs the
 * first time. */
static void store_damage(pcc_store *store, const char *what, const void *addr)
{
  atomic_fetch_add(&store->corruptions, 1);
  if (atomic_exchange(&store->damaged, true) || store->verifying)
    return;
  char where[64] = "";
  if (addr != NULL && store->map != NULL)
    snprintf(where, sizeof where, " at offset %llu of data.mdb",
             (unsigned long long)((const uint8_t *)addr - store->map));
  pcc_logf(PCC_LOG_ERROR, "store %s: the file is damaged (%s%s). Lookups now answer misses "
           "and nothing more is written to the store. Stop the server and run `pycached "
           "--verify-store --store %s`, then start it with --on-damaged-store=quarantine or "
           "restore a backup (docs/OPERATIONS.md, \"A damaged store\")",
           store->dir, what, where, store->dir);
}

/* Does v (a key or value LMDB returned) lie inside the file? A value outside the map is in a
 * page of this process's write transaction (in memory): fine. */
static bool in_file(pcc_store *store, const MDB_val *v)
{
  if (v->mv_size == 0 || store->map == NULL)
    return true;
  uintptr_t at = (uintptr_t)v->mv_data, base = (uintptr_t)store->map;
  if (at < base || at - base >= store->map_len)
    return true;
  uint64_t offset = at - base;
  if (v->mv_size <= store->map_len && offset + v->mv_size <= atomic_load(&store->file_size))
    return true;
  struct stat st; /* the file may have grown since: our own commits */
  if (fstat(store->fd, &st) != 0)
    return false;
  atomic_store(&store->file_size, (uint64_t)st.st_size);
  return v->mv_size <= store->map_len && offset + v->mv_size <= (uint64_t)st.st_size;
}

static pcc_store *store_of(MDB_txn *txn)
{
  return mdb_env_get_userctx(mdb_txn_env(txn));
}

/* The outcome of a read that returned mdb_rc with key and value (either may be NULL). */
static int checked(pcc_store *store, int mdb_rc, const MDB_val *key, const MDB_val *value)
{
  if (mdb_rc == MDB_CORRUPTED || mdb_rc == MDB_PAGE_NOTFOUND) {
    store_damage(store, mdb_strerror(mdb_rc), NULL);
    return MDB_CORRUPTED;
  }
  if (mdb_rc == MDB_SUCCESS && ((key != NULL && !in_file(store, key)) ||
                                (value != NULL && !in_file(store, value)))) {
    store_damage(store, "a record reaches past the end of the file", NULL);
    return MDB_CORRUPTED;
  }
  return mdb_rc;
}

/* mdb_get and mdb_cursor_get, with what they return checked (see above). */
static int checked_get(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *value)
{
  return checked(store_of(txn), mdb_get(txn, dbi, key, value), NULL, value);
}

static int checked_cget(MDB_cursor *cursor, MDB_val *key, MDB_val *value, MDB_cursor_op op)
{
  return checked(store_of(mdb_cursor_txn(cursor)), mdb_cursor_get(cursor, key, value, op), key,
                 value);
}

/* mdb_cursor_open and mdb_cursor_close, keeping the cursors of a guarded read in its reader so
 * that a fault does not leak them. */
static int open_cursor(MDB_txn *txn, MDB_dbi dbi, MDB_cursor **out)
{
  int mdb_rc = mdb_cursor_open(txn, dbi, out);
  reader *r = current_reader;
  if (mdb_rc == MDB_SUCCESS && r != NULL && r->txn == txn && r->n < READER_CURSORS)
    r->cursors[r->n++] = *out;
  return mdb_rc;
}

static void close_cursor(MDB_cursor *cursor)
{
  reader *r = current_reader;
  for (unsigned i = 0; cursor != NULL && r != NULL && i < r->n; i++)
    if (r->cursors[i] == cursor) {
      r->cursors[i] = r->cursors[--r->n];
      break;
    }
  mdb_cursor_close(cursor);
}

/* Runs fn armed; a contained fault marks the store damaged and answers MDB_CORRUPTED. Nothing
 * here is changed between sigsetjmp and a jump back but through r (in memory). */
static int run_guarded(reader *r, read_fn fn, void *arg)
{
  if (sigsetjmp(r->frame.jmp, 0) != 0) {
    current_reader = r->prev;
    r->faulted = true;
    if (r->frame.sig != SIGABRT) /* an assertion of LMDB's was reported by on_lmdb_assert */
      store_damage(r->store, r->frame.sig == SIGBUS ? "SIGBUS reading it" : "SIGSEGV reading it",
                   r->frame.addr);
    return MDB_CORRUPTED;
  }
  r->prev = current_reader;
  current_reader = r;
  store_guard_arm(&r->frame);
  int mdb_rc = fn(r, arg);
  store_guard_disarm(&r->frame);
  current_reader = r->prev;
  return mdb_rc;
}

/* Runs fn(r, arg) in a read-only transaction with faults contained (see above). A damaged store
 * answers MDB_CORRUPTED without a transaction, unless even_damaged (pcc_store_verify). */
static int guarded_read_in(pcc_store *store, read_fn fn, void *arg, bool even_damaged)
{
  if (atomic_load(&store->damaged) && !even_damaged)
    return MDB_CORRUPTED;
  reader r;
  memset(&r, 0, sizeof r);
  r.store = store;
  int mdb_rc = txn_begin(store, MDB_RDONLY, &r.txn);
  if (mdb_rc != MDB_SUCCESS)
    return mdb_rc;
  mdb_rc = run_guarded(&r, fn, arg);
  while (r.n > 0)
    mdb_cursor_close(r.cursors[--r.n]);
  if (r.faulted)
    free(r.owned);
  if (r.commit && mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_txn_commit(r.txn);
  else
    mdb_txn_abort(r.txn);
  return mdb_rc;
}

static int guarded_read(pcc_store *store, read_fn fn, void *arg)
{
  return guarded_read_in(store, fn, arg, false);
}

/* LMDB's assertion callback: a failed assertion in a guarded read is damage, contained like a
 * fault (guard.c); anywhere else LMDB aborts after this returns. */
static void on_lmdb_assert(MDB_env *env, const char *msg)
{
  pcc_store *store = mdb_env_get_userctx(env);
  if (store != NULL && current_reader != NULL && current_reader->store == store) {
    store_damage(store, msg, NULL);
    store_guard_escape();
  }
  pcc_logf(PCC_LOG_ERROR, "store: LMDB: %s", msg);
}

/* Finds LMDB's map of data.mdb in /proc/self/maps (mdb_env_info gives the map's address only
 * with MDB_FIXEDMAP) and registers it with guard.c. */
static void find_map(pcc_store *store)
{
  struct stat st;
  if (mdb_env_get_fd(store->env, &store->fd) != MDB_SUCCESS || fstat(store->fd, &st) != 0)
    return;
  atomic_store(&store->file_size, (uint64_t)st.st_size);
  FILE *maps = fopen("/proc/self/maps", "re");
  char line[PATH_MAX + 256];
  while (maps != NULL && fgets(line, sizeof line, maps) != NULL) {
    /* start-end perms offset major:minor inode path */
    char *at = line, *end;
    uint64_t start = strtoull(at, &end, 16), stop;
    if (*end != '-')
      continue;
    stop = strtoull(end + 1, &end, 16);
    at = strchr(end + 1, ' '); /* past the permissions */
    if (at == NULL)
      continue;
    uint64_t offset = strtoull(at + 1, &end, 16);
    unsigned long dev_major = strtoul(end + 1, &end, 16);
    if (*end != ':')
      continue;
    unsigned long dev_minor = strtoul(end + 1, &end, 16);
    uint64_t inode = strtoull(end + 1, &end, 10);
    if (offset == 0 && inode == (uint64_t)st.st_ino && dev_major == major(st.st_dev) &&
        dev_minor == minor(st.st_dev) && stop > start && stop - start > store->map_len) {
      store->map = (const uint8_t *)(uintptr_t)start;
      store->map_len = (size_t)(stop - start);
    }
  }
  if (maps != NULL)
    fclose(maps);
  if (store->map != NULL && !store_guard_map(store->map, store->map_len))
    store->map = NULL;
  if (store->map == NULL)
    pcc_logf(PCC_LOG_WARN, "store %s: LMDB's map not found in /proc/self/maps: reads of a "
             "damaged file are not contained", store->dir);
}

uint64_t pcc_store_generation(pcc_store *store)
{
  return atomic_load(&store->generation);
}

/* ---- keys ------------------------------------------------------------------------------ */

/* The scope of a key: magic[4] opt[1] ns_len[1] ns. Returns its length. ns NULL is "". */
static size_t scope_key(uint8_t *key, const pcc_magic *magic, int opt, const char *ns)
{
  size_t ns_len = ns ? strnlen(ns, PCC_NAMESPACE_MAX) : 0;
  memcpy(key, magic->bytes, PCC_MAGIC_LEN);
  key[PCC_MAGIC_LEN] = (uint8_t)opt;
  key[PCC_MAGIC_LEN + 1] = (uint8_t)ns_len;
  memcpy(key + PCC_MAGIC_LEN + 2, ns ? ns : "", ns_len);
  return PCC_MAGIC_LEN + 2 + ns_len;
}

static size_t path_key(uint8_t key[PATH_KEY_MAX], const char *ns, const pcc_magic *magic,
                       int opt, const char *path, size_t path_len)
{
  size_t scope = scope_key(key, magic, opt, ns);
  uint8_t *rest = key + scope;
  if (path_len <= PATH_KEY_INLINE) {
    memcpy(rest, path, path_len);
    return scope + path_len;
  }
  pcc_digest path_digest;
  pcc_digest_compute(path, path_len, &path_digest);
  rest[0] = 0;
  memcpy(rest + 1, path_digest.bytes, PCC_DIGEST_LEN);
  return scope + 1 + PCC_DIGEST_LEN;
}

static void blob_key(uint8_t key[BLOB_KEY_LEN], const pcc_magic *magic, int opt,
                     const pcc_digest *digest)
{
  memcpy(key, magic->bytes, PCC_MAGIC_LEN);
  key[PCC_MAGIC_LEN] = (uint8_t)opt;
  memcpy(key + PCC_MAGIC_LEN + 1, digest->bytes, PCC_DIGEST_LEN);
}

/* The key of chunk number `chunk` of the blob of key blob. */
static void chunk_key(uint8_t key[CHUNK_KEY_LEN], const uint8_t *blob, unsigned chunk)
{
  memcpy(key, blob, BLOB_KEY_LEN);
  key[BLOB_KEY_LEN] = (uint8_t)(chunk >> 8);
  key[BLOB_KEY_LEN + 1] = (uint8_t)chunk;
}

static void lru_key(uint8_t key[LRU_KEY_LEN], uint64_t tick, const uint8_t *blob)
{
  for (int i = 0; i < 8; i++) /* big-endian: keys sort by tick */
    key[i] = (uint8_t)(tick >> (56 - 8 * i));
  memcpy(key + 8, blob, BLOB_KEY_LEN);
}

static uint64_t lru_tick(const uint8_t *key)
{
  uint64_t tick = 0;
  for (int i = 0; i < 8; i++)
    tick = tick << 8 | key[i];
  return tick;
}

static bool valid_scope(const char *ns, const pcc_magic *magic, int opt)
{
  return (ns == NULL || strlen(ns) <= PCC_NAMESPACE_MAX) && magic != NULL && opt >= 0 &&
         opt <= PCC_OPT_MAX;
}

static bool valid_args(const char *ns, const pcc_magic *magic, int opt, const char *path,
                       size_t path_len)
{
  return valid_scope(ns, magic, opt) && path != NULL && path_len > 0 && path_len <= PCC_PATH_MAX;
}

/* Does the scope at the start of key (magic, opt, ns) match the filter's? */
static bool scope_match(const pcc_store_filter *filter, const uint8_t *key, size_t len)
{
  if (filter == NULL)
    return true;
  if (len < PCC_MAGIC_LEN + 2 || len < PCC_MAGIC_LEN + 2u + key[PCC_MAGIC_LEN + 1])
    return false;
  if (filter->has_magic && memcmp(filter->magic.bytes, key, PCC_MAGIC_LEN) != 0)
    return false;
  if (filter->opt >= 0 && filter->opt != key[PCC_MAGIC_LEN])
    return false;
  size_t ns_len = key[PCC_MAGIC_LEN + 1];
  return filter->ns == NULL ||
         (strlen(filter->ns) == ns_len && memcmp(filter->ns, key + PCC_MAGIC_LEN + 2, ns_len) == 0);
}

/* Is the key past every key the filter can match (keys sort by magic, then opt)? */
static bool filter_done(const pcc_store_filter *filter, const MDB_val *key)
{
  if (filter == NULL || !filter->has_magic)
    return false;
  int order = memcmp(key->mv_data, filter->magic.bytes, PCC_MAGIC_LEN);
  if (order != 0 || filter->opt < 0)
    return order > 0;
  return ((const uint8_t *)key->mv_data)[PCC_MAGIC_LEN] > filter->opt;
}

/* Positions cursor on the first key after `after` (or at the filter's first possible key). */
static int scan_start(MDB_cursor *cursor, const pcc_store_filter *filter, const uint8_t *after,
                      size_t after_len, MDB_val *key, MDB_val *value)
{
  uint8_t start[PCC_MAGIC_LEN + 1];
  if (after_len > 0) {
    *key = (MDB_val){after_len, (void *)after};
    int rc = checked_cget(cursor, key, value, MDB_SET_RANGE);
    if (rc == MDB_SUCCESS && key->mv_size == after_len &&
        memcmp(key->mv_data, after, after_len) == 0)
      rc = checked_cget(cursor, key, value, MDB_NEXT_NODUP);
    return rc;
  }
  if (filter != NULL && filter->has_magic) {
    memcpy(start, filter->magic.bytes, PCC_MAGIC_LEN);
    start[PCC_MAGIC_LEN] = (uint8_t)(filter->opt > 0 ? filter->opt : 0);
    key->mv_data = start;
    key->mv_size = filter->opt >= 0 ? PCC_MAGIC_LEN + 1 : PCC_MAGIC_LEN;
    return checked_cget(cursor, key, value, MDB_SET_RANGE);
  }
  return checked_cget(cursor, key, value, MDB_FIRST);
}

/* ---- write transactions and the figures they change ------------------------------------- */

typedef struct {
  pcc_magic magic;
  int64_t entries, blobs, bytes;
} fig_delta;

/* A write transaction with the changes to the per-magic figures it has made so far. */
typedef struct {
  pcc_store *store;
  MDB_txn *txn;
  fig_delta deltas[FIG_DELTAS];
  unsigned n;
  int64_t bytes;     /* the change of the payload bytes of the whole store */
  uint64_t evicted;  /* blobs evicted */
  uint64_t evicted_bytes; /* their payload bytes */
} wtxn;

static int wtxn_begin(pcc_store *store, wtxn *w)
{
  memset(w, 0, sizeof *w);
  w->store = store;
  if (atomic_load(&store->damaged))
    return MDB_CORRUPTED; /* nothing is written into a damaged tree */
  return txn_begin(store, 0, &w->txn);
}

static void wtxn_abort(wtxn *w)
{
  mdb_txn_abort(w->txn);
  w->txn = NULL;
}

static void fig_key(uint8_t key[FIG_KEY_LEN], const uint8_t *magic)
{
  memcpy(key, "fig", 3);
  memcpy(key + 3, magic, PCC_MAGIC_LEN);
}

/* Writes the accumulated figures into meta. */
static int fig_apply(wtxn *w)
{
  for (unsigned i = 0; i < w->n; i++) {
    fig_delta *d = &w->deltas[i];
    uint8_t key_bytes[FIG_KEY_LEN];
    fig_key(key_bytes, d->magic.bytes);
    MDB_val key = {FIG_KEY_LEN, key_bytes}, value;
    uint64_t fig[3] = {0, 0, 0};
    int mdb_rc = checked_get(w->txn, w->store->meta, &key, &value);
    if (mdb_rc == MDB_SUCCESS && value.mv_size == FIG_VALUE_LEN)
      memcpy(fig, value.mv_data, FIG_VALUE_LEN);
    else if (mdb_rc != MDB_SUCCESS && mdb_rc != MDB_NOTFOUND)
      return mdb_rc;
    int64_t change[3] = {d->entries, d->blobs, d->bytes};
    for (int f = 0; f < 3; f++)
      fig[f] = change[f] < 0 && (uint64_t)-change[f] > fig[f] ? 0 : fig[f] + (uint64_t)change[f];
    if (fig[0] == 0 && fig[1] == 0 && fig[2] == 0) {
      mdb_rc = mdb_del(w->txn, w->store->meta, &key, NULL);
      mdb_rc = mdb_rc == MDB_NOTFOUND ? MDB_SUCCESS : mdb_rc;
    } else {
      value = (MDB_val){FIG_VALUE_LEN, fig};
      mdb_rc = mdb_put(w->txn, w->store->meta, &key, &value, 0);
    }
    if (mdb_rc != MDB_SUCCESS)
      return mdb_rc;
  }
  w->n = 0;
  return MDB_SUCCESS;
}

/* Adds to the figures of magic (its first PCC_MAGIC_LEN bytes). */
static int fig_add(wtxn *w, const uint8_t *magic, int64_t entries, int64_t blobs, int64_t bytes)
{
  unsigned i = 0;
  while (i < w->n && memcmp(w->deltas[i].magic.bytes, magic, PCC_MAGIC_LEN) != 0)
    i++;
  if (i == FIG_DELTAS) {
    int mdb_rc = fig_apply(w);
    if (mdb_rc != MDB_SUCCESS)
      return mdb_rc;
    i = 0;
  }
  if (i == w->n) {
    memset(&w->deltas[i], 0, sizeof w->deltas[i]);
    memcpy(w->deltas[i].magic.bytes, magic, PCC_MAGIC_LEN);
    w->n++;
  }
  w->deltas[i].entries += entries;
  w->deltas[i].blobs += blobs;
  w->deltas[i].bytes += bytes;
  w->bytes += bytes;
  return MDB_SUCCESS;
}

/* Writes the figures and commits. content: the write changes what is served (a new generation);
 * the flushes of uses do not. */
static int wtxn_commit(wtxn *w, bool content)
{
  int mdb_rc = fig_apply(w);
  if (mdb_rc != MDB_SUCCESS) {
    wtxn_abort(w);
    return mdb_rc;
  }
  mdb_rc = mdb_txn_commit(w->txn);
  w->txn = NULL;
  if (mdb_rc != MDB_SUCCESS)
    return mdb_rc;
  if (w->bytes >= 0)
    atomic_fetch_add(&w->store->bytes, (uint64_t)w->bytes);
  else
    atomic_fetch_sub(&w->store->bytes, (uint64_t)-w->bytes);
  if (content)
    atomic_fetch_add(&w->store->generation, 1);
  atomic_fetch_add(&w->store->evictions, w->evicted);
  atomic_fetch_add(&w->store->evicted_bytes, w->evicted_bytes);
  return MDB_SUCCESS;
}

/* Deletes every magic's figures (a write transaction). */
static int figures_clear(pcc_store *store, MDB_txn *txn)
{
  MDB_cursor *cursor = NULL;
  MDB_val key = {3, (void *)"fig"}, value;
  int mdb_rc = open_cursor(txn, store->meta, &cursor);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = checked_cget(cursor, &key, &value, MDB_SET_RANGE);
  while (mdb_rc == MDB_SUCCESS && key.mv_size == FIG_KEY_LEN &&
         memcmp(key.mv_data, "fig", 3) == 0) {
    mdb_rc = mdb_cursor_del(cursor, 0);
    key = (MDB_val){3, (void *)"fig"};
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = checked_cget(cursor, &key, &value, MDB_SET_RANGE);
  }
  close_cursor(cursor);
  return mdb_rc == MDB_NOTFOUND ? MDB_SUCCESS : mdb_rc;
}

/* Commits w when it changed something, else ends it without a commit (no new generation). */
static int wtxn_finish(wtxn *w, bool changed)
{
  if (changed)
    return wtxn_commit(w, true);
  wtxn_abort(w);
  return MDB_SUCCESS;
}

/* Sums every magic's figures (txn: any transaction): sums[0] entries, [1] blobs, [2] bytes. */
static int figures_sum(pcc_store *store, MDB_txn *txn, uint64_t sums[3])
{
  MDB_cursor *cursor = NULL;
  MDB_val key = {3, (void *)"fig"}, value;
  sums[0] = sums[1] = sums[2] = 0;
  int mdb_rc = open_cursor(txn, store->meta, &cursor);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = checked_cget(cursor, &key, &value, MDB_SET_RANGE);
  while (mdb_rc == MDB_SUCCESS && key.mv_size == FIG_KEY_LEN &&
         memcmp(key.mv_data, "fig", 3) == 0) {
    uint64_t fig[3];
    if (value.mv_size == FIG_VALUE_LEN) {
      memcpy(fig, value.mv_data, FIG_VALUE_LEN);
      for (int f = 0; f < 3; f++)
        sums[f] += fig[f];
    }
    mdb_rc = checked_cget(cursor, &key, &value, MDB_NEXT);
  }
  close_cursor(cursor);
  return mdb_rc == MDB_NOTFOUND ? MDB_SUCCESS : mdb_rc;
}

/* ---- open, close, format ---------------------------------------------------------------- */

/* Drops the tables of a store of another format (deleting them, since their flags may differ
 * from this format's), saying on stderr how many entries went. Caller holds a write
 * transaction with meta open. */
static int drop_old_tables(pcc_store *store, MDB_txn *txn)
{
  static const char *const old_names[] = {"paths", "blobs", "refs", "uses", "lru", "profiles",
                                          "profile_info"};
  uint64_t counts[2] = {0, 0};
  for (size_t i = 0; i < sizeof old_names / sizeof old_names[0]; i++) {
    MDB_dbi dbi;
    MDB_stat st;
    int mdb_rc = mdb_dbi_open(txn, old_names[i], 0, &dbi);
    if (mdb_rc == MDB_NOTFOUND)
      continue;
    if (mdb_rc == MDB_INCOMPATIBLE) /* opened with other flags: try the DUPSORT ones */
      mdb_rc = mdb_dbi_open(txn, old_names[i], MDB_DUPSORT, &dbi);
    if (mdb_rc == MDB_SUCCESS && i < 2 && mdb_stat(txn, dbi, &st) == MDB_SUCCESS)
      counts[i] = st.ms_entries;
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = mdb_drop(txn, dbi, 1);
    if (mdb_rc != MDB_SUCCESS)
      return mdb_rc;
  }
  int mdb_rc = figures_clear(store, txn); /* and the figures of that format, if any */
  if (mdb_rc != MDB_SUCCESS)
    return mdb_rc;
  if (counts[0] + counts[1] > 0)
    pcc_logf(PCC_LOG_WARN, "the store holds entries of an older format (%llu paths, %llu "
             "blobs): they are dropped and will be compiled again",
             (unsigned long long)counts[0], (unsigned long long)counts[1]);
  return MDB_SUCCESS;
}

/* Checks the format in the open write transaction (meta open, no other table yet): a new store
 * gets STORE_FORMAT, an older one is emptied, a newer one refused. Then opens the tables. */
static pcc_store_status check_format_and_open(pcc_store *store, MDB_txn *txn)
{
  static const char name[] = "format";
  MDB_val key = {sizeof name - 1, (void *)name}, value;
  uint32_t format = 0;
  int mdb_rc = checked_get(txn, store->meta, &key, &value);
  if (mdb_rc == MDB_SUCCESS && value.mv_size == sizeof format)
    memcpy(&format, value.mv_data, sizeof format);
  else if (mdb_rc != MDB_NOTFOUND && mdb_rc != MDB_SUCCESS)
    return from_mdb(mdb_rc);
  if (format > STORE_FORMAT)
    return PCC_STORE_FORMAT;
  mdb_rc = format == STORE_FORMAT ? MDB_SUCCESS : drop_old_tables(store, txn);
  for (int t = 0; t < N_TABLES && mdb_rc == MDB_SUCCESS; t++)
    mdb_rc = mdb_dbi_open(txn, TABLE_NAMES[t], MDB_CREATE | TABLE_FLAGS[t], &store->dbi[t]);
  if (mdb_rc == MDB_SUCCESS && format != STORE_FORMAT) {
    format = STORE_FORMAT;
    value = (MDB_val){sizeof format, &format};
    mdb_rc = mdb_put(txn, store->meta, &key, &value, 0);
  }
  return from_mdb(mdb_rc);
}

/* Reads what the store keeps in memory from the file: the clock (after the last use), the bytes. */
static int load_state_in(reader *r, void *arg)
{
  (void)arg;
  pcc_store *store = r->store;
  MDB_txn *txn = r->txn;
  MDB_cursor *cursor = NULL;
  MDB_val key, value;
  uint64_t sums[3] = {0, 0, 0};
  int mdb_rc = open_cursor(txn, store->dbi[T_LRU], &cursor);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = checked_cget(cursor, &key, &value, MDB_LAST);
  atomic_store(&store->clock, mdb_rc == MDB_SUCCESS && key.mv_size == LRU_KEY_LEN
                                ? lru_tick(key.mv_data) + 1 : 1);
  if (mdb_rc == MDB_SUCCESS || mdb_rc == MDB_NOTFOUND)
    mdb_rc = figures_sum(store, txn, sums);
  atomic_store(&store->bytes, sums[2]);
  close_cursor(cursor);
  return mdb_rc;
}

static int load_state(pcc_store *store)
{
  return guarded_read(store, load_state_in, NULL);
}

/* LMDB's own figures, checked before any tree is read: a page size LMDB could have written, and
 * no page past the end of the file (a damaged meta page would make LMDB read them). */
static int check_meta(pcc_store *store)
{
  MDB_stat env_stat;
  MDB_envinfo info;
  int mdb_rc = mdb_env_stat(store->env, &env_stat);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_env_info(store->env, &info);
  if (mdb_rc != MDB_SUCCESS)
    return mdb_rc;
  store->page_size = env_stat.ms_psize;
  uint64_t psize = env_stat.ms_psize, file = atomic_load(&store->file_size);
  if (psize < 512 || psize > 65536 || (psize & (psize - 1)) != 0 ||
      (store->map != NULL && (info.me_last_pgno + 1) > file / psize && file > 0)) {
    store_damage(store, "LMDB's meta page names pages past the end of the file", NULL);
    return MDB_CORRUPTED;
  }
  return MDB_SUCCESS;
}

/* What pcc_store_open finds before it writes anything. */
typedef struct {
  bool ready;      /* the store is of this format with every table: opened read-only */
  uint32_t format; /* 0: none recorded */
} open_probe;

/* Walks LMDB's table of tables (every record in bounds), reads the format and, for a store of
 * this format whose tables all exist, opens them (the transaction commits: the handles stay),
 * so that opening an existing store writes nothing. */
static int open_in(reader *r, void *arg)
{
  open_probe *o = arg;
  pcc_store *store = r->store;
  MDB_cursor *cursor = NULL;
  MDB_val key, value;
  int mdb_rc = open_cursor(r->txn, 1, &cursor); /* 1: LMDB's MAIN_DBI */
  while (mdb_rc == MDB_SUCCESS)
    mdb_rc = checked_cget(cursor, &key, &value, MDB_NEXT);
  close_cursor(cursor);
  if (mdb_rc != MDB_NOTFOUND)
    return mdb_rc;
  mdb_rc = mdb_dbi_open(r->txn, "meta", 0, &store->meta);
  if (mdb_rc != MDB_SUCCESS) /* a new store, or one of format 1 (it had no meta) */
    return mdb_rc == MDB_NOTFOUND ? MDB_SUCCESS : mdb_rc;
  /* Every format since 2 writes meta, its format record (a u32, never 0) and all its tables in
   * one transaction: a meta without a well-formed record, or a table of this format missing,
   * is damage (a flipped byte in a key or a table's name), not a store to empty or to create
   * anew (which the drill saw: `profiles` renamed by a flip, and the store called empty). */
  static const char name[] = "format";
  key = (MDB_val){sizeof name - 1, (void *)name};
  mdb_rc = checked_get(r->txn, store->meta, &key, &value);
  if (mdb_rc != MDB_SUCCESS)
    return mdb_rc == MDB_NOTFOUND ? MDB_CORRUPTED : mdb_rc;
  if (value.mv_size != sizeof o->format)
    return MDB_CORRUPTED;
  memcpy(&o->format, value.mv_data, sizeof o->format);
  if (o->format == 0)
    return MDB_CORRUPTED;
  if (o->format != STORE_FORMAT)
    return MDB_SUCCESS;
  for (int t = 0; t < N_TABLES; t++) {
    mdb_rc = mdb_dbi_open(r->txn, TABLE_NAMES[t], TABLE_FLAGS[t], &store->dbi[t]);
    if (mdb_rc != MDB_SUCCESS)
      return mdb_rc == MDB_NOTFOUND ? MDB_CORRUPTED : mdb_rc;
  }
  o->ready = true;
  r->commit = true;
  return MDB_SUCCESS;
}

/* What a failure of the open's reads (the probe, load_state) says of the file: MDB_BAD_TXN
 * there (LMDB marked the transaction failed: it met a page it could not use; seen by the
 * corruption drill, seed 270574657, in load_state) and MDB_INCOMPATIBLE (a table's record of
 * another kind) come only of a damaged file, as MDB_CORRUPTED does, not of an I/O error. */
static int damage_at_open(int mdb_rc)
{
  return mdb_rc == MDB_BAD_TXN || mdb_rc == MDB_INCOMPATIBLE ? MDB_CORRUPTED : mdb_rc;
}

pcc_store_status pcc_store_open(const char *dir, const pcc_store_config *config,
                                pcc_store **out)
{
  if (dir == NULL || out == NULL)
    return PCC_STORE_INVALID;
  *out = NULL;
  pcc_store *store = calloc(1, sizeof *store);
  if (store == NULL)
    return PCC_STORE_NOMEM;
  if (config != NULL)
    store->config = *config;
  if (store->config.map_size == 0)
    store->config.map_size = PCC_STORE_DEFAULT_MAP_SIZE;
  if (store->config.max_profiles == 0)
    store->config.max_profiles = PCC_PROFILES_MAX_DEFAULT;
  store->uses = calloc(USE_STRIPES, sizeof *store->uses);
  store->dir = strdup(dir);
  if (store->uses == NULL || store->dir == NULL) {
    free(store->uses);
    free(store->dir);
    free(store);
    return PCC_STORE_NOMEM;
  }
  for (int s = 0; s < USE_STRIPES; s++)
    pthread_mutex_init(&store->uses[s].lock, NULL);
  pthread_mutex_init(&store->flush_lock, NULL);
  pthread_mutex_init(&store->stats_lock, NULL);
  pthread_mutex_init(&store->group_lock, NULL);
  pthread_cond_init(&store->group_done, NULL);
  store->waiting_tail = &store->waiting;
  store->fd = -1;
  store->verifying = store->config.read_only; /* pcc_store_verify reports for itself */
  MDB_txn *txn = NULL;
  int mdb_rc = mdb_env_create(&store->env);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_env_set_maxdbs(store->env, N_TABLES + 2);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_env_set_maxreaders(store->env, 512);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_env_set_mapsize(store->env, store->config.map_size);
  /* NOTLS: read transactions are not tied to threads. NOMETASYNC: a system crash may undo the
   * last commit but never corrupts the file. */
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_env_open(store->env, dir,
                          MDB_NOTLS | MDB_NOMETASYNC | (store->config.no_sync ? MDB_NOSYNC : 0) |
                          (store->config.read_only ? MDB_RDONLY : 0),
                          0640);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_env_set_userctx(store->env, store);
  if (mdb_rc == MDB_SUCCESS)
    mdb_env_set_assert(store->env, on_lmdb_assert); /* fails only where LMDB has no asserts */
  if (mdb_rc == MDB_SUCCESS)
    store_guard_code((const void *)(uintptr_t)mdb_cursor_get);
  if (mdb_rc == MDB_SUCCESS && !store_guard_install())
    pcc_logf(PCC_LOG_WARN, "store %s: cannot install the fault handlers: reads of a damaged "
             "file are not contained", dir);
  if (mdb_rc == MDB_SUCCESS) {
    find_map(store);
    mdb_rc = check_meta(store);
  }
  open_probe probe = {false, 0};
  if (mdb_rc == MDB_SUCCESS) {
    int dead = 0;
    if (!store->config.read_only)
      mdb_reader_check(store->env, &dead);
    mdb_rc = damage_at_open(guarded_read(store, open_in, &probe));
  }
  pcc_store_status rc = PCC_STORE_OK;
  if (mdb_rc == MDB_SUCCESS && !probe.ready && store->config.read_only)
    rc = probe.format > STORE_FORMAT ? PCC_STORE_FORMAT : PCC_STORE_NOTFOUND;
  if (mdb_rc == MDB_SUCCESS && rc == PCC_STORE_OK && !probe.ready) {
    /* a new store, or one of another format: created or emptied in a write transaction */
    mdb_rc = txn_begin(store, 0, &txn);
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &store->meta);
    if (mdb_rc == MDB_SUCCESS)
      rc = check_format_and_open(store, txn);
    if (mdb_rc == MDB_SUCCESS && rc == PCC_STORE_OK) {
      mdb_rc = mdb_txn_commit(txn);
      txn = NULL;
    }
  }
  if (mdb_rc == MDB_SUCCESS && rc == PCC_STORE_OK)
    mdb_rc = damage_at_open(load_state(store));
  if (mdb_rc != MDB_SUCCESS || rc != PCC_STORE_OK) {
    mdb_txn_abort(txn);
    pcc_store_close(store);
    return rc != PCC_STORE_OK ? rc : from_mdb(mdb_rc);
  }
  *out = store;
  return PCC_STORE_OK;
}

void pcc_store_close(pcc_store *store)
{
  if (store == NULL)
    return;
  if (store->map != NULL)
    store_guard_forget(store->map);
  if (store->env != NULL)
    mdb_env_close(store->env);
  if (store->uses != NULL) {
    for (int s = 0; s < USE_STRIPES; s++)
      pthread_mutex_destroy(&store->uses[s].lock);
    pthread_mutex_destroy(&store->flush_lock);
    pthread_mutex_destroy(&store->stats_lock);
    pthread_mutex_destroy(&store->group_lock);
    pthread_cond_destroy(&store->group_done);
  }
  free(store->uses);
  free(store->dir);
  free(store);
}

/* ---- room: the pages kept for deletions -------------------------------------------------- */

/* Pages LMDB's free list holds (freed by earlier transactions, reused by later ones), counted in
 * a read transaction (LMDB opens no cursor on its free list in a write transaction). */
static int count_free_pages(MDB_txn *txn, uint64_t *pages)
{
  MDB_cursor *cursor = NULL;
  MDB_val key, value;
  *pages = 0;
  int mdb_rc = open_cursor(txn, 0, &cursor); /* 0: LMDB's FREE_DBI */
  while (mdb_rc == MDB_SUCCESS &&
         (mdb_rc = checked_cget(cursor, &key, &value, MDB_NEXT)) == MDB_SUCCESS) {
    size_t count; /* an MDB_IDL: its count, then the page numbers */
    if (value.mv_size >= sizeof count) {
      memcpy(&count, value.mv_data, sizeof count);
      *pages += count;
    }
  }
  close_cursor(cursor);
  return mdb_rc == MDB_NOTFOUND ? MDB_SUCCESS : mdb_rc;
}

static int count_free_in(reader *r, void *pages)
{
  return count_free_pages(r->txn, pages);
}

static uint64_t reserve_pages(uint64_t map_pages)
{
  uint64_t reserve = map_pages / 32;
  reserve = reserve < PCC_STORE_RESERVE_MIN ? PCC_STORE_RESERVE_MIN : reserve;
  reserve = reserve > PCC_STORE_RESERVE_MAX ? PCC_STORE_RESERVE_MAX : reserve;
  return reserve > map_pages / 4 ? map_pages / 4 : reserve;
}

/* MDB_SUCCESS when `writes` small writes of about value_bytes in all leave the pages kept for
 * deletions free, MDB_MAP_FULL when they would not (nothing to write then). Looks at the free
 * list only when the file is near the map's end. */
static int room_for_writes(pcc_store *store, size_t value_bytes, size_t writes)
{
  MDB_envinfo info;
  int mdb_rc = mdb_env_info(store->env, &info);
  if (mdb_rc != MDB_SUCCESS)
    return mdb_rc;
  uint64_t map_pages = info.me_mapsize / store->page_size, high = info.me_last_pgno + 1;
  uint64_t need = WRITE_PAGES * (uint64_t)writes +
                  (value_bytes + store->page_size - 1) / store->page_size +
                  reserve_pages(map_pages);
  if (high + need <= map_pages)
    return MDB_SUCCESS;
  uint64_t free_pages = 0;
  mdb_rc = guarded_read(store, count_free_in, &free_pages);
  if (mdb_rc != MDB_SUCCESS)
    return mdb_rc;
  return high - (free_pages < high ? free_pages : high) + need <= map_pages ? MDB_SUCCESS
                                                                            : MDB_MAP_FULL;
}

/* The same for one write. */
static int room_for(pcc_store *store, size_t value_bytes)
{
  return room_for_writes(store, value_bytes, 1);
}

/* ---- blobs, references, uses ------------------------------------------------------------ */

/* Unix seconds: the config's clock (tests), else time(). */
static int64_t store_now(const pcc_store *store)
{
  return store->config.now ? store->config.now() : (int64_t)time(NULL);
}

/* Records a use of the blob of key in memory. */
static void touch_key(pcc_store *store, const uint8_t key[BLOB_KEY_LEN])
{
  uint64_t hash;
  memcpy(&hash, key + PCC_MAGIC_LEN + 1, sizeof hash); /* SHA-256 bytes: already uniform */
  hash ^= (uint64_t)key[PCC_MAGIC_LEN] << 56 ^ (uint64_t)key[0] << 48;
  use_stripe *stripe = &store->uses[hash % USE_STRIPES];
  uint64_t tick = atomic_fetch_add(&store->clock, 1);
  size_t at = (size_t)(hash / USE_STRIPES) % USE_STRIPE_SLOTS;
  pthread_mutex_lock(&stripe->lock);
  for (int probe = 0; probe < USE_PROBES; probe++, at = (at + 1) % USE_STRIPE_SLOTS) {
    use_slot *slot = &stripe->slots[at];
    if (slot->used && memcmp(slot->key, key, BLOB_KEY_LEN) != 0)
      continue;
    if (!slot->used) {
      memcpy(slot->key, key, BLOB_KEY_LEN);
      slot->used = true;
      slot->tick = 0;
      stripe->n++;
    }
    if (tick > slot->tick)
      slot->tick = tick;
    break;
  }
  pthread_mutex_unlock(&stripe->lock);
}

void pcc_store_touch(pcc_store *store, const pcc_magic *magic, int opt, const pcc_digest *digest)
{
  if (store == NULL || magic == NULL || digest == NULL || opt < 0 || opt > PCC_OPT_MAX)
    return;
  uint8_t key[BLOB_KEY_LEN];
  blob_key(key, magic, opt, digest);
  touch_key(store, key);
}

size_t pcc_store_pending_uses(pcc_store *store)
{
  size_t n = 0;
  for (int s = 0; s < USE_STRIPES; s++) {
    pthread_mutex_lock(&store->uses[s].lock);
    n += store->uses[s].n;
    pthread_mutex_unlock(&store->uses[s].lock);
  }
  return n;
}

/* Sets the last use of a stored blob to tick (when later than the one it has, and the one it has
 * is not recent: recorded at or after recent_tick): its uses row and its place in lru.
 * MDB_NOTFOUND when the blob is not stored. */
static int use_write(wtxn *w, const uint8_t *key_bytes, uint64_t tick, uint64_t recent_tick)
{
  pcc_store *store = w->store;
  MDB_val key = {BLOB_KEY_LEN, (void *)key_bytes}, value;
  int mdb_rc = checked_get(w->txn, store->dbi[T_USES], &key, &value);
  if (mdb_rc != MDB_SUCCESS)
    return mdb_rc;
  uint64_t use[2];
  if (value.mv_size != USE_VALUE_LEN)
    return MDB_SUCCESS;
  memcpy(use, value.mv_data, USE_VALUE_LEN);
  if (tick <= use[0] || (recent_tick > 0 && use[0] >= recent_tick))
    return MDB_SUCCESS; /* a read, no write: the recorded use is recent enough */
  uint8_t old_lru[LRU_KEY_LEN], new_lru[LRU_KEY_LEN];
  lru_key(old_lru, use[0], key_bytes);
  lru_key(new_lru, tick, key_bytes);
  MDB_val old_key = {LRU_KEY_LEN, old_lru}, new_key = {LRU_KEY_LEN, new_lru}, empty = {0, NULL};
  mdb_rc = mdb_del(w->txn, store->dbi[T_LRU], &old_key, NULL);
  if (mdb_rc == MDB_SUCCESS || mdb_rc == MDB_NOTFOUND)
    mdb_rc = mdb_put(w->txn, store->dbi[T_LRU], &new_key, &empty, 0);
  use[0] = tick;
  value = (MDB_val){USE_VALUE_LEN, use};
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_put(w->txn, store->dbi[T_USES], &key, &value, 0);
  return mdb_rc;
}

/* Moves the marks of recent uses on: a use recorded at or after recent_tick is at most between
 * PCC_USE_UPDATE_SECONDS and twice that old (memcached's ITEM_UPDATE_INTERVAL, as a clock
 * tick). Caller holds flush_lock. */
static void update_marks(pcc_store *store)
{
  int64_t now = store_now(store);
  if (store->mark_time == 0 || now - store->mark_time >= PCC_USE_UPDATE_SECONDS) {
    store->recent_tick = store->mark_time == 0 ? 0 : store->mark_tick;
    store->mark_tick = atomic_load(&store->clock);
    store->mark_time = now;
  }
}

pcc_store_status pcc_store_flush_uses(pcc_store *store, size_t *flushed)
{
  if (store == NULL)
    return PCC_STORE_INVALID;
  size_t written = 0;
  use_slot *batch = malloc(USE_STRIPE_SLOTS * sizeof *batch);
  if (batch == NULL)
    return PCC_STORE_NOMEM;
  pthread_mutex_lock(&store->flush_lock);
  update_marks(store);
  int mdb_rc = MDB_SUCCESS;
  for (int s = 0; s < USE_STRIPES && mdb_rc == MDB_SUCCESS; s++) {
    use_stripe *stripe = &store->uses[s];
    size_t n = 0;
    pthread_mutex_lock(&stripe->lock);
    for (size_t i = 0; i < USE_STRIPE_SLOTS && stripe->n > 0; i++)
      if (stripe->slots[i].used) {
        batch[n++] = stripe->slots[i];
        stripe->slots[i].used = false;
        stripe->n--;
      }
    pthread_mutex_unlock(&stripe->lock);
    if (n == 0)
      continue;
    wtxn w;
    mdb_rc = wtxn_begin(store, &w);
    for (size_t i = 0; i < n && mdb_rc == MDB_SUCCESS; i++) {
      mdb_rc = use_write(&w, batch[i].key, batch[i].tick, store->recent_tick);
      if (mdb_rc == MDB_NOTFOUND) /* evicted or deleted meanwhile */
        mdb_rc = MDB_SUCCESS;
    }
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = wtxn_commit(&w, false);
    else if (w.txn != NULL)
      wtxn_abort(&w);
    if (mdb_rc == MDB_SUCCESS)
      written += n;
    else if (too_big(mdb_rc)) /* a full map: these uses are lost, which is harmless */
      mdb_rc = MDB_SUCCESS;
  }
  pthread_mutex_unlock(&store->flush_lock);
  free(batch);
  if (flushed != NULL)
    *flushed = written;
  return from_mdb(mdb_rc);
}

/* Deletes every chunk of the blob of key_bytes; *had tells whether there was one. */
static int chunks_delete(MDB_txn *txn, MDB_dbi dbi, const uint8_t *key_bytes, bool *had)
{
  MDB_cursor *cursor = NULL;
  uint8_t first[CHUNK_KEY_LEN];
  chunk_key(first, key_bytes, 0);
  MDB_val key = {CHUNK_KEY_LEN, first}, value;
  *had = false;
  int mdb_rc = open_cursor(txn, dbi, &cursor);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = checked_cget(cursor, &key, &value, MDB_SET_RANGE);
  while (mdb_rc == MDB_SUCCESS && key.mv_size == CHUNK_KEY_LEN &&
         memcmp(key.mv_data, key_bytes, BLOB_KEY_LEN) == 0) {
    mdb_rc = mdb_cursor_del(cursor, 0);
    *had = true;
    key = (MDB_val){CHUNK_KEY_LEN, first};
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = checked_cget(cursor, &key, &value, MDB_SET_RANGE);
  }
  close_cursor(cursor);
  return mdb_rc == MDB_NOTFOUND ? MDB_SUCCESS : mdb_rc;
}

/* Deletes a blob that no path entry names any more: its record, its uses row and its place in
 * lru, and takes it out of the figures. Nothing there (dropped after a failed checksum): fine. */
static int blob_forget(wtxn *w, const uint8_t *key_bytes)
{
  pcc_store *store = w->store;
  MDB_val key = {BLOB_KEY_LEN, (void *)key_bytes}, value;
  int mdb_rc = checked_get(w->txn, store->dbi[T_USES], &key, &value);
  uint64_t use[2] = {0, 0};
  bool had_use = mdb_rc == MDB_SUCCESS && value.mv_size == USE_VALUE_LEN;
  if (had_use)
    memcpy(use, value.mv_data, USE_VALUE_LEN);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_del(w->txn, store->dbi[T_USES], &key, NULL);
  if (had_use && mdb_rc == MDB_SUCCESS) {
    uint8_t lru[LRU_KEY_LEN];
    lru_key(lru, use[0], key_bytes);
    MDB_val lru_val = {LRU_KEY_LEN, lru};
    mdb_rc = mdb_del(w->txn, store->dbi[T_LRU], &lru_val, NULL);
  }
  if (mdb_rc == MDB_NOTFOUND)
    mdb_rc = MDB_SUCCESS;
  bool had_blob = false;
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = chunks_delete(w->txn, store->dbi[T_BLOBS], key_bytes, &had_blob);
  if (mdb_rc == MDB_SUCCESS && had_blob)
    mdb_rc = fig_add(w, key_bytes, 0, -1, -(int64_t)use[1]);
  return mdb_rc;
}

/* Adds the path entry of path_key to the references of the blob of blob_bytes. */
static int ref_add(wtxn *w, const uint8_t *blob_bytes, const uint8_t *path_key, size_t len)
{
  MDB_val key = {BLOB_KEY_LEN, (void *)blob_bytes}, value = {len, (void *)path_key};
  int mdb_rc = mdb_put(w->txn, w->store->dbi[T_REFS], &key, &value, MDB_NODUPDATA);
  return mdb_rc == MDB_KEYEXIST ? MDB_SUCCESS : mdb_rc;
}

/* Removes the path entry of path_key from the references of the blob; the blob goes with its
 * last reference. */
static int ref_remove(wtxn *w, const uint8_t *blob_bytes, const uint8_t *path_key, size_t len)
{
  MDB_val key = {BLOB_KEY_LEN, (void *)blob_bytes}, value = {len, (void *)path_key};
  int mdb_rc = mdb_del(w->txn, w->store->dbi[T_REFS], &key, &value);
  if (mdb_rc == MDB_NOTFOUND)
    return MDB_SUCCESS;
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = checked_get(w->txn, w->store->dbi[T_REFS], &key, &value);
  return mdb_rc == MDB_NOTFOUND ? blob_forget(w, blob_bytes) : mdb_rc;
}

/* The record v (plain, checksummed, of a code blob) with its payload as a zstd frame at level
 * PCC_STORE_ZSTD_LEVEL (malloc'd; *total becomes its length), or NULL when the payload is under
 * PCC_STORE_ZSTD_MIN bytes, is not code, or would not shrink by PCC_STORE_ZSTD_SAVING percent. */
static uint8_t *compress_record(const uint8_t *v, size_t compiler_len, const pcc_blob *blob,
                                size_t *total)
{
  if (blob->kind != PCC_BLOB_CODE || blob->payload_len < PCC_STORE_ZSTD_MIN)
    return NULL;
  size_t head = BLOB_HEADER_LEN + compiler_len, bound = ZSTD_compressBound(blob->payload_len);
  uint8_t *packed = ZSTD_isError(bound) ? NULL : malloc(head + bound);
  size_t n = packed ? ZSTD_compress(packed + head, bound, blob->payload, blob->payload_len,
                                    PCC_STORE_ZSTD_LEVEL)
                    : 0;
  if (packed == NULL || ZSTD_isError(n) ||
      n > blob->payload_len - blob->payload_len / 100 * PCC_STORE_ZSTD_SAVING) {
    free(packed);
    return NULL;
  }
  memcpy(packed, v, head);
  packed[8] = BLOB_VERSION_ZSTD;
  uint32_t length = (uint32_t)(head + n);
  memcpy(packed + 36, &length, 4);
  *total = head + n;
  return packed;
}

/* Writes the blob's record under key_bytes, in chunks of one page each (its payload compressed
 * when config.compress says so and it pays: compress_record). */
static int put_blob(pcc_store *store, MDB_txn *txn, const uint8_t *key_bytes,
                    const pcc_blob *blob)
{
  size_t compiler_len = strnlen(blob->compiler, PCC_COMPILER_NAME_MAX);
  size_t total = BLOB_HEADER_LEN + compiler_len + blob->payload_len;
  size_t chunk = (size_t)store->page_size - PAGE_HEADER;
  if (total > UINT32_MAX || (total + chunk - 1) / chunk > CHUNKS_MAX)
    return EINVAL;
  uint8_t *v = malloc(total);
  if (v == NULL)
    return ENOMEM;
  uint32_t length = (uint32_t)total;
  v[8] = BLOB_VERSION;
  v[9] = (uint8_t)blob->kind;
  v[10] = (uint8_t)compiler_len;
  v[11] = 0;
  memcpy(v + 12, &blob->hash, 4);
  memcpy(v + 16, &blob->size, 8);
  memcpy(v + 24, &blob->created, 8);
  memcpy(v + 32, &blob->compile_us, 4);
  memcpy(v + 36, &length, 4);
  memcpy(v + BLOB_HEADER_LEN, blob->compiler, compiler_len);
  if (blob->payload_len > 0)
    memcpy(v + BLOB_HEADER_LEN + compiler_len, blob->payload, blob->payload_len);
  uint64_t checksum = pcc_checksum(v + 8, total - 8);
  memcpy(v, &checksum, 8);
  uint8_t *packed = store->config.compress ? compress_record(v, compiler_len, blob, &total) : NULL;
  if (packed != NULL) {
    free(v);
    v = packed;
  }
  int mdb_rc = MDB_SUCCESS;
  for (size_t at = 0, n = 0; at < total && mdb_rc == MDB_SUCCESS; at += chunk, n++) {
    uint8_t key_chunk[CHUNK_KEY_LEN];
    chunk_key(key_chunk, key_bytes, (unsigned)n);
    MDB_val key = {CHUNK_KEY_LEN, key_chunk}, value = {total - at < chunk ? total - at : chunk,
                                                         v + at};
    mdb_rc = mdb_put(txn, store->dbi[T_BLOBS], &key, &value, 0);
  }
  free(v);
  return mdb_rc;
}

/* Is the blob of key_bytes stored (its first chunk)? MDB_SUCCESS, MDB_NOTFOUND or an error. */
static int blob_exists(pcc_store *store, MDB_txn *txn, const uint8_t *key_bytes)
{
  uint8_t first[CHUNK_KEY_LEN];
  chunk_key(first, key_bytes, 0);
  MDB_val key = {CHUNK_KEY_LEN, first}, value;
  return checked_get(txn, store->dbi[T_BLOBS], &key, &value);
}

/* Stores a blob unless it is stored already (a stored record that fails its checksum is
 * replaced: lookups never write, so this is where damaged records are mended): its record, uses
 * row (used now), lru, figures. */
static int blob_read(pcc_store *store, MDB_txn *txn, const uint8_t *key_bytes, pcc_blob **out,
                     bool *corrupt);

static int blob_store(wtxn *w, const uint8_t *key_bytes, const pcc_blob *blob)
{
  pcc_store *store = w->store;
  MDB_val key = {BLOB_KEY_LEN, (void *)key_bytes};
  int mdb_rc = blob_exists(store, w->txn, key_bytes);
  if (mdb_rc == MDB_SUCCESS) { /* stored: sound? A record a lookup found damaged is replaced */
    pcc_blob *stored = NULL;
    bool corrupt = false;
    mdb_rc = blob_read(store, w->txn, key_bytes, &stored, &corrupt);
    free(stored);
    if (mdb_rc != MDB_SUCCESS || !corrupt)
      return mdb_rc;
    mdb_rc = blob_forget(w, key_bytes);
    if (mdb_rc != MDB_SUCCESS)
      return mdb_rc;
  } else if (mdb_rc != MDB_NOTFOUND) {
    return mdb_rc;
  }
  uint64_t use[2] = {atomic_fetch_add(&store->clock, 1), blob->payload_len};
  uint8_t lru[LRU_KEY_LEN];
  lru_key(lru, use[0], key_bytes);
  MDB_val lru_val = {LRU_KEY_LEN, lru}, empty = {0, NULL}, use_val = {USE_VALUE_LEN, use};
  mdb_rc = put_blob(store, w->txn, key_bytes, blob);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_put(w->txn, store->dbi[T_USES], &key, &use_val, 0);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_put(w->txn, store->dbi[T_LRU], &lru_val, &empty, 0);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = fig_add(w, key_bytes, 0, 1, (int64_t)blob->payload_len);
  return mdb_rc;
}

/* ---- paths ----------------------------------------------------------------------------- */

static void version_read(const uint8_t *v, pcc_path_record *record)
{
  memcpy(&record->mtime, v, 8);
  memcpy(&record->size, v + 8, 8);
  memcpy(&record->hash, v + 16, 4);
  memcpy(record->digest.bytes, v + 20, PCC_DIGEST_LEN);
}

static void version_write(uint8_t *v, const pcc_path_record *record)
{
  memcpy(v, &record->mtime, 8);
  memcpy(v + 8, &record->size, 8);
  memcpy(v + 16, &record->hash, 4);
  memcpy(v + 20, record->digest.bytes, PCC_DIGEST_LEN);
}

/* Decodes a path record (key and value as stored) into an entry, without its blob; versions
 * (may be NULL) gets every version. */
static bool entry_from_path(const MDB_val *key, const MDB_val *value, pcc_store_entry *entry,
                            pcc_path_versions *versions)
{
  const uint8_t *k = key->mv_data, *v = value->mv_data;
  if (key->mv_size < PCC_MAGIC_LEN + 3 || value->mv_size < 1)
    return false;
  size_t ns_len = k[PCC_MAGIC_LEN + 1], count = v[0];
  if (ns_len > PCC_NAMESPACE_MAX || key->mv_size < PCC_MAGIC_LEN + 3 + ns_len || count == 0 ||
      count > PCC_PATH_VERSIONS_MAX || value->mv_size <= 1 + count * PATH_VERSION_LEN)
    return false;
  memset(entry, 0, sizeof *entry);
  memcpy(entry->magic.bytes, k, PCC_MAGIC_LEN);
  entry->opt = k[PCC_MAGIC_LEN];
  memcpy(entry->ns, k + PCC_MAGIC_LEN + 2, ns_len);
  entry->ns[ns_len] = '\0';
  version_read(v + 1, &entry->record);
  entry->versions = (unsigned)count;
  if (versions != NULL) {
    versions->n = (unsigned)count;
    for (size_t i = 0; i < count; i++)
      version_read(v + 1 + i * PATH_VERSION_LEN, &versions->v[i]);
  }
  entry->path = (const char *)v + 1 + count * PATH_VERSION_LEN;
  entry->path_len = value->mv_size - 1 - count * PATH_VERSION_LEN;
  return true;
}

/* Writes the path entry of key: versions (at least one), then the path. */
static int path_write(wtxn *w, const MDB_val *key, const pcc_path_versions *versions,
                      const char *path, size_t path_len)
{
  uint8_t *bytes = malloc(1 + PCC_PATH_VERSIONS_MAX * PATH_VERSION_LEN + path_len);
  if (bytes == NULL)
    return ENOMEM;
  bytes[0] = (uint8_t)versions->n;
  for (unsigned i = 0; i < versions->n; i++)
    version_write(bytes + 1 + i * PATH_VERSION_LEN, &versions->v[i]);
  memcpy(bytes + 1 + versions->n * PATH_VERSION_LEN, path, path_len);
  MDB_val value = {1 + versions->n * PATH_VERSION_LEN + path_len, bytes};
  int mdb_rc = mdb_put(w->txn, w->store->dbi[T_PATHS], (MDB_val *)key, &value, 0);
  free(bytes);
  return mdb_rc;
}

/* Reads the path entry of key in txn: its versions and its path (checked against path). */
static pcc_store_status read_path(pcc_store *store, MDB_txn *txn, MDB_val *key, const char *path,
                                  size_t path_len, pcc_store_entry *entry,
                                  pcc_path_versions *versions)
{
  MDB_val value;
  pcc_store_status rc = from_mdb(checked_get(txn, store->dbi[T_PATHS], key, &value));
  if (rc == PCC_STORE_OK && !entry_from_path(key, &value, entry, versions)) {
    atomic_fetch_add(&store->corruptions, 1);
    rc = PCC_STORE_CORRUPT; /* damaged: missed until a compile writes the entry again */
  } else if (rc == PCC_STORE_OK && (entry->path_len != path_len ||
                                    memcmp(entry->path, path, path_len) != 0)) {
    rc = PCC_STORE_NOTFOUND; /* another path behind the same long-path key */
  }
  return rc;
}

static void entry_add_blob(pcc_store *store, MDB_txn *txn, pcc_store_entry *entry);

/* One path entry read in a guarded transaction (pcc_store_get_versions, pcc_store_get_entry). */
typedef struct {
  MDB_val *key;
  const char *path;
  size_t path_len;
  pcc_path_versions *versions;
  void (*visit)(const pcc_store_entry *entry, void *ctx);
  void *ctx;
  pcc_store_status rc;
} path_read;

static int path_read_in(reader *r, void *arg)
{
  path_read *p = arg;
  pcc_store_entry entry;
  p->rc = read_path(r->store, r->txn, p->key, p->path, p->path_len, &entry, p->versions);
  if (p->rc == PCC_STORE_OK && p->visit != NULL) {
    entry_add_blob(r->store, r->txn, &entry);
    p->visit(&entry, p->ctx);
  }
  return MDB_SUCCESS;
}

pcc_store_status pcc_store_get_versions(pcc_store *store, const char *ns, const pcc_magic *magic,
                                        int opt, const char *path, size_t path_len,
                                        pcc_path_versions *out)
{
  if (store == NULL || out == NULL || !valid_args(ns, magic, opt, path, path_len))
    return PCC_STORE_INVALID;
  uint8_t key_bytes[PATH_KEY_MAX];
  MDB_val key = {path_key(key_bytes, ns, magic, opt, path, path_len), key_bytes};
  path_read p = {&key, path, path_len, out, NULL, NULL, PCC_STORE_OK};
  int mdb_rc = guarded_read(store, path_read_in, &p);
  return mdb_rc != MDB_SUCCESS ? from_mdb(mdb_rc) : p.rc;
}

pcc_store_status pcc_store_get_path(pcc_store *store, const char *ns, const pcc_magic *magic,
                                    int opt, const char *path, size_t path_len,
                                    pcc_path_record *out)
{
  pcc_path_versions versions;
  pcc_store_status rc = out == NULL ? PCC_STORE_INVALID
                                    : pcc_store_get_versions(store, ns, magic, opt, path,
                                                             path_len, &versions);
  if (rc == PCC_STORE_OK)
    *out = versions.v[0];
  return rc;
}

/* The distinct digests of versions, into out (at most PCC_PATH_VERSIONS_MAX); returns how many. */
static unsigned distinct_digests(const pcc_path_versions *versions, pcc_digest *out)
{
  unsigned n = 0;
  for (unsigned i = 0; i < versions->n; i++) {
    unsigned j = 0;
    while (j < n && !pcc_digest_equal(&out[j], &versions->v[i].digest))
      j++;
    if (j == n)
      out[n++] = versions->v[i].digest;
  }
  return n;
}

static bool digest_in(const pcc_digest *digest, const pcc_digest *set, unsigned n)
{
  for (unsigned i = 0; i < n; i++)
    if (pcc_digest_equal(digest, &set[i]))
      return true;
  return false;
}

/* Moves the references of the path entry at key from the digests of `before` to those of
 * `after` (either may be empty): new ones are added, dropped ones removed (a blob goes with its
 * last reference). magic and opt are the key's. */
static int refs_update(wtxn *w, const MDB_val *key, const pcc_path_versions *before,
                       const pcc_path_versions *after)
{
  pcc_digest old_set[PCC_PATH_VERSIONS_MAX], new_set[PCC_PATH_VERSIONS_MAX];
  unsigned n_old = distinct_digests(before, old_set), n_new = distinct_digests(after, new_set);
  const uint8_t *k = key->mv_data;
  pcc_magic magic;
  memcpy(magic.bytes, k, PCC_MAGIC_LEN);
  int mdb_rc = MDB_SUCCESS;
  uint8_t blob[BLOB_KEY_LEN];
  for (unsigned i = 0; i < n_new && mdb_rc == MDB_SUCCESS; i++)
    if (!digest_in(&new_set[i], old_set, n_old)) {
      blob_key(blob, &magic, k[PCC_MAGIC_LEN], &new_set[i]);
      mdb_rc = ref_add(w, blob, k, key->mv_size);
    }
  for (unsigned i = 0; i < n_old && mdb_rc == MDB_SUCCESS; i++)
    if (!digest_in(&old_set[i], new_set, n_new)) {
      blob_key(blob, &magic, k[PCC_MAGIC_LEN], &old_set[i]);
      mdb_rc = ref_remove(w, blob, k, key->mv_size);
    }
  return mdb_rc;
}

/* ---- blobs: reads ------------------------------------------------------------------------ */

/* The plain record (version BLOB_VERSION, in a blob allocation as blob_read makes) of packed, a
 * record of version BLOB_VERSION_ZSTD of packed_len bytes read whole; *total gets its length.
 * NULL when the frame does not decode to the size it states (at most PCC_FRAME_MAX: a pyc
 * comes in one worker frame), or without memory. The checksum is left to the caller. */
static pcc_blob *decompress_record(const pcc_blob *packed, size_t packed_len, uint32_t *total)
{
  const uint8_t *v = (const uint8_t *)(packed + 1);
  size_t head = BLOB_HEADER_LEN + (size_t)v[10];
  if (v[10] > PCC_COMPILER_NAME_MAX || head > packed_len)
    return NULL;
  const uint8_t *frame = v + head;
  size_t frame_len = packed_len - head;
  unsigned long long size = ZSTD_getFrameContentSize(frame, frame_len);
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN ||
      size > PCC_FRAME_MAX || ZSTD_findFrameCompressedSize(frame, frame_len) != frame_len)
    return NULL;
  pcc_blob *blob = malloc(sizeof *blob + head + (size_t)size + 1);
  if (blob == NULL)
    return NULL;
  uint8_t *plain = (uint8_t *)(blob + 1);
  memcpy(plain, v, head);
  size_t n = ZSTD_decompress(plain + head, (size_t)size, frame, frame_len);
  if (ZSTD_isError(n) || n != size) {
    free(blob);
    return NULL;
  }
  *total = (uint32_t)(head + n);
  plain[8] = BLOB_VERSION;
  memcpy(plain + 36, total, 4);
  return blob;
}

/* Reads the chunks of a blob record into one heap allocation (*out, the payload inside it) and
 * verifies it (a compressed record: after decompressing it). MDB_NOTFOUND when absent; CORRUPT
 * as *corrupt (a return of MDB_SUCCESS). */
static int blob_read(pcc_store *store, MDB_txn *txn, const uint8_t *key_bytes, pcc_blob **out,
                     bool *corrupt)
{
  uint8_t want[CHUNK_KEY_LEN];
  chunk_key(want, key_bytes, 0);
  MDB_val key = {CHUNK_KEY_LEN, want}, value;
  MDB_cursor *cursor = NULL;
  pcc_blob *blob = NULL;
  uint32_t total = 0;
  *corrupt = false;
  int mdb_rc = open_cursor(txn, store->dbi[T_BLOBS], &cursor);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = checked_cget(cursor, &key, &value, MDB_SET_KEY);
  if (mdb_rc == MDB_SUCCESS && value.mv_size >= BLOB_HEADER_LEN)
    memcpy(&total, (const uint8_t *)value.mv_data + 36, 4);
  if (mdb_rc == MDB_SUCCESS && (total < BLOB_HEADER_LEN || value.mv_size > total))
    *corrupt = true;
  if (mdb_rc == MDB_SUCCESS && !*corrupt && (blob = malloc(sizeof *blob + total + 1)) == NULL)
    mdb_rc = ENOMEM;
  if (current_reader != NULL && current_reader->txn == txn)
    current_reader->owned = blob; /* freed by guarded_read after a fault */
  uint8_t *v = blob ? (uint8_t *)(blob + 1) : NULL;
  size_t at = 0;
  for (unsigned n = 1; mdb_rc == MDB_SUCCESS && !*corrupt; n++) {
    memcpy(v + at, value.mv_data, value.mv_size);
    at += value.mv_size;
    if (at == total)
      break;
    mdb_rc = checked_cget(cursor, &key, &value, MDB_NEXT);
    chunk_key(want, key_bytes, n);
    if (mdb_rc == MDB_NOTFOUND || (mdb_rc == MDB_SUCCESS &&
                                   (key.mv_size != CHUNK_KEY_LEN ||
                                    memcmp(key.mv_data, want, CHUNK_KEY_LEN) != 0 ||
                                    value.mv_size > total - at))) {
      mdb_rc = MDB_SUCCESS; /* a chunk missing or too long */
      *corrupt = true;
    }
  }
  close_cursor(cursor);
  if (current_reader != NULL && current_reader->txn == txn)
    current_reader->owned = NULL; /* no more reads of the map: ours to free or hand out */
  if (mdb_rc == MDB_SUCCESS && !*corrupt && v[8] == BLOB_VERSION_ZSTD) {
    pcc_blob *plain = decompress_record(blob, total, &total);
    free(blob);
    blob = plain;
    v = blob ? (uint8_t *)(blob + 1) : NULL;
    *corrupt = blob == NULL;
  }
  uint64_t checksum = 0;
  if (mdb_rc == MDB_SUCCESS && !*corrupt) {
    memcpy(&checksum, v, 8);
    *corrupt = pcc_checksum(v + 8, total - 8) != checksum || v[8] != BLOB_VERSION ||
               (v[9] != PCC_BLOB_CODE && v[9] != PCC_BLOB_COMPILE_ERROR) ||
               v[10] > PCC_COMPILER_NAME_MAX || (size_t)BLOB_HEADER_LEN + v[10] > total;
  }
  if (mdb_rc != MDB_SUCCESS || *corrupt) {
    free(blob);
    return mdb_rc;
  }
  size_t compiler_len = v[10];
  blob->kind = (pcc_blob_kind)v[9];
  memcpy(&blob->hash, v + 12, 4);
  memcpy(&blob->size, v + 16, 8);
  memcpy(&blob->created, v + 24, 8);
  memcpy(&blob->compile_us, v + 32, 4);
  memcpy(blob->compiler, v + BLOB_HEADER_LEN, compiler_len);
  blob->compiler[compiler_len] = '\0';
  v[total] = '\0'; /* convenient for error JSON; not counted in payload_len */
  /* the header before the payload has been read: it is the headroom (PCC_BLOB_HEADROOM) */
  blob->payload = v + BLOB_HEADER_LEN + compiler_len;
  blob->payload_len = total - BLOB_HEADER_LEN - compiler_len;
  *out = blob;
  return MDB_SUCCESS;
}

typedef struct {
  const uint8_t *key;
  pcc_blob *blob;
  bool corrupt;
} blob_get;

static int blob_get_in(reader *r, void *arg)
{
  blob_get *g = arg;
  return blob_read(r->store, r->txn, g->key, &g->blob, &g->corrupt);
}

pcc_store_status pcc_store_get_blob(pcc_store *store, const pcc_magic *magic, int opt,
                                    const pcc_digest *digest, pcc_blob **out)
{
  if (store == NULL || magic == NULL || digest == NULL || out == NULL || opt < 0 ||
      opt > PCC_OPT_MAX)
    return PCC_STORE_INVALID;
  uint8_t key_bytes[BLOB_KEY_LEN];
  blob_key(key_bytes, magic, opt, digest);
  blob_get g = {key_bytes, NULL, false};
  int mdb_rc = guarded_read(store, blob_get_in, &g);
  if (mdb_rc == MDB_SUCCESS && g.corrupt) { /* counted; nothing is written on a lookup */
    atomic_fetch_add(&store->corruptions, 1);
    return PCC_STORE_CORRUPT;
  }
  if (mdb_rc == MDB_SUCCESS) {
    *out = g.blob;
    touch_key(store, key_bytes);
  }
  return from_mdb(mdb_rc);
}

/* ---- puts -------------------------------------------------------------------------------- */

/* The versions of a path after adding record: it becomes the newest; a version of the same
 * mtime and size is replaced; past PCC_PATH_VERSIONS_MAX the oldest goes. */
static void versions_add(pcc_path_versions *versions, const pcc_path_record *record)
{
  pcc_path_versions merged = {1, {*record}};
  for (unsigned i = 0; i < versions->n && merged.n < PCC_PATH_VERSIONS_MAX; i++)
    if (versions->v[i].mtime != record->mtime || versions->v[i].size != record->size)
      merged.v[merged.n++] = versions->v[i];
  *versions = merged;
}

/* The put inside w: see pcc_store_put. */
static int put_in(wtxn *w, const char *ns, const pcc_magic *magic, int opt, const char *path,
                  size_t path_len, const pcc_path_record *record, const pcc_blob *blob)
{
  pcc_store *store = w->store;
  uint8_t key_bytes[PATH_KEY_MAX], blob_bytes[BLOB_KEY_LEN];
  MDB_val key = {path_key(key_bytes, ns, magic, opt, path, path_len), key_bytes}, value;
  blob_key(blob_bytes, magic, opt, &record->digest);
  pcc_path_versions before = {0, {{0}}}, versions = {0, {{0}}};
  pcc_store_entry entry;
  int mdb_rc = checked_get(w->txn, store->dbi[T_PATHS], &key, &value);
  bool existed = mdb_rc == MDB_SUCCESS;
  if (existed && entry_from_path(&key, &value, &entry, &before) && entry.path_len == path_len &&
      memcmp(entry.path, path, path_len) == 0)
    versions = before; /* else: new, or another path behind its long key, replaced */
  else if (mdb_rc != MDB_SUCCESS && mdb_rc != MDB_NOTFOUND)
    return mdb_rc;
  mdb_rc = blob != NULL ? blob_store(w, blob_bytes, blob)
                       : blob_exists(store, w->txn, blob_bytes);
  if (mdb_rc != MDB_SUCCESS)
    return mdb_rc;
  versions_add(&versions, record);
  mdb_rc = refs_update(w, &key, &before, &versions);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = path_write(w, &key, &versions, path, path_len);
  if (mdb_rc == MDB_SUCCESS && !existed)
    mdb_rc = fig_add(w, magic->bytes, 1, 0, 0);
  return mdb_rc;
}

/* Group commits. Each put was its own synced commit: one fsync of the data pages and one of the
 * meta page's write a put (about 4,000 a second at most, some 90 KB written for a 370-byte
 * entry). Now concurrent puts share one: a put queues itself; when no put is committing, it
 * leads: it takes the queue's oldest (at most PCC_STORE_GROUP_MAX puts, PCC_STORE_GROUP_BYTES
 * of values, always at least one), runs each in a transaction nested in one write transaction
 * (so a put that fails, a full map or an I/O error, is undone alone and the others stay), commits
 * once and wakes the group. A put that finds a leader waits; its turn comes either in the
 * leader's group or as the next leader, with every put queued behind the commit. So a lone put
 * costs what it did (no window is waited for) and N at once cost about one commit. Every
 * put keeps its guarantees: it is durable when pcc_store_put returns OK (the group's commit),
 * the room check counts the group's writes together, the figures and references of each are
 * written in its own nested transaction, a damaged store refuses all. */
typedef struct put_request {
  const char *ns;
  const pcc_magic *magic;
  int opt;
  const char *path;
  size_t path_len;
  const pcc_path_record *record;
  const pcc_blob *blob;
  size_t bytes;         /* about what its values take */
  int mdb_rc;           /* its outcome, set by the leader of its group */
  bool done;            /* under group_lock */
  struct put_request *next;
} put_request;

/* Runs the puts of group (a list) in one write transaction, a nested one each; sets each one's
 * mdb_rc. */
static void group_commit(pcc_store *store, put_request *group)
{
  size_t bytes = 0, writes = 0;
  for (put_request *r = group; r != NULL; r = r->next) { /* the room of the group's writes */
    r->mdb_rc = room_for_writes(store, bytes + r->bytes, writes + 1);
    if (r->mdb_rc == MDB_SUCCESS) {
      bytes += r->bytes;
      writes++;
    }
  }
  wtxn w;
  int mdb_rc = wtxn_begin(store, &w);
  bool any = false;
  for (put_request *r = group; r != NULL; r = r->next) {
    if (mdb_rc != MDB_SUCCESS || r->mdb_rc != MDB_SUCCESS) {
      r->mdb_rc = r->mdb_rc != MDB_SUCCESS ? r->mdb_rc : mdb_rc;
      continue;
    }
    if (group->next == NULL) { /* alone: no nested transaction (LMDB allocates 2 MiB for one) */
      r->mdb_rc = put_in(&w, r->ns, r->magic, r->opt, r->path, r->path_len, r->record, r->blob);
      any = r->mdb_rc == MDB_SUCCESS;
      break;
    }
    wtxn child;
    memset(&child, 0, sizeof child);
    child.store = store;
    int rc = mdb_txn_begin(store->env, w.txn, 0, &child.txn);
    if (rc == MDB_SUCCESS)
      rc = put_in(&child, r->ns, r->magic, r->opt, r->path, r->path_len, r->record, r->blob);
    if (rc == MDB_SUCCESS)
      rc = fig_apply(&child);
    if (rc == MDB_SUCCESS) {
      rc = mdb_txn_commit(child.txn); /* into w: nothing is written yet */
      child.txn = NULL;
    } else if (child.txn != NULL) {
      wtxn_abort(&child); /* this put alone is undone */
    }
    if (rc == MDB_SUCCESS) {
      w.bytes += child.bytes;
      any = true;
    }
    r->mdb_rc = rc;
  }
  if (mdb_rc == MDB_SUCCESS && any)
    mdb_rc = wtxn_commit(&w, true);
  else if (w.txn != NULL)
    wtxn_abort(&w);
  uint64_t committed = 0;
  for (put_request *r = group; r != NULL; r = r->next)
    if (r->mdb_rc == MDB_SUCCESS) {
      r->mdb_rc = mdb_rc; /* the commit's outcome */
      committed += mdb_rc == MDB_SUCCESS;
    }
  if (committed > 0) {
    atomic_fetch_add(&store->puts, committed);
    atomic_fetch_add(&store->put_commits, 1);
  }
}

/* Takes the group the leader commits next off the queue (caller holds group_lock). */
static put_request *group_take_locked(pcc_store *store)
{
  put_request *group = store->waiting, **end = &store->waiting;
  size_t n = 0, bytes = 0;
  while (*end != NULL && n < PCC_STORE_GROUP_MAX &&
         (n == 0 || bytes + (*end)->bytes <= PCC_STORE_GROUP_BYTES)) {
    bytes += (*end)->bytes;
    n++;
    end = &(*end)->next;
  }
  store->waiting = *end;
  if (store->waiting == NULL)
    store->waiting_tail = &store->waiting;
  *end = NULL;
  return group;
}

pcc_store_status pcc_store_put(pcc_store *store, const char *ns, const pcc_magic *magic, int opt,
                               const char *path, size_t path_len, const pcc_path_record *record,
                               const pcc_blob *blob)
{
  if (store == NULL || record == NULL || !valid_args(ns, magic, opt, path, path_len) ||
      (blob != NULL && blob->kind != PCC_BLOB_CODE && blob->kind != PCC_BLOB_COMPILE_ERROR) ||
      (blob != NULL && blob->payload_len > SIZE_MAX / 2))
    return PCC_STORE_INVALID;
  put_request request = {ns, magic, opt, path, path_len, record, blob,
                         (blob ? blob->payload_len + BLOB_HEADER_LEN : 0) + path_len,
                         MDB_SUCCESS, false, NULL};
  pthread_mutex_lock(&store->group_lock);
  *store->waiting_tail = &request;
  store->waiting_tail = &request.next;
  while (!request.done && store->leading)
    pthread_cond_wait(&store->group_done, &store->group_lock);
  if (!request.done) { /* lead until our own put is committed */
    store->leading = true;
    while (!request.done) {
      put_request *group = group_take_locked(store);
      pthread_mutex_unlock(&store->group_lock);
      group_commit(store, group);
      pthread_mutex_lock(&store->group_lock);
      for (put_request *r = group, *next; r != NULL; r = next) {
        next = r->next; /* r may return and go once done is set */
        r->done = true;
      }
      pthread_cond_broadcast(&store->group_done);
    }
    store->leading = false;
    pthread_cond_broadcast(&store->group_done); /* a put still queued leads next */
  }
  pthread_mutex_unlock(&store->group_lock);
  return note_write(store, request.mdb_rc, "a compile's write", true);
}

/* ---- figures ------------------------------------------------------------------------------ */

typedef struct {
  MDB_stat paths, info;
  uint64_t free_pages, sums[3];
} stat_read;

static int stat_in(reader *r, void *arg)
{
  stat_read *st = arg;
  int mdb_rc = mdb_stat(r->txn, r->store->dbi[T_PATHS], &st->paths);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_stat(r->txn, r->store->dbi[T_INFO], &st->info);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = figures_sum(r->store, r->txn, st->sums);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = count_free_pages(r->txn, &st->free_pages);
  return mdb_rc;
}

pcc_store_status pcc_store_stat(pcc_store *store, pcc_store_stats *out)
{
  if (store == NULL || out == NULL)
    return PCC_STORE_INVALID;
  stat_read st;
  MDB_envinfo info;
  memset(&st, 0, sizeof st);
  int mdb_rc = guarded_read(store, stat_in, &st);
  if (mdb_rc == MDB_SUCCESS) /* the transaction's snapshot is the last committed one */
    mdb_rc = mdb_env_info(store->env, &info);
  if (mdb_rc != MDB_SUCCESS && atomic_load(&store->damaged)) {
    pthread_mutex_lock(&store->stats_lock); /* damaged: the figures last read, not the file */
    *out = store->last_stats;
    pthread_mutex_unlock(&store->stats_lock);
    out->damaged = true;
    out->corruptions = atomic_load(&store->corruptions);
    return PCC_STORE_OK;
  }
  if (mdb_rc != MDB_SUCCESS)
    return from_mdb(mdb_rc);
  uint64_t pages = info.me_last_pgno + 1;
  uint64_t free_pages = st.free_pages < pages ? st.free_pages : pages;
  *out = (pcc_store_stats){
    .entries = st.paths.ms_entries,
    .blobs = st.sums[1],
    .bytes = st.sums[2],
    .profiles = st.info.ms_entries,
    .page_size = store->page_size,
    .used = (pages - free_pages) * store->page_size,
    .free = free_pages * store->page_size,
    .map_size = info.me_mapsize,
    .max_size = store->config.max_size,
    .evictions = atomic_load(&store->evictions),
    .evicted_bytes = atomic_load(&store->evicted_bytes),
    .puts = atomic_load(&store->puts),
    .put_commits = atomic_load(&store->put_commits),
    .damaged = atomic_load(&store->damaged),
    .corruptions = atomic_load(&store->corruptions),
  };
  pthread_mutex_lock(&store->stats_lock);
  store->last_stats = *out;
  pthread_mutex_unlock(&store->stats_lock);
  return PCC_STORE_OK;
}

/* ---- eviction ----------------------------------------------------------------------------- */

/* Takes the versions naming the blob of blob_bytes out of the path entry at path_key (the entry
 * goes when none is left). Its reference is the caller's to remove. */
static int path_drop_blob(wtxn *w, const uint8_t *path_key, size_t len, const uint8_t *blob_bytes)
{
  MDB_val key = {len, (void *)path_key}, value;
  int mdb_rc = checked_get(w->txn, w->store->dbi[T_PATHS], &key, &value);
  if (mdb_rc == MDB_NOTFOUND)
    return MDB_SUCCESS;
  pcc_store_entry entry;
  pcc_path_versions versions, kept = {0, {{0}}};
  if (mdb_rc != MDB_SUCCESS)
    return mdb_rc;
  if (!entry_from_path(&key, &value, &entry, &versions)) /* damaged: it goes */
    versions.n = 0;
  for (unsigned i = 0; i < versions.n; i++)
    if (memcmp(versions.v[i].digest.bytes, blob_bytes + PCC_MAGIC_LEN + 1, PCC_DIGEST_LEN) != 0)
      kept.v[kept.n++] = versions.v[i];
  if (kept.n > 0) {
    char *path = malloc(entry.path_len ? entry.path_len : 1);
    if (path == NULL)
      return ENOMEM;
    memcpy(path, entry.path, entry.path_len); /* value is the map's: copy before the put */
    mdb_rc = path_write(w, &key, &kept, path, entry.path_len);
    free(path);
    return mdb_rc;
  }
  mdb_rc = mdb_del(w->txn, w->store->dbi[T_PATHS], &key, NULL);
  return mdb_rc == MDB_SUCCESS ? fig_add(w, path_key, -1, 0, 0) : mdb_rc;
}

/* Removes up to *budget references of the blob of blob_bytes (their versions first), and the
 * blob with its last one. *gone tells whether the blob went. */
static int evict_blob(wtxn *w, const uint8_t *blob_bytes, size_t *budget, bool *gone)
{
  uint8_t path[PATH_KEY_MAX];
  *gone = false;
  while (*budget > 0) {
    MDB_val key = {BLOB_KEY_LEN, (void *)blob_bytes}, value;
    int mdb_rc = checked_get(w->txn, w->store->dbi[T_REFS], &key, &value); /* its first reference */
    if (mdb_rc == MDB_NOTFOUND) {
      *gone = true;
      int64_t before = w->bytes;
      mdb_rc = blob_forget(w, blob_bytes);
      w->evicted++;
      w->evicted_bytes += before > w->bytes ? (uint64_t)(before - w->bytes) : 0;
      return mdb_rc;
    }
    if (mdb_rc != MDB_SUCCESS)
      return mdb_rc;
    size_t len = value.mv_size <= sizeof path ? value.mv_size : sizeof path;
    memcpy(path, value.mv_data, len);
    mdb_rc = path_drop_blob(w, path, len, blob_bytes);
    value = (MDB_val){value.mv_size, path};
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = mdb_del(w->txn, w->store->dbi[T_REFS], &key, &value);
    if (mdb_rc != MDB_SUCCESS)
      return mdb_rc;
    (*budget)--;
  }
  return MDB_SUCCESS;
}

pcc_store_status pcc_store_evict(pcc_store *store, uint64_t *evicted)
{
  if (store == NULL)
    return PCC_STORE_INVALID;
  uint64_t max = store->config.max_size, low = max - max / 20, total = 0;
  if (evicted != NULL)
    *evicted = 0;
  if (max == 0 || atomic_load(&store->bytes) <= max)
    return PCC_STORE_OK;
  pcc_store_status rc = pcc_store_flush_uses(store, NULL); /* so that the order is current */
  int mdb_rc = rc == PCC_STORE_OK ? MDB_SUCCESS : EIO;
  size_t batch = PCC_EVICT_BATCH; /* halved when a transaction does not fit in the map */
  while (mdb_rc == MDB_SUCCESS && atomic_load(&store->bytes) > low) {
    wtxn w;
    MDB_cursor *cursor = NULL;
    size_t budget = batch;
    mdb_rc = wtxn_begin(store, &w);
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = open_cursor(w.txn, store->dbi[T_LRU], &cursor);
    while (mdb_rc == MDB_SUCCESS && budget > 0 &&
           (int64_t)atomic_load(&store->bytes) + w.bytes > (int64_t)low) {
      MDB_val key, value;
      uint8_t lru[LRU_KEY_LEN];
      bool gone = false;
      mdb_rc = checked_cget(cursor, &key, &value, MDB_FIRST); /* the least recently used */
      if (mdb_rc == MDB_SUCCESS && key.mv_size != LRU_KEY_LEN)
        mdb_rc = MDB_CORRUPTED;
      if (mdb_rc != MDB_SUCCESS)
        break;
      memcpy(lru, key.mv_data, LRU_KEY_LEN); /* the map's bytes change as we delete */
      mdb_rc = evict_blob(&w, lru + 8, &budget, &gone);
      if (mdb_rc == MDB_SUCCESS && gone) { /* its lru row went with it; a stale one goes too */
        MDB_val stale = {LRU_KEY_LEN, lru};
        int del_rc = mdb_del(w.txn, store->dbi[T_LRU], &stale, NULL);
        mdb_rc = del_rc == MDB_NOTFOUND ? MDB_SUCCESS : del_rc;
      }
    }
    close_cursor(cursor);
    bool empty = mdb_rc == MDB_NOTFOUND; /* nothing left to evict */
    if (mdb_rc == MDB_SUCCESS || empty) {
      uint64_t committed = w.evicted;
      bool changed = w.bytes != 0 || budget < batch || committed > 0;
      mdb_rc = wtxn_finish(&w, changed);
      if (mdb_rc == MDB_SUCCESS)
        total += committed;
      if (mdb_rc == MDB_SUCCESS && (empty || !changed))
        break;
    } else {
      if (w.txn != NULL)
        wtxn_abort(&w);
      if (too_big(mdb_rc) && batch > 1) { /* fewer references: fits in the pages kept */
        batch /= 2;
        mdb_rc = MDB_SUCCESS;
      }
    }
  }
  if (evicted != NULL)
    *evicted = total;
  return from_mdb(mdb_rc);
}

/* ---- administration -------------------------------------------------------------------- */

/* Fills the blob fields of an entry from its blob's header (not checksummed: listings only). */
static void entry_add_blob(pcc_store *store, MDB_txn *txn, pcc_store_entry *entry)
{
  uint8_t key_bytes[BLOB_KEY_LEN], first[CHUNK_KEY_LEN];
  blob_key(key_bytes, &entry->magic, entry->opt, &entry->record.digest);
  chunk_key(first, key_bytes, 0);
  MDB_val key = {CHUNK_KEY_LEN, first}, value;
  if (checked_get(txn, store->dbi[T_BLOBS], &key, &value) != MDB_SUCCESS ||
      value.mv_size < BLOB_HEADER_LEN)
    return;
  const uint8_t *v = value.mv_data;
  size_t compiler_len = v[10] <= PCC_COMPILER_NAME_MAX ? v[10] : 0;
  uint32_t total;
  memcpy(&total, v + 36, 4);
  if (BLOB_HEADER_LEN + compiler_len > value.mv_size || total < BLOB_HEADER_LEN + compiler_len)
    return;
  entry->has_blob = true;
  entry->kind = (pcc_blob_kind)v[9];
  memcpy(&entry->created, v + 24, 8);
  memcpy(&entry->compile_us, v + 32, 4);
  memcpy(entry->compiler, v + BLOB_HEADER_LEN, compiler_len);
  entry->compiler[compiler_len] = '\0';
  entry->bytes = total - BLOB_HEADER_LEN - compiler_len;
  if (v[8] == BLOB_VERSION_ZSTD) { /* the frame's stated size: the frame starts in this chunk */
    unsigned long long size = ZSTD_getFrameContentSize(v + BLOB_HEADER_LEN + compiler_len,
                                                       value.mv_size - BLOB_HEADER_LEN -
                                                         compiler_len);
    entry->bytes = size <= PCC_FRAME_MAX ? size : 0;
  }
}

static bool filter_match(const pcc_store_filter *filter, const MDB_val *key,
                         const pcc_store_entry *entry)
{
  if (!scope_match(filter, key->mv_data, key->mv_size))
    return false;
  return filter == NULL || filter->prefix_len == 0 ||
         (entry->path_len >= filter->prefix_len &&
          memcmp(entry->path, filter->prefix, filter->prefix_len) == 0);
}

/* Offers the records of table dbi after the key in `after` (after_len 0: from the filter's first
 * key) to visit, which says whether it took one, until `limit` were taken or `max_scan` looked
 * at; *next_len as pcc_store_scan. Read-only. */
typedef bool (*record_visit)(pcc_store *store, MDB_txn *txn, const MDB_val *key,
                             const MDB_val *value, void *ctx);

typedef struct {
  MDB_dbi dbi;
  const pcc_store_filter *filter;
  const uint8_t *after;
  size_t after_len, limit, max_scan;
  record_visit visit;
  void *ctx;
  uint8_t *next;
  size_t next_cap, *next_len;
} table_scan;

static int scan_table_in(reader *r, void *arg)
{
  table_scan *t = arg;
  MDB_cursor *cursor = NULL;
  MDB_val key, value;
  size_t found = 0, scanned = 0;
  int mdb_rc = open_cursor(r->txn, t->dbi, &cursor);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = scan_start(cursor, t->filter, t->after, t->after_len, &key, &value);
  while (mdb_rc == MDB_SUCCESS && !filter_done(t->filter, &key)) {
    if (found == t->limit || scanned == t->max_scan) /* more may follow: continue after the last */
      break;
    if (key.mv_size > t->next_cap) { /* no key of this table is that long */
      store_damage(r->store, "a key longer than any the store writes", NULL);
      mdb_rc = MDB_CORRUPTED;
      break;
    }
    scanned++;
    if (t->visit(r->store, r->txn, &key, &value, t->ctx))
      found++;
    memcpy(t->next, key.mv_data, key.mv_size);
    *t->next_len = key.mv_size;
    mdb_rc = checked_cget(cursor, &key, &value, MDB_NEXT);
  }
  if (mdb_rc != MDB_SUCCESS || filter_done(t->filter, &key))
    *t->next_len = 0; /* the end: nothing after this page */
  close_cursor(cursor);
  return mdb_rc == MDB_NOTFOUND ? MDB_SUCCESS : mdb_rc;
}

static pcc_store_status scan_table(pcc_store *store, MDB_dbi dbi, const pcc_store_filter *filter,
                                   const uint8_t *after, size_t after_len, size_t limit,
                                   size_t max_scan, record_visit visit, void *ctx, uint8_t *next,
                                   size_t next_cap, size_t *next_len)
{
  *next_len = 0;
  table_scan t = {dbi, filter, after, after_len, limit, max_scan, visit, ctx, next, next_cap,
                  next_len};
  int mdb_rc = guarded_read(store, scan_table_in, &t);
  if (mdb_rc != MDB_SUCCESS)
    *next_len = 0;
  return from_mdb(mdb_rc);
}

typedef struct {
  const pcc_store_filter *filter;
  void (*entry)(const pcc_store_entry *entry, void *ctx);
  void (*profile)(const pcc_store_profile *profile, void *ctx);
  void *ctx;
} scan_visit;

static bool visit_entry(pcc_store *store, MDB_txn *txn, const MDB_val *key, const MDB_val *value,
                        void *ctx)
{
  scan_visit *v = ctx;
  pcc_store_entry entry;
  if (!entry_from_path(key, value, &entry, NULL) || !filter_match(v->filter, key, &entry))
    return false;
  entry_add_blob(store, txn, &entry);
  v->entry(&entry, v->ctx);
  return true;
}

pcc_store_status pcc_store_scan(pcc_store *store, const pcc_store_filter *filter,
                                const uint8_t *cursor_key, size_t cursor_len, size_t limit,
                                size_t max_scan,
                                void (*visit)(const pcc_store_entry *entry, void *ctx), void *ctx,
                                uint8_t *next, size_t *next_len)
{
  if (store == NULL || visit == NULL || next == NULL || next_len == NULL ||
      cursor_len > PCC_STORE_CURSOR_MAX)
    return PCC_STORE_INVALID;
  scan_visit v = {filter, visit, NULL, ctx};
  return scan_table(store, store->dbi[T_PATHS], filter, cursor_key, cursor_len, limit, max_scan,
                    visit_entry, &v, next, PCC_STORE_CURSOR_MAX, next_len);
}

pcc_store_status pcc_store_get_entry(pcc_store *store, const char *ns, const pcc_magic *magic,
                                     int opt, const char *path, size_t path_len,
                                     void (*visit)(const pcc_store_entry *entry, void *ctx),
                                     void *ctx)
{
  if (store == NULL || visit == NULL || !valid_args(ns, magic, opt, path, path_len))
    return PCC_STORE_INVALID;
  uint8_t key_bytes[PATH_KEY_MAX];
  MDB_val key = {path_key(key_bytes, ns, magic, opt, path, path_len), key_bytes};
  path_read p = {&key, path, path_len, NULL, visit, ctx, PCC_STORE_OK};
  int mdb_rc = guarded_read(store, path_read_in, &p);
  return mdb_rc != MDB_SUCCESS ? from_mdb(mdb_rc) : p.rc;
}

/* Deletes the path entry the cursor is on (key, value as read) with its references. */
static int entry_drop(wtxn *w, MDB_cursor *cursor, const MDB_val *key, const MDB_val *value)
{
  pcc_store_entry entry;
  pcc_path_versions versions = {0, {{0}}}, none = {0, {{0}}};
  uint8_t key_copy[PATH_KEY_MAX];
  size_t len = key->mv_size <= sizeof key_copy ? key->mv_size : sizeof key_copy;
  memcpy(key_copy, key->mv_data, len);
  MDB_val copy = {len, key_copy};
  if (!entry_from_path(key, value, &entry, &versions))
    versions.n = 0;
  int mdb_rc = mdb_cursor_del(cursor, 0);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = refs_update(w, &copy, &versions, &none);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = fig_add(w, key_copy, -1, 0, 0);
  return mdb_rc;
}

/* Ends the transaction of a deletion batch that met mdb_rc (MDB_NOTFOUND: the end of its keys)
 * after deleting `deleted` items, the last key it looked at being `last`: aborts on an error,
 * commits when something went, and then moves `after` on and adds to *removed. */
static int batch_end(wtxn *w, int mdb_rc, size_t deleted, const uint8_t *last, size_t last_len,
                     uint8_t *after, size_t *after_len, uint64_t *removed)
{
  if (mdb_rc != MDB_SUCCESS && mdb_rc != MDB_NOTFOUND) {
    if (w->txn != NULL)
      wtxn_abort(w);
    return mdb_rc;
  }
  mdb_rc = wtxn_finish(w, deleted > 0);
  if (mdb_rc == MDB_SUCCESS) {
    *removed += deleted;
    memcpy(after, last, last_len);
    *after_len = last_len;
  }
  return mdb_rc;
}

/* Deletes, in one write transaction, up to `batch` matching path entries after `after` (with
 * their references). *more tells whether matching keys may follow; `after` is updated when the
 * transaction commits. */
static int delete_batch(pcc_store *store, const pcc_store_filter *filter, size_t batch,
                        uint8_t *after, size_t *after_len, uint64_t *removed, bool *more)
{
  wtxn w;
  MDB_cursor *cursor = NULL;
  uint8_t last[PCC_STORE_CURSOR_MAX];
  size_t last_len = *after_len, deleted = 0;
  memcpy(last, after, *after_len);
  int mdb_rc = wtxn_begin(store, &w);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = open_cursor(w.txn, store->dbi[T_PATHS], &cursor);
  MDB_val key, value;
  *more = false;
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = scan_start(cursor, filter, last, last_len, &key, &value);
  while (mdb_rc == MDB_SUCCESS && !filter_done(filter, &key)) {
    if (deleted == batch) {
      *more = true;
      break;
    }
    pcc_store_entry entry;
    last_len = key.mv_size <= sizeof last ? key.mv_size : sizeof last;
    memcpy(last, key.mv_data, last_len);
    if (entry_from_path(&key, &value, &entry, NULL) && filter_match(filter, &key, &entry)) {
      mdb_rc = entry_drop(&w, cursor, &key, &value);
      if (mdb_rc != MDB_SUCCESS)
        break;
      deleted++;
      key = (MDB_val){last_len, last}; /* the next key is the first at or after the deleted one */
      mdb_rc = checked_cget(cursor, &key, &value, MDB_SET_RANGE);
      continue;
    }
    mdb_rc = checked_cget(cursor, &key, &value, MDB_NEXT);
  }
  close_cursor(cursor);
  return batch_end(&w, mdb_rc, deleted, last, last_len, after, after_len, removed);
}

/* Deletes up to PROFILE_DELETE_BATCH profiles that match filter (NULL: any) and were updated
 * before older_than (INT64_MAX: any), in one write transaction; *more tells whether more may be
 * left, *removed is added to. */
static int profiles_delete_batch(pcc_store *store, const pcc_store_filter *filter,
                                 int64_t older_than, size_t batch, uint8_t *after,
                                 size_t *after_len, uint64_t *removed, bool *more)
{
  wtxn w;
  MDB_cursor *cursor = NULL;
  MDB_val key, value;
  size_t deleted = 0;
  uint8_t last[PROFILE_KEY_MAX];
  size_t last_len = *after_len;
  memcpy(last, after, last_len);
  *more = false;
  int mdb_rc = wtxn_begin(store, &w);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = open_cursor(w.txn, store->dbi[T_INFO], &cursor);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = scan_start(cursor, filter, last, last_len, &key, &value);
  while (mdb_rc == MDB_SUCCESS && !filter_done(filter, &key)) {
    if (deleted == batch) {
      *more = true;
      break;
    }
    int64_t updated = INT64_MIN;
    if (value.mv_size == INFO_VALUE_LEN)
      memcpy(&updated, value.mv_data, 8);
    last_len = key.mv_size <= sizeof last ? key.mv_size : sizeof last;
    memcpy(last, key.mv_data, last_len);
    if (scope_match(filter, key.mv_data, key.mv_size) && updated < older_than) {
      MDB_val name = {last_len, last};
      mdb_rc = mdb_del(w.txn, store->dbi[T_PROFILES], &name, NULL);
      if (mdb_rc == MDB_SUCCESS || mdb_rc == MDB_NOTFOUND)
        mdb_rc = mdb_cursor_del(cursor, 0);
      if (mdb_rc != MDB_SUCCESS)
        break;
      deleted++;
      key = name;
      mdb_rc = checked_cget(cursor, &key, &value, MDB_SET_RANGE);
      continue;
    }
    mdb_rc = checked_cget(cursor, &key, &value, MDB_NEXT);
  }
  close_cursor(cursor);
  return batch_end(&w, mdb_rc, deleted, last, last_len, after, after_len, removed);
}

/* Runs step (a delete of up to `batch` items) until it has nothing more to do, halving the
 * batch whenever a transaction does not fit in the map or LMDB's dirty-page limit (down to one
 * item: deleting one fits in the pages kept for deletions). */
typedef int (*delete_step)(pcc_store *store, const void *arg, size_t batch, uint8_t *after,
                           size_t *after_len, uint64_t *removed, bool *more);

static int delete_all(pcc_store *store, delete_step step, const void *arg, size_t batch,
                      uint64_t *removed)
{
  uint8_t after[PCC_STORE_CURSOR_MAX > PROFILE_KEY_MAX ? PCC_STORE_CURSOR_MAX : PROFILE_KEY_MAX];
  size_t after_len = 0;
  bool more = true;
  int mdb_rc = MDB_SUCCESS;
  while (more) {
    mdb_rc = step(store, arg, batch, after, &after_len, removed, &more);
    if (too_big(mdb_rc) && batch > 1) {
      batch /= 2;
      more = true;
      continue;
    }
    if (mdb_rc != MDB_SUCCESS)
      break;
  }
  return mdb_rc;
}

static int entries_step(pcc_store *store, const void *filter, size_t batch, uint8_t *after,
                        size_t *after_len, uint64_t *removed, bool *more)
{
  return delete_batch(store, filter, batch, after, after_len, removed, more);
}

typedef struct {
  const pcc_store_filter *filter;
  int64_t older_than;
} profile_selection;

static int profiles_step(pcc_store *store, const void *arg, size_t batch, uint8_t *after,
                         size_t *after_len, uint64_t *removed, bool *more)
{
  const profile_selection *s = arg;
  return profiles_delete_batch(store, s->filter, s->older_than, batch, after, after_len, removed,
                               more);
}

/* Empties every table in one transaction (mdb_drop) and resets the figures. */
static int purge_at_once(pcc_store *store, uint64_t *removed)
{
  wtxn w;
  MDB_stat paths;
  int mdb_rc = wtxn_begin(store, &w);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_stat(w.txn, store->dbi[T_PATHS], &paths);
  for (int t = 0; t < N_TABLES && mdb_rc == MDB_SUCCESS; t++)
    mdb_rc = mdb_drop(w.txn, store->dbi[t], 0);
  uint64_t sums[3] = {0, 0, 0};
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = figures_sum(store, w.txn, sums);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = figures_clear(store, w.txn);
  if (mdb_rc != MDB_SUCCESS) {
    if (w.txn != NULL)
      wtxn_abort(&w);
    return mdb_rc;
  }
  w.bytes = -(int64_t)sums[2];
  mdb_rc = wtxn_commit(&w, true);
  if (mdb_rc == MDB_SUCCESS)
    *removed = paths.ms_entries;
  return mdb_rc;
}

pcc_store_status pcc_store_delete(pcc_store *store, const pcc_store_filter *filter,
                                  uint64_t *removed)
{
  if (store == NULL || removed == NULL)
    return PCC_STORE_INVALID;
  *removed = 0;
  int mdb_rc;
  if (filter == NULL) { /* purge: at once, or in steps when the map is too full for that */
    mdb_rc = purge_at_once(store, removed);
    if (!too_big(mdb_rc))
      return note_write(store, mdb_rc, "a purge", false);
  }
  mdb_rc = delete_all(store, entries_step, filter, PCC_DELETE_BATCH, removed);
  if (mdb_rc == MDB_SUCCESS && (filter == NULL || filter->prefix_len == 0)) {
    uint64_t profiles = 0;
    profile_selection all = {filter, INT64_MAX};
    mdb_rc = delete_all(store, profiles_step, &all, PROFILE_DELETE_BATCH, &profiles);
  }
  if (mdb_rc != MDB_SUCCESS)
    return note_write(store, mdb_rc, "a deletion", false);
  return PCC_STORE_OK;
}

pcc_store_status pcc_store_delete_one(pcc_store *store, const char *ns, const pcc_magic *magic,
                                      int opt, const char *path, size_t path_len,
                                      uint64_t *removed)
{
  if (store == NULL || removed == NULL || !valid_args(ns, magic, opt, path, path_len))
    return PCC_STORE_INVALID;
  *removed = 0;
  uint8_t key_bytes[PATH_KEY_MAX];
  MDB_val key = {path_key(key_bytes, ns, magic, opt, path, path_len), key_bytes}, value;
  wtxn w;
  MDB_cursor *cursor = NULL;
  int mdb_rc = wtxn_begin(store, &w);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = open_cursor(w.txn, store->dbi[T_PATHS], &cursor);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = checked_cget(cursor, &key, &value, MDB_SET_KEY);
  pcc_store_entry entry;
  if (mdb_rc == MDB_SUCCESS && (!entry_from_path(&key, &value, &entry, NULL) ||
                                entry.path_len != path_len ||
                                memcmp(entry.path, path, path_len) != 0))
    mdb_rc = MDB_NOTFOUND; /* another path behind the same long-path key */
  if (mdb_rc == MDB_SUCCESS && (mdb_rc = entry_drop(&w, cursor, &key, &value)) == MDB_SUCCESS)
    *removed = 1;
  close_cursor(cursor);
  if (mdb_rc == MDB_SUCCESS || mdb_rc == MDB_NOTFOUND)
    mdb_rc = wtxn_finish(&w, *removed > 0);
  else if (w.txn != NULL)
    wtxn_abort(&w);
  if (mdb_rc != MDB_SUCCESS)
    *removed = 0;
  return note_write(store, mdb_rc, "a deletion", false);
}

typedef struct {
  struct {
    pcc_magic magic;
    uint64_t entries, bytes;
  } seen[MAGICS_MAX];
  size_t n;
} magics_read;

static int magics_in(reader *r, void *arg)
{
  magics_read *m = arg;
  MDB_cursor *cursor = NULL;
  MDB_val key = {3, (void *)"fig"}, value;
  int mdb_rc = open_cursor(r->txn, r->store->meta, &cursor);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = checked_cget(cursor, &key, &value, MDB_SET_RANGE);
  while (mdb_rc == MDB_SUCCESS && m->n < MAGICS_MAX && key.mv_size == FIG_KEY_LEN &&
         memcmp(key.mv_data, "fig", 3) == 0) {
    uint64_t fig[3];
    if (value.mv_size == FIG_VALUE_LEN) {
      memcpy(fig, value.mv_data, FIG_VALUE_LEN);
      memcpy(m->seen[m->n].magic.bytes, (const uint8_t *)key.mv_data + 3, PCC_MAGIC_LEN);
      m->seen[m->n].entries = fig[0];
      m->seen[m->n++].bytes = fig[2];
    }
    mdb_rc = checked_cget(cursor, &key, &value, MDB_NEXT);
  }
  close_cursor(cursor);
  return mdb_rc == MDB_NOTFOUND ? MDB_SUCCESS : mdb_rc;
}

pcc_store_status pcc_store_magics(pcc_store *store,
                                  void (*visit)(const pcc_magic *magic, uint64_t entries,
                                                uint64_t bytes, void *ctx),
                                  void *ctx)
{
  if (store == NULL || visit == NULL)
    return PCC_STORE_INVALID;
  magics_read m;
  m.n = 0;
  int mdb_rc = guarded_read(store, magics_in, &m);
  if (mdb_rc != MDB_SUCCESS)
    return from_mdb(mdb_rc);
  for (size_t i = 0; i < m.n; i++)
    visit(&m.seen[i].magic, m.seen[i].entries, m.seen[i].bytes, ctx);
  return PCC_STORE_OK;
}

pcc_store_status pcc_store_backup_dir(pcc_store *store, const char *dir)
{
  if (store == NULL || dir == NULL)
    return PCC_STORE_INVALID;
  if (atomic_load(&store->damaged)) /* a copy walks every tree, unguarded: not of a damaged one */
    return PCC_STORE_DAMAGED;
  return from_mdb(mdb_env_copy2(store->env, dir, MDB_CP_COMPACT));
}

pcc_store_status pcc_store_backup_fd(pcc_store *store, int fd)
{
  if (store == NULL || fd < 0)
    return PCC_STORE_INVALID;
  if (atomic_load(&store->damaged))
    return PCC_STORE_DAMAGED;
  return from_mdb(mdb_env_copyfd2(store->env, fd, MDB_CP_COMPACT));
}

/* ---- profiles ---------------------------------------------------------------------------- */

/* The key of a profile, or 0 for bad arguments. */
static size_t profile_key(uint8_t key[PROFILE_KEY_MAX], const char *ns, const pcc_magic *magic,
                          int opt, const char *name)
{
  size_t name_len = name ? strlen(name) : 0;
  if (!valid_scope(ns, magic, opt) || name_len == 0 || name_len > PCC_PROFILE_NAME_MAX)
    return 0;
  size_t scope = scope_key(key, magic, opt, ns);
  memcpy(key + scope, name, name_len);
  return scope + name_len;
}

/* Reads a profile's info: updated and count (both 0 when absent: MDB_NOTFOUND). */
static int info_read(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, int64_t *updated, uint64_t *count)
{
  MDB_val value;
  *updated = 0;
  *count = 0;
  int mdb_rc = checked_get(txn, dbi, key, &value);
  if (mdb_rc == MDB_SUCCESS && value.mv_size == INFO_VALUE_LEN) {
    memcpy(updated, value.mv_data, 8);
    memcpy(count, (const uint8_t *)value.mv_data + 8, 8);
  }
  return mdb_rc;
}

static int info_write(pcc_store *store, MDB_txn *txn, MDB_val *key, uint64_t count)
{
  uint8_t bytes[INFO_VALUE_LEN];
  int64_t updated = store_now(store);
  uint64_t tick = atomic_fetch_add(&store->clock, 1);
  memcpy(bytes, &updated, 8);
  memcpy(bytes + 8, &count, 8);
  memcpy(bytes + 16, &tick, 8);
  MDB_val value = {INFO_VALUE_LEN, bytes};
  return mdb_put(txn, store->dbi[T_INFO], key, &value, 0);
}

/* Makes room for one more profile when max_profiles are kept: deletes the least recently
 * updated one. Caller holds a write transaction. */
static int profiles_make_room(pcc_store *store, MDB_txn *txn)
{
  MDB_stat st;
  int mdb_rc = mdb_stat(txn, store->dbi[T_INFO], &st);
  if (mdb_rc != MDB_SUCCESS || st.ms_entries < store->config.max_profiles)
    return mdb_rc;
  MDB_cursor *cursor = NULL;
  MDB_val key, value;
  uint8_t oldest[PROFILE_KEY_MAX];
  size_t oldest_len = 0;
  uint64_t oldest_tick = UINT64_MAX;
  mdb_rc = open_cursor(txn, store->dbi[T_INFO], &cursor);
  while (mdb_rc == MDB_SUCCESS &&
         (mdb_rc = checked_cget(cursor, &key, &value, MDB_NEXT)) == MDB_SUCCESS) {
    uint64_t tick = 0; /* the order of updates: the clock's tick at each */
    if (value.mv_size == INFO_VALUE_LEN)
      memcpy(&tick, (const uint8_t *)value.mv_data + 16, 8);
    if ((tick < oldest_tick || oldest_len == 0) && key.mv_size <= sizeof oldest) {
      oldest_tick = tick;
      oldest_len = key.mv_size;
      memcpy(oldest, key.mv_data, oldest_len);
    }
  }
  close_cursor(cursor);
  if (mdb_rc != MDB_NOTFOUND)
    return mdb_rc;
  MDB_val victim = {oldest_len, oldest};
  mdb_rc = mdb_del(txn, store->dbi[T_PROFILES], &victim, NULL);
  if (mdb_rc == MDB_SUCCESS || mdb_rc == MDB_NOTFOUND)
    mdb_rc = mdb_del(txn, store->dbi[T_INFO], &victim, NULL);
  return mdb_rc;
}

/* Does the DUPSORT table hold the pair (key, value)? */
static bool dup_exists(MDB_txn *txn, MDB_dbi dbi, MDB_val *key, MDB_val *value)
{
  MDB_cursor *cursor = NULL;
  MDB_val k = *key, v = *value;
  bool found = open_cursor(txn, dbi, &cursor) == MDB_SUCCESS &&
               checked_cget(cursor, &k, &v, MDB_GET_BOTH) == MDB_SUCCESS;
  close_cursor(cursor);
  return found;
}

/* One transaction of a merge: adds paths[*at..] to the profile of key, at most PCC_PROFILE_BATCH
 * of them. Past PCC_PROFILE_PATHS_MAX (once per merge: *restarted), the profile starts again
 * from paths[0]. *count is the profile's count before and after. */
static int merge_batch(pcc_store *store, MDB_val *key, const char *const *paths, size_t n,
                       size_t *at, bool *restarted, uint64_t *count)
{
  wtxn w;
  int64_t updated;
  int mdb_rc = wtxn_begin(store, &w);
  if (mdb_rc == MDB_SUCCESS) {
    mdb_rc = info_read(w.txn, store->dbi[T_INFO], key, &updated, count);
    if (mdb_rc == MDB_NOTFOUND)
      mdb_rc = profiles_make_room(store, w.txn);
  }
  for (size_t done = 0; mdb_rc == MDB_SUCCESS && done < PCC_PROFILE_BATCH && *at < n; done++) {
    size_t len = strlen(paths[*at]);
    MDB_val path = {len, (void *)paths[*at]};
    if (len > PCC_PROFILE_PATH_MAX) { /* left out: not a value LMDB sorts */
      (*at)++;
      continue;
    }
    if (*count >= PCC_PROFILE_PATHS_MAX && !*restarted &&
        !dup_exists(w.txn, store->dbi[T_PROFILES], key, &path)) {
      /* full: start again from what this merge brings (at most PCC_PROFILE_PATHS_MAX) */
      mdb_rc = mdb_del(w.txn, store->dbi[T_PROFILES], key, NULL);
      mdb_rc = mdb_rc == MDB_NOTFOUND ? MDB_SUCCESS : mdb_rc;
      *count = 0;
      *at = 0;
      *restarted = true;
      continue;
    }
    mdb_rc = mdb_put(w.txn, store->dbi[T_PROFILES], key, &path, MDB_NODUPDATA);
    if (mdb_rc == MDB_SUCCESS)
      (*count)++;
    else if (mdb_rc == MDB_KEYEXIST)
      mdb_rc = MDB_SUCCESS;
    (*at)++;
  }
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = info_write(store, w.txn, key, *count);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = wtxn_commit(&w, true);
  else if (w.txn != NULL)
    wtxn_abort(&w);
  return mdb_rc;
}

pcc_store_status pcc_store_profile_merge(pcc_store *store, const char *ns,
                                         const pcc_magic *magic, int opt, const char *name,
                                         const char *const *paths, size_t n, size_t *total)
{
  uint8_t key_bytes[PROFILE_KEY_MAX];
  size_t key_len = store ? profile_key(key_bytes, ns, magic, opt, name) : 0;
  if (key_len == 0 || (paths == NULL && n > 0) || n > PCC_PROFILE_PATHS_MAX || total == NULL)
    return PCC_STORE_INVALID;
  for (size_t i = 0; i < n; i++)
    if (paths[i] == NULL || paths[i][0] != '/' || strlen(paths[i]) > PCC_PATH_MAX)
      return PCC_STORE_INVALID;
  MDB_val key = {key_len, key_bytes};
  size_t at = 0;
  bool restarted = false;
  uint64_t count = 0;
  int mdb_rc = room_for(store, PCC_PROFILE_BATCH * 64);
  do {
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = merge_batch(store, &key, paths, n, &at, &restarted, &count);
  } while (mdb_rc == MDB_SUCCESS && at < n && (mdb_rc = room_for(store, 0)) == MDB_SUCCESS);
  if (mdb_rc == MDB_SUCCESS)
    *total = (size_t)count;
  return note_write(store, mdb_rc, "a profile's write", true);
}

static bool profile_from_info(const MDB_val *key, const MDB_val *value, pcc_store_profile *out);

typedef struct {
  MDB_val key;
  void (*visit)(const char *path, size_t path_len, void *ctx);
  void *ctx;
  pcc_store_profile *profile; /* pcc_store_profile_get: the figures, not the paths */
} profile_read;

static int profile_read_in(reader *r, void *arg)
{
  profile_read *p = arg;
  MDB_cursor *cursor = NULL;
  MDB_val key = p->key, value;
  int mdb_rc = checked_get(r->txn, r->store->dbi[T_INFO], &key, &value); /* may be empty */
  if (p->profile != NULL)
    return mdb_rc == MDB_SUCCESS && !profile_from_info(&key, &value, p->profile) ? EILSEQ
                                                                                   : mdb_rc;
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = open_cursor(r->txn, r->store->dbi[T_PROFILES], &cursor);
  if (mdb_rc == MDB_SUCCESS) {
    mdb_rc = checked_cget(cursor, &key, &value, MDB_SET_KEY);
    while (mdb_rc == MDB_SUCCESS) {
      p->visit(value.mv_data, value.mv_size, p->ctx);
      mdb_rc = checked_cget(cursor, &key, &value, MDB_NEXT_DUP);
    }
    mdb_rc = mdb_rc == MDB_NOTFOUND ? MDB_SUCCESS : mdb_rc;
  }
  close_cursor(cursor);
  return mdb_rc;
}

pcc_store_status pcc_store_profile_read(pcc_store *store, const char *ns,
                                        const pcc_magic *magic, int opt, const char *name,
                                        void (*visit)(const char *path, size_t path_len,
                                                      void *ctx),
                                        void *ctx)
{
  uint8_t key_bytes[PROFILE_KEY_MAX];
  size_t key_len = store ? profile_key(key_bytes, ns, magic, opt, name) : 0;
  if (key_len == 0 || visit == NULL)
    return PCC_STORE_INVALID;
  profile_read p = {{key_len, key_bytes}, visit, ctx, NULL};
  return from_mdb(guarded_read(store, profile_read_in, &p));
}

/* A profile's figures from its info record (key and value as stored). */
static bool profile_from_info(const MDB_val *key, const MDB_val *value, pcc_store_profile *out)
{
  const uint8_t *k = key->mv_data;
  if (key->mv_size < PCC_MAGIC_LEN + 2 || value->mv_size != INFO_VALUE_LEN)
    return false;
  size_t ns_len = k[PCC_MAGIC_LEN + 1], scope = PCC_MAGIC_LEN + 2 + ns_len;
  if (ns_len > PCC_NAMESPACE_MAX || key->mv_size <= scope ||
      key->mv_size - scope > PCC_PROFILE_NAME_MAX)
    return false;
  memset(out, 0, sizeof *out);
  memcpy(out->magic.bytes, k, PCC_MAGIC_LEN);
  out->opt = k[PCC_MAGIC_LEN];
  memcpy(out->ns, k + PCC_MAGIC_LEN + 2, ns_len);
  memcpy(out->name, k + scope, key->mv_size - scope);
  memcpy(&out->updated, value->mv_data, 8);
  memcpy(&out->paths, (const uint8_t *)value->mv_data + 8, 8);
  return true;
}

static bool visit_profile(pcc_store *store, MDB_txn *txn, const MDB_val *key,
                          const MDB_val *value, void *ctx)
{
  (void)store;
  (void)txn;
  scan_visit *v = ctx;
  pcc_store_profile profile;
  if (!scope_match(v->filter, key->mv_data, key->mv_size) ||
      !profile_from_info(key, value, &profile))
    return false;
  v->profile(&profile, v->ctx);
  return true;
}

pcc_store_status pcc_store_profiles_scan(pcc_store *store, const pcc_store_filter *filter,
                                         const uint8_t *cursor_key, size_t cursor_len,
                                         size_t limit,
                                         void (*visit)(const pcc_store_profile *profile,
                                                       void *ctx),
                                         void *ctx, uint8_t *next, size_t *next_len)
{
  if (store == NULL || visit == NULL || next == NULL || next_len == NULL ||
      cursor_len > PCC_STORE_PROFILE_CURSOR_MAX)
    return PCC_STORE_INVALID;
  scan_visit v = {filter, NULL, visit, ctx};
  return scan_table(store, store->dbi[T_INFO], filter, cursor_key, cursor_len, limit,
                    PCC_LIST_SCAN_MAX, visit_profile, &v, next, PCC_STORE_PROFILE_CURSOR_MAX,
                    next_len);
}

pcc_store_status pcc_store_profile_get(pcc_store *store, const char *ns, const pcc_magic *magic,
                                       int opt, const char *name, pcc_store_profile *out)
{
  uint8_t key_bytes[PROFILE_KEY_MAX];
  size_t key_len = store ? profile_key(key_bytes, ns, magic, opt, name) : 0;
  if (key_len == 0 || out == NULL)
    return PCC_STORE_INVALID;
  profile_read p = {{key_len, key_bytes}, NULL, NULL, out};
  int mdb_rc = guarded_read(store, profile_read_in, &p);
  if (mdb_rc == EILSEQ) {
    atomic_fetch_add(&store->corruptions, 1);
    return PCC_STORE_CORRUPT;
  }
  return from_mdb(mdb_rc);
}

pcc_store_status pcc_store_profile_delete(pcc_store *store, const char *ns,
                                          const pcc_magic *magic, int opt, const char *name,
                                          uint64_t *removed)
{
  uint8_t key_bytes[PROFILE_KEY_MAX];
  size_t key_len = store ? profile_key(key_bytes, ns, magic, opt, name) : 0;
  if (key_len == 0 || removed == NULL)
    return PCC_STORE_INVALID;
  *removed = 0;
  MDB_val key = {key_len, key_bytes};
  wtxn w;
  int mdb_rc = wtxn_begin(store, &w);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_del(w.txn, store->dbi[T_INFO], &key, NULL);
  if (mdb_rc == MDB_SUCCESS) {
    mdb_rc = mdb_del(w.txn, store->dbi[T_PROFILES], &key, NULL);
    mdb_rc = mdb_rc == MDB_NOTFOUND ? MDB_SUCCESS : mdb_rc;
    *removed = mdb_rc == MDB_SUCCESS;
  }
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = wtxn_commit(&w, true);
  else if (w.txn != NULL)
    wtxn_abort(&w);
  if (mdb_rc != MDB_SUCCESS)
    *removed = 0;
  return mdb_rc == MDB_NOTFOUND ? PCC_STORE_OK
                                : note_write(store, mdb_rc, "a deletion", false);
}

pcc_store_status pcc_store_profiles_expire(pcc_store *store, int64_t older_than,
                                           uint64_t *removed)
{
  if (store == NULL || removed == NULL)
    return PCC_STORE_INVALID;
  *removed = 0;
  profile_selection old = {NULL, older_than};
  int mdb_rc = delete_all(store, profiles_step, &old, PROFILE_DELETE_BATCH, removed);
  return note_write(store, mdb_rc, "the expiry of profiles", false);
}

/* ---- verification (pycached --verify-store, and the check at start) ---------------------- */

enum { V_FREE, V_MAIN, V_META, V_TABLE0 }; /* then the tables of TABLE_NAMES */

typedef struct {
  pcc_store *store;
  bool full;
  struct timespec deadline; /* tv_sec 0: none */
  void (*report)(const char *line, void *ctx);
  void *ctx;
  pcc_store_report *out;
  uint64_t last_pgno;
  int table;               /* V_* or V_TABLE0 + T_* */
  const char *name;
  MDB_dbi dbi;
  uint64_t walked;         /* records of this table walked */
  uint8_t blob[BLOB_KEY_LEN]; /* blobs: the blob whose chunks come, its next chunk, length */
  unsigned next_chunk;
  uint64_t blob_total, blob_at;
  bool in_blob;
  uint8_t last_key[512], last_value[512]; /* the record before, for the order */
  size_t last_key_len, last_value_len, last_id;
} verify;

/* Reports one problem: "table: key: what". structural: of the file, not of one record. */
static void problem(verify *v, bool structural, const MDB_val *key, const char *what)
{
  if (structural)
    v->out->structural++;
  else
    v->out->damaged++;
  if (v->report == NULL)
    return;
  char line[256], hex[41] = "";
  size_t n = key && key->mv_size > 0 && in_file(v->store, key) ? key->mv_size : 0;
  for (size_t i = 0; i < n && i < 20; i++)
    snprintf(hex + 2 * i, 3, "%02x", ((const uint8_t *)key->mv_data)[i]);
  snprintf(line, sizeof line, "%s: %s%s%s%s", v->name, hex, n > 20 ? "..." : "", n > 0 ? ": " : "",
           what);
  v->report(line, v->ctx);
}

static bool past_deadline(const verify *v)
{
  struct timespec now;
  if (v->deadline.tv_sec == 0)
    return false;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec > v->deadline.tv_sec ||
         (now.tv_sec == v->deadline.tv_sec && now.tv_nsec >= v->deadline.tv_nsec);
}

/* Ends the blob whose chunks were coming: all of them there? */
static void blob_end(verify *v)
{
  if (v->in_blob && v->blob_at != v->blob_total) {
    MDB_val key = {BLOB_KEY_LEN, v->blob};
    problem(v, false, &key, "chunks missing");
  }
  v->in_blob = false;
}

static void check_blob_chunk(verify *v, MDB_txn *txn, const MDB_val *key, const MDB_val *value)
{
  const uint8_t *k = key->mv_data;
  if (key->mv_size != CHUNK_KEY_LEN) {
    problem(v, false, key, "not a chunk key");
    return;
  }
  unsigned chunk = (unsigned)k[BLOB_KEY_LEN] << 8 | k[BLOB_KEY_LEN + 1];
  if (!v->in_blob || memcmp(v->blob, k, BLOB_KEY_LEN) != 0) {
    blob_end(v);
    if (chunk != 0) {
      problem(v, false, key, "a chunk without its first");
      return;
    }
    uint32_t total = 0;
    if (value->mv_size >= BLOB_HEADER_LEN)
      memcpy(&total, (const uint8_t *)value->mv_data + 36, 4);
    if (total < BLOB_HEADER_LEN || value->mv_size > total) {
      problem(v, false, key, "bad record length");
      return;
    }
    memcpy(v->blob, k, BLOB_KEY_LEN);
    v->in_blob = true;
    v->next_chunk = 0;
    v->blob_total = total;
    v->blob_at = 0;
    v->out->blobs++;
    if (v->full) { /* the whole record: its chunks, checksum and header, as a lookup reads it */
      pcc_blob *blob = NULL;
      bool corrupt = false;
      int mdb_rc = blob_read(v->store, txn, k, &blob, &corrupt);
      free(blob);
      if (mdb_rc != MDB_SUCCESS || corrupt)
        problem(v, mdb_rc != MDB_SUCCESS, key,
                mdb_rc != MDB_SUCCESS ? mdb_strerror(mdb_rc) : "checksum or header mismatch");
    }
  }
  if (chunk != v->next_chunk || value->mv_size > v->blob_total - v->blob_at ||
      value->mv_size > v->store->page_size - PAGE_HEADER) {
    problem(v, false, key, "chunk out of order or too long");
    v->in_blob = false;
    return;
  }
  v->next_chunk++;
  v->blob_at += value->mv_size;
}

/* Checks one record of the table being walked (its bounds are checked already). */
static void check_record(verify *v, MDB_txn *txn, const MDB_val *key, const MDB_val *value)
{
  const uint8_t *k = key->mv_data;
  pcc_store_entry entry;
  pcc_store_profile profile;
  switch (v->table) {
  case V_FREE: { /* txnid -> an IDL: count, then page numbers */
    size_t count = 0;
    if (key->mv_size != sizeof(size_t) || value->mv_size < sizeof count) {
      problem(v, true, key, "bad free list record");
      return;
    }
    memcpy(&count, value->mv_data, sizeof count);
    if (value->mv_size != (count + 1) * sizeof count) {
      problem(v, true, key, "bad free list length");
      return;
    }
    for (size_t i = 1; i <= count; i++) {
      size_t page;
      memcpy(&page, (const uint8_t *)value->mv_data + i * sizeof page, sizeof page);
      if (page < 2 || page > v->last_pgno) {
        problem(v, true, key, "a free page past the last page");
        return;
      }
    }
    return;
  }
  case V_MAIN:
    if (value->mv_size != 48) /* sizeof(MDB_db): a named table's record */
      problem(v, true, key, "bad table record");
    return;
  case V_META:
    if (!((key->mv_size == 6 && memcmp(k, "format", 6) == 0 && value->mv_size == 4) ||
          (key->mv_size == FIG_KEY_LEN && memcmp(k, "fig", 3) == 0 &&
           value->mv_size == FIG_VALUE_LEN)))
      problem(v, false, key, "unknown meta record");
    return;
  case V_TABLE0 + T_PATHS: {
    uint8_t again[PATH_KEY_MAX];
    v->out->entries++;
    if (!entry_from_path(key, value, &entry, NULL) || entry.path_len > PCC_PATH_MAX ||
        entry.opt > PCC_OPT_MAX) {
      problem(v, false, key, "does not decode");
      return;
    }
    size_t len = path_key(again, entry.ns, &entry.magic, entry.opt, entry.path, entry.path_len);
    if (len != key->mv_size || memcmp(again, k, len) != 0)
      problem(v, false, key, "its path does not match its key");
    return;
  }
  case V_TABLE0 + T_BLOBS:
    check_blob_chunk(v, txn, key, value);
    return;
  case V_TABLE0 + T_REFS:
    if (key->mv_size != BLOB_KEY_LEN || value->mv_size < PCC_MAGIC_LEN + 3 ||
        value->mv_size > PATH_KEY_MAX)
      problem(v, false, key, "bad reference");
    return;
  case V_TABLE0 + T_USES:
    if (key->mv_size != BLOB_KEY_LEN || value->mv_size != USE_VALUE_LEN)
      problem(v, false, key, "bad use record");
    return;
  case V_TABLE0 + T_LRU:
    if (key->mv_size != LRU_KEY_LEN || value->mv_size != 0)
      problem(v, false, key, "bad lru record");
    return;
  case V_TABLE0 + T_PROFILES:
    if (key->mv_size < PCC_MAGIC_LEN + 3 || key->mv_size > PROFILE_KEY_MAX ||
        value->mv_size == 0 || value->mv_size > PCC_PROFILE_PATH_MAX)
      problem(v, false, key, "bad profile path");
    return;
  case V_TABLE0 + T_INFO:
    if (!profile_from_info(key, value, &profile))
      problem(v, false, key, "bad profile record");
    return;
  default:
    return;
  }
}

/* Does v (in the file) lie within one page, or start an overflow run (a page's header before
 * it)? A node whose size was damaged reaches into the next page: LMDB would read, and a write
 * would move, bytes that are not the record's. */
static bool in_its_page(pcc_store *store, const MDB_val *v)
{
  if (v->mv_size == 0 || store->map == NULL)
    return true;
  uint64_t offset = (uint64_t)((const uint8_t *)v->mv_data - store->map), psize = store->page_size;
  if (offset % psize == PAGE_HEADER)
    return true; /* an overflow value: its pages are in the file (in_file) */
  return offset / psize == (offset + v->mv_size - 1) / psize;
}

/* Do the records come in LMDB's order (keys by memcmp, then length; the free list by txnid;
 * the values of one key in a DUPSORT table likewise)? A damaged page breaks the order, and
 * LMDB's searches and writes then go astray. Remembers the record in v. */
static bool in_order(verify *v, const MDB_val *key, const MDB_val *value, bool dupsort)
{
  int order;
  if (v->table == V_FREE) {
    size_t id = 0;
    if (key->mv_size == sizeof id)
      memcpy(&id, key->mv_data, sizeof id);
    order = v->walked == 1 ? 1 : id > v->last_id ? 1 : -1;
    v->last_id = id;
    return order > 0;
  }
  if (v->walked == 1) {
    order = 1;
  } else {
    size_t n = key->mv_size < v->last_key_len ? key->mv_size : v->last_key_len;
    order = memcmp(key->mv_data, v->last_key, n);
    if (order == 0)
      order = key->mv_size > v->last_key_len ? 1 : key->mv_size < v->last_key_len ? -1 : 0;
    if (order == 0 && dupsort) {
      n = value->mv_size < v->last_value_len ? value->mv_size : v->last_value_len;
      order = memcmp(value->mv_data, v->last_value, n);
      if (order == 0)
        order = value->mv_size > v->last_value_len ? 1 : -1;
    }
  }
  v->last_key_len = key->mv_size < sizeof v->last_key ? key->mv_size : sizeof v->last_key;
  memcpy(v->last_key, key->mv_data, v->last_key_len);
  v->last_value_len = 0;
  if (dupsort) {
    v->last_value_len = value->mv_size < sizeof v->last_value ? value->mv_size
                                                              : sizeof v->last_value;
    memcpy(v->last_value, value->mv_data, v->last_value_len);
  }
  return order > 0;
}

/* Walks one table (v->dbi), checking each record; a fault ends the walk (guarded_read_in). */
static int verify_table_in(reader *r, void *arg)
{
  verify *v = arg;
  MDB_cursor *cursor = NULL;
  MDB_stat st;
  MDB_val key, value;
  int mdb_rc = mdb_stat(r->txn, v->dbi, &st);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = open_cursor(r->txn, v->dbi, &cursor);
  bool dupsort = v->table == V_TABLE0 + T_REFS || v->table == V_TABLE0 + T_PROFILES;
  while (mdb_rc == MDB_SUCCESS &&
         (mdb_rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT)) == MDB_SUCCESS) {
    v->walked++;
    v->out->records++;
    if (!in_file(r->store, &key) || !in_file(r->store, &value)) {
      problem(v, true, NULL, "a record reaches past the end of the file");
    } else if (!in_its_page(r->store, &key) || !in_its_page(r->store, &value)) {
      problem(v, true, &key, "a record crosses the end of its page");
    } else {
      if (!in_order(v, &key, &value, dupsort))
        problem(v, true, &key, "out of order (a damaged page)");
      check_record(v, r->txn, &key, &value);
    }
    if (v->walked % 256 == 0 && past_deadline(v)) {
      v->out->complete = false;
      break;
    }
  }
  if (v->table == V_TABLE0 + T_BLOBS && mdb_rc == MDB_NOTFOUND)
    blob_end(v);
  close_cursor(cursor);
  if (mdb_rc == MDB_NOTFOUND && v->walked != st.ms_entries) {
    char what[96];
    snprintf(what, sizeof what, "%llu records walked, LMDB counts %llu",
             (unsigned long long)v->walked, (unsigned long long)st.ms_entries);
    problem(v, true, NULL, what);
  }
  if (mdb_rc != MDB_SUCCESS && mdb_rc != MDB_NOTFOUND) {
    char what[128];
    snprintf(what, sizeof what, "%s after %llu records", mdb_strerror(mdb_rc),
             (unsigned long long)v->walked);
    problem(v, true, NULL, what);
  }
  return MDB_SUCCESS;
}

pcc_store_status pcc_store_verify(pcc_store *store, bool full, unsigned seconds,
                                  void (*report)(const char *line, void *ctx), void *ctx,
                                  pcc_store_report *out)
{
  if (store == NULL || out == NULL)
    return PCC_STORE_INVALID;
  memset(out, 0, sizeof *out);
  out->complete = true;
  MDB_envinfo info;
  int mdb_rc = mdb_env_info(store->env, &info);
  if (mdb_rc != MDB_SUCCESS)
    return from_mdb(mdb_rc);
  verify v;
  memset(&v, 0, sizeof v);
  v.store = store;
  v.full = full;
  v.report = report;
  v.ctx = ctx;
  v.out = out;
  v.last_pgno = info.me_last_pgno;
  if (seconds > 0) {
    clock_gettime(CLOCK_MONOTONIC, &v.deadline);
    v.deadline.tv_sec += seconds;
  }
  bool was_verifying = store->verifying;
  store->verifying = true; /* problems are reported here, not logged by store_damage */
  static const char *const special[] = {"free list", "tables", "meta"};
  for (int t = 0; t < V_TABLE0 + N_TABLES && out->complete; t++) {
    v.table = t;
    v.name = t < V_TABLE0 ? special[t] : TABLE_NAMES[t - V_TABLE0];
    v.dbi = t == V_FREE ? 0 : t == V_MAIN ? 1 : t == V_META ? store->meta
                                                             : store->dbi[t - V_TABLE0];
    v.walked = 0;
    v.in_blob = false;
    mdb_rc = guarded_read_in(store, verify_table_in, &v, true);
    if (mdb_rc == MDB_CORRUPTED) { /* a contained fault */
      char what[96];
      snprintf(what, sizeof what, "a fault reading the table (after %llu records)",
               (unsigned long long)v.walked);
      problem(&v, true, NULL, what);
    } else if (mdb_rc != MDB_SUCCESS) {
      problem(&v, true, NULL, mdb_strerror(mdb_rc));
    }
  }
  store->verifying = was_verifying;
  if (out->structural > 0)
    atomic_store(&store->damaged, true);
  return PCC_STORE_OK;
}
