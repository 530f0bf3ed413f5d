/* test_store.c: Check suite of the LMDB store: round trips, persistence across a reopen, a
 * flipped byte never served, a full map answered cleanly, long paths and key separation, the
 * versions of a path, namespaces and the store format; a damaged file (a value past its end, a
 * truncated file) answered as damaged without a crash, faults in the map contained, verification;
 * concurrent puts sharing commits. */
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "guard.h"
#include "store.h"
#include "test_helpers.h"

static char dir[4096];
static pcc_store *store;
static const pcc_magic MAGIC_311 = {{0xa7, 0x0d, 0x0d, 0x0a}};
static const pcc_magic MAGIC_PYPY = {{0x50, 0x01, 0x0d, 0x0a}};

static void setup(void)
{
  test_make_tmpdir(dir, sizeof dir, "store");
  CHECK_RC(pcc_store_open(dir, NULL, &store), pcc_store_strerror);
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
  ck_assert_uint_eq(stats.entries, 1);
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
  ck_assert_uint_eq(stats.entries, 2);
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
  CHECK_RC(pcc_store_open(dir, NULL, &store), pcc_store_strerror);
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
  ck_assert_int_eq(mdb_env_set_maxdbs(env, 16), 0);
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
  CHECK_RC(pcc_store_open(dir, NULL, &store), pcc_store_strerror);
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
  /* a lookup writes nothing: the next read fails the same way, the path entry is untouched */
  ck_assert_int_eq(pcc_store_get_blob(store, &MAGIC_311, 0, &record.digest, &read),
                   PCC_STORE_CORRUPT);
  pcc_path_record got;
  CHECK_RC(pcc_store_get_path(store, NULL, &MAGIC_311, 0, "/c/w.py", 7, &got), pcc_store_strerror);
  pcc_store_stats stats;
  CHECK_RC(pcc_store_stat(store, &stats), pcc_store_strerror);
  ck_assert_uint_eq(stats.corruptions, 2);
  ck_assert(!stats.damaged); /* one damaged record: the file itself is sound */
  pcc_store_report report;
  CHECK_RC(pcc_store_verify(store, true, 0, NULL, NULL, &report), pcc_store_strerror);
  ck_assert_uint_eq(report.damaged, 1);
  ck_assert_uint_eq(report.structural, 0);
  /* the next compile of the source replaces the record */
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/c/w.py", 7, &record, &blob),
           pcc_store_strerror);
  CHECK_RC(pcc_store_get_blob(store, &MAGIC_311, 0, &record.digest, &read), pcc_store_strerror);
  ck_assert_mem_eq(read->payload, blob.payload, blob.payload_len);
  free(read);
  CHECK_RC(pcc_store_stat(store, &stats), pcc_store_strerror);
  ck_assert_uint_eq(stats.blobs, 1);
  ck_assert_uint_eq(stats.bytes, blob.payload_len);
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

/* The bytes of every record of the blobs table (their chunks), read straight through LMDB from
 * the closed store. */
static size_t stored_blob_bytes(void)
{
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_cursor *cursor;
  MDB_val key, value;
  ck_assert_int_eq(mdb_env_create(&env), 0);
  ck_assert_int_eq(mdb_env_set_maxdbs(env, 16), 0);
  ck_assert_int_eq(mdb_env_set_mapsize(env, PCC_STORE_DEFAULT_MAP_SIZE), 0);
  ck_assert_int_eq(mdb_env_open(env, dir, MDB_RDONLY, 0640), 0);
  ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  ck_assert_int_eq(mdb_dbi_open(txn, "blobs", 0, &dbi), 0);
  ck_assert_int_eq(mdb_cursor_open(txn, dbi, &cursor), 0);
  size_t total = 0;
  for (int rc = mdb_cursor_get(cursor, &key, &value, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cursor, &key, &value, MDB_NEXT))
    total += value.mv_size;
  mdb_cursor_close(cursor);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return total;
}

static void reopen(bool compress)
{
  pcc_store_close(store);
  store = NULL;
  pcc_store_config config = {.compress = compress};
  CHECK_RC(pcc_store_open(dir, &config, &store), pcc_store_strerror);
}

static void entry_bytes(const pcc_store_entry *entry, void *ctx)
{
  *(uint64_t *)ctx = entry->bytes;
}

/* config.compress: a code blob is stored as a zstd frame (the record a fraction of the plain
 * one) and read back as the very payload; records written before (plain) and after (compressed)
 * are read whatever the setting; the figures and listings count plain bytes; a damaged frame is a
 * damaged record (never served, found by verification), replaced by the next put. */
START_TEST(test_compressed_blobs)
{
  enum { LEN = 64 * 1024 };
  static uint8_t payload[LEN];
  static const char pattern[] = "\xe3\x01" "def f(x): return x * 7  # code\n";
  for (size_t i = 0; i < LEN; i++) /* marshal-like: repetitive, not constant */
    payload[i] = (uint8_t)(pattern[i % (sizeof pattern - 1)] + (i / 4096));
  pcc_path_record plain_rec, packed_rec;
  pcc_blob plain_blob, packed_blob, *read = NULL;
  make_entry("plain = 1\n", &plain_rec, &plain_blob);
  make_entry("packed = 2\n", &packed_rec, &packed_blob);
  plain_blob.payload = packed_blob.payload = payload;
  plain_blob.payload_len = packed_blob.payload_len = LEN;
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/z/plain.py", 11, &plain_rec, &plain_blob),
           pcc_store_strerror);
  pcc_store_close(store);
  store = NULL;
  size_t plain_bytes = stored_blob_bytes();
  ck_assert_uint_gt(plain_bytes, LEN);
  reopen(true);
  CHECK_RC(pcc_store_get_blob(store, &MAGIC_311, 0, &plain_rec.digest, &read), pcc_store_strerror);
  ck_assert_uint_eq(read->payload_len, LEN);
  ck_assert_mem_eq(read->payload, payload, LEN);
  free(read);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/z/packed.py", 12, &packed_rec,
                         &packed_blob), pcc_store_strerror);
  uint64_t listed = 0;
  CHECK_RC(pcc_store_get_entry(store, NULL, &MAGIC_311, 0, "/z/packed.py", 12, entry_bytes,
                               &listed), pcc_store_strerror);
  ck_assert_uint_eq(listed, LEN);
  pcc_store_stats stats;
  CHECK_RC(pcc_store_stat(store, &stats), pcc_store_strerror);
  ck_assert_uint_eq(stats.bytes, 2 * LEN);
  pcc_store_close(store);
  store = NULL;
  size_t both = stored_blob_bytes();
  ck_assert_uint_lt(both - plain_bytes, LEN / 4); /* the compressed record */
  reopen(false);
  CHECK_RC(pcc_store_get_blob(store, &MAGIC_311, 0, &packed_rec.digest, &read), pcc_store_strerror);
  ck_assert_uint_eq(read->payload_len, LEN);
  ck_assert_mem_eq(read->payload, payload, LEN);
  ck_assert_str_eq(read->compiler, "cpython-3.11.2");
  ck_assert_int_eq(read->compile_us, 1234);
  free(read);
  pcc_store_report report;
  CHECK_RC(pcc_store_verify(store, true, 0, NULL, NULL, &report), pcc_store_strerror);
  ck_assert_uint_eq(report.damaged, 0);

  /* one compressed blob alone, its frame damaged (a byte in the middle of its one chunk) */
  uint64_t removed = 0;
  CHECK_RC(pcc_store_delete(store, NULL, &removed), pcc_store_strerror);
  reopen(true);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/z/packed.py", 12, &packed_rec,
                         &packed_blob), pcc_store_strerror);
  pcc_store_close(store);
  store = NULL;
  size_t packed_bytes = stored_blob_bytes();
  ck_assert_uint_lt(packed_bytes, 4000); /* one chunk */
  CHECK_RC(pcc_store_open(dir, NULL, &store), pcc_store_strerror);
  flip_blob_byte(packed_bytes / 3);
  read = NULL;
  ck_assert_int_eq(pcc_store_get_blob(store, &MAGIC_311, 0, &packed_rec.digest, &read),
                   PCC_STORE_CORRUPT);
  ck_assert_ptr_null(read);
  CHECK_RC(pcc_store_verify(store, true, 0, NULL, NULL, &report), pcc_store_strerror);
  ck_assert_uint_eq(report.damaged, 1);
  ck_assert_uint_eq(report.structural, 0);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/z/packed.py", 12, &packed_rec,
                         &packed_blob), pcc_store_strerror);
  CHECK_RC(pcc_store_get_blob(store, &MAGIC_311, 0, &packed_rec.digest, &read), pcc_store_strerror);
  ck_assert_mem_eq(read->payload, payload, LEN);
  free(read);
}
END_TEST

/* The offset in data.mdb of the only occurrence of pattern (len bytes); fails unless unique. */
static long find_in_file(const char *file, const uint8_t *pattern, size_t len, uint8_t **bytes,
                         size_t *size)
{
  FILE *f = fopen(file, "rb");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  *size = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  *bytes = malloc(*size);
  ck_assert_uint_eq(fread(*bytes, 1, *size, f), *size);
  fclose(f);
  long found = -1;
  int count = 0;
  for (size_t at = 0; at + len <= *size; at++)
    if (memcmp(*bytes + at, pattern, len) == 0) {
      found = (long)at;
      count++;
    }
  ck_assert_int_eq(count, 1);
  return found;
}

/* A blob's leaf node says its value is 16 MiB long, far past the end of the file: the lookup
 * must answer that the store is damaged, not read it (the old code took a SIGBUS in the
 * checksum). The store then answers everything damaged, and verification says why. */
START_TEST(test_value_past_the_end_of_the_file)
{
  pcc_path_record record;
  pcc_blob blob, *read = NULL;
  make_entry("v = 5\n", &record, &blob);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/e/v.py", 7, &record, &blob),
           pcc_store_strerror);
  pcc_store_close(store);
  store = NULL;
  /* the chunk key: magic, opt, digest, chunk 0; LMDB's leaf node before it: lo, hi, flags,
   * ksize (u16 each, the value's size is lo | hi << 16) */
  uint8_t key[4 + 1 + 32 + 2] = {0};
  memcpy(key, MAGIC_311.bytes, 4);
  memcpy(key + 5, record.digest.bytes, 32);
  char file[4200];
  snprintf(file, sizeof file, "%s/data.mdb", dir);
  uint8_t *bytes;
  size_t size;
  long at = find_in_file(file, key, sizeof key, &bytes, &size);
  ck_assert_int_ge(at, 8);
  uint16_t ksize;
  memcpy(&ksize, bytes + at - 2, 2);
  ck_assert_uint_eq(ksize, sizeof key);
  uint16_t lo = 0, hi = 0x100; /* 16 MiB */
  FILE *f = fopen(file, "r+b");
  ck_assert_ptr_nonnull(f);
  fseek(f, at - 8, SEEK_SET);
  fwrite(&lo, 2, 1, f);
  fwrite(&hi, 2, 1, f);
  uint32_t total = 1u << 24; /* and the record's own length agrees: the old code copied it */
  fseek(f, at + (long)sizeof key + 36, SEEK_SET);
  fwrite(&total, 4, 1, f);
  fclose(f);
  free(bytes);

  CHECK_RC(pcc_store_open(dir, NULL, &store), pcc_store_strerror);
  pcc_path_record got;
  CHECK_RC(pcc_store_get_path(store, NULL, &MAGIC_311, 0, "/e/v.py", 7, &got), pcc_store_strerror);
  CHECK_STATUS(pcc_store_get_blob(store, &MAGIC_311, 0, &record.digest, &read),
               PCC_STORE_DAMAGED, pcc_store_strerror);
  ck_assert_ptr_null(read);
  /* damaged: nothing more is read or written */
  CHECK_STATUS(pcc_store_get_path(store, NULL, &MAGIC_311, 0, "/e/v.py", 7, &got),
               PCC_STORE_DAMAGED, pcc_store_strerror);
  CHECK_STATUS(pcc_store_put(store, NULL, &MAGIC_311, 0, "/e/w.py", 7, &record, &blob),
               PCC_STORE_DAMAGED, pcc_store_strerror);
  pcc_store_stats stats;
  CHECK_RC(pcc_store_stat(store, &stats), pcc_store_strerror);
  ck_assert(stats.damaged);
  ck_assert_uint_ge(stats.corruptions, 1);
  pcc_store_close(store);

  /* read-only verification finds it; a verification of the same store before was clean */
  pcc_store_config config = {.read_only = true};
  CHECK_RC(pcc_store_open(dir, &config, &store), pcc_store_strerror);
  pcc_store_report report;
  CHECK_RC(pcc_store_verify(store, true, 0, NULL, NULL, &report), pcc_store_strerror);
  ck_assert_uint_ge(report.structural, 1);
  ck_assert(report.complete);
  ck_assert_uint_eq(report.entries, 1);
}
END_TEST

/* A truncated file: LMDB's meta page names pages past its end, refused at open. */
START_TEST(test_truncated_file_is_refused_at_open)
{
  pcc_path_record record;
  pcc_blob blob;
  make_entry("t = 6\n", &record, &blob);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/f/t.py", 7, &record, &blob),
           pcc_store_strerror);
  pcc_store_close(store);
  store = NULL;
  char file[4200];
  snprintf(file, sizeof file, "%s/data.mdb", dir);
  struct stat st;
  ck_assert_int_eq(stat(file, &st), 0);
  ck_assert_int_eq(truncate(file, st.st_size - 4096), 0);
  CHECK_STATUS(pcc_store_open(dir, NULL, &store), PCC_STORE_DAMAGED, pcc_store_strerror);
  ck_assert_ptr_null(store);
}
END_TEST

/* A clean store verifies clean, and its counts are right. */
START_TEST(test_verify_clean_store)
{
  pcc_path_record record;
  pcc_blob blob;
  make_entry("u = 7\n", &record, &blob);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/g/u.py", 7, &record, &blob),
           pcc_store_strerror);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/g/v.py", 7, &record, NULL),
           pcc_store_strerror);
  const char *paths[] = {"/g/u.py"};
  size_t total;
  CHECK_RC(pcc_store_profile_merge(store, NULL, &MAGIC_311, 0, "app", paths, 1, &total),
           pcc_store_strerror);
  pcc_store_report report;
  CHECK_RC(pcc_store_verify(store, true, 0, NULL, NULL, &report), pcc_store_strerror);
  ck_assert_uint_eq(report.entries, 2);
  ck_assert_uint_eq(report.blobs, 1);
  ck_assert_uint_eq(report.damaged, 0);
  ck_assert_uint_eq(report.structural, 0);
  ck_assert(report.complete);
}
END_TEST

/* guard.c: a SIGBUS inside a registered map, armed, comes back as a jump; a store's map is
 * registered by pcc_store_open. */
START_TEST(test_fault_in_a_map_is_contained)
{
  char file[4200];
  snprintf(file, sizeof file, "%s/mapped", dir);
  int fd = open(file, O_RDWR | O_CREAT, 0600);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(ftruncate(fd, 8192), 0);
  volatile uint8_t *map = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd, 0);
  ck_assert(map != MAP_FAILED);
  ck_assert(store_guard_install());
  ck_assert(store_guard_map((const void *)map, 8192));
  ck_assert_int_eq(ftruncate(fd, 4096), 0); /* the second page is past the end now */
  store_guard_frame frame;
  volatile int faults = 0;
  if (sigsetjmp(frame.jmp, 0) == 0) {
    store_guard_arm(&frame);
    (void)map[4096];
    store_guard_disarm(&frame);
  } else {
    faults++;
  }
  ck_assert_int_eq(faults, 1);
  ck_assert_int_eq(frame.sig, SIGBUS);
  ck_assert_ptr_eq(frame.addr, (const void *)(map + 4096));
  store_guard_forget((const void *)map);
  munmap((void *)map, 8192);
  close(fd);
}
END_TEST

/* Not armed, the same fault is not ours: the process dies of it as it would without the
 * handler (under AddressSanitizer, its report and exit code 1). */
START_TEST(test_fault_not_armed_still_kills)
{
  char file[4200];
  snprintf(file, sizeof file, "%s/mapped", dir);
  int fd = open(file, O_RDWR | O_CREAT, 0600);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(ftruncate(fd, 8192), 0);
  volatile uint8_t *map = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd, 0);
  ck_assert(map != MAP_FAILED);
  ck_assert(store_guard_install());
  ck_assert(store_guard_map((const void *)map, 8192));
  ck_assert_int_eq(ftruncate(fd, 4096), 0);
  (void)map[4096];
  ck_abort_msg("read past the end of the file without a fault");
}
END_TEST

START_TEST(test_map_full_is_clean)
{
  pcc_store_close(store);
  store = NULL;
  test_remove_tree(dir);
  test_make_tmpdir(dir, sizeof dir, "store-full");
  pcc_store_config small = {.map_size = 256 * 1024};
  CHECK_RC(pcc_store_open(dir, &small, &store), pcc_store_strerror);

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
  ck_assert_int_ne(pcc_store_open("/nonexistent/pcc-store", NULL, &none), PCC_STORE_OK);
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
  ck_assert_uint_eq(stats.entries, 4);

  CHECK_RC(pcc_store_delete_one(store, NULL, &MAGIC_311, 1, "/app/a.py", 9, &removed),
           pcc_store_strerror);
  ck_assert_uint_eq(removed, 1);
  CHECK_RC(pcc_store_delete_one(store, NULL, &MAGIC_311, 1, "/app/a.py", 9, &removed),
           pcc_store_strerror);
  ck_assert_uint_eq(removed, 0);

  CHECK_RC(pcc_store_delete(store, NULL, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, 3);
  CHECK_RC(pcc_store_stat(store, &stats), pcc_store_strerror);
  ck_assert_uint_eq(stats.entries + stats.blobs, 0);
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
  CHECK_RC(pcc_store_open(backup, NULL, &copy), pcc_store_strerror);
  pcc_store_stats stats;
  CHECK_RC(pcc_store_stat(copy, &stats), pcc_store_strerror);
  ck_assert_uint_eq(stats.entries, 6);
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
  ck_assert_int_eq(pcc_store_put(store, NULL, &MAGIC_311, 0, "/v.py", 5, &changed, NULL),
                   PCC_STORE_NOTFOUND); /* a version names a stored blob, or is not written */
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/v.py", 5, &changed, &blob),
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

/* What edit_store does to a closed store, directly through LMDB. */
typedef enum {
  EDIT_FORMAT,        /* sets the format record to `value` (a u32) */
  EDIT_FORMAT_SHORT,  /* sets it to 2 bytes */
  EDIT_NO_FORMAT,     /* deletes the format record, keeps meta */
  EDIT_NO_META,       /* drops the meta table: a store of format 1 had none */
  EDIT_NO_PROFILES,   /* drops the profiles table */
} store_edit;

static void edit_store(const char *store_dir, store_edit edit, uint32_t value)
{
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  ck_assert_int_eq(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 16);
  ck_assert_int_eq(mdb_env_open(env, store_dir, 0, 0640), 0);
  ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
  ck_assert_int_eq(mdb_dbi_open(txn, edit == EDIT_NO_PROFILES ? "profiles" : "meta",
                                edit == EDIT_NO_PROFILES ? MDB_DUPSORT : 0, &dbi), 0);
  MDB_val key = {6, (void *)"format"};
  MDB_val val = {edit == EDIT_FORMAT_SHORT ? 2 : sizeof value, &value};
  if (edit == EDIT_NO_FORMAT)
    ck_assert_int_eq(mdb_del(txn, dbi, &key, NULL), 0);
  else if (edit == EDIT_NO_META || edit == EDIT_NO_PROFILES)
    ck_assert_int_eq(mdb_drop(txn, dbi, 1), 0);
  else
    ck_assert_int_eq(mdb_put(txn, dbi, &key, &val, 0), 0);
  ck_assert_int_eq(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

/* Entries in the paths table of a closed store, read directly through LMDB. */
static size_t count_paths(const char *store_dir)
{
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_stat st;
  ck_assert_int_eq(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 16);
  ck_assert_int_eq(mdb_env_open(env, store_dir, MDB_RDONLY, 0640), 0);
  ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  ck_assert_int_eq(mdb_dbi_open(txn, "paths", 0, &dbi), 0);
  ck_assert_int_eq(mdb_stat(txn, dbi, &st), 0);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return st.ms_entries;
}

/* The fixture's store with one entry, closed. */
static void one_entry_closed(pcc_path_record *record, pcc_blob *blob)
{
  make_entry("f = 1\n", record, blob);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/f.py", 5, record, blob),
           pcc_store_strerror);
  pcc_store_close(store);
  store = NULL;
}

START_TEST(test_store_format)
{
  pcc_path_record record, got;
  pcc_blob blob;
  one_entry_closed(&record, &blob);
  /* a store written by a newer pycached is refused, and left as it was */
  edit_store(dir, EDIT_FORMAT, 99);
  ck_assert_int_eq(pcc_store_open(dir, NULL, &store), PCC_STORE_FORMAT);
  /* a store of an older format (2) is emptied, then used */
  edit_store(dir, EDIT_FORMAT, 2);
  CHECK_RC(pcc_store_open(dir, NULL, &store), pcc_store_strerror);
  ck_assert_int_eq(pcc_store_get_path(store, NULL, &MAGIC_311, 0, "/f.py", 5, &got),
                   PCC_STORE_NOTFOUND);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/f.py", 5, &record, &blob),
           pcc_store_strerror);
  pcc_store_close(store);
  CHECK_RC(pcc_store_open(dir, NULL, &store), pcc_store_strerror); /* this format: kept */
  CHECK_RC(pcc_store_get_path(store, NULL, &MAGIC_311, 0, "/f.py", 5, &got), pcc_store_strerror);
  pcc_store_close(store);
  store = NULL;
  /* a store of format 1 (no meta table) is emptied too */
  edit_store(dir, EDIT_NO_META, 0);
  CHECK_RC(pcc_store_open(dir, NULL, &store), pcc_store_strerror);
  ck_assert_int_eq(pcc_store_get_path(store, NULL, &MAGIC_311, 0, "/f.py", 5, &got),
                   PCC_STORE_NOTFOUND);
}
END_TEST

/* A damaged format record or table list is damage: the store is neither emptied as if it were
 * of an older format nor given new tables, read-only (--verify-store) or not. Before, all three
 * opened: the store was emptied (no format record, a short one) or a fresh `profiles` made,
 * and --verify-store called it "empty, or of an older format" (drill_corruption.py, a flip in
 * the name `profiles`). */
START_TEST(test_store_format_damage)
{
  static const store_edit edits[] = {EDIT_NO_FORMAT, EDIT_FORMAT_SHORT, EDIT_NO_PROFILES};
  pcc_store_config read_only = {.read_only = true};
  pcc_path_record record;
  pcc_blob blob;
  for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
    if (i > 0) { /* a fresh store with one entry */
      test_remove_tree(dir);
      test_make_tmpdir(dir, sizeof dir, "store-format");
      CHECK_RC(pcc_store_open(dir, NULL, &store), pcc_store_strerror);
    }
    one_entry_closed(&record, &blob);
    edit_store(dir, edits[i], 3);
    ck_assert_int_eq(pcc_store_open(dir, &read_only, &store), PCC_STORE_DAMAGED);
    ck_assert_ptr_null(store);
    ck_assert_int_eq(pcc_store_open(dir, NULL, &store), PCC_STORE_DAMAGED);
    ck_assert_ptr_null(store);
    ck_assert_uint_eq(count_paths(dir), 1); /* nothing was dropped */
  }
}
END_TEST

/* ---- a store that runs for months: eviction, references, space, profiles ---- */

static uint8_t payload_bytes[64 * 1024];

/* Closes the fixture's store and opens a fresh one with config. */
static void reopen_fresh(const pcc_store_config *config)
{
  pcc_store_close(store);
  store = NULL;
  test_remove_tree(dir);
  test_make_tmpdir(dir, sizeof dir, "store-limits");
  CHECK_RC(pcc_store_open(dir, config, &store), pcc_store_strerror);
}

/* Puts source number i (its own digest) at path with a payload of len bytes. */
static pcc_store_status put_numbered(const char *ns, const char *path, int i, size_t len,
                                     pcc_path_record *record_out)
{
  char source[32];
  pcc_path_record record;
  pcc_blob blob;
  snprintf(source, sizeof source, "s = %d\n", i);
  make_entry(source, &record, &blob);
  memset(payload_bytes, 'a' + i % 26, len);
  blob.payload = payload_bytes;
  blob.payload_len = len;
  if (record_out != NULL)
    *record_out = record;
  return pcc_store_put(store, ns, &MAGIC_311, 0, path, strlen(path), &record, &blob);
}

static bool blob_is_stored(const pcc_path_record *record)
{
  pcc_blob *read = NULL;
  pcc_store_status rc = pcc_store_get_blob(store, &MAGIC_311, 0, &record->digest, &read);
  free(read);
  ck_assert_msg(rc == PCC_STORE_OK || rc == PCC_STORE_NOTFOUND, "%s", pcc_store_strerror(rc));
  return rc == PCC_STORE_OK;
}

static void sum_magic(const pcc_magic *magic, uint64_t entries, uint64_t bytes, void *ctx)
{
  (void)magic;
  uint64_t *sums = ctx;
  sums[0] += entries;
  sums[1] += bytes;
}

static void check_listed(const pcc_store_entry *entry, void *ctx)
{
  ck_assert_msg(entry->has_blob, "%.*s names a blob that is gone", (int)entry->path_len,
                entry->path);
  (*(uint64_t *)ctx)++;
}

/* The figures agree with each other and with what is stored: every entry names a stored blob,
 * the per-magic figures add up to the totals. Returns the stats. */
static pcc_store_stats check_figures(void)
{
  pcc_store_stats stats;
  uint64_t sums[2] = {0, 0}, listed = 0;
  CHECK_RC(pcc_store_stat(store, &stats), pcc_store_strerror);
  CHECK_RC(pcc_store_magics(store, sum_magic, sums), pcc_store_strerror);
  ck_assert_uint_eq(sums[0], stats.entries);
  ck_assert_uint_eq(sums[1], stats.bytes);
  uint8_t cursor[PCC_STORE_CURSOR_MAX], next[PCC_STORE_CURSOR_MAX];
  size_t cursor_len = 0, next_len = 0;
  do {
    CHECK_RC(pcc_store_scan(store, NULL, cursor, cursor_len, PCC_LIST_LIMIT_MAX,
                            PCC_LIST_SCAN_MAX, check_listed, &listed, next, &next_len),
             pcc_store_strerror);
    memcpy(cursor, next, next_len);
    cursor_len = next_len;
  } while (next_len > 0);
  ck_assert_uint_eq(listed, stats.entries);
  ck_assert_uint_le(stats.used + stats.free, stats.map_size);
  return stats;
}

START_TEST(test_eviction_keeps_bytes_under_max)
{
  const uint64_t max = 64 * 1024;
  const size_t len = 1000;
  pcc_store_config config = {.max_size = max};
  reopen_fresh(&config);
  enum { HOT = 5, N = 3 * 64 + 10 }; /* 3 x max-size put through */
  pcc_path_record records[N];
  uint64_t evicted_total = 0;
  char path[64];
  for (int i = 0; i < N; i++) {
    snprintf(path, sizeof path, "/e/%d.py", i);
    CHECK_RC(put_numbered(NULL, path, i, len, &records[i]), pcc_store_strerror);
    for (int h = 0; h < HOT && h < i; h++) /* lookups of the hot entries: no write */
      ck_assert(blob_is_stored(&records[h]));
    uint64_t evicted = 0;
    CHECK_RC(pcc_store_evict(store, &evicted), pcc_store_strerror);
    evicted_total += evicted;
    pcc_store_stats stats;
    CHECK_RC(pcc_store_stat(store, &stats), pcc_store_strerror);
    ck_assert_uint_le(stats.bytes, max);
  }
  pcc_store_stats stats = check_figures();
  ck_assert_uint_gt(evicted_total, N - 70);
  ck_assert_uint_eq(stats.evictions, evicted_total);
  ck_assert_uint_eq(stats.max_size, max);
  ck_assert_uint_eq(stats.entries, stats.blobs);
  /* the most recently used survive: the hot ones and the newest */
  for (int h = 0; h < HOT; h++)
    ck_assert_msg(blob_is_stored(&records[h]), "hot entry %d was evicted", h);
  ck_assert(blob_is_stored(&records[N - 1]));
  /* the least recently used went, path entry and all: a lookup is a miss, never an error */
  pcc_path_versions versions;
  for (int i = HOT; i < HOT + 20; i++) {
    snprintf(path, sizeof path, "/e/%d.py", i);
    ck_assert(!blob_is_stored(&records[i]));
    ck_assert_int_eq(pcc_store_get_versions(store, NULL, &MAGIC_311, 0, path, strlen(path),
                                            &versions), PCC_STORE_NOTFOUND);
  }
  /* uses are written in batches, without a new generation (cached bundles stay valid) */
  uint64_t generation = pcc_store_generation(store);
  ck_assert(blob_is_stored(&records[0]));
  ck_assert_uint_gt(pcc_store_pending_uses(store), 0);
  size_t flushed = 0;
  CHECK_RC(pcc_store_flush_uses(store, &flushed), pcc_store_strerror);
  ck_assert_uint_ge(flushed, 1);
  ck_assert_uint_eq(pcc_store_pending_uses(store), 0);
  ck_assert_uint_eq(pcc_store_generation(store), generation);
  /* the order of uses survives a reopen */
  pcc_store_close(store);
  CHECK_RC(pcc_store_open(dir, &config, &store), pcc_store_strerror);
  for (int i = N; i < N + 64; i++) {
    snprintf(path, sizeof path, "/e/%d.py", i);
    CHECK_RC(put_numbered(NULL, path, i, len, NULL), pcc_store_strerror);
    ck_assert(blob_is_stored(&records[0]));
    CHECK_RC(pcc_store_evict(store, NULL), pcc_store_strerror);
  }
  ck_assert(blob_is_stored(&records[0]));
  check_figures();
}
END_TEST

/* Evicting a blob takes out the versions naming it, and every path entry naming it. */
START_TEST(test_eviction_takes_versions_and_shared_paths)
{
  pcc_store_config config = {.max_size = 8 * 1024};
  reopen_fresh(&config);
  pcc_path_record old_version, new_version;
  CHECK_RC(put_numbered(NULL, "/x.py", 1, 3000, &old_version), pcc_store_strerror);
  for (int i = 0; i < 3; i++) { /* the same source at more paths: one blob */
    char path[32];
    snprintf(path, sizeof path, "/copy%d.py", i);
    CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, path, strlen(path), &old_version, NULL),
             pcc_store_strerror);
  }
  char source[] = "s = 2\n";
  pcc_blob blob;
  make_entry(source, &new_version, &blob);
  new_version.mtime = old_version.mtime + 60; /* another host's mtime, another source */
  memset(payload_bytes, 'n', 3000);
  blob.payload = payload_bytes;
  blob.payload_len = 3000;
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/x.py", 5, &new_version, &blob),
           pcc_store_strerror);
  ck_assert(blob_is_stored(&new_version));
  CHECK_RC(put_numbered(NULL, "/y.py", 3, 3000, NULL), pcc_store_strerror); /* 9000 > 8192 */
  uint64_t evicted = 0;
  CHECK_RC(pcc_store_evict(store, &evicted), pcc_store_strerror);
  ck_assert_uint_eq(evicted, 1);
  ck_assert(!blob_is_stored(&old_version));
  pcc_path_versions versions;
  CHECK_RC(pcc_store_get_versions(store, NULL, &MAGIC_311, 0, "/x.py", 5, &versions),
           pcc_store_strerror);
  ck_assert_uint_eq(versions.n, 1);
  ck_assert(pcc_digest_equal(&versions.v[0].digest, &new_version.digest));
  ck_assert_int_eq(pcc_store_get_versions(store, NULL, &MAGIC_311, 0, "/copy1.py", 9, &versions),
                   PCC_STORE_NOTFOUND);
  pcc_store_stats stats = check_figures();
  ck_assert_uint_eq(stats.entries, 2);
  ck_assert_uint_eq(stats.blobs, 2);
  ck_assert_uint_eq(stats.bytes, 6000);
}
END_TEST

START_TEST(test_shared_blobs_are_reference_counted)
{
  pcc_path_record shared, got;
  CHECK_RC(put_numbered(NULL, "/a/s.py", 1, 100, &shared), pcc_store_strerror);
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/b/s.py", 7, &shared, NULL),
           pcc_store_strerror);
  CHECK_RC(pcc_store_put(store, "team-x", &MAGIC_311, 0, "/a/s.py", 7, &shared, NULL),
           pcc_store_strerror);
  pcc_store_stats stats = check_figures();
  ck_assert_uint_eq(stats.entries, 3);
  ck_assert_uint_eq(stats.blobs, 1);
  ck_assert_uint_eq(stats.bytes, 100);
  /* deleting one path keeps the blob the others name */
  uint64_t removed = 0;
  CHECK_RC(pcc_store_delete_one(store, NULL, &MAGIC_311, 0, "/a/s.py", 7, &removed),
           pcc_store_strerror);
  ck_assert_uint_eq(removed, 1);
  ck_assert(blob_is_stored(&shared));
  /* ... and so does invalidating a prefix */
  pcc_store_filter prefix = {.opt = -1, .prefix = "/b/", .prefix_len = 3};
  CHECK_RC(pcc_store_delete(store, &prefix, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, 1);
  ck_assert(blob_is_stored(&shared));
  CHECK_RC(pcc_store_get_path(store, "team-x", &MAGIC_311, 0, "/a/s.py", 7, &got),
           pcc_store_strerror);
  check_figures();
  /* the last reference takes it */
  pcc_store_filter team = {.opt = -1, .ns = "team-x"};
  CHECK_RC(pcc_store_delete(store, &team, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, 1);
  ck_assert(!blob_is_stored(&shared));
  stats = check_figures();
  ck_assert_uint_eq(stats.entries + stats.blobs + stats.bytes, 0);

  /* a version replaced by a new compile takes its blob unless another path names it */
  pcc_path_record first, second, third;
  CHECK_RC(put_numbered(NULL, "/v.py", 10, 50, &first), pcc_store_strerror);
  CHECK_RC(put_numbered(NULL, "/v.py", 11, 50, &second), pcc_store_strerror); /* same mtime */
  ck_assert(!blob_is_stored(&first));
  CHECK_RC(put_numbered(NULL, "/w.py", 12, 50, &third), pcc_store_strerror);
  third.mtime += 100;
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_311, 0, "/v.py", 5, &third, NULL),
           pcc_store_strerror); /* /v.py: second and third */
  CHECK_RC(pcc_store_delete_one(store, NULL, &MAGIC_311, 0, "/w.py", 5, &removed),
           pcc_store_strerror);
  ck_assert(blob_is_stored(&third));
  ck_assert(blob_is_stored(&second));
  stats = check_figures();
  ck_assert_uint_eq(stats.entries, 1);
  ck_assert_uint_eq(stats.blobs, 2);
  /* a retired magic takes its own blobs only */
  pcc_path_record pypy_record;
  pcc_blob pypy_blob;
  make_entry("s = 11\n", &pypy_record, &pypy_blob); /* the same source as `second` */
  CHECK_RC(pcc_store_put(store, NULL, &MAGIC_PYPY, 0, "/v.py", 5, &pypy_record, &pypy_blob),
           pcc_store_strerror);
  pcc_store_filter retire = {.has_magic = true, .magic = MAGIC_PYPY, .opt = -1};
  CHECK_RC(pcc_store_delete(store, &retire, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, 1);
  ck_assert(blob_is_stored(&second));
  stats = check_figures();
  ck_assert_uint_eq(stats.blobs, 2);
}
END_TEST

/* Puts entries of len bytes at /fill/<base + i>.py until the map is full; returns how many. */
static int fill_until_full(int base, size_t len)
{
  for (int i = 0; i < 100000; i++) {
    char path[64];
    snprintf(path, sizeof path, "/fill/%d.py", base + i);
    pcc_store_status rc = put_numbered(NULL, path, base + i, len, NULL);
    if (rc == PCC_STORE_FULL)
      return i;
    CHECK_RC(rc, pcc_store_strerror);
  }
  ck_abort_msg("the map never filled");
  return -1;
}

START_TEST(test_fill_purge_fill_with_a_small_map)
{
  pcc_store_config config = {.map_size = 8 * 1024 * 1024, .no_sync = true};
  reopen_fresh(&config);
  int first = fill_until_full(0, 16 * 1024);
  pcc_store_stats full = check_figures();
  ck_assert_int_gt(first, 300);
  uint64_t removed = 0;
  CHECK_RC(pcc_store_delete(store, NULL, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, (uint64_t)first);
  pcc_store_stats empty = check_figures();
  ck_assert_uint_eq(empty.entries + empty.blobs + empty.bytes, 0);
  ck_assert_uint_lt(empty.used, full.used / 10); /* the space is reported free ... */
  ck_assert_uint_gt(empty.free, full.used / 2);
  /* ... and reused: the same count again, but for the pages the last transactions freed (LMDB
   * reuses a page two transactions after the one that freed it) */
  int second = fill_until_full(1000000, 16 * 1024);
  ck_assert_int_ge(second, first - first / 100);
  pcc_store_filter all = {.opt = -1, .prefix = "/fill/", .prefix_len = 6};
  CHECK_RC(pcc_store_delete(store, &all, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, (uint64_t)second);
  int third = fill_until_full(2000000, 16 * 1024);
  ck_assert_int_ge(third, first - first / 100);
  check_figures();
}
END_TEST

START_TEST(test_deletions_work_at_a_full_map)
{
  pcc_store_config config = {.map_size = 2 * 1024 * 1024, .no_sync = true};
  reopen_fresh(&config);
  int n = fill_until_full(0, 200); /* small records: many entries a page */
  ck_assert_int_gt(n, 1000);
  pcc_store_stats full = check_figures();
  /* invalidating thousands of entries at a full map works, in steps that fit */
  uint64_t removed = 0;
  pcc_store_filter prefix = {.opt = -1, .prefix = "/fill/", .prefix_len = 6};
  CHECK_RC(pcc_store_delete(store, &prefix, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, (uint64_t)n);
  pcc_store_stats after = check_figures();
  ck_assert_uint_lt(after.used, full.used / 4);
  ck_assert_uint_eq(after.entries, 0);
  /* and so do a single deletion, a purge, and writes again */
  n = fill_until_full(100000, 200);
  CHECK_RC(pcc_store_delete_one(store, NULL, &MAGIC_311, 0, "/fill/100000.py", 15, &removed),
           pcc_store_strerror);
  ck_assert_uint_eq(removed, 1);
  CHECK_RC(pcc_store_delete(store, NULL, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, (uint64_t)n - 1);
  CHECK_RC(put_numbered(NULL, "/again.py", 7, 200, NULL), pcc_store_strerror);
  check_figures();
}
END_TEST

/* A full file system (a 1 MiB tmpfs under a 64 MiB map) is PCC_STORE_NOSPACE, not an I/O error.
 * Needs root for the mount; skipped without. */
START_TEST(test_full_disk_is_its_own_status)
{
  pcc_store_close(store);
  store = NULL;
  char cmd[4300];
  snprintf(cmd, sizeof cmd, "mount -t tmpfs -o size=1m pcc-test '%s' 2>/dev/null", dir);
  if (geteuid() != 0 || system(cmd) != 0) {
    fprintf(stderr, "test_full_disk_is_its_own_status: skipped (no tmpfs mount)\n");
    return;
  }
  pcc_store_config config = {.map_size = 64 * 1024 * 1024};
  pcc_store_status rc = pcc_store_open(dir, &config, &store);
  int puts = 0;
  for (; rc == PCC_STORE_OK && puts < 1000; puts++) {
    char path[32];
    snprintf(path, sizeof path, "/disk/%d.py", puts);
    rc = put_numbered(NULL, path, puts, 32 * 1024, NULL);
  }
  pcc_store_close(store);
  store = NULL;
  snprintf(cmd, sizeof cmd, "umount '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
  ck_assert_msg(rc == PCC_STORE_NOSPACE, "gave %s after %d puts", pcc_store_strerror(rc), puts);
  ck_assert_int_gt(puts, 3);
  ck_assert_str_eq(pcc_store_strerror(rc), "no space left on the store's file system");
  CHECK_RC(pcc_store_open(dir, NULL, &store), pcc_store_strerror); /* for the teardown */
}
END_TEST

static int64_t fake_now = 1000;

static int64_t fake_clock(void)
{
  return fake_now;
}

static void merge_at(int64_t when, const pcc_magic *magic, const char *ns, const char *name,
                     const char *const *paths, size_t n, size_t *total)
{
  fake_now = when;
  CHECK_RC(pcc_store_profile_merge(store, ns, magic, 0, name, paths, n, total),
           pcc_store_strerror);
}

static bool has_profile(const pcc_magic *magic, const char *ns, const char *name)
{
  pcc_store_profile profile;
  pcc_store_status rc = pcc_store_profile_get(store, ns, magic, 0, name, &profile);
  ck_assert(rc == PCC_STORE_OK || rc == PCC_STORE_NOTFOUND);
  return rc == PCC_STORE_OK;
}

static void list_profile(const pcc_store_profile *profile, void *ctx)
{
  seen_entries *seen = ctx;
  if (seen->count < 16) {
    snprintf(seen->paths[seen->count], sizeof seen->paths[0], "%.63s", profile->name);
    seen->bytes[seen->count] = profile->paths;
  }
  seen->count++;
}

START_TEST(test_profiles_are_bounded)
{
  pcc_store_config config = {.max_profiles = 3, .now = fake_clock};
  reopen_fresh(&config);
  const char *two[] = {"/p/a.py", "/p/b.py"};
  size_t total = 0;
  /* the count: a fourth profile replaces the least recently updated */
  merge_at(1000, &MAGIC_311, NULL, "one", two, 2, &total);
  merge_at(1001, &MAGIC_311, NULL, "two", two, 2, &total);
  merge_at(1002, &MAGIC_311, NULL, "three", two, 1, &total);
  merge_at(1003, &MAGIC_311, NULL, "one", two + 1, 1, &total); /* updated: now the newest */
  ck_assert_uint_eq(total, 2);
  merge_at(1004, &MAGIC_311, NULL, "four", two, 2, &total);
  ck_assert(!has_profile(&MAGIC_311, NULL, "two"));
  ck_assert(has_profile(&MAGIC_311, NULL, "one"));
  pcc_store_stats stats;
  CHECK_RC(pcc_store_stat(store, &stats), pcc_store_strerror);
  ck_assert_uint_eq(stats.profiles, 3);
  seen_entries seen = {0};
  uint8_t next[PCC_STORE_PROFILE_CURSOR_MAX];
  size_t next_len = 0;
  CHECK_RC(pcc_store_profiles_scan(store, NULL, NULL, 0, 10, list_profile, &seen, next,
                                   &next_len), pcc_store_strerror);
  ck_assert_int_eq(seen.count, 3);
  ck_assert_str_eq(seen.paths[0], "four"); /* key order */
  ck_assert_uint_eq(seen.bytes[1], 2);     /* "one": two paths, each once */
  ck_assert_uint_eq(next_len, 0);

  /* the paths: PCC_PROFILE_PATHS_MAX in one merge, quickly (one sorted table, batches) */
  char (*many)[24] = malloc(PCC_PROFILE_PATHS_MAX * sizeof *many);
  const char **list = malloc(PCC_PROFILE_PATHS_MAX * sizeof *list);
  for (int i = 0; i < PCC_PROFILE_PATHS_MAX; i++) {
    snprintf(many[i], sizeof many[i], "/big/%05d.py", i);
    list[i] = many[i];
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  merge_at(1005, &MAGIC_311, NULL, "big", list, PCC_PROFILE_PATHS_MAX, &total);
  merge_at(1005, &MAGIC_311, NULL, "big", list, PCC_PROFILE_PATHS_MAX, &total); /* no change */
  clock_gettime(CLOCK_MONOTONIC, &t1);
  ck_assert_uint_eq(total, PCC_PROFILE_PATHS_MAX);
  double seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  ck_assert_msg(seconds < 10, "two merges of %d paths took %.2f s", PCC_PROFILE_PATHS_MAX,
                seconds);
  merge_at(1006, &MAGIC_311, NULL, "big", list + 7, 3, &total); /* known paths: kept */
  ck_assert_uint_eq(total, PCC_PROFILE_PATHS_MAX);
  const char *fresh[] = {"/big/00007.py", "/big/new.py"};
  merge_at(1007, &MAGIC_311, NULL, "big", fresh, 2, &total); /* past the cap: starts again */
  ck_assert_uint_eq(total, 2);
  int count = 0;
  CHECK_RC(pcc_store_profile_read(store, NULL, &MAGIC_311, 0, "big", count_path, &count),
           pcc_store_strerror);
  ck_assert_int_eq(count, 2);
  free(list);
  free(many);
  /* a path over PCC_PROFILE_PATH_MAX is left out */
  static char long_path[PCC_PROFILE_PATH_MAX + 2];
  memset(long_path, 'l', sizeof long_path - 1);
  long_path[0] = '/';
  const char *with_long[] = {long_path, "/short.py"};
  merge_at(1008, &MAGIC_311, NULL, "four", with_long, 2, &total);
  ck_assert_uint_eq(total, 3);

  /* the age: profiles not updated since a time go */
  uint64_t removed = 0;
  ck_assert(!has_profile(&MAGIC_311, NULL, "three")); /* replaced by "big" */
  CHECK_RC(pcc_store_profiles_expire(store, 1003, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, 0); /* one: 1003, big: 1007, four: 1008 */
  CHECK_RC(pcc_store_profiles_expire(store, 1004, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, 1);
  ck_assert(!has_profile(&MAGIC_311, NULL, "one"));
  ck_assert(has_profile(&MAGIC_311, NULL, "four"));
}
END_TEST

START_TEST(test_profiles_expire_and_go_with_their_entries)
{
  pcc_store_config config = {.now = fake_clock};
  reopen_fresh(&config);
  const char *paths[] = {"/app/a.py"};
  size_t total = 0;
  merge_at(100, &MAGIC_311, NULL, "old", paths, 1, &total);
  merge_at(200, &MAGIC_311, NULL, "new", paths, 1, &total);
  uint64_t removed = 0;
  CHECK_RC(pcc_store_profiles_expire(store, 150, &removed), pcc_store_strerror);
  ck_assert_uint_eq(removed, 1);
  ck_assert(!has_profile(&MAGIC_311, NULL, "old"));
  ck_assert(has_profile(&MAGIC_311, NULL, "new"));
  /* one deleted by name */
  CHECK_RC(pcc_store_profile_delete(store, NULL, &MAGIC_311, 0, "new", &removed),
           pcc_store_strerror);
  ck_assert_uint_eq(removed, 1);
  CHECK_RC(pcc_store_profile_delete(store, NULL, &MAGIC_311, 0, "new", &removed),
           pcc_store_strerror);
  ck_assert_uint_eq(removed, 0);
  /* invalidating a magic or a namespace takes its profiles; a prefix leaves them */
  merge_at(300, &MAGIC_311, NULL, "keep", paths, 1, &total);
  merge_at(300, &MAGIC_PYPY, NULL, "pypy", paths, 1, &total);
  merge_at(300, &MAGIC_311, "team-a", "team", paths, 1, &total);
  pcc_store_filter prefix = {.opt = -1, .prefix = "/app/", .prefix_len = 5};
  CHECK_RC(pcc_store_delete(store, &prefix, &removed), pcc_store_strerror);
  ck_assert(has_profile(&MAGIC_PYPY, NULL, "pypy"));
  pcc_store_filter pypy = {.has_magic = true, .magic = MAGIC_PYPY, .opt = -1};
  CHECK_RC(pcc_store_delete(store, &pypy, &removed), pcc_store_strerror);
  ck_assert(!has_profile(&MAGIC_PYPY, NULL, "pypy"));
  ck_assert(has_profile(&MAGIC_311, NULL, "keep"));
  pcc_store_filter team = {.opt = -1, .ns = "team-a"};
  CHECK_RC(pcc_store_delete(store, &team, &removed), pcc_store_strerror);
  ck_assert(!has_profile(&MAGIC_311, "team-a", "team"));
  ck_assert(has_profile(&MAGIC_311, NULL, "keep"));
  /* a purge takes every profile */
  CHECK_RC(pcc_store_delete(store, NULL, &removed), pcc_store_strerror);
  pcc_store_stats stats;
  CHECK_RC(pcc_store_stat(store, &stats), pcc_store_strerror);
  ck_assert_uint_eq(stats.profiles, 0);
  ck_assert_int_eq(pcc_store_profile_read(store, NULL, &MAGIC_311, 0, "keep", count_path,
                                          &total), PCC_STORE_NOTFOUND);
}
END_TEST

/* A recorded use younger than PCC_USE_UPDATE_SECONDS (to twice that) is not moved again; an
 * older one is. Seen through what eviction takes: the least recently used as recorded. */
START_TEST(test_recent_uses_are_not_moved_again)
{
  pcc_store_config config = {.max_size = 2500, .now = fake_clock};
  reopen_fresh(&config);
  pcc_path_record a, b, c;
  fake_now = 10000;
  CHECK_RC(pcc_store_flush_uses(store, NULL), pcc_store_strerror); /* the first mark */
  CHECK_RC(put_numbered(NULL, "/a.py", 1, 1000, &a), pcc_store_strerror);
  CHECK_RC(put_numbered(NULL, "/b.py", 2, 1000, &b), pcc_store_strerror);
  fake_now += PCC_USE_UPDATE_SECONDS;
  CHECK_RC(pcc_store_flush_uses(store, NULL), pcc_store_strerror); /* a, b: recent from now */
  ck_assert(blob_is_stored(&a));
  CHECK_RC(pcc_store_flush_uses(store, NULL), pcc_store_strerror); /* a's use: not moved */
  CHECK_RC(put_numbered(NULL, "/c.py", 3, 1000, &c), pcc_store_strerror); /* 3000 > 2500 */
  CHECK_RC(pcc_store_evict(store, NULL), pcc_store_strerror);
  ck_assert(!blob_is_stored(&a)); /* recorded as older than b, though used later */
  ck_assert(blob_is_stored(&b));
  /* once its recorded use is old, a use moves it again */
  fake_now += 2 * PCC_USE_UPDATE_SECONDS;
  CHECK_RC(pcc_store_flush_uses(store, NULL), pcc_store_strerror);
  ck_assert(blob_is_stored(&b));
  CHECK_RC(pcc_store_flush_uses(store, NULL), pcc_store_strerror);
  CHECK_RC(put_numbered(NULL, "/d.py", 4, 1000, NULL), pcc_store_strerror);
  CHECK_RC(pcc_store_evict(store, NULL), pcc_store_strerror);
  ck_assert(blob_is_stored(&b)); /* moved: c is the least recently used now */
  ck_assert(!blob_is_stored(&c));
  check_figures();
}
END_TEST

/* Group commits (store.c, "puts"): 16 threads put at once, from a barrier, 20 entries each (the
 * first one the same source at each thread's own path: one blob for 16 entries, stored by
 * whichever put of a group comes first). A quarter of the threads' odd puts name a blob that is
 * not stored (PCC_STORE_NOTFOUND, as when it was evicted meanwhile): each of them fails alone and
 * no other put of its group is lost. Every put that answered OK is found again, blob and all,
 * after the store is closed and opened again; the figures agree with a scan; and the puts took
 * fewer commits than there were puts. */
enum { GROUP_THREADS = 16, GROUP_PUTS = 20 };

typedef struct {
  unsigned thread;
  pthread_barrier_t *start;
  pcc_store_status rc[GROUP_PUTS];
} group_putter;

static bool group_put_fails(unsigned thread, unsigned k)
{
  return thread % 4 == 3 && k % 2 == 1;
}

static void group_entry(unsigned thread, unsigned k, char *path, size_t path_cap,
                        char *source, size_t source_cap)
{
  snprintf(path, path_cap, "/g/t%02u/m%03u.py", thread, k);
  if (k == 0)
    snprintf(source, source_cap, "shared = 1\n");
  else if (group_put_fails(thread, k))
    snprintf(source, source_cap, "never stored = (%u, %u)\n", thread, k);
  else
    snprintf(source, source_cap, "x = (%u, %u)\n", thread, k);
}

static void *group_putter_main(void *arg)
{
  group_putter *p = arg;
  pthread_barrier_wait(p->start);
  for (unsigned k = 0; k < GROUP_PUTS; k++) {
    char path[64], source[64];
    pcc_path_record record;
    pcc_blob blob;
    group_entry(p->thread, k, path, sizeof path, source, sizeof source);
    make_entry(source, &record, &blob);
    blob.payload = (const uint8_t *)source; /* each blob its own bytes */
    blob.payload_len = strlen(source);
    p->rc[k] = pcc_store_put(store, NULL, &MAGIC_311, 0, path, strlen(path), &record,
                             group_put_fails(p->thread, k) ? NULL : &blob);
  }
  return NULL;
}

START_TEST(test_concurrent_puts_share_commits_and_fail_alone)
{
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, GROUP_THREADS);
  static group_putter putters[GROUP_THREADS];
  pthread_t ids[GROUP_THREADS];
  for (unsigned t = 0; t < GROUP_THREADS; t++) {
    putters[t] = (group_putter){.thread = t, .start = &start};
    ck_assert_int_eq(pthread_create(&ids[t], NULL, group_putter_main, &putters[t]), 0);
  }
  for (unsigned t = 0; t < GROUP_THREADS; t++)
    pthread_join(ids[t], NULL);
  pthread_barrier_destroy(&start);
  uint64_t ok = 0;
  for (unsigned t = 0; t < GROUP_THREADS; t++)
    for (unsigned k = 0; k < GROUP_PUTS; k++) {
      pcc_store_status expected = group_put_fails(t, k) ? PCC_STORE_NOTFOUND : PCC_STORE_OK;
      ck_assert_msg(putters[t].rc[k] == expected, "thread %u put %u: %s, expected %s", t, k,
                    pcc_store_strerror(putters[t].rc[k]), pcc_store_strerror(expected));
      ok += expected == PCC_STORE_OK;
    }
  pcc_store_stats stats;
  CHECK_RC(pcc_store_stat(store, &stats), pcc_store_strerror);
  ck_assert_uint_eq(stats.puts, ok);
  ck_assert_msg(stats.put_commits < stats.puts, "%llu puts took %llu commits: none shared",
                (unsigned long long)stats.puts, (unsigned long long)stats.put_commits);

  pcc_store_close(store); /* durable: found again by a store opened afresh */
  store = NULL;
  CHECK_RC(pcc_store_open(dir, NULL, &store), pcc_store_strerror);
  for (unsigned t = 0; t < GROUP_THREADS; t++)
    for (unsigned k = 0; k < GROUP_PUTS; k++) {
      char path[64], source[64];
      pcc_path_record record, got;
      pcc_blob blob, *read = NULL;
      group_entry(t, k, path, sizeof path, source, sizeof source);
      make_entry(source, &record, &blob);
      pcc_store_status rc = pcc_store_get_path(store, NULL, &MAGIC_311, 0, path, strlen(path),
                                               &got);
      if (group_put_fails(t, k)) {
        ck_assert_int_eq(rc, PCC_STORE_NOTFOUND);
        ck_assert(!blob_is_stored(&record));
        continue;
      }
      CHECK_RC(rc, pcc_store_strerror);
      ck_assert(pcc_digest_equal(&got.digest, &record.digest));
      CHECK_RC(pcc_store_get_blob(store, &MAGIC_311, 0, &record.digest, &read),
               pcc_store_strerror);
      if (k > 0) /* the shared one holds the bytes of the put that stored it: the same */
        ck_assert_mem_eq(read->payload, source, strlen(source));
      free(read);
    }
  stats = check_figures();
  ck_assert_uint_eq(stats.entries, ok);
  ck_assert_uint_eq(stats.blobs, ok - GROUP_THREADS + 1); /* the shared source is one blob */
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
  tcase_add_test(tc, test_compressed_blobs);
  tcase_add_test(tc, test_value_past_the_end_of_the_file);
  tcase_add_test(tc, test_truncated_file_is_refused_at_open);
  tcase_add_test(tc, test_verify_clean_store);
  tcase_add_test(tc, test_fault_in_a_map_is_contained);
#ifdef __SANITIZE_ADDRESS__
  tcase_add_exit_test(tc, test_fault_not_armed_still_kills, 1);
#else
  tcase_add_test_raise_signal(tc, test_fault_not_armed_still_kills, SIGBUS);
#endif
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
  tcase_add_test(tc, test_store_format_damage);
  tcase_add_test(tc, test_eviction_keeps_bytes_under_max);
  tcase_add_test(tc, test_eviction_takes_versions_and_shared_paths);
  tcase_add_test(tc, test_shared_blobs_are_reference_counted);
  tcase_add_test(tc, test_fill_purge_fill_with_a_small_map);
  tcase_add_test(tc, test_deletions_work_at_a_full_map);
  tcase_add_test(tc, test_full_disk_is_its_own_status);
  tcase_add_test(tc, test_profiles_are_bounded);
  tcase_add_test(tc, test_profiles_expire_and_go_with_their_entries);
  tcase_add_test(tc, test_recent_uses_are_not_moved_again);
  tcase_add_test(tc, test_concurrent_puts_share_commits_and_fail_alone);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(suite, tc);
  return test_run_suite(suite);
}
