/* test_proto.c: Check suite of proto/: the Java hash (known values, signed bytes, wrap-around),
 * the digest and checksum forms, the pyc header, parameter validation, JSON numbers as integers,
 * the JSON forms and the log lines (log.c). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "pcc_log.h"
#include "proto.h"
#include "proto_internal.h"
#include "test_helpers.h"

START_TEST(test_java_hash_known_values)
{
  ck_assert_int_eq(pcc_java_hash("", 0), 1);
  ck_assert_int_eq(pcc_java_hash("\xff", 1), 30); /* 31*1 + (-1) */
  ck_assert_int_eq(pcc_java_hash("abc", 3), 126145);
  ck_assert_int_eq(pcc_java_hash("\x80", 1), 31 - 128);
  ck_assert_int_eq(pcc_java_hash("\x7f", 1), 31 + 127);
  /* Java 17: Arrays.hashCode("hello world".getBytes()) == 1923188771 (wraps around) */
  ck_assert_int_eq(pcc_java_hash("hello world", 11), 1923188771);
  /* Java 17: Arrays.hashCode(new byte[8]) == -1807454463 */
  ck_assert_int_eq(pcc_java_hash("\0\0\0\0\0\0\0\0", 8), -1807454463);
}
END_TEST

/* Independent reference: the same sum in 64-bit arithmetic reduced at the end. */
START_TEST(test_java_hash_matches_reference_on_all_bytes)
{
  unsigned char bytes[256 * 3];
  for (size_t i = 0; i < sizeof bytes; i++)
    bytes[i] = (unsigned char)(i * 7 + 3);
  int64_t h = 1;
  for (size_t i = 0; i < sizeof bytes; i++)
    h = (int64_t)(((uint64_t)h * 31u + (uint64_t)(int64_t)(signed char)bytes[i]) & 0xffffffffu);
  int32_t expected = (int32_t)(uint32_t)h;
  ck_assert_int_eq(pcc_java_hash(bytes, sizeof bytes), expected);
}
END_TEST

static bool mapped(const char *name)
{
  FILE *maps = fopen("/proc/self/maps", "r");
  ck_assert_ptr_nonnull(maps);
  char line[4096];
  bool found = false;
  while (!found && fgets(line, sizeof line, maps))
    found = strstr(line, name) != NULL;
  fclose(maps);
  return found;
}

/* libcrypto is loaded by the first digest of 4 KiB or more, not before (a process that never
 * hashes a source, like an interpreter that imports nothing through the hook, never pays for
 * it), and every length gives libsodium's SHA-256 (shorter inputs, and the fallback without
 * libcrypto), around the block boundaries and the switch between the two. */
START_TEST(test_digest_loads_libcrypto_late)
{
  ck_assert(!mapped("libcrypto"));
  static uint8_t data[3 * 65536 + 3];
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (uint8_t)(i * 131 + (i >> 9));
  pcc_digest digest;
  pcc_digest_compute(data, 4095, &digest);
  ck_assert(!mapped("libcrypto"));
  pcc_digest_compute(data, 4096, &digest);
  ck_assert(mapped("libcrypto"));
  const size_t lengths[] = {0, 1, 55, 56, 63, 64, 65, 127, 128, 4095, 4096, 4097, 65536,
                            sizeof data};
  for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
    uint8_t expected[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(expected, data, lengths[i]);
    pcc_digest_compute(data, lengths[i], &digest);
    ck_assert_mem_eq(digest.bytes, expected, sizeof expected);
  }
}
END_TEST

/* The reference of the reference: one byte a step, in 64-bit arithmetic reduced every step. */
static int32_t java_hash_bytewise(const uint8_t *bytes, size_t len)
{
  uint64_t h = 1;
  for (size_t i = 0; i < len; i++)
    h = (h * 31u + (uint64_t)(int64_t)(int8_t)bytes[i]) & 0xffffffffu;
  return (int32_t)(uint32_t)h;
}

/* Every implementation this CPU runs (and pcc_java_hash, which picks one) equals the bytewise
 * sum: every length 0..300 (each path of the block loops and their tails), 2000 random lengths
 * up to 4096, at every alignment 0..63 of the start, on random bytes (both signs) and on runs
 * of 0x80 and 0x7f (the extremes of the multiply-adds). */
START_TEST(test_java_hash_implementations_match_bytewise)
{
  enum { MAX = 4096, ALIGN = 64 };
  static uint8_t buf[MAX + ALIGN] __attribute__((aligned(64)));
  uint64_t seed = 0x9e3779b97f4a7c15u;
  size_t tested = 0;
  for (size_t i = 0; i < proto_java_hash_impl_count; i++)
    tested += proto_java_hash_impls[i].usable();
  ck_assert_uint_ge(tested, 1);
  ck_assert_str_eq(proto_java_hash_impls[proto_java_hash_impl_count - 1].name, "scalar");
  for (int pattern = 0; pattern < 3; pattern++) {
    for (size_t i = 0; i < sizeof buf; i++) {
      seed = seed * 6364136223846793005u + 1442695040888963407u;
      buf[i] = pattern == 0 ? (uint8_t)(seed >> 56) : pattern == 1 ? 0x80 : 0x7f;
    }
    for (int round = 0; round < 2300; round++) {
      seed = seed * 6364136223846793005u + 1442695040888963407u;
      size_t len = round <= 300 ? (size_t)round : (size_t)(seed >> 33) % (MAX + 1);
      size_t align = (size_t)round % ALIGN;
      const uint8_t *p = buf + align;
      int32_t expected = java_hash_bytewise(p, len);
      for (size_t i = 0; i < proto_java_hash_impl_count; i++) {
        if (!proto_java_hash_impls[i].usable())
          continue;
        int32_t got = (int32_t)proto_java_hash_impls[i].fn(1, p, len);
        ck_assert_msg(got == expected, "%s: length %zu at alignment %zu: %d, expected %d",
                      proto_java_hash_impls[i].name, len, align, got, expected);
      }
      ck_assert_int_eq(pcc_java_hash(p, len), expected);
      /* continued in two pieces, cut anywhere, gives the same */
      size_t cut = len == 0 ? 0 : (size_t)(seed >> 13) % (len + 1);
      ck_assert_int_eq((int32_t)proto_java_hash_update(proto_java_hash_update(1, p, cut), p + cut,
                                                         len - cut), expected);
    }
  }
}
END_TEST

START_TEST(test_digest_hex)
{
  pcc_digest digest, parsed;
  char hex[PCC_DIGEST_HEX_LEN + 1];
  /* sha256sum of the empty input, and of "abc" (FIPS 180-2) */
  pcc_digest_compute("", 0, &digest);
  pcc_digest_to_hex(&digest, hex);
  ck_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  pcc_digest_compute("abc", 3, &digest);
  pcc_digest_to_hex(&digest, hex);
  ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  ck_assert_int_eq(pcc_digest_from_hex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD", &parsed), PCC_PROTO_OK);
  ck_assert(pcc_digest_equal(&parsed, &digest));
  ck_assert_int_eq(pcc_digest_from_hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a", &parsed),
                   PCC_PROTO_INVALID);
  ck_assert_int_eq(pcc_digest_from_hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad0", &parsed),
                   PCC_PROTO_INVALID);
  ck_assert_int_eq(pcc_digest_from_hex("ga7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", &parsed),
                   PCC_PROTO_INVALID);
}
END_TEST

START_TEST(test_checksum_hex)
{
  char hex[17];
  uint64_t value = 0;
  pcc_checksum_to_hex(0x0123456789abcdefull, hex);
  ck_assert_str_eq(hex, "0123456789abcdef");
  ck_assert_int_eq(pcc_checksum_from_hex(hex, &value), PCC_PROTO_OK);
  ck_assert_uint_eq(value, 0x0123456789abcdefull);
  ck_assert_uint_ne(pcc_checksum("a", 1), pcc_checksum("b", 1));
}
END_TEST

START_TEST(test_pyc_header_round_trip)
{
  pcc_magic magic;
  ck_assert_int_eq(pcc_magic_from_hex("a70d0d0a", &magic), PCC_PROTO_OK);
  pcc_pyc_header header, parsed;
  pcc_pyc_header_init(&header, &magic, 0x1234567890ll, 0x100000005ull);
  ck_assert_uint_eq(header.mtime, 0x34567890u); /* modulo 2^32, like CPython */
  ck_assert_uint_eq(header.size, 5u);
  uint8_t bytes[PCC_PYC_HEADER_LEN];
  pcc_pyc_header_write(&header, bytes);
  static const uint8_t expected[16] = {0xa7, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0,
                                       0x90, 0x78, 0x56, 0x34, 5, 0, 0, 0};
  ck_assert_mem_eq(bytes, expected, 16);
  ck_assert_int_eq(pcc_pyc_header_parse(bytes, sizeof bytes, &parsed), PCC_PROTO_OK);
  ck_assert(pcc_magic_equal(&parsed.magic, &magic));
  ck_assert_uint_eq(parsed.mtime, header.mtime);
  ck_assert_uint_eq(parsed.size, header.size);

  ck_assert_int_eq(pcc_pyc_header_parse(bytes, 15, &parsed), PCC_PROTO_HEADER);
  bytes[4] = 1; /* hash-based pyc: not served by this project */
  ck_assert_int_eq(pcc_pyc_header_parse(bytes, 16, &parsed), PCC_PROTO_HEADER);
  bytes[4] = 0;
  bytes[3] = 0; /* magic without \r\n */
  ck_assert_int_eq(pcc_pyc_header_parse(bytes, 16, &parsed), PCC_PROTO_HEADER);
  ck_assert_int_eq(pcc_magic_from_hex("a70d0d0b", &magic), PCC_PROTO_INVALID);
  ck_assert_int_eq(pcc_magic_from_hex("a70d0d", &magic), PCC_PROTO_INVALID);
}
END_TEST

typedef struct {
  const char *names[8];
  const char *values[8];
} fake_query;

static const char *fake_get(void *ctx, const char *name)
{
  fake_query *q = ctx;
  for (int i = 0; i < 8 && q->names[i]; i++)
    if (strcmp(q->names[i], name) == 0)
      return q->values[i];
  return NULL;
}

static const unsigned LOOKUP = PCC_PARAM_MAGIC | PCC_PARAM_PATH | PCC_PARAM_MTIME | PCC_PARAM_SIZE;

START_TEST(test_params_valid)
{
  fake_query q = {{"magic", "opt", "path", "mtime", "size", "hash", "digest"},
                  {"a70d0d0a", "2", "/srv/m.py", "1700000000", "42", "-2147483648",
                   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}};
  pcc_params params;
  const char *bad = "unset";
  ck_assert_int_eq(pcc_params_parse(fake_get, &q, LOOKUP, &params, &bad), PCC_PROTO_OK);
  ck_assert_ptr_null(bad);
  ck_assert_int_eq(params.opt, 2);
  ck_assert_str_eq(params.path, "/srv/m.py");
  ck_assert_uint_eq(params.path_len, 9);
  ck_assert_int_eq(params.mtime, 1700000000);
  ck_assert_uint_eq(params.size, 42);
  ck_assert_int_eq(params.hash, INT32_MIN);
  ck_assert_uint_eq(params.present, 0x7f);
}
END_TEST

/* Each bad value is rejected and named. */
START_TEST(test_params_invalid)
{
  static const struct {
    const char *name, *value;
    pcc_proto_status rc;
  } cases[] = {
    {"magic", "a70d0d0", PCC_PROTO_INVALID},   {"magic", "zz0d0d0a", PCC_PROTO_INVALID},
    {"opt", "3", PCC_PROTO_RANGE},             {"opt", "-1", PCC_PROTO_RANGE},
    {"opt", "1x", PCC_PROTO_INVALID},          {"path", "rel/m.py", PCC_PROTO_INVALID},
    {"path", "", PCC_PROTO_INVALID},           {"path", "/a\nb", PCC_PROTO_INVALID},
    {"mtime", "-1", PCC_PROTO_RANGE},          {"mtime", "1.5", PCC_PROTO_INVALID},
    {"mtime", " 1", PCC_PROTO_INVALID},        {"mtime", "+1", PCC_PROTO_INVALID},
    {"size", "99999999999999999999", PCC_PROTO_RANGE},
    {"hash", "2147483648", PCC_PROTO_RANGE},   {"hash", "-2147483649", PCC_PROTO_RANGE},
    {"digest", "xyz", PCC_PROTO_INVALID},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fake_query q = {{"magic", "path", "mtime", "size", NULL},
                    {"a70d0d0a", "/m.py", "1", "1", NULL}};
    int slot = 4;
    for (int j = 0; j < 4; j++)
      if (strcmp(q.names[j], cases[i].name) == 0)
        slot = j;
    q.names[slot] = cases[i].name;
    q.values[slot] = cases[i].value;
    pcc_params params;
    const char *bad = NULL;
    ck_assert_msg(pcc_params_parse(fake_get, &q, LOOKUP, &params, &bad) == cases[i].rc,
                  "%s=%s", cases[i].name, cases[i].value);
    ck_assert_str_eq(bad, cases[i].name);
  }
  /* a path of exactly 4096 bytes is fine, 4097 is not */
  static char path[PCC_PATH_MAX + 2];
  memset(path, 'p', PCC_PATH_MAX + 1);
  path[0] = '/';
  path[PCC_PATH_MAX] = '\0';
  fake_query q = {{"magic", "path", "mtime", "size"}, {"a70d0d0a", path, "1", "1"}};
  pcc_params params;
  const char *bad = NULL;
  ck_assert_int_eq(pcc_params_parse(fake_get, &q, LOOKUP, &params, &bad), PCC_PROTO_OK);
  path[PCC_PATH_MAX] = 'p';
  ck_assert_int_eq(pcc_params_parse(fake_get, &q, LOOKUP, &params, &bad), PCC_PROTO_RANGE);
  ck_assert_str_eq(bad, "path");
  /* a missing required parameter is named */
  fake_query missing = {{"magic", "path", "size"}, {"a70d0d0a", "/m.py", "1"}};
  ck_assert_int_eq(pcc_params_parse(fake_get, &missing, LOOKUP, &params, &bad),
                   PCC_PROTO_MISSING);
  ck_assert_str_eq(bad, "mtime");
}
END_TEST

static pcc_entry_view sample_entry(uint8_t *pyc, size_t pyc_len)
{
  pcc_entry_view view;
  memset(&view, 0, sizeof view);
  ck_assert_int_eq(pcc_magic_from_hex("a70d0d0a", &view.magic), PCC_PROTO_OK);
  view.opt = 1;
  view.path = "/srv/app/m.py";
  view.mtime = 1700000000;
  view.size = 21;
  view.hash = -5;
  view.hash_checked = true;
  pcc_digest_compute("x", 1, &view.digest);
  pcc_pyc_header header;
  pcc_pyc_header_init(&header, &view.magic, view.mtime, view.size);
  pcc_pyc_header_write(&header, pyc);
  memcpy(pyc + 16, "\xe3marshal", 8);
  view.pyc = pyc;
  view.pyc_len = pyc_len;
  view.checksum = pcc_checksum(pyc, pyc_len);
  view.compiler = "cpython-3.11.2";
  return view;
}

START_TEST(test_entry_json_round_trip)
{
  uint8_t pyc[24];
  pcc_entry_view view = sample_entry(pyc, sizeof pyc);
  cJSON *json = pcc_entry_to_json(&view);
  ck_assert_ptr_nonnull(json);
  char *text = cJSON_PrintUnformatted(json);
  cJSON_Delete(json);
  pcc_entry *entry = NULL;
  ck_assert_int_eq(pcc_entry_from_json(text, strlen(text), &entry), PCC_PROTO_OK);
  ck_assert_str_eq(entry->view.path, view.path);
  ck_assert_int_eq(entry->view.opt, 1);
  ck_assert_int_eq(entry->view.hash, -5);
  ck_assert(entry->view.hash_checked);
  ck_assert_uint_eq(entry->view.pyc_len, sizeof pyc);
  ck_assert_mem_eq(entry->view.pyc, pyc, sizeof pyc);
  ck_assert_str_eq(entry->view.compiler, "cpython-3.11.2");
  pcc_entry_free(entry);
  entry = NULL;

  /* a flipped character in the pyc is a checksum failure, never an entry */
  char *pyc_field = strstr(text, "\"pyc\":\"") + 7;
  pyc_field[25] = pyc_field[25] == 'A' ? 'B' : 'A';
  ck_assert_int_eq(pcc_entry_from_json(text, strlen(text), &entry), PCC_PROTO_CHECKSUM);
  ck_assert_ptr_null(entry);
  /* truncated JSON */
  ck_assert_int_eq(pcc_entry_from_json(text, strlen(text) / 2, &entry), PCC_PROTO_INVALID);
  free(text);
  pcc_entry_free(NULL);
}
END_TEST

/* The text written with the base64 in place is the object cJSON prints, byte for byte, for every
 * length of a pyc's last base64 group (and an empty pyc). */
START_TEST(test_entry_json_text_is_the_printed_object)
{
  uint8_t pyc[64];
  for (size_t len = 0; len <= 40; len++) {
    pcc_entry_view view = sample_entry(pyc, sizeof pyc);
    for (size_t i = 16; i < sizeof pyc; i++)
      pyc[i] = (uint8_t)(i * 37 + len);
    view.pyc_len = len;
    view.checksum = pcc_checksum(pyc, len);
    cJSON *json = pcc_entry_to_json(&view);
    char *printed = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);
    size_t text_len = 0;
    char *text = pcc_entry_to_json_text(&view, &text_len);
    ck_assert_ptr_nonnull(text);
    ck_assert_str_eq(text, printed);
    ck_assert_uint_eq(text_len, strlen(printed));
    free(text);
    free(printed);
  }
}
END_TEST

/* A consistent checksum over a header that does not match the entry's mtime is rejected. */
START_TEST(test_entry_json_header_mismatch)
{
  uint8_t pyc[24];
  pcc_entry_view view = sample_entry(pyc, sizeof pyc);
  view.mtime += 1;
  cJSON *json = pcc_entry_to_json(&view);
  char *text = cJSON_PrintUnformatted(json);
  cJSON_Delete(json);
  pcc_entry *entry = NULL;
  ck_assert_int_eq(pcc_entry_from_json(text, strlen(text), &entry), PCC_PROTO_HEADER);
  free(text);
}
END_TEST

/* pcc_double_to_i64 on both sides of every edge: whole or not, in int64_t or not, NaN. */
START_TEST(test_double_to_i64)
{
  static const struct {
    double value;
    bool ok;
    int64_t out;
  } cases[] = {
    {0.0, true, 0},
    {-0.0, true, 0},
    {1.0, true, 1},
    {-1.0, true, -1},
    {0.5, false, 0},
    {-0.5, false, 0},
    {4.9e-324, false, 0},                             /* the least subnormal */
    {1e300, false, 0},                                /* the batch's "mtime" of issue 11 */
    {-1e300, false, 0},
    {9007199254740992.0, true, 9007199254740992},     /* 2^53 */
    {9223372036854774784.0, true, INT64_MAX - 1023},  /* the last double below 2^63 */
    {9223372036854775808.0, false, 0},                /* 2^63: one past INT64_MAX */
    {-9223372036854775808.0, true, INT64_MIN},        /* -2^63 fits */
    {-9223372036854777856.0, false, 0},               /* the next double below it does not */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int64_t out = 42;
    ck_assert_msg(pcc_double_to_i64(cases[i].value, &out) == cases[i].ok, "case %zu", i);
    ck_assert_int_eq(out, cases[i].ok ? cases[i].out : 42); /* untouched when refused */
  }
  int64_t out = 42;
  ck_assert(!pcc_double_to_i64(NAN, &out));
  ck_assert(!pcc_double_to_i64(INFINITY, &out));
  ck_assert(!pcc_double_to_i64(-INFINITY, &out));
  ck_assert_int_eq(out, 42);
}
END_TEST

/* Numbers of an entry a server sends, out of range or not whole: refused (and, in the sanitizer
 * build, without undefined behaviour on the way). */
START_TEST(test_entry_json_numbers_out_of_range)
{
  static const char *const fields[] = {"opt", "mtime", "size", "hash"};
  static const char *const numbers[] = {"1e300", "-1e300", "9223372036854775808", "1.5",
                                        "9007199254740994", "-1"};
  uint8_t pyc[24];
  pcc_entry_view view = sample_entry(pyc, sizeof pyc);
  for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++)
    for (size_t n = 0; n < sizeof numbers / sizeof numbers[0]; n++) {
      if (strcmp(fields[f], "hash") == 0 && strcmp(numbers[n], "-1") == 0)
        continue; /* a valid hash */
      cJSON *json = pcc_entry_to_json(&view);
      cJSON_ReplaceItemInObjectCaseSensitive(json, fields[f],
                                             cJSON_Parse(numbers[n]));
      char *text = cJSON_PrintUnformatted(json);
      cJSON_Delete(json);
      pcc_entry *entry = NULL;
      ck_assert_msg(pcc_entry_from_json(text, strlen(text), &entry) == PCC_PROTO_INVALID,
                    "%s: %s", fields[f], numbers[n]);
      ck_assert_ptr_null(entry);
      free(text);
    }
}
END_TEST

START_TEST(test_base64)
{
  char *text = pcc_base64_encode((const uint8_t *)"\x00\xff\x10", 3);
  ck_assert_str_eq(text, "AP8Q");
  uint8_t *bytes = NULL;
  size_t len = 0;
  ck_assert_int_eq(pcc_base64_decode(text, strlen(text), &bytes, &len), PCC_PROTO_OK);
  ck_assert_uint_eq(len, 3);
  ck_assert_mem_eq(bytes, "\x00\xff\x10", 3);
  free(bytes);
  free(text);
  ck_assert_int_eq(pcc_base64_decode("AP8*", 4, &bytes, &len), PCC_PROTO_INVALID);
  /* the table encoder writes what libsodium's does, for every length of the last group */
  uint8_t data[100];
  char reference[sizeof data / 3 * 4 + 8];
  for (size_t n = 0; n <= sizeof data; n++) {
    for (size_t i = 0; i < n; i++)
      data[i] = (uint8_t)(i * 151 + n * 7);
    sodium_bin2base64(reference, sizeof reference, data, n, sodium_base64_VARIANT_ORIGINAL);
    text = pcc_base64_encode(data, n);
    ck_assert_str_eq(text, reference);
    ck_assert_int_eq(pcc_base64_decode(text, strlen(text), &bytes, &len), PCC_PROTO_OK);
    ck_assert_uint_eq(len, n);
    ck_assert(n == 0 || memcmp(bytes, data, n) == 0);
    free(bytes);
    free(text);
  }
}
END_TEST

/* A bundle of two entries; the second one's pyc is 8 bytes of code after its header. */
static uint8_t *two_entry_bundle(size_t *len)
{
  pcc_magic magic;
  ck_assert_int_eq(pcc_magic_from_hex("a70d0d0a", &magic), PCC_PROTO_OK);
  pcc_bundle_writer *writer = NULL;
  ck_assert_int_eq(pcc_bundle_writer_open(&magic, 1, 1 << 20, &writer), PCC_PROTO_OK);
  for (int i = 0; i < 2; i++) {
    uint8_t pyc[24];
    pcc_pyc_header header;
    pcc_pyc_header_init(&header, &magic, 1700000000 + i, 10 + (uint64_t)i);
    pcc_pyc_header_write(&header, pyc);
    memset(pyc + 16, 'a' + i, 8);
    const char *path = i ? "/b.py" : "/a.py";
    pcc_bundle_entry entry = {path, 5, 1700000000 + i, 10 + (uint64_t)i, -7, {{0}}, pyc, 24, 0};
    ck_assert_int_eq(pcc_bundle_writer_add(writer, &entry), PCC_PROTO_OK);
  }
  uint8_t *data = NULL;
  ck_assert_int_eq(pcc_bundle_writer_finish(writer, &data, len), PCC_PROTO_OK);
  pcc_bundle_writer_close(writer);
  return data;
}

static void count_entry(const pcc_bundle_entry *entry, void *ctx)
{
  int *seen = ctx;
  ck_assert_uint_eq(entry->path_len, 5);
  ck_assert_int_eq(entry->hash, -7);
  ck_assert_uint_eq(entry->pyc_len, 24);
  (*seen)++;
}

START_TEST(test_bundle_round_trip_and_damage)
{
  size_t len = 0, skipped = 0;
  uint8_t *data = two_entry_bundle(&len);
  pcc_magic magic;
  int opt = -1, seen = 0;
  ck_assert_int_eq(pcc_bundle_parse(data, len, &magic, &opt, count_entry, &seen, &skipped),
                   PCC_PROTO_OK);
  ck_assert_int_eq(seen, 2);
  ck_assert_int_eq(opt, 1);
  ck_assert_uint_eq(skipped, 0);

  /* truncated: the trailer no longer matches */
  seen = 0;
  ck_assert_int_eq(pcc_bundle_parse(data, len - 20, &magic, &opt, count_entry, &seen, &skipped),
                   PCC_PROTO_CHECKSUM);
  ck_assert_int_eq(pcc_bundle_parse(data, 10, &magic, &opt, count_entry, &seen, &skipped),
                   PCC_PROTO_INVALID);
  ck_assert_int_eq(pcc_bundle_parse(data, len - 1, &magic, &opt, count_entry, &seen, &skipped),
                   PCC_PROTO_CHECKSUM);
  /* a flipped byte in an entry: the whole-bundle checksum fails */
  data[len - PCC_BUNDLE_TRAILER_LEN - 1] ^= 1;
  ck_assert_int_eq(pcc_bundle_parse(data, len, &magic, &opt, count_entry, &seen, &skipped),
                   PCC_PROTO_CHECKSUM);
  /* ... and with the trailer recomputed, only that entry is skipped */
  uint64_t sum = pcc_checksum(data, len - PCC_BUNDLE_TRAILER_LEN);
  for (int i = 0; i < 8; i++)
    data[len - 8 + i] = (uint8_t)(sum >> (8 * i));
  ck_assert_int_eq(pcc_bundle_parse(data, len, &magic, &opt, count_entry, &seen, &skipped),
                   PCC_PROTO_OK);
  ck_assert_int_eq(seen, 1);
  ck_assert_uint_eq(skipped, 1);
  free(data);

  /* a writer refuses what would not fit */
  pcc_bundle_writer *writer = NULL;
  ck_assert_int_eq(pcc_bundle_writer_open(&magic, 0, 100, &writer), PCC_PROTO_OK);
  uint8_t pyc[200] = {0};
  pcc_bundle_entry big = {"/c.py", 5, 1, 200, 0, {{0}}, pyc, sizeof pyc, 0};
  ck_assert_int_eq(pcc_bundle_writer_add(writer, &big), PCC_PROTO_RANGE);
  pcc_bundle_writer_close(writer);
}
END_TEST

/* An entry whose pyc carries the header the entry declares, as count_entry expects. */
static pcc_bundle_entry valid_entry(const pcc_magic *magic, uint8_t pyc[24])
{
  pcc_pyc_header header;
  pcc_pyc_header_init(&header, magic, 1700000000, 10);
  pcc_pyc_header_write(&header, pyc);
  memset(pyc + 16, 'x', 8);
  return (pcc_bundle_entry){"/a.py", 5, 1700000000, 10, -7, {{0}}, pyc, 24, 0};
}

START_TEST(test_bundle_writer_bounds)
{
  pcc_magic magic;
  ck_assert_int_eq(pcc_magic_from_hex("a70d0d0a", &magic), PCC_PROTO_OK);
  uint8_t pyc[24];
  pcc_bundle_entry entry = valid_entry(&magic, pyc);
  size_t empty = PCC_BUNDLE_HEADER_LEN + PCC_BUNDLE_TRAILER_LEN;
  size_t exact = empty + PCC_BUNDLE_ENTRY_FIXED + entry.path_len + entry.pyc_len;
  /* an entry that fills max_bytes to the last byte, trailer included, fits; one byte less and
   * it does not, and the bundle stays valid without it */
  for (size_t max = exact - 1; max <= exact; max++) {
    pcc_bundle_writer *writer = NULL;
    ck_assert_int_eq(pcc_bundle_writer_open(&magic, 0, max, &writer), PCC_PROTO_OK);
    ck_assert_int_eq(pcc_bundle_writer_add(writer, &entry),
                     max == exact ? PCC_PROTO_OK : PCC_PROTO_RANGE);
    uint8_t *data = NULL, *again = NULL;
    size_t len = 0, skipped = 0;
    ck_assert_int_eq(pcc_bundle_writer_finish(writer, &data, &len), PCC_PROTO_OK);
    ck_assert_uint_eq(len, max == exact ? exact : empty);
    /* a spent writer takes nothing more */
    ck_assert_int_eq(pcc_bundle_writer_add(writer, &entry), PCC_PROTO_INVALID);
    ck_assert_int_eq(pcc_bundle_writer_finish(writer, &again, &len), PCC_PROTO_INVALID);
    pcc_bundle_writer_close(writer);
    pcc_magic got;
    int opt = -1, seen = 0;
    ck_assert_int_eq(pcc_bundle_parse(data, max == exact ? exact : empty, &got, &opt, count_entry,
                                      &seen, &skipped),
                     PCC_PROTO_OK);
    ck_assert_int_eq(seen, max == exact ? 1 : 0);
    ck_assert_uint_eq(skipped, 0);
    free(data);
  }

  /* many entries: the writer grows well past its first allocation and keeps every byte */
  enum { ENTRIES = 3000 };
  pcc_bundle_writer *writer = NULL;
  ck_assert_int_eq(pcc_bundle_writer_open(&magic, 2, 1 << 20, &writer), PCC_PROTO_OK);
  for (int i = 0; i < ENTRIES; i++)
    ck_assert_int_eq(pcc_bundle_writer_add(writer, &entry), PCC_PROTO_OK);
  uint8_t *data = NULL;
  size_t len = 0, skipped = 0;
  ck_assert_int_eq(pcc_bundle_writer_finish(writer, &data, &len), PCC_PROTO_OK);
  pcc_bundle_writer_close(writer);
  ck_assert_uint_eq(len, empty + ENTRIES * (exact - empty));
  pcc_magic got;
  int opt = -1, seen = 0;
  ck_assert_int_eq(pcc_bundle_parse(data, len, &got, &opt, count_entry, &seen, &skipped),
                   PCC_PROTO_OK);
  ck_assert_int_eq(seen, ENTRIES);
  ck_assert_int_eq(opt, 2);
  free(data);
}
END_TEST

/* ---- log lines ---------------------------------------------------------------------------- */

/* The bytes of a file (malloc'd, NUL-terminated). */
static char *slurp(const char *path)
{
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  char *data = calloc(1, 4 * PCC_LOG_LINE_MAX);
  size_t n = fread(data, 1, 4 * PCC_LOG_LINE_MAX - 1, f);
  data[n] = '\0';
  fclose(f);
  return data;
}

/* A log of format at level writing to DIR/log (path gets its name). */
static pcc_log *log_in(const char *dir, pcc_log_format format, pcc_log_level level, char *path)
{
  snprintf(path, 4096, "%s/log", dir);
  pcc_log *log = NULL;
  CHECK_RC(pcc_log_open(path, format, level, &log), pcc_log_strerror);
  return log;
}

START_TEST(test_log_text_line)
{
  char dir[256], path[4096];
  test_make_tmpdir(dir, sizeof dir, "log");
  pcc_log *log = log_in(dir, PCC_LOG_TEXT, PCC_LOG_INFO, path);
  const pcc_log_field fields[] = {PCC_LOG_STR("path", "/a b\"c"), PCC_LOG_INT("n", -3),
                                  PCC_LOG_BOOL("ok", true), PCC_LOG_STR("plain", "x/y")};
  pcc_log_write(log, PCC_LOG_WARN, "two\nlines", fields, 4);
  pcc_log_write(log, PCC_LOG_DEBUG, "below the level", NULL, 0);
  pcc_log_close(log);
  char *text = slurp(path);
  /* 2026-12-02T01:02:03.456Z warn  two\x0alines path="/a b\"c" n=-3 ok=true plain=x/y */
  ck_assert(text[4] == '-' && text[10] == 'T' && text[19] == '.' && text[23] == 'Z');
  ck_assert_str_eq(text + 24, " warn  two\\x0alines path=\"/a b\\\"c\" n=-3 ok=true plain=x/y\n");
  free(text);
  test_remove_tree(dir);
}
END_TEST

START_TEST(test_log_json_line)
{
  char dir[256], path[4096];
  test_make_tmpdir(dir, sizeof dir, "log");
  pcc_log *log = log_in(dir, PCC_LOG_JSON, PCC_LOG_DEBUG, path);
  const pcc_log_field fields[] = {PCC_LOG_STR("path", "/a\"\\\n"), PCC_LOG_INT("n", 7),
                                  PCC_LOG_BOOL("ok", false)};
  pcc_log_write(log, PCC_LOG_DEBUG, "m\te", fields, 3);
  pcc_log_close(log);
  char *text = slurp(path);
  ck_assert_ptr_eq(strchr(text, '\n'), text + strlen(text) - 1); /* one line */
  cJSON *obj = cJSON_Parse(text);
  ck_assert_ptr_nonnull(obj);
  ck_assert_str_eq(cJSON_GetObjectItem(obj, "level")->valuestring, "debug");
  ck_assert_str_eq(cJSON_GetObjectItem(obj, "msg")->valuestring, "m\te");
  ck_assert_str_eq(cJSON_GetObjectItem(obj, "path")->valuestring, "/a\"\\\n");
  ck_assert_int_eq((int)cJSON_GetObjectItem(obj, "n")->valuedouble, 7);
  ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(obj, "ok")));
  ck_assert_int_eq((int)strlen(cJSON_GetObjectItem(obj, "ts")->valuestring), 24);
  cJSON_Delete(obj);
  free(text);
  test_remove_tree(dir);
}
END_TEST

/* A line past PCC_LOG_LINE_MAX: text cut to the limit with the mark; JSON still valid, its
 * strings shortened (escapes make each control character six bytes). */
START_TEST(test_log_line_limit)
{
  char *big = malloc(3 * PCC_LOG_LINE_MAX);
  memset(big, '\x01', 3 * PCC_LOG_LINE_MAX - 1);
  big[3 * PCC_LOG_LINE_MAX - 1] = '\0';
  for (int format = PCC_LOG_TEXT; format <= PCC_LOG_JSON; format++) {
    char dir[256], path[4096];
    test_make_tmpdir(dir, sizeof dir, "log");
    pcc_log *log = log_in(dir, (pcc_log_format)format, PCC_LOG_INFO, path);
    const pcc_log_field fields[] = {PCC_LOG_STR("a", big), PCC_LOG_STR("b", big)};
    pcc_log_write(log, PCC_LOG_INFO, big, fields, 2);
    pcc_log_close(log);
    char *text = slurp(path);
    size_t len = strlen(text);
    ck_assert_uint_le(len, PCC_LOG_LINE_MAX);
    ck_assert_ptr_eq(strchr(text, '\n'), text + len - 1);
    if (format == PCC_LOG_TEXT) {
      ck_assert_uint_eq(len, PCC_LOG_LINE_MAX);
      ck_assert_str_eq(text + len - 10, " ...[cut]\n");
    } else {
      cJSON *obj = cJSON_Parse(text);
      ck_assert_ptr_nonnull(obj);
      ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(obj, "truncated")));
      ck_assert_ptr_nonnull(cJSON_GetObjectItem(obj, "b"));
      cJSON_Delete(obj);
    }
    free(text);
    test_remove_tree(dir);
  }
  free(big);
}
END_TEST

/* logrotate: after a rename, lines go to the renamed file until the reopen, then to a new one. */
START_TEST(test_log_reopen)
{
  char dir[256], path[4096], moved[4200];
  test_make_tmpdir(dir, sizeof dir, "log");
  pcc_log *log = log_in(dir, PCC_LOG_TEXT, PCC_LOG_INFO, path);
  snprintf(moved, sizeof moved, "%s.1", path);
  pcc_log_write(log, PCC_LOG_INFO, "one", NULL, 0);
  ck_assert_int_eq(rename(path, moved), 0);
  pcc_log_write(log, PCC_LOG_INFO, "two", NULL, 0);
  CHECK_RC(pcc_log_reopen(log), pcc_log_strerror);
  pcc_log_write(log, PCC_LOG_ERROR, "three", NULL, 0);
  struct stat st;
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_int_eq(st.st_mode & 0007, 0);
  ck_assert_uint_eq(pcc_log_dropped(log), 0);
  pcc_log_close(log);
  char *old = slurp(moved), *now = slurp(path);
  ck_assert_ptr_nonnull(strstr(old, " info  one\n"));
  ck_assert_ptr_nonnull(strstr(old, " info  two\n"));
  ck_assert_ptr_null(strstr(old, "three"));
  ck_assert_ptr_nonnull(strstr(now, " error three\n"));
  ck_assert_uint_eq(strlen(now), 24 + strlen(" error three\n"));
  free(old);
  free(now);
  test_remove_tree(dir);
}
END_TEST

/* pcc_read_upto reads a file whole, or cap bytes of a longer one (a limit's + 1 shows it), and
 * names a failed read's errno. */
START_TEST(test_read_upto)
{
  int fds[2];
  ck_assert_int_eq(pipe(fds), 0);
  ck_assert_int_eq(write(fds[1], "0123456789", 10), 10);
  char buf[32];
  size_t len = 99;
  ck_assert_int_eq(pcc_read_upto(fds[0], buf, 4, &len), 0);
  ck_assert_uint_eq(len, 4);
  ck_assert_int_eq(memcmp(buf, "0123", 4), 0);
  close(fds[1]); /* the rest, then the end */
  ck_assert_int_eq(pcc_read_upto(fds[0], buf, sizeof buf, &len), 0);
  ck_assert_uint_eq(len, 6);
  ck_assert_int_eq(memcmp(buf, "456789", 6), 0);
  ck_assert_int_eq(pcc_read_upto(fds[0], buf, sizeof buf, &len), 0);
  ck_assert_uint_eq(len, 0);
  close(fds[0]);
  ck_assert_int_eq(pcc_read_upto(fds[0], buf, sizeof buf, &len), EBADF);
  ck_assert_uint_eq(len, 0);
}
END_TEST

START_TEST(test_log_names)
{
  pcc_log_level level;
  pcc_log_format format;
  ck_assert_int_eq(pcc_log_level_parse("warn", &level), PCC_LOG_OK);
  ck_assert_int_eq(level, PCC_LOG_WARN);
  ck_assert_int_eq(pcc_log_level_parse("WARN", &level), PCC_LOG_BAD_LEVEL);
  ck_assert_int_eq(pcc_log_format_parse("json", &format), PCC_LOG_OK);
  ck_assert_int_eq(format, PCC_LOG_JSON);
  ck_assert_int_eq(pcc_log_format_parse("xml", &format), PCC_LOG_BAD_FORMAT);
  ck_assert_str_eq(pcc_log_level_name(PCC_LOG_DEBUG), "debug");
  pcc_log *log = NULL;
  ck_assert_int_eq(pcc_log_open("/nonexistent-dir/x/log", PCC_LOG_TEXT, PCC_LOG_INFO, &log),
                   PCC_LOG_OPEN);
  ck_assert_ptr_null(log);
  pcc_log_close(NULL);
}
END_TEST

int main(void)
{
  Suite *suite = suite_create("proto");
  TCase *tc = tcase_create("proto");
  tcase_add_test(tc, test_java_hash_known_values);
  tcase_add_test(tc, test_java_hash_matches_reference_on_all_bytes);
  tcase_add_test(tc, test_java_hash_implementations_match_bytewise);
  tcase_add_test(tc, test_digest_hex);
  tcase_add_test(tc, test_digest_loads_libcrypto_late);
  tcase_add_test(tc, test_checksum_hex);
  tcase_add_test(tc, test_pyc_header_round_trip);
  tcase_add_test(tc, test_params_valid);
  tcase_add_test(tc, test_params_invalid);
  tcase_add_test(tc, test_entry_json_round_trip);
  tcase_add_test(tc, test_entry_json_header_mismatch);
  tcase_add_test(tc, test_entry_json_text_is_the_printed_object);
  tcase_add_test(tc, test_entry_json_numbers_out_of_range);
  tcase_add_test(tc, test_double_to_i64);
  tcase_add_test(tc, test_base64);
  tcase_add_test(tc, test_bundle_round_trip_and_damage);
  tcase_add_test(tc, test_bundle_writer_bounds);
  tcase_add_test(tc, test_log_text_line);
  tcase_add_test(tc, test_log_json_line);
  tcase_add_test(tc, test_log_line_limit);
  tcase_add_test(tc, test_log_reopen);
  tcase_add_test(tc, test_log_names);
  tcase_add_test(tc, test_read_upto);
  suite_add_tcase(suite, tc);
  return test_run_suite(suite);
}
