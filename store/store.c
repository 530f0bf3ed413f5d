/* store.c: the LMDB store of compiled code (see store.h for the model, docs/DESIGN.md for why).
 *
 * Record layouts (native byte order: an LMDB file is not portable across architectures anyway):
 *
 *   paths key:   magic[4] opt[1] ns_len[1] ns path            (paths up to PATH_KEY_INLINE bytes)
 *                magic[4] opt[1] ns_len[1] ns 0x00 sha256[32] (longer paths; 0x00 never starts
 *                                                              a path)
 *   paths value: count u8 | (mtime i64 | size u64 | hash i32 | digest[32]) x count, newest
 *                first | path (full, to verify)
 *
 *   blobs key:   magic[4] opt[1] digest[32] (SHA-256 of the source)
 *   blobs value: checksum u64 (XXH3-64 of every byte after it) | version u8 | kind u8 |
 *                compiler_len u8 | 0 u8 | hash i32 | size u64 | created i64 |
 *                compile_us u32 | 0 u32 | compiler | payload
 *
 *   profiles key:   magic[4] opt[1] ns_len[1] ns name
 *   profiles value: count u32 | (length u16 | path) x count
 *
 *   meta key "format": u32 STORE_FORMAT. A store of another format (1: XXH3-128 digests, one
 *   version a path, no namespaces) is emptied at open: it is a cache, its entries come back.
 */
#include <errno.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "store.h"

#define PATH_KEY_INLINE 400 /* LMDB's default key limit is 511 bytes */
#define SCOPE_MAX (PCC_MAGIC_LEN + 2 + PCC_NAMESPACE_MAX) /* magic, opt, ns_len, ns */
#define PATH_KEY_MAX (SCOPE_MAX + PATH_KEY_INLINE)
#define BLOB_KEY_LEN (PCC_MAGIC_LEN + 1 + PCC_DIGEST_LEN)
#define STORE_FORMAT 2

#define PATH_VERSION_LEN (8 + 8 + 4 + PCC_DIGEST_LEN)
#define BLOB_VERSION 1
#define BLOB_HEADER_LEN 40

struct pcc_store {
  MDB_env *env;
  atomic_uint_fast64_t generation; /* bumped by every committed write */
  MDB_dbi paths;
  MDB_dbi blobs;
  MDB_dbi profiles; /* magic[4] opt[1] ns name -> u32 count, then (u16 length, path) each */
  MDB_dbi meta;     /* "format" -> u32 */
};

const char *pcc_store_strerror(pcc_store_status rc)
{
  switch (rc) {
  case PCC_STORE_OK: return "ok";
  case PCC_STORE_NOTFOUND: return "not found";
  case PCC_STORE_CORRUPT: return "corrupt record (dropped)";
  case PCC_STORE_FULL: return "store map is full";
  case PCC_STORE_IO: return "store I/O error";
  case PCC_STORE_NOMEM: return "out of memory";
  case PCC_STORE_INVALID: return "invalid argument";
  case PCC_STORE_FORMAT: return "the store was written by a newer pycached";
  }
  return "unknown store status";
}

static pcc_store_status from_mdb(int mdb_rc)
{
  switch (mdb_rc) {
  case MDB_SUCCESS: return PCC_STORE_OK;
  case MDB_NOTFOUND: return PCC_STORE_NOTFOUND;
  case MDB_MAP_FULL: return PCC_STORE_FULL;
  case ENOMEM: return PCC_STORE_NOMEM;
  default: return PCC_STORE_IO;
  }
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

/* Commits a write transaction; every committed write makes a new generation. */
static int txn_commit(pcc_store *store, MDB_txn *txn)
{
  int mdb_rc = mdb_txn_commit(txn);
  if (mdb_rc == MDB_SUCCESS)
    atomic_fetch_add(&store->generation, 1);
  return mdb_rc;
}

uint64_t pcc_store_generation(pcc_store *store)
{
  return atomic_load(&store->generation);
}

/* Checks the store's format in the open write transaction: a new store gets STORE_FORMAT, an
 * older one is emptied (and says so on stderr), a newer one is refused. */
static pcc_store_status check_format(pcc_store *store, MDB_txn *txn)
{
  static const char name[] = "format";
  MDB_val key = {sizeof name - 1, (void *)name}, value;
  uint32_t format = STORE_FORMAT;
  int mdb_rc = mdb_get(txn, store->meta, &key, &value);
  if (mdb_rc == MDB_SUCCESS && value.mv_size == sizeof format) {
    memcpy(&format, value.mv_data, sizeof format);
    if (format == STORE_FORMAT)
      return PCC_STORE_OK;
    if (format > STORE_FORMAT)
      return PCC_STORE_FORMAT;
  } else if (mdb_rc != MDB_NOTFOUND && mdb_rc != MDB_SUCCESS) {
    return from_mdb(mdb_rc);
  }
  MDB_stat paths, blobs;
  if (mdb_stat(txn, store->paths, &paths) == MDB_SUCCESS &&
      mdb_stat(txn, store->blobs, &blobs) == MDB_SUCCESS &&
      paths.ms_entries + blobs.ms_entries > 0) {
    fprintf(stderr, "pycached: the store holds entries of an older format (%llu paths, %llu "
            "blobs): they are dropped and will be compiled again\n",
            (unsigned long long)paths.ms_entries, (unsigned long long)blobs.ms_entries);
    mdb_rc = mdb_drop(txn, store->paths, 0);
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = mdb_drop(txn, store->blobs, 0);
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = mdb_drop(txn, store->profiles, 0);
    if (mdb_rc != MDB_SUCCESS)
      return from_mdb(mdb_rc);
  }
  format = STORE_FORMAT;
  value = (MDB_val){sizeof format, &format};
  return from_mdb(mdb_put(txn, store->meta, &key, &value, 0));
}

pcc_store_status pcc_store_open(const char *dir, uint64_t map_size, pcc_store **out)
{
  if (dir == NULL || out == NULL)
    return PCC_STORE_INVALID;
  pcc_store *store = calloc(1, sizeof *store);
  if (store == NULL)
    return PCC_STORE_NOMEM;
  MDB_txn *txn = NULL;
  int mdb_rc = mdb_env_create(&store->env);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_env_set_maxdbs(store->env, 5);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_env_set_maxreaders(store->env, 512);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_env_set_mapsize(store->env, map_size ? map_size : PCC_STORE_DEFAULT_MAP_SIZE);
  /* NOTLS: read transactions are not tied to threads. NOMETASYNC: a system crash may undo the
   * last commit but never corrupts the file. */
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_env_open(store->env, dir, MDB_NOTLS | MDB_NOMETASYNC, 0640);
  if (mdb_rc == MDB_SUCCESS) {
    int dead = 0;
    mdb_reader_check(store->env, &dead);
    mdb_rc = txn_begin(store, 0, &txn);
  }
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_dbi_open(txn, "paths", MDB_CREATE, &store->paths);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_dbi_open(txn, "blobs", MDB_CREATE, &store->blobs);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_dbi_open(txn, "profiles", MDB_CREATE, &store->profiles);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &store->meta);
  pcc_store_status rc = PCC_STORE_OK;
  if (mdb_rc == MDB_SUCCESS)
    rc = check_format(store, txn);
  if (mdb_rc == MDB_SUCCESS && rc == PCC_STORE_OK) {
    mdb_rc = txn_commit(store, txn);
    txn = NULL;
  }
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
  if (store->env != NULL)
    mdb_env_close(store->env);
  free(store);
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

static bool valid_args(const char *ns, const pcc_magic *magic, int opt, const char *path,
                       size_t path_len)
{
  return (ns == NULL || strlen(ns) <= PCC_NAMESPACE_MAX) && magic != NULL && opt >= 0 &&
         opt <= PCC_OPT_MAX && path != NULL && path_len > 0 && path_len <= PCC_PATH_MAX;
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

/* Reads the path entry of key in txn: its versions and its path (checked against path). */
static pcc_store_status read_path(pcc_store *store, MDB_txn *txn, MDB_val *key, const char *path,
                                  size_t path_len, pcc_store_entry *entry,
                                  pcc_path_versions *versions)
{
  MDB_val value;
  pcc_store_status rc = from_mdb(mdb_get(txn, store->paths, key, &value));
  if (rc == PCC_STORE_OK && (!entry_from_path(key, &value, entry, versions) ||
                             entry->path_len != path_len ||
                             memcmp(entry->path, path, path_len) != 0))
    rc = PCC_STORE_NOTFOUND; /* another path behind the same long-path key, or damaged */
  return rc;
}


pcc_store_status pcc_store_get_versions(pcc_store *store, const char *ns, const pcc_magic *magic,
                                        int opt, const char *path, size_t path_len,
                                        pcc_path_versions *out)
{
  if (store == NULL || out == NULL || !valid_args(ns, magic, opt, path, path_len))
    return PCC_STORE_INVALID;
  uint8_t key_bytes[PATH_KEY_MAX];
  MDB_val key = {path_key(key_bytes, ns, magic, opt, path, path_len), key_bytes};
  MDB_txn *txn = NULL;
  int mdb_rc = txn_begin(store, MDB_RDONLY, &txn);
  if (mdb_rc != MDB_SUCCESS)
    return from_mdb(mdb_rc);
  pcc_store_entry entry;
  pcc_store_status rc = read_path(store, txn, &key, path, path_len, &entry, out);
  mdb_txn_abort(txn);
  return rc;
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

/* ---- blobs ----------------------------------------------------------------------------- */

/* Deletes one blob in its own write transaction (after a failed checksum). */
static void drop_blob(pcc_store *store, MDB_val *key)
{
  MDB_txn *txn = NULL;
  if (txn_begin(store, 0, &txn) != MDB_SUCCESS)
    return;
  if (mdb_del(txn, store->blobs, key, NULL) == MDB_SUCCESS)
    txn_commit(store, txn);
  else
    mdb_txn_abort(txn);
}

/* Verifies and copies a blob record into one heap allocation. */
static pcc_store_status blob_decode(const MDB_val *value, pcc_blob **out)
{
  const uint8_t *v = value->mv_data;
  if (value->mv_size < BLOB_HEADER_LEN)
    return PCC_STORE_CORRUPT;
  uint64_t checksum;
  memcpy(&checksum, v, 8);
  if (pcc_checksum(v + 8, value->mv_size - 8) != checksum || v[8] != BLOB_VERSION ||
      (v[9] != PCC_BLOB_CODE && v[9] != PCC_BLOB_COMPILE_ERROR) ||
      (size_t)BLOB_HEADER_LEN + v[10] > value->mv_size || v[10] > PCC_COMPILER_NAME_MAX)
    return PCC_STORE_CORRUPT;
  size_t compiler_len = v[10];
  size_t payload_len = value->mv_size - BLOB_HEADER_LEN - compiler_len;
  pcc_blob *blob = malloc(sizeof *blob + payload_len + 1);
  if (blob == NULL)
    return PCC_STORE_NOMEM;
  blob->kind = (pcc_blob_kind)v[9];
  memcpy(&blob->hash, v + 12, 4);
  memcpy(&blob->size, v + 16, 8);
  memcpy(&blob->created, v + 24, 8);
  memcpy(&blob->compile_us, v + 32, 4);
  memcpy(blob->compiler, v + BLOB_HEADER_LEN, compiler_len);
  blob->compiler[compiler_len] = '\0';
  uint8_t *payload = (uint8_t *)(blob + 1);
  memcpy(payload, v + BLOB_HEADER_LEN + compiler_len, payload_len);
  payload[payload_len] = '\0'; /* convenient for error JSON; not counted in payload_len */
  blob->payload = payload;
  blob->payload_len = payload_len;
  *out = blob;
  return PCC_STORE_OK;
}

pcc_store_status pcc_store_get_blob(pcc_store *store, const pcc_magic *magic, int opt,
                                    const pcc_digest *digest, pcc_blob **out)
{
  if (store == NULL || magic == NULL || digest == NULL || out == NULL || opt < 0 ||
      opt > PCC_OPT_MAX)
    return PCC_STORE_INVALID;
  uint8_t key_bytes[BLOB_KEY_LEN];
  blob_key(key_bytes, magic, opt, digest);
  MDB_val key = {BLOB_KEY_LEN, key_bytes}, value;
  MDB_txn *txn = NULL;
  int mdb_rc = txn_begin(store, MDB_RDONLY, &txn);
  if (mdb_rc != MDB_SUCCESS)
    return from_mdb(mdb_rc);
  pcc_store_status rc = from_mdb(mdb_get(txn, store->blobs, &key, &value));
  if (rc == PCC_STORE_OK)
    rc = blob_decode(&value, out);
  mdb_txn_abort(txn);
  if (rc == PCC_STORE_CORRUPT)
    drop_blob(store, &key);
  return rc;
}

static pcc_store_status put_blob(pcc_store *store, MDB_txn *txn, const uint8_t *key_bytes,
                                 const pcc_blob *blob)
{
  size_t compiler_len = strnlen(blob->compiler, PCC_COMPILER_NAME_MAX);
  if (blob->payload_len > SIZE_MAX - BLOB_HEADER_LEN - compiler_len)
    return PCC_STORE_INVALID;
  MDB_val key = {BLOB_KEY_LEN, (void *)key_bytes};
  MDB_val value = {BLOB_HEADER_LEN + compiler_len + blob->payload_len, NULL};
  int mdb_rc = mdb_put(txn, store->blobs, &key, &value, MDB_RESERVE);
  if (mdb_rc != MDB_SUCCESS)
    return from_mdb(mdb_rc);
  uint8_t *v = value.mv_data;
  uint32_t zero = 0;
  v[8] = BLOB_VERSION;
  v[9] = (uint8_t)blob->kind;
  v[10] = (uint8_t)compiler_len;
  v[11] = 0;
  memcpy(v + 12, &blob->hash, 4);
  memcpy(v + 16, &blob->size, 8);
  memcpy(v + 24, &blob->created, 8);
  memcpy(v + 32, &blob->compile_us, 4);
  memcpy(v + 36, &zero, 4);
  memcpy(v + BLOB_HEADER_LEN, blob->compiler, compiler_len);
  if (blob->payload_len > 0)
    memcpy(v + BLOB_HEADER_LEN + compiler_len, blob->payload, blob->payload_len);
  uint64_t checksum = pcc_checksum(v + 8, value.mv_size - 8);
  memcpy(v, &checksum, 8);
  return PCC_STORE_OK;
}

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

pcc_store_status pcc_store_put(pcc_store *store, const char *ns, const pcc_magic *magic, int opt,
                               const char *path, size_t path_len, const pcc_path_record *record,
                               const pcc_blob *blob)
{
  if (store == NULL || record == NULL || !valid_args(ns, magic, opt, path, path_len) ||
      (blob != NULL && blob->kind != PCC_BLOB_CODE && blob->kind != PCC_BLOB_COMPILE_ERROR))
    return PCC_STORE_INVALID;
  uint8_t path_key_bytes[PATH_KEY_MAX], blob_key_bytes[BLOB_KEY_LEN];
  MDB_val key = {path_key(path_key_bytes, ns, magic, opt, path, path_len), path_key_bytes};
  blob_key(blob_key_bytes, magic, opt, &record->digest);
  uint8_t *path_value = malloc(1 + PCC_PATH_VERSIONS_MAX * PATH_VERSION_LEN + path_len);
  if (path_value == NULL)
    return PCC_STORE_NOMEM;

  MDB_txn *txn = NULL;
  pcc_path_versions versions = {0, {{0}}};
  pcc_store_entry entry;
  pcc_store_status rc = from_mdb(txn_begin(store, 0, &txn));
  if (rc == PCC_STORE_OK) {
    rc = read_path(store, txn, &key, path, path_len, &entry, &versions);
    if (rc == PCC_STORE_NOTFOUND) { /* new, or another path behind its long key: replaced */
      versions.n = 0;
      rc = PCC_STORE_OK;
    }
  }
  if (rc == PCC_STORE_OK && blob != NULL)
    rc = put_blob(store, txn, blob_key_bytes, blob);
  if (rc == PCC_STORE_OK) {
    versions_add(&versions, record);
    path_value[0] = (uint8_t)versions.n;
    for (unsigned i = 0; i < versions.n; i++)
      version_write(path_value + 1 + i * PATH_VERSION_LEN, &versions.v[i]);
    memcpy(path_value + 1 + versions.n * PATH_VERSION_LEN, path, path_len);
    MDB_val value = {1 + versions.n * PATH_VERSION_LEN + path_len, path_value};
    rc = from_mdb(mdb_put(txn, store->paths, &key, &value, 0));
  }
  if (rc == PCC_STORE_OK)
    rc = from_mdb(txn_commit(store, txn));
  else
    mdb_txn_abort(txn);
  free(path_value);
  return rc;
}

pcc_store_status pcc_store_stat(pcc_store *store, pcc_store_stats *out)
{
  if (store == NULL || out == NULL)
    return PCC_STORE_INVALID;
  MDB_txn *txn = NULL;
  MDB_stat paths, blobs;
  MDB_envinfo info;
  int mdb_rc = txn_begin(store, MDB_RDONLY, &txn);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_stat(txn, store->paths, &paths);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_stat(txn, store->blobs, &blobs);
  mdb_txn_abort(txn);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_env_info(store->env, &info);
  if (mdb_rc != MDB_SUCCESS)
    return from_mdb(mdb_rc);
  out->paths = paths.ms_entries;
  out->blobs = blobs.ms_entries;
  out->bytes = (uint64_t)(blobs.ms_leaf_pages + blobs.ms_overflow_pages + blobs.ms_branch_pages) *
               blobs.ms_psize;
  out->used = (uint64_t)(info.me_last_pgno + 1) * paths.ms_psize;
  out->map_size = info.me_mapsize;
  return PCC_STORE_OK;
}

/* ---- administration -------------------------------------------------------------------- */

#define DELETE_BATCH 4096 /* path entries deleted per write transaction */
#define MAGICS_MAX 64

/* Fills the blob fields of an entry from its blob's header (not checksummed: listings only). */
static void entry_add_blob(pcc_store *store, MDB_txn *txn, pcc_store_entry *entry)
{
  uint8_t key_bytes[BLOB_KEY_LEN];
  blob_key(key_bytes, &entry->magic, entry->opt, &entry->record.digest);
  MDB_val key = {BLOB_KEY_LEN, key_bytes}, value;
  if (mdb_get(txn, store->blobs, &key, &value) != MDB_SUCCESS || value.mv_size < BLOB_HEADER_LEN)
    return;
  const uint8_t *v = value.mv_data;
  size_t compiler_len = v[10] <= PCC_COMPILER_NAME_MAX ? v[10] : 0;
  if (BLOB_HEADER_LEN + compiler_len > value.mv_size)
    return;
  entry->has_blob = true;
  entry->kind = (pcc_blob_kind)v[9];
  memcpy(&entry->created, v + 24, 8);
  memcpy(&entry->compile_us, v + 32, 4);
  memcpy(entry->compiler, v + BLOB_HEADER_LEN, compiler_len);
  entry->compiler[compiler_len] = '\0';
  entry->bytes = value.mv_size - BLOB_HEADER_LEN - compiler_len;
}

static bool filter_match(const pcc_store_filter *filter, const pcc_store_entry *entry)
{
  if (filter == NULL)
    return true;
  if (filter->has_magic && !pcc_magic_equal(&filter->magic, &entry->magic))
    return false;
  if (filter->opt >= 0 && filter->opt != entry->opt)
    return false;
  if (filter->ns != NULL && strcmp(filter->ns, entry->ns) != 0)
    return false;
  return filter->prefix_len == 0 || (entry->path_len >= filter->prefix_len &&
                                     memcmp(entry->path, filter->prefix, filter->prefix_len) == 0);
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
    MDB_val probe = {after_len, (void *)after};
    *key = probe;
    int rc = mdb_cursor_get(cursor, key, value, MDB_SET_RANGE);
    if (rc == MDB_SUCCESS && key->mv_size == after_len &&
        memcmp(key->mv_data, after, after_len) == 0)
      rc = mdb_cursor_get(cursor, key, value, MDB_NEXT);
    return rc;
  }
  if (filter != NULL && filter->has_magic) {
    memcpy(start, filter->magic.bytes, PCC_MAGIC_LEN);
    start[PCC_MAGIC_LEN] = (uint8_t)(filter->opt > 0 ? filter->opt : 0);
    key->mv_data = start;
    key->mv_size = filter->opt >= 0 ? PCC_MAGIC_LEN + 1 : PCC_MAGIC_LEN;
    return mdb_cursor_get(cursor, key, value, MDB_SET_RANGE);
  }
  return mdb_cursor_get(cursor, key, value, MDB_FIRST);
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
  *next_len = 0;
  MDB_txn *txn = NULL;
  MDB_cursor *cursor = NULL;
  int mdb_rc = txn_begin(store, MDB_RDONLY, &txn);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_cursor_open(txn, store->paths, &cursor);
  if (mdb_rc != MDB_SUCCESS) {
    mdb_txn_abort(txn);
    return from_mdb(mdb_rc);
  }
  MDB_val key, value;
  size_t found = 0, scanned = 0;
  mdb_rc = scan_start(cursor, filter, cursor_key, cursor_len, &key, &value);
  while (mdb_rc == MDB_SUCCESS && !filter_done(filter, &key)) {
    if (found == limit || scanned == max_scan) { /* more may follow: continue after the last */
      break;
    }
    scanned++;
    pcc_store_entry entry;
    if (entry_from_path(&key, &value, &entry, NULL) && filter_match(filter, &entry)) {
      entry_add_blob(store, txn, &entry);
      visit(&entry, ctx);
      found++;
    }
    memcpy(next, key.mv_data, key.mv_size);
    *next_len = key.mv_size;
    mdb_rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT);
  }
  if (mdb_rc != MDB_SUCCESS || filter_done(filter, &key))
    *next_len = 0; /* the end: nothing after this page */
  mdb_cursor_close(cursor);
  mdb_txn_abort(txn);
  return mdb_rc == MDB_SUCCESS || mdb_rc == MDB_NOTFOUND ? PCC_STORE_OK : from_mdb(mdb_rc);
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
  MDB_txn *txn = NULL;
  int mdb_rc = txn_begin(store, MDB_RDONLY, &txn);
  if (mdb_rc != MDB_SUCCESS)
    return from_mdb(mdb_rc);
  pcc_store_entry entry;
  pcc_store_status rc = read_path(store, txn, &key, path, path_len, &entry, NULL);
  if (rc == PCC_STORE_OK) {
    entry_add_blob(store, txn, &entry);
    visit(&entry, ctx);
  }
  mdb_txn_abort(txn);
  return rc;
}

/* Deletes the blobs the versions of an entry name. Caller holds a write transaction. */
static int delete_blobs_of(pcc_store *store, MDB_txn *txn, const pcc_store_entry *entry,
                           const pcc_path_versions *versions)
{
  int mdb_rc = MDB_SUCCESS;
  for (unsigned i = 0; i < versions->n && mdb_rc == MDB_SUCCESS; i++) {
    uint8_t key_bytes[BLOB_KEY_LEN];
    blob_key(key_bytes, &entry->magic, entry->opt, &versions->v[i].digest);
    MDB_val key = {BLOB_KEY_LEN, key_bytes};
    mdb_rc = mdb_del(txn, store->blobs, &key, NULL);
    if (mdb_rc == MDB_NOTFOUND)
      mdb_rc = MDB_SUCCESS;
  }
  return mdb_rc;
}

/* Deletes, in one write transaction, up to DELETE_BATCH matching path entries after `after`
 * (and their blobs). *more tells whether matching keys may follow; `after` is updated. */
static int delete_batch(pcc_store *store, const pcc_store_filter *filter, uint8_t *after,
                        size_t *after_len, uint64_t *removed, bool *more)
{
  MDB_txn *txn = NULL;
  MDB_cursor *cursor = NULL;
  int mdb_rc = txn_begin(store, 0, &txn);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_cursor_open(txn, store->paths, &cursor);
  MDB_val key, value;
  size_t deleted = 0;
  *more = false;
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = scan_start(cursor, filter, after, *after_len, &key, &value);
  while (mdb_rc == MDB_SUCCESS && !filter_done(filter, &key)) {
    if (deleted == DELETE_BATCH) {
      *more = true;
      break;
    }
    pcc_store_entry entry;
    pcc_path_versions versions;
    memcpy(after, key.mv_data, key.mv_size);
    *after_len = key.mv_size;
    if (entry_from_path(&key, &value, &entry, &versions) && filter_match(filter, &entry)) {
      mdb_rc = delete_blobs_of(store, txn, &entry, &versions);
      if (mdb_rc == MDB_SUCCESS)
        mdb_rc = mdb_cursor_del(cursor, 0);
      if (mdb_rc != MDB_SUCCESS)
        break;
      deleted++;
      key.mv_data = after; /* the deleted key: the next one is the first at or after it */
      key.mv_size = *after_len;
      mdb_rc = mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE);
      continue;
    }
    mdb_rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT);
  }
  if (cursor != NULL)
    mdb_cursor_close(cursor);
  if (mdb_rc != MDB_SUCCESS && mdb_rc != MDB_NOTFOUND) {
    mdb_txn_abort(txn);
    return mdb_rc;
  }
  mdb_rc = txn_commit(store, txn);
  if (mdb_rc == MDB_SUCCESS)
    *removed += deleted;
  return mdb_rc;
}

/* Deletes up to DELETE_BATCH blobs of a magic (and opt, when >= 0), referenced or not, in one
 * write transaction; *more tells whether some may be left. */
static int delete_blobs_batch(pcc_store *store, const pcc_magic *magic, int opt, bool *more)
{
  MDB_txn *txn = NULL;
  MDB_cursor *cursor = NULL;
  *more = false;
  int mdb_rc = txn_begin(store, 0, &txn);
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_cursor_open(txn, store->blobs, &cursor);
  uint8_t start[PCC_MAGIC_LEN + 1];
  memcpy(start, magic->bytes, PCC_MAGIC_LEN);
  start[PCC_MAGIC_LEN] = (uint8_t)(opt > 0 ? opt : 0);
  size_t start_len = opt >= 0 ? PCC_MAGIC_LEN + 1 : PCC_MAGIC_LEN, deleted = 0;
  MDB_val key = {start_len, start}, value;
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE);
  while (mdb_rc == MDB_SUCCESS && memcmp(key.mv_data, start, start_len) == 0) {
    if (deleted == DELETE_BATCH) {
      *more = true;
      break;
    }
    mdb_rc = mdb_cursor_del(cursor, 0);
    deleted++;
    key.mv_data = start; /* what is left of the range starts at or after its beginning */
    key.mv_size = start_len;
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = mdb_cursor_get(cursor, &key, &value, MDB_SET_RANGE);
  }
  if (cursor != NULL)
    mdb_cursor_close(cursor);
  if (mdb_rc != MDB_SUCCESS && mdb_rc != MDB_NOTFOUND) {
    mdb_txn_abort(txn);
    return mdb_rc;
  }
  return txn_commit(store, txn);
}

pcc_store_status pcc_store_delete(pcc_store *store, const pcc_store_filter *filter,
                                  uint64_t *removed)
{
  if (store == NULL || removed == NULL)
    return PCC_STORE_INVALID;
  *removed = 0;
  if (filter == NULL) { /* purge: drop both tables in one transaction */
    MDB_txn *txn = NULL;
    MDB_stat paths;
    int mdb_rc = txn_begin(store, 0, &txn);
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = mdb_stat(txn, store->paths, &paths);
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = mdb_drop(txn, store->paths, 0);
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = mdb_drop(txn, store->blobs, 0);
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = txn_commit(store, txn);
    else
      mdb_txn_abort(txn);
    if (mdb_rc == MDB_SUCCESS)
      *removed = paths.ms_entries;
    return from_mdb(mdb_rc);
  }
  uint8_t after[PCC_STORE_CURSOR_MAX];
  size_t after_len = 0;
  bool more = true;
  int mdb_rc = MDB_SUCCESS;
  while (more && mdb_rc == MDB_SUCCESS)
    mdb_rc = delete_batch(store, filter, after, &after_len, removed, &more);
  /* blobs no path names any more (replaced by newer compiles) go with their magic too */
  more = filter->has_magic && filter->prefix_len == 0;
  while (more && mdb_rc == MDB_SUCCESS)
    mdb_rc = delete_blobs_batch(store, &filter->magic, filter->opt, &more);
  return from_mdb(mdb_rc);
}

pcc_store_status pcc_store_delete_one(pcc_store *store, const char *ns, const pcc_magic *magic,
                                      int opt, const char *path, size_t path_len,
                                      uint64_t *removed)
{
  if (store == NULL || removed == NULL || !valid_args(ns, magic, opt, path, path_len))
    return PCC_STORE_INVALID;
  *removed = 0;
  uint8_t key_bytes[PATH_KEY_MAX];
  MDB_val key = {path_key(key_bytes, ns, magic, opt, path, path_len), key_bytes};
  MDB_txn *txn = NULL;
  int mdb_rc = txn_begin(store, 0, &txn);
  if (mdb_rc != MDB_SUCCESS)
    return from_mdb(mdb_rc);
  pcc_store_entry entry;
  pcc_path_versions versions;
  pcc_store_status found = read_path(store, txn, &key, path, path_len, &entry, &versions);
  mdb_rc = found == PCC_STORE_OK ? MDB_SUCCESS : found == PCC_STORE_NOTFOUND ? MDB_NOTFOUND
                                                                             : EIO;
  if (found == PCC_STORE_OK) {
    mdb_rc = delete_blobs_of(store, txn, &entry, &versions);
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = mdb_del(txn, store->paths, &key, NULL);
    if (mdb_rc == MDB_SUCCESS)
      *removed = 1;
  }
  if (mdb_rc == MDB_SUCCESS || mdb_rc == MDB_NOTFOUND)
    mdb_rc = txn_commit(store, txn);
  else
    mdb_txn_abort(txn);
  if (mdb_rc != MDB_SUCCESS)
    *removed = 0;
  return from_mdb(mdb_rc);
}

pcc_store_status pcc_store_magics(pcc_store *store,
                                  void (*visit)(const pcc_magic *magic, uint64_t entries,
                                                uint64_t bytes, void *ctx),
                                  void *ctx)
{
  if (store == NULL || visit == NULL)
    return PCC_STORE_INVALID;
  struct {
    pcc_magic magic;
    uint64_t entries, bytes;
  } seen[MAGICS_MAX];
  size_t n = 0;
  MDB_txn *txn = NULL;
  int mdb_rc = txn_begin(store, MDB_RDONLY, &txn);
  MDB_dbi tables[2] = {store->paths, store->blobs};
  for (int t = 0; t < 2 && mdb_rc == MDB_SUCCESS; t++) {
    MDB_cursor *cursor = NULL;
    MDB_val key, value;
    mdb_rc = mdb_cursor_open(txn, tables[t], &cursor);
    if (mdb_rc == MDB_SUCCESS)
      mdb_rc = mdb_cursor_get(cursor, &key, &value, MDB_FIRST);
    while (mdb_rc == MDB_SUCCESS) {
      size_t i = 0;
      while (i < n && memcmp(seen[i].magic.bytes, key.mv_data, PCC_MAGIC_LEN) != 0)
        i++;
      if (i == n && n < MAGICS_MAX) {
        memcpy(seen[n].magic.bytes, key.mv_data, PCC_MAGIC_LEN);
        seen[n].entries = seen[n].bytes = 0;
        n++;
      }
      if (i < n && t == 0)
        seen[i].entries++;
      else if (i < n && value.mv_size >= BLOB_HEADER_LEN) { /* payload: less header and name */
        size_t overhead = (size_t)BLOB_HEADER_LEN + ((const uint8_t *)value.mv_data)[10];
        seen[i].bytes += value.mv_size >= overhead ? value.mv_size - overhead : 0;
      }
      mdb_rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT);
    }
    if (cursor != NULL)
      mdb_cursor_close(cursor);
    if (mdb_rc == MDB_NOTFOUND)
      mdb_rc = MDB_SUCCESS;
  }
  mdb_txn_abort(txn);
  if (mdb_rc != MDB_SUCCESS)
    return from_mdb(mdb_rc);
  for (size_t i = 0; i < n; i++)
    visit(&seen[i].magic, seen[i].entries, seen[i].bytes, ctx);
  return PCC_STORE_OK;
}

pcc_store_status pcc_store_backup_dir(pcc_store *store, const char *dir)
{
  if (store == NULL || dir == NULL)
    return PCC_STORE_INVALID;
  return from_mdb(mdb_env_copy2(store->env, dir, MDB_CP_COMPACT));
}

pcc_store_status pcc_store_backup_fd(pcc_store *store, int fd)
{
  if (store == NULL || fd < 0)
    return PCC_STORE_INVALID;
  return from_mdb(mdb_env_copyfd2(store->env, fd, MDB_CP_COMPACT));
}

/* ---- profiles ---------------------------------------------------------------------------- */

static size_t profile_key(uint8_t *key, const char *ns, const pcc_magic *magic, int opt,
                          const char *name, size_t name_len)
{
  size_t scope = scope_key(key, magic, opt, ns);
  memcpy(key + scope, name, name_len);
  return scope + name_len;
}

/* Walks a stored profile value; calls visit for each path. False when it is malformed. */
static bool profile_walk(const MDB_val *value,
                         void (*visit)(const char *path, size_t len, void *ctx), void *ctx)
{
  const uint8_t *v = value->mv_data, *end = v + value->mv_size;
  uint32_t count;
  if (value->mv_size < 4)
    return false;
  memcpy(&count, v, 4);
  v += 4;
  for (uint32_t i = 0; i < count; i++) {
    uint16_t len;
    if (end - v < 2)
      return false;
    memcpy(&len, v, 2);
    if (end - v - 2 < len)
      return false;
    visit((const char *)v + 2, len, ctx);
    v += 2 + len;
  }
  return true;
}

typedef struct {
  const char **paths; /* borrowed: into the old value or the caller's array */
  uint16_t *lens;
  size_t n, cap;
} path_list;

static void list_add(const char *path, size_t len, void *ctx)
{
  path_list *list = ctx;
  for (size_t i = 0; i < list->n; i++) /* a profile holds each path once */
    if (list->lens[i] == len && memcmp(list->paths[i], path, len) == 0)
      return;
  if (list->n < list->cap) {
    list->paths[list->n] = path;
    list->lens[list->n++] = (uint16_t)len;
  }
}

pcc_store_status pcc_store_profile_merge(pcc_store *store, const char *ns,
                                         const pcc_magic *magic, int opt, const char *name,
                                         const char *const *paths, size_t n, size_t *total)
{
  size_t name_len = name ? strlen(name) : 0;
  if (store == NULL || (ns != NULL && strlen(ns) > PCC_NAMESPACE_MAX) || magic == NULL ||
      opt < 0 || opt > PCC_OPT_MAX || name_len == 0 ||
      name_len > PCC_PROFILE_NAME_MAX || (paths == NULL && n > 0) || total == NULL)
    return PCC_STORE_INVALID;
  for (size_t i = 0; i < n; i++)
    if (paths[i] == NULL || paths[i][0] != '/' || strlen(paths[i]) > PCC_PATH_MAX)
      return PCC_STORE_INVALID;
  uint8_t key_bytes[SCOPE_MAX + PCC_PROFILE_NAME_MAX];
  MDB_val key = {profile_key(key_bytes, ns, magic, opt, name, name_len), key_bytes}, old;
  size_t cap = PCC_PROFILE_PATHS_MAX + n;
  path_list list = {calloc(cap, sizeof(char *)), calloc(cap, sizeof(uint16_t)), 0, cap};
  MDB_txn *txn = NULL;
  int mdb_rc = list.paths && list.lens ? txn_begin(store, 0, &txn) : ENOMEM;
  if (mdb_rc == MDB_SUCCESS) {
    mdb_rc = mdb_get(txn, store->profiles, &key, &old);
    if (mdb_rc == MDB_SUCCESS && !profile_walk(&old, list_add, &list))
      list.n = 0; /* a damaged profile is replaced */
    if (mdb_rc == MDB_NOTFOUND)
      mdb_rc = MDB_SUCCESS;
  }
  for (size_t i = 0; i < n && mdb_rc == MDB_SUCCESS; i++)
    list_add(paths[i], strlen(paths[i]), &list);
  size_t first = list.n > PCC_PROFILE_PATHS_MAX ? list.n - PCC_PROFILE_PATHS_MAX : 0;
  size_t bytes = 4;
  for (size_t i = first; i < list.n; i++)
    bytes += 2 + list.lens[i];
  uint8_t *value = mdb_rc == MDB_SUCCESS ? malloc(bytes) : NULL;
  if (mdb_rc == MDB_SUCCESS && value == NULL)
    mdb_rc = ENOMEM;
  if (mdb_rc == MDB_SUCCESS) {
    uint32_t count = (uint32_t)(list.n - first);
    uint8_t *w = value + 4;
    memcpy(value, &count, 4);
    for (size_t i = first; i < list.n; i++) {
      memcpy(w, &list.lens[i], 2);
      memcpy(w + 2, list.paths[i], list.lens[i]);
      w += 2 + list.lens[i];
    }
    MDB_val fresh = {bytes, value};
    mdb_rc = mdb_put(txn, store->profiles, &key, &fresh, 0); /* copies: old may go now */
    *total = count;
  }
  if (mdb_rc == MDB_SUCCESS)
    mdb_rc = txn_commit(store, txn);
  else
    mdb_txn_abort(txn);
  free(value);
  free(list.paths);
  free(list.lens);
  return from_mdb(mdb_rc);
}

pcc_store_status pcc_store_profile_read(pcc_store *store, const char *ns,
                                        const pcc_magic *magic, int opt, const char *name,
                                        void (*visit)(const char *path, size_t path_len,
                                                      void *ctx),
                                        void *ctx)
{
  size_t name_len = name ? strlen(name) : 0;
  if (store == NULL || (ns != NULL && strlen(ns) > PCC_NAMESPACE_MAX) || magic == NULL ||
      visit == NULL || opt < 0 || opt > PCC_OPT_MAX || name_len == 0 ||
      name_len > PCC_PROFILE_NAME_MAX)
    return PCC_STORE_INVALID;
  uint8_t key_bytes[SCOPE_MAX + PCC_PROFILE_NAME_MAX];
  MDB_val key = {profile_key(key_bytes, ns, magic, opt, name, name_len), key_bytes}, value;
  MDB_txn *txn = NULL;
  int mdb_rc = txn_begin(store, MDB_RDONLY, &txn);
  if (mdb_rc != MDB_SUCCESS)
    return from_mdb(mdb_rc);
  pcc_store_status rc = from_mdb(mdb_get(txn, store->profiles, &key, &value));
  if (rc == PCC_STORE_OK && !profile_walk(&value, visit, ctx))
    rc = PCC_STORE_CORRUPT;
  mdb_txn_abort(txn);
  return rc;
}
