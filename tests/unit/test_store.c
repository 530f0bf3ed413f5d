/* test_store.c: Check suite of the LMDB store: round trips, persistence across a reopen, a
 * flipped byte never served, a full map answered cleanly, long paths and key separation, the
 * versions of a path, namespaces and the store format. */
#include <lmdb.h>
#include <sys/stat.h>

#include "store.h"
#include "test_helpers.h"

static char dir[4096];
static pcc_store *store;
static const pcc_magic MAGIC_311 = {{0xa7, 0x0d, 0x0d, 0x0a}};
static const pcc_magic MAGIC_PYPY = {{0x50, 0x01, 0x0d, 0x0a}};

static void setup(void)
{
  test_make_tmpdir(dir, sizeof dir, "store");
  CHECK_RC(pcc_store_open(dir, 0, &store), pcc_store_strerror);
}

static void teardown(void)
{
  pcc_store_close(store);
  store = NULL;
  test_remove_tree(dir);
}

/* A record and a code blob for `source`, as the server would store them. */
static void make_entry(const char *source, pcc_path_record *record, pcc_blob *blob)
{
  size_t len = strlen(source);
  memset(record, 0, sizeof *record);
  record->mtime = 1700000000;
  record->size = len;
  record->hash = pcc_java_hash(source, len);
  pcc_digest_compute(source, len, &record->digest);
  memset(blob, 0, sizeof *blob);
  blob->kind = PCC_BLOB_CODE;
  blob->hash = record->hash;
  blob->size = len;
  blob->created = 1700000001;
  blob->compile_us = 1234;
  snprintf(blob->compiler, sizeof blob->compiler, "cpython-3.11.2");
  blob->payload = (const uint8_t *)"\xe3marshal-bytes";
  blob->payload_len = 14;
}

START_TEST(test_round_trip)
{
  pcc_path_record record, got;
  pcc_blob blob, *read = NULL;
  const char *path = "/srv/app/m.py";
  make_entry("x = 1\n", &record, &blob);

  ck_assert_int_eq(pcc_store_get_path(store, NULL, &MAGIC_311, 0, path, strlen(path), &got),
                   PCC_STORE_NOTFOUND);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, path, strlen(path), &record, &blob),
           pcc_store_strerror);
  CHECK_RC(pcc_store_get_path(store, NULL, &MAGIC_311, 0, path, strlen(path), &got),
           pcc_store_strerror);
  ck_assert_int_eq(got.mtime, record.mtime);
  ck_assert_uint_eq(got.size, record.size);
  ck_assert_int_eq(got.hash, record.hash);
  ck_assert(pcc_digest_equal(&got.digest, &record.digest));

  CHECK_RC(pcc_store_get_blob(store, &MAGIC_311, 0, &record.digest, &read), pcc_store_strerror);
  ck_assert_int_eq(read->kind, PCC_BLOB_CODE);
  ck_assert_int_eq(read->hash, blob.hash);
  ck_assert_uint_eq(read->size, blob.size);
  ck_assert_int_eq(read->created, blob.created);
  ck_assert_uint_eq(read->compile_us, 1234);
  ck_assert_str_eq(read->compiler, "cpython-3.11.2");
  ck_assert_uint_eq(read->payload_len, blob.payload_len);
  ck_assert_mem_eq(read->payload, blob.payload, blob.payload_len);
  free(read);

  pcc_store_stats stats;
  CHECK_RC(pcc_store_stat(store, &stats), pcc_store_strerror);
  ck_assert_uint_eq(stats.paths, 1);
  ck_assert_uint_eq(stats.blobs, 1);
  ck_assert_uint_gt(stats.bytes, 0);
  ck_assert_uint_eq(stats.map_size, PCC_STORE_DEFAULT_MAP_SIZE);
}
END_TEST

/* One source at two paths is one blob; magic and opt separate entries. */
START_TEST(test_keys_are_separate)
{
  pcc_path_record record, got;
  pcc_blob blob, *read = NULL;
  make_entry("y = 2\n", &record, &blob);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/a/m.py", 7, &record, &blob), pcc_store_strerror);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/b/m.py", 7, &record, NULL), pcc_store_strerror);
  pcc_store_stats stats;
  CHECK_RC(pcc_store_stat(store, &stats), pcc_store_strerror);
  ck_assert_uint_eq(stats.paths, 2);
  ck_assert_uint_eq(stats.blobs, 1);

  ck_assert_int_eq(pcc_store_get_path(store, NULL, &MAGIC_311, 1, "/a/m.py", 7, &got),
                   PCC_STORE_NOTFOUND);
  ck_assert_int_eq(pcc_store_get_path(store, NULL, &MAGIC_PYPY, 0, "/a/m.py", 7, &got),
                   PCC_STORE_NOTFOUND);
  ck_assert_int_eq(pcc_store_get_blob(store, &MAGIC_311, 2, &record.digest, &read),
                   PCC_STORE_NOTFOUND);
  ck_assert_int_eq(pcc_store_get_blob(store, &MAGIC_PYPY, 0, &record.digest, &read),
                   PCC_STORE_NOTFOUND);
  ck_assert_ptr_null(read);
}
END_TEST

START_TEST(test_persists_across_reopen)
{
  pcc_path_record record, got;
  pcc_blob blob, *read = NULL;
  make_entry("z = 3\n", &record, &blob);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 2, "/p/q.py", 7, &record, &blob), pcc_store_strerror);
  pcc_store_close(store);
  store = NULL;
  CHECK_RC(pcc_store_open(dir, 0, &store), pcc_store_strerror);
  CHECK_RC(pcc_store_get_path(store, NULL, &MAGIC_311, 2, "/p/q.py", 7, &got), pcc_store_strerror);
  ck_assert(pcc_digest_equal(&got.digest, &record.digest));
  CHECK_RC(pcc_store_get_blob(store, &MAGIC_311, 2, &record.digest, &read), pcc_store_strerror);
  ck_assert_mem_eq(read->payload, blob.payload, blob.payload_len);
  free(read);
}
END_TEST

/* Flips one byte of the stored blob record at `offset_from_end` straight through LMDB. */
static void flip_blob_byte(size_t offset_from_end)
{
  pcc_store_close(store);
  store = NULL;
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_cursor *cursor;
  MDB_val key, value;
  ck_assert_int_eq(mdb_env_create(&env), 0);
  ck_assert_int_eq(mdb_env_set_maxdbs(env, 4), 0);
  ck_assert_int_eq(mdb_env_set_mapsize(env, PCC_STORE_DEFAULT_MAP_SIZE), 0);
  ck_assert_int_eq(mdb_env_open(env, dir, 0, 0640), 0);
  ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
  ck_assert_int_eq(mdb_dbi_open(txn, "blobs", 0, &dbi), 0);
  ck_assert_int_eq(mdb_cursor_open(txn, dbi, &cursor), 0);
  ck_assert_int_eq(mdb_cursor_get(cursor, &key, &value, MDB_FIRST), 0);
  uint8_t *copy = malloc(value.mv_size);
  memcpy(copy, value.mv_data, value.mv_size);
  copy[value.mv_size - 1 - offset_from_end] ^= 0x01;
  MDB_val changed = {value.mv_size, copy};
  ck_assert_int_eq(mdb_cursor_put(cursor, &key, &changed, MDB_CURRENT), 0);
  mdb_cursor_close(cursor);
  ck_assert_int_eq(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  free(copy);
  CHECK_RC(pcc_store_open(dir, 0, &store), pcc_store_strerror);
}

static void check_flip_never_served(size_t offset_from_end)
{
  pcc_path_record record;
  pcc_blob blob, *read = NULL;
  make_entry("w = 4\n", &record, &blob);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/c/w.py", 7, &record, &blob), pcc_store_strerror);
  flip_blob_byte(offset_from_end);
  ck_assert_int_eq(pcc_store_get_blob(store, &MAGIC_311, 0, &record.digest, &read),
                   PCC_STORE_CORRUPT);
  ck_assert_ptr_null(read);
  /* dropped: the next read is a plain miss, and the path entry is untouched */
  ck_assert_int_eq(pcc_store_get_blob(store, &MAGIC_311, 0, &record.digest, &read),
                   PCC_STORE_NOTFOUND);
  pcc_path_record got;
  CHECK_RC(pcc_store_get_path(store, NULL, &MAGIC_311, 0, "/c/w.py", 7, &got), pcc_store_strerror);
}

START_TEST(test_flipped_payload_byte_never_served)
{
  check_flip_never_served(0); /* last payload byte */
}
END_TEST

START_TEST(test_flipped_header_byte_never_served)
{
  check_flip_never_served(14 + 14 + 20); /* byte 19: inside the fixed header (size) */
}
END_TEST

START_TEST(test_map_full_is_clean)
{
  pcc_store_close(store);
  store = NULL;
  test_remove_tree(dir);
  test_make_tmpdir(dir, sizeof dir, "store-full");
  CHECK_RC(pcc_store_open(dir, 256 * 1024, &store), pcc_store_strerror);

  pcc_path_record record;
  pcc_blob blob;
  make_entry("small = 1\n", &record, &blob);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/s.py", 5, &record, &blob), pcc_store_strerror);

  size_t big_len = 1024 * 1024;
  uint8_t *big = calloc(1, big_len);
  pcc_path_record big_record = record;
  pcc_blob big_blob = blob;
  big_record.digest.bytes[0] ^= 0xff;
  big_blob.payload = big;
  big_blob.payload_len = big_len;
  ck_assert_int_eq(pcc_store_put(store, NULL, &MAGIC_311, 0, "/big.py", 7, &big_record, &big_blob),
                   PCC_STORE_FULL);
  free(big);

  /* nothing of the failed put landed, and what was there is intact */
  pcc_path_record got;
  pcc_blob *read = NULL;
  ck_assert_int_eq(pcc_store_get_path(store, NULL, &MAGIC_311, 0, "/big.py", 7, &got),
                   PCC_STORE_NOTFOUND);
  CHECK_RC(pcc_store_get_blob(store, &MAGIC_311, 0, &record.digest, &read), pcc_store_strerror);
  free(read);
}
END_TEST

START_TEST(test_long_paths)
{
  static char a[PCC_PATH_MAX + 2], b[PCC_PATH_MAX + 1];
  memset(a, 'a', PCC_PATH_MAX);
  a[0] = '/';
  memcpy(b, a, PCC_PATH_MAX);
  b[PCC_PATH_MAX - 1] = 'b'; /* differs only at the end: must not share the hashed key */
  pcc_path_record record, got;
  pcc_blob blob;
  make_entry("long = 1\n", &record, &blob);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, a, PCC_PATH_MAX, &record, &blob),
           pcc_store_strerror);
  CHECK_RC(pcc_store_get_path(store, NULL, &MAGIC_311, 0, a, PCC_PATH_MAX, &got), pcc_store_strerror);
  ck_assert_int_eq(pcc_store_get_path(store, NULL, &MAGIC_311, 0, b, PCC_PATH_MAX, &got),
                   PCC_STORE_NOTFOUND);
  ck_assert_int_eq(pcc_store_put(store, NULL, &MAGIC_311, 0, a, PCC_PATH_MAX + 1, &record, &blob),
                   PCC_STORE_INVALID);
  /* the inline/hashed boundary: 400 and 401 bytes */
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, a, 400, &record, NULL), pcc_store_strerror);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, a, 401, &record, NULL), pcc_store_strerror);
  CHECK_RC(pcc_store_get_path(store, NULL, &MAGIC_311, 0, a, 400, &got), pcc_store_strerror);
  CHECK_RC(pcc_store_get_path(store, NULL, &MAGIC_311, 0, a, 401, &got), pcc_store_strerror);
}
END_TEST

START_TEST(test_compile_error_blob)
{
  pcc_path_record record;
  pcc_blob blob, *read = NULL;
  make_entry("def (:\n", &record, &blob);
  const char *json = "{\"type\":\"SyntaxError\",\"message\":\"invalid syntax\",\"line\":1,"
                     "\"offset\":5}";
  blob.kind = PCC_BLOB_COMPILE_ERROR;
  blob.payload = (const uint8_t *)json;
  blob.payload_len = strlen(json);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/e.py", 5, &record, &blob), pcc_store_strerror);
  CHECK_RC(pcc_store_get_blob(store, &MAGIC_311, 0, &record.digest, &read), pcc_store_strerror);
  ck_assert_int_eq(read->kind, PCC_BLOB_COMPILE_ERROR);
  ck_assert_str_eq((const char *)read->payload, json);
  free(read);
}
END_TEST

START_TEST(test_bad_arguments)
{
  pcc_path_record record;
  pcc_blob blob;
  make_entry("v = 5\n", &record, &blob);
  ck_assert_int_eq(pcc_store_put(store, NULL, &MAGIC_311, 3, "/v.py", 5, &record, &blob),
                   PCC_STORE_INVALID);
  ck_assert_int_eq(pcc_store_put(store, NULL, &MAGIC_311, 0, "/v.py", 0, &record, &blob),
                   PCC_STORE_INVALID);
  blob.kind = 7;
  ck_assert_int_eq(pcc_store_put(store, NULL, &MAGIC_311, 0, "/v.py", 5, &record, &blob),
                   PCC_STORE_INVALID);
  pcc_store *none = NULL;
  ck_assert_int_ne(pcc_store_open("/nonexistent/pcc-store", 0, &none), PCC_STORE_OK);
  ck_assert_ptr_null(none);
  pcc_store_close(NULL);
}
END_TEST

/* ---- administration ---- */

typedef struct {
  int count;
  char paths[16][64];
  uint64_t bytes[16];
} seen_entries;

static void collect(const pcc_store_entry *entry, void *ctx)
{
  seen_entries *seen = ctx;
  if (seen->count < 16) {
    snprintf(seen->paths[seen->count], sizeof seen->paths[0], "%.*s", (int)entry->path_len,
             entry->path);
    seen->bytes[seen->count] = entry->has_blob ? entry->bytes : 0;
  }
  seen->count++;
}

/* Six entries: /app/a.py /app/b.py /lib/c.py for 3.11 opt 0, /app/a.py opt 1, and /app/a.py
 * /app/z.py for pypy. */
static void fill_admin_store(void)
{
  static const struct {
    const pcc_magic *magic;
    int opt;
    const char *path, *source;
  } rows[] = {
    {&MAGIC_311, 0, "/app/a.py", "a = 1\n"},  {&MAGIC_311, 0, "/app/b.py", "b = 1\n"},
    {&MAGIC_311, 0, "/lib/c.py", "c = 1\n"},  {&MAGIC_311, 1, "/app/a.py", "a = 1\n"},
    {&MAGIC_PYPY, 0, "/app/a.py", "a = 1\n"}, {&MAGIC_PYPY, 0, "/app/z.py", "z = 1\n"},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    pcc_path_record record;
    pcc_blob blob;
    make_entry(rows[i].source, &record, &blob);
    CHECK_RC(pcc_store_put(store, NULL, rows[i].magic, rows[i].opt, rows[i].path, strlen(rows[i].path),
                           &record, &blob),
             pcc_store_strerror);
  }
}

START_TEST(test_scan_filters_and_pages)
{
  fill_admin_store();
  uint8_t next[PCC_STORE_CURSOR_MAX];
  size_t next_len = 0;
  seen_entries seen = {0};
  CHECK_RC(pcc_store_scan(store, NULL, NULL, 0, 100, 1000, collect, &seen, next, &next_len),
           pcc_store_strerror);
  ck_assert_int_eq(seen.count, 6);
  ck_assert_uint_eq(next_len, 0);
  ck_assert_uint_eq(seen.bytes[0], 14);

  pcc_store_filter filter = {.has_magic = true, .magic = MAGIC_311, .opt = 0,
                             .prefix = "/app/", .prefix_len = 5};
  memset(&seen, 0, sizeof seen);
  CHECK_RC(pcc_store_scan(store, &filter, NULL, 0, 100, 1000, collect, &seen, next, &next_len),
           pcc_store_strerror);
  ck_assert_int_eq(seen.count, 2);
  ck_assert_str_eq(seen.paths[0], "/app/a.py");
  ck_assert_str_eq(seen.paths[1], "/app/b.py");

  /* pages of two, following the cursor, see every entry once */
  int total = 0, pages = 0;
  uint8_t cursor[PCC_STORE_CURSOR_MAX];
  size_t cursor_len = 0;
  do {
    memset(&seen, 0, sizeof seen);
    CHECK_RC(pcc_store_scan(store, NULL, cursor, cursor_len, 2, 1000, collect, &seen, next,
                            &next_len),
             pcc_store_strerror);
    total += seen.count;
    pages++;
    memcpy(cursor, next, next_len);
    cursor_len = next_len;
  } while (cursor_len > 0 && pages < 10);
  ck_assert_int_eq(total, 6);
  ck_assert_int_le(pages, 4);
}
END_TEST

START_TEST(test_delete_by_prefix_magic_and_purge)
{
  fill_admin_store();
  uint64_t removed = 0;
  pcc_store_filter prefix = {.opt = -1, .prefix = "/app/", .prefix_len = 5};
  CHECK_RC(pcc_store_delete(store, &prefix, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, 5);
  pcc_path_record got;
  CHECK_RC(pcc_store_get_path(store, NULL, &MAGIC_311, 0, "/lib/c.py", 9, &got), pcc_store_strerror);

  fill_admin_store();
  pcc_store_filter magic = {.has_magic = true, .magic = MAGIC_PYPY, .opt = -1};
  CHECK_RC(pcc_store_delete(store, &magic, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, 2);
  pcc_store_stats stats;
  CHECK_RC(pcc_store_stat(store, &stats), pcc_store_strerror);
  ck_assert_uint_eq(stats.paths, 4);

  CHECK_RC(pcc_store_delete_one(store, NULL, &MAGIC_311, 1, "/app/a.py", 9, &removed),
           pcc_store_strerror);
  ck_assert_uint_eq(removed, 1);
  CHECK_RC(pcc_store_delete_one(store, NULL, &MAGIC_311, 1, "/app/a.py", 9, &removed),
           pcc_store_strerror);
  ck_assert_uint_eq(removed, 0);

  CHECK_RC(pcc_store_delete(store, NULL, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, 3);
  CHECK_RC(pcc_store_stat(store, &stats), pcc_store_strerror);
  ck_assert_uint_eq(stats.paths + stats.blobs, 0);
}
END_TEST

static void count_magic(const pcc_magic *magic, uint64_t entries, uint64_t bytes, void *ctx)
{
  uint64_t *out = ctx;
  int slot = pcc_magic_equal(magic, &MAGIC_311) ? 0 : 1;
  out[2 * slot] = entries;
  out[2 * slot + 1] = bytes;
}

START_TEST(test_magics_and_backup)
{
  fill_admin_store();
  uint64_t figures[4] = {0};
  CHECK_RC(pcc_store_magics(store, count_magic, figures), pcc_store_strerror);
  ck_assert_uint_eq(figures[0], 4);
  ck_assert_uint_eq(figures[2], 2);
  ck_assert_uint_gt(figures[1], 0);

  char backup[4200];
  snprintf(backup, sizeof backup, "%s/backup", dir);
  ck_assert_int_eq(mkdir(backup, 0750), 0);
  CHECK_RC(pcc_store_backup_dir(store, backup), pcc_store_strerror);
  pcc_store *copy = NULL;
  CHECK_RC(pcc_store_open(backup, 0, &copy), pcc_store_strerror);
  pcc_store_stats stats;
  CHECK_RC(pcc_store_stat(copy, &stats), pcc_store_strerror);
  ck_assert_uint_eq(stats.paths, 6);
  pcc_path_record got;
  CHECK_RC(pcc_store_get_path(copy, NULL, &MAGIC_PYPY, 0, "/app/z.py", 9, &got), pcc_store_strerror);
  pcc_store_close(copy);
}
END_TEST

START_TEST(test_versions_of_a_path)
{
  pcc_path_record record;
  pcc_blob blob;
  pcc_path_versions versions;
  make_entry("v = 1\n", &record, &blob);
  /* more hosts than versions: each compile adds its (mtime, size) as the newest */
  for (int i = 0; i < PCC_PATH_VERSIONS_MAX + 3; i++) {
    record.mtime = 1000 + i;
    CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/v.py", 5, &record, i ? NULL : &blob),
             pcc_store_strerror);
  }
  CHECK_RC(pcc_store_get_versions(store, NULL, &MAGIC_311, 0, "/v.py", 5, &versions),
           pcc_store_strerror);
  ck_assert_uint_eq(versions.n, PCC_PATH_VERSIONS_MAX);
  ck_assert_int_eq(versions.v[0].mtime, 1000 + PCC_PATH_VERSIONS_MAX + 2); /* newest first */
  ck_assert_int_eq(versions.v[PCC_PATH_VERSIONS_MAX - 1].mtime, 1003);     /* oldest dropped */
  /* the same (mtime, size) again replaces its version (a new digest) and becomes the newest */
  pcc_path_record changed = record;
  changed.mtime = 1005;
  pcc_digest_compute("other", 5, &changed.digest);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/v.py", 5, &changed, NULL),
           pcc_store_strerror);
  CHECK_RC(pcc_store_get_versions(store, NULL, &MAGIC_311, 0, "/v.py", 5, &versions),
           pcc_store_strerror);
  ck_assert_uint_eq(versions.n, PCC_PATH_VERSIONS_MAX);
  ck_assert_int_eq(versions.v[0].mtime, 1005);
  ck_assert(pcc_digest_equal(&versions.v[0].digest, &changed.digest));
  for (unsigned i = 1; i < versions.n; i++)
    ck_assert_int_ne(versions.v[i].mtime, 1005);
}
END_TEST

static void count_path(const char *path, size_t len, void *ctx)
{
  (void)path;
  (void)len;
  (*(int *)ctx)++;
}

START_TEST(test_namespaces_are_separate)
{
  pcc_path_record record, got;
  pcc_blob blob, *read = NULL;
  make_entry("n = 1\n", &record, &blob);
  CHECK_RC(pcc_store_put(store, "team-a", &MAGIC_311, 0, "/n.py", 5, &record, &blob),
           pcc_store_strerror);
  CHECK_RC(pcc_store_get_path(store, "team-a", &MAGIC_311, 0, "/n.py", 5, &got),
           pcc_store_strerror);
  ck_assert_int_eq(pcc_store_get_path(store, NULL, &MAGIC_311, 0, "/n.py", 5, &got),
                   PCC_STORE_NOTFOUND);
  ck_assert_int_eq(pcc_store_get_path(store, "team-b", &MAGIC_311, 0, "/n.py", 5, &got),
                   PCC_STORE_NOTFOUND);
  /* the blob is shared */
  CHECK_RC(pcc_store_get_blob(store, &MAGIC_311, 0, &record.digest, &read), pcc_store_strerror);
  free(read);
  const char *paths[] = {"/n.py"};
  size_t total = 0;
  int count = 0;
  CHECK_RC(pcc_store_profile_merge(store, "team-a", &MAGIC_311, 0, "app", paths, 1, &total),
           pcc_store_strerror);
  CHECK_RC(pcc_store_profile_read(store, "team-a", &MAGIC_311, 0, "app", count_path, &count),
           pcc_store_strerror);
  ck_assert_int_eq(count, 1);
  ck_assert_int_eq(pcc_store_profile_read(store, "team-b", &MAGIC_311, 0, "app", count_path,
                                          &count), PCC_STORE_NOTFOUND);
  ck_assert_int_eq(pcc_store_profile_merge(store, "n123456789012345678901234567890123",
                                           &MAGIC_311, 0, "app", paths, 1, &total),
                   PCC_STORE_INVALID); /* a namespace over PCC_NAMESPACE_MAX */
  uint64_t removed = 0;
  pcc_store_filter only_b = {.opt = -1, .ns = "team-b"};
  CHECK_RC(pcc_store_delete(store, &only_b, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, 0);
  pcc_store_filter only_a = {.opt = -1, .ns = "team-a"};
  CHECK_RC(pcc_store_delete(store, &only_a, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, 1);
}
END_TEST

/* Deletes the format record (a store of format 1 had none: 0) or sets it to format. */
static void set_format(const char *store_dir, int format)
{
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi meta;
  ck_assert_int_eq(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 8);
  ck_assert_int_eq(mdb_env_open(env, store_dir, 0, 0640), 0);
  ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
  ck_assert_int_eq(mdb_dbi_open(txn, "meta", 0, &meta), 0);
  MDB_val key = {6, (void *)"format"};
  uint32_t value = (uint32_t)format;
  MDB_val val = {sizeof value, &value};
  if (format == 0)
    ck_assert_int_eq(mdb_del(txn, meta, &key, NULL), 0);
  else
    ck_assert_int_eq(mdb_put(txn, meta, &key, &val, 0), 0);
  ck_assert_int_eq(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

START_TEST(test_store_format)
{
  pcc_path_record record, got;
  pcc_blob blob;
  make_entry("f = 1\n", &record, &blob);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/f.py", 5, &record, &blob),
           pcc_store_strerror);
  pcc_store_close(store);
  store = NULL;
  /* a store written by a newer pycached is refused, and left as it was */
  set_format(dir, 99);
  ck_assert_int_eq(pcc_store_open(dir, 0, &store), PCC_STORE_FORMAT);
  /* a store of the older format (no format record) is emptied, then used */
  set_format(dir, 0);
  CHECK_RC(pcc_store_open(dir, 0, &store), pcc_store_strerror);
  ck_assert_int_eq(pcc_store_get_path(store, NULL, &MAGIC_311, 0, "/f.py", 5, &got),
                   PCC_STORE_NOTFOUND);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/f.py", 5, &record, &blob),
           pcc_store_strerror);
  pcc_store_close(store);
  CHECK_RC(pcc_store_open(dir, 0, &store), pcc_store_strerror); /* this format: kept */
  CHECK_RC(pcc_store_get_path(store, NULL, &MAGIC_311, 0, "/f.py", 5, &got), pcc_store_strerror);
}
END_TEST

int main(void)
{
  Suite *suite = suite_create("store");
  TCase *tc = tcase_create("store");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_round_trip);
  tcase_add_test(tc, test_keys_are_separate);
  tcase_add_test(tc, test_persists_across_reopen);
  tcase_add_test(tc, test_flipped_payload_byte_never_served);
  tcase_add_test(tc, test_flipped_header_byte_never_served);
  tcase_add_test(tc, test_map_full_is_clean);
  tcase_add_test(tc, test_long_paths);
  tcase_add_test(tc, test_compile_error_blob);
  tcase_add_test(tc, test_bad_arguments);
  tcase_add_test(tc, test_scan_filters_and_pages);
  tcase_add_test(tc, test_delete_by_prefix_magic_and_purge);
  tcase_add_test(tc, test_magics_and_backup);
  tcase_add_test(tc, test_versions_of_a_path);
  tcase_add_test(tc, test_namespaces_are_separate);
  tcase_add_test(tc, test_store_format);
  suite_add_tcase(suite, tc);
  return test_run_suite(suite);
}
