/* fuzz_params.c: the request parameters of /v1/code, /v1/compile, bundles and batches
 * (pcc_params_parse, proto/params.c) through a getter over name=value pairs the fuzzer chooses,
 * as http.c hands it the query and warm's batches their JSON fields; and the number readers
 * beside it (pcc_parse_i64, pcc_double_to_i64).
 *
 * Input: byte 0 is the `required` mask (PCC_PARAM_* bits); bytes 1..8 a double for
 * pcc_double_to_i64; the rest lines "name=value" ('\n' between them; a value is a C string, as
 * libmicrohttpd's are). Checked: what parses obeys proto.h's rules and parses again from its
 * own printed form to the same; what does not names a known parameter. */
#include <inttypes.h>
#include <math.h>

#include "fuzz_common.h"

#define PAIRS_MAX 32

typedef struct {
  const char *names[PAIRS_MAX];
  const char *values[PAIRS_MAX];
  size_t n;
} pairs;

static const char *get_pair(void *ctx, const char *name)
{
  const pairs *p = ctx;
  for (size_t i = 0; i < p->n; i++)
    if (strcmp(p->names[i], name) == 0)
      return p->values[i];
  return NULL;
}

static const char *const known[] = {"magic", "opt", "path", "mtime", "size", "hash", "digest"};

static void check_double(const uint8_t *bytes)
{
  double value;
  memcpy(&value, bytes, sizeof value);
  int64_t out = 12345;
  bool whole = isfinite(value) && trunc(value) == value && value >= -0x1p63 && value < 0x1p63;
  FUZZ_CHECK(pcc_double_to_i64(value, &out) == whole);
  if (whole)
    FUZZ_CHECK((double)out == value);
  else
    FUZZ_CHECK(out == 12345); /* untouched */
}

/* The params printed back as a query would carry them. */
static void print_params(const pcc_params *p, pairs *out, char storage[][128])
{
  out->n = 0;
  if (p->present & PCC_PARAM_MAGIC)
    pcc_magic_to_hex(&p->magic, storage[0]), out->names[out->n] = "magic",
                                             out->values[out->n++] = storage[0];
  if (p->present & PCC_PARAM_OPT)
    snprintf(storage[1], 128, "%d", p->opt), out->names[out->n] = "opt",
                                             out->values[out->n++] = storage[1];
  if (p->present & PCC_PARAM_PATH)
    out->names[out->n] = "path", out->values[out->n++] = p->path;
  if (p->present & PCC_PARAM_MTIME)
    snprintf(storage[2], 128, "%" PRId64, p->mtime), out->names[out->n] = "mtime",
                                                     out->values[out->n++] = storage[2];
  if (p->present & PCC_PARAM_SIZE)
    snprintf(storage[3], 128, "%" PRIu64, p->size), out->names[out->n] = "size",
                                                    out->values[out->n++] = storage[3];
  if (p->present & PCC_PARAM_HASH)
    snprintf(storage[4], 128, "%" PRId32, p->hash), out->names[out->n] = "hash",
                                                    out->values[out->n++] = storage[4];
  if (p->present & PCC_PARAM_DIGEST)
    pcc_digest_to_hex(&p->digest, storage[5]), out->names[out->n] = "digest",
                                               out->values[out->n++] = storage[5];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 9)
    return 0;
  unsigned required = data[0] & 0x7f;
  check_double(data + 1);
  char *text = fuzz_text(data + 9, size - 9);
  pairs in = {.n = 0};
  for (char *line = text, *next; line != NULL && in.n < PAIRS_MAX; line = next) {
    next = strchr(line, '\n');
    if (next != NULL)
      *next++ = '\0';
    char *eq = strchr(line, '=');
    if (eq == NULL)
      continue;
    *eq = '\0';
    in.names[in.n] = line;
    in.values[in.n++] = eq + 1;
  }
  for (size_t i = 0; i < in.n; i++) { /* the decimal reader on every value */
    int64_t number;
    if (pcc_parse_i64(in.values[i], INT64_MIN, INT64_MAX, &number) == PCC_PROTO_OK) {
      char printed[32];
      int64_t again;
      snprintf(printed, sizeof printed, "%" PRId64, number);
      FUZZ_CHECK(pcc_parse_i64(printed, INT64_MIN, INT64_MAX, &again) == PCC_PROTO_OK &&
                 again == number);
    }
  }

  pcc_params params;
  const char *bad = NULL;
  pcc_proto_status rc = pcc_params_parse(get_pair, &in, required, &params, &bad);
  if (rc != PCC_PROTO_OK) {
    FUZZ_CHECK(rc == PCC_PROTO_MISSING || rc == PCC_PROTO_INVALID || rc == PCC_PROTO_RANGE);
    bool named = false;
    for (size_t i = 0; bad != NULL && i < sizeof known / sizeof known[0]; i++)
      named = named || strcmp(bad, known[i]) == 0;
    FUZZ_CHECK(named);
    free(text);
    return 0;
  }
  FUZZ_CHECK((params.present & required) == required);
  FUZZ_CHECK(params.opt >= 0 && params.opt <= PCC_OPT_MAX);
  if (params.present & PCC_PARAM_PATH) {
    FUZZ_CHECK(params.path[0] == '/' && strlen(params.path) == params.path_len &&
               params.path_len <= PCC_PATH_MAX);
    for (size_t i = 0; i < params.path_len; i++)
      FUZZ_CHECK((unsigned char)params.path[i] >= 0x20 && params.path[i] != 0x7f);
  }
  FUZZ_CHECK(!(params.present & PCC_PARAM_MTIME) || params.mtime >= 0);
  FUZZ_CHECK(!(params.present & PCC_PARAM_SIZE) || params.size <= (uint64_t)INT64_MAX);
  FUZZ_CHECK(!(params.present & PCC_PARAM_MAGIC) || (params.magic.bytes[2] == '\r' &&
                                                     params.magic.bytes[3] == '\n'));

  /* printed back and parsed again: the same parameters */
  char storage[6][128];
  pairs printed;
  pcc_params again;
  print_params(&params, &printed, storage);
  FUZZ_CHECK(pcc_params_parse(get_pair, &printed, required, &again, &bad) == PCC_PROTO_OK);
  FUZZ_CHECK(again.present == params.present && again.opt == params.opt &&
             pcc_magic_equal(&again.magic, &params.magic) && again.mtime == params.mtime &&
             again.size == params.size && again.hash == params.hash &&
             pcc_digest_equal(&again.digest, &params.digest) &&
             again.path_len == params.path_len);
  free(text);
  return 0;
}
