/* fuzz_warm_bodies.c: the JSON bodies of the warm-start requests, as the server parses them
 * (server/bodies.c, for warm.c): POST /v1/profile {"paths": [...]}, POST /v1/batch
 * {"lookups": [...]} (each lookup through pcc_params_parse, numbers through pcc_double_to_i64,
 * identical lookups deduplicated) and POST /v1/report {"fallbacks": {...}}.
 *
 * Input: byte 0 picks the body (0 profile, 1 batch, 2 report, by its value modulo 3); the rest is
 * the body. Checked: what parses is within the documented limits; every batch lookup is either a
 * short bad-parameter result or valid parameters, and one marked the same as an earlier one is
 * identical to it. */
#include "bodies.h"
#include "fuzz_common.h"

static void check_profile(const uint8_t *body, size_t len)
{
  pcc_body_profile profile;
  if (!pcc_body_profile_parse(body, len, &profile))
    return;
  FUZZ_CHECK(profile.count <= PCC_PROFILE_PATHS_MAX);
  for (size_t i = 0; i < profile.count; i++)
    FUZZ_CHECK(profile.paths[i][0] == '/' && strlen(profile.paths[i]) <= PCC_PATH_MAX);
  pcc_body_profile_free(&profile);
}

/* The same lookup: "opt" may be given or left at its default, hash and digest must agree. */
static bool same_params(const pcc_params *a, const pcc_params *b)
{
  const unsigned checks = PCC_PARAM_HASH | PCC_PARAM_DIGEST;
  return pcc_magic_equal(&a->magic, &b->magic) && a->opt == b->opt && a->mtime == b->mtime &&
         a->size == b->size && (a->present & checks) == (b->present & checks) &&
         a->hash == b->hash &&
         pcc_digest_equal(&a->digest, &b->digest) && a->path_len == b->path_len &&
         memcmp(a->path, b->path, a->path_len) == 0;
}

static void check_batch(const uint8_t *body, size_t len)
{
  pcc_body_lookup *lookups = NULL;
  size_t n = 0;
  const uint64_t max_lookups = PCC_BATCH_LOOKUPS_DEFAULT, framing = 14;
  pcc_proto_status rc = pcc_body_batch_parse(body, len, max_lookups, framing,
                                             PCC_BATCH_RESPONSE_MAX_DEFAULT, &lookups, &n);
  FUZZ_CHECK(rc == PCC_PROTO_OK || rc == PCC_PROTO_INVALID || rc == PCC_PROTO_RANGE);
  if (rc != PCC_PROTO_OK)
    return;
  FUZZ_CHECK(n <= max_lookups && (n == 0 || lookups != NULL));
  const unsigned required = PCC_PARAM_MAGIC | PCC_PARAM_PATH | PCC_PARAM_MTIME | PCC_PARAM_SIZE;
  for (size_t i = 0; i < n; i++) {
    const pcc_body_lookup *l = &lookups[i];
    if (l->error != NULL) {
      FUZZ_CHECK(l->path == NULL && strlen(l->error) <= PCC_BATCH_SMALL_MAX &&
                 l->same_as == PCC_BODY_NOT_SAME);
      cJSON *error = cJSON_Parse(l->error);
      FUZZ_CHECK(cJSON_IsObject(error));
      cJSON_Delete(error);
      continue;
    }
    FUZZ_CHECK((l->params.present & required) == required && l->params.path == l->path);
    FUZZ_CHECK(l->params.mtime >= 0 && l->params.size <= (uint64_t)INT64_MAX);
    if (l->same_as != PCC_BODY_NOT_SAME) {
      FUZZ_CHECK(l->same_as < i && lookups[l->same_as].error == NULL &&
                 lookups[l->same_as].same_as == PCC_BODY_NOT_SAME);
      FUZZ_CHECK(same_params(&l->params, &lookups[l->same_as].params));
    }
  }
  pcc_body_lookups_free(lookups, n);
}

static void check_report(const uint8_t *body, size_t len)
{
  pcc_body_report report;
  if (!pcc_body_report_parse(body, len, &report))
    return;
  FUZZ_CHECK(report.n <= PCC_REASONS_MAX);
  for (size_t i = 0; i < report.n; i++) {
    size_t reason_len = strlen(report.items[i].reason);
    FUZZ_CHECK(reason_len > 0 && reason_len <= PCC_REASON_LEN);
    FUZZ_CHECK(report.items[i].count <= 1000000000);
  }
  pcc_body_report_free(&report);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  const uint8_t *body = size > 1 ? data + 1 : NULL; /* http.c hands a handler NULL when empty */
  switch (data[0] % 3) {
  case 0: check_profile(body, size - 1); break;
  case 1: check_batch(body, size - 1); break;
  default: check_report(body, size - 1); break;
  }
  return 0;
}
