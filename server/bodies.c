/* bodies.c: the JSON bodies of the warm-start requests, parsed and checked (bodies.h). Nothing
 * here touches the store: warm.c looks up, merges and counts what these functions return. */
#include "bodies.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The document of a body, or NULL when there is none or it is not JSON. */
static cJSON *body_doc(const uint8_t *body, size_t len)
{
  return body ? cJSON_ParseWithLength((const char *)body, len) : NULL;
}

/* ---- POST /v1/profile --------------------------------------------------------------------- */

void pcc_body_profile_free(pcc_body_profile *profile)
{
  if (profile == NULL)
    return;
  free(profile->paths);
  cJSON_Delete(profile->doc);
  *profile = (pcc_body_profile){0};
}

bool pcc_body_profile_parse(const uint8_t *body, size_t len, pcc_body_profile *out)
{
  pcc_body_profile profile = {body_doc(body, len), NULL, 0};
  const cJSON *paths = cJSON_GetObjectItemCaseSensitive(profile.doc, "paths");
  int n = cJSON_GetArraySize(paths);
  bool ok = cJSON_IsArray(paths) && n <= PCC_PROFILE_PATHS_MAX;
  if (ok && n > 0)
    ok = (profile.paths = calloc((size_t)n, sizeof *profile.paths)) != NULL;
  const cJSON *item;
  cJSON_ArrayForEach(item, paths) {
    if (!ok)
      break;
    ok = cJSON_IsString(item) && item->valuestring[0] == '/' &&
         strlen(item->valuestring) <= PCC_PATH_MAX;
    if (ok)
      profile.paths[profile.count++] = item->valuestring;
  }
  if (!ok) {
    pcc_body_profile_free(&profile);
    return false;
  }
  *out = profile;
  return true;
}

/* ---- POST /v1/batch ----------------------------------------------------------------------- */

/* Reads a lookup's parameters from a JSON object (strings or numbers) for pcc_params_parse. */
typedef struct {
  const cJSON *object;
  char numbers[7][32]; /* numbers printed, one slot a parameter */
  int used;
} json_getter;

/* A number is handed to pcc_params_parse as the decimal text of its integer when it is whole and
 * within int64_t, else in a form that pcc_params_parse refuses (a fraction, 1e300). */
static const char *json_param(void *ctx, const char *name)
{
  json_getter *getter = ctx;
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(getter->object, name);
  if (cJSON_IsString(item))
    return item->valuestring;
  if (!cJSON_IsNumber(item) || getter->used == 7)
    return NULL;
  char *slot = getter->numbers[getter->used++];
  int64_t whole;
  if (pcc_double_to_i64(item->valuedouble, &whole))
    snprintf(slot, 32, "%lld", (long long)whole);
  else
    snprintf(slot, 32, "%.17g", item->valuedouble); /* not a whole int64_t: parse rejects it */
  return slot;
}

/* Parses one lookup into *out: false without memory. */
static bool lookup_parse(const cJSON *lookup, pcc_body_lookup *out)
{
  json_getter getter = {.object = lookup};
  const char *bad = NULL;
  pcc_proto_status rc =
    cJSON_IsObject(lookup)
      ? pcc_params_parse(json_param, &getter,
                         PCC_PARAM_MAGIC | PCC_PARAM_PATH | PCC_PARAM_MTIME | PCC_PARAM_SIZE,
                         &out->params, &bad)
      : PCC_PROTO_INVALID;
  out->same_as = PCC_BODY_NOT_SAME;
  if (rc == PCC_PROTO_OK) {
    out->path = strndup(out->params.path, out->params.path_len);
    out->params.path = out->path;
    return out->path != NULL;
  }
  cJSON *item = pcc_error_to_json("bad-parameter", bad ? bad : "each lookup is an object");
  if (item != NULL && bad != NULL)
    cJSON_AddStringToObject(item, "param", bad); /* a parameter's name: short */
  out->error = item ? cJSON_PrintUnformatted(item) : NULL;
  cJSON_Delete(item);
  return out->error != NULL && strlen(out->error) <= PCC_BATCH_SMALL_MAX;
}

static bool same_lookup(const pcc_params *a, const pcc_params *b)
{
  const unsigned checks = PCC_PARAM_HASH | PCC_PARAM_DIGEST;
  return pcc_magic_equal(&a->magic, &b->magic) && a->opt == b->opt && a->mtime == b->mtime &&
         a->size == b->size && (a->present & checks) == (b->present & checks) &&
         (!(a->present & PCC_PARAM_HASH) || a->hash == b->hash) &&
         (!(a->present & PCC_PARAM_DIGEST) || pcc_digest_equal(&a->digest, &b->digest)) &&
         a->path_len == b->path_len && memcmp(a->path, b->path, a->path_len) == 0;
}

/* Points every lookup identical to an earlier one at the first (a hash table of indexes). */
static bool lookups_dedupe(pcc_body_lookup *lookups, size_t n)
{
  size_t slots = 16;
  while (slots < 2 * n)
    slots *= 2;
  size_t *table = calloc(slots, sizeof *table); /* index + 1; 0: free */
  if (table == NULL)
    return false;
  for (size_t i = 0; i < n; i++) {
    const pcc_params *p = &lookups[i].params;
    if (lookups[i].error != NULL)
      continue;
    uint64_t h = pcc_checksum(p->path, p->path_len) ^
                 ((uint64_t)p->mtime * 0x9e3779b97f4a7c15ull) ^ (p->size << 7);
    for (size_t s = (size_t)h & (slots - 1);; s = (s + 1) & (slots - 1)) {
      if (table[s] == 0) {
        table[s] = i + 1;
        break;
      }
      if (same_lookup(&lookups[table[s] - 1].params, p)) {
        lookups[i].same_as = table[s] - 1;
        break;
      }
    }
  }
  free(table);
  return true;
}

void pcc_body_lookups_free(pcc_body_lookup *lookups, size_t n)
{
  for (size_t i = 0; lookups != NULL && i < n; i++) {
    free(lookups[i].path);
    free(lookups[i].error);
  }
  free(lookups);
}

pcc_proto_status pcc_body_batch_parse(const uint8_t *body, size_t len, uint64_t max_lookups,
                                      uint64_t framing, uint64_t response_max,
                                      pcc_body_lookup **lookups, size_t *n)
{
  cJSON *doc = body_doc(body, len);
  const cJSON *array = cJSON_GetObjectItemCaseSensitive(doc, "lookups");
  int count = cJSON_GetArraySize(array);
  *n = 0;
  if (!cJSON_IsArray(array) || (uint64_t)count > max_lookups) {
    cJSON_Delete(doc);
    return PCC_PROTO_INVALID;
  }
  *n = (size_t)count;
  if (framing + (uint64_t)count * (PCC_BATCH_SMALL_MAX + 1) > response_max) {
    cJSON_Delete(doc);
    return PCC_PROTO_RANGE;
  }
  pcc_body_lookup *list = count > 0 ? calloc((size_t)count, sizeof *list) : NULL;
  bool ok = count == 0 || list != NULL;
  size_t parsed = 0;
  const cJSON *lookup;
  cJSON_ArrayForEach(lookup, array) {
    if (ok)
      ok = lookup_parse(lookup, &list[parsed++]);
  }
  cJSON_Delete(doc);
  if (!ok || !lookups_dedupe(list, parsed)) {
    pcc_body_lookups_free(list, parsed);
    return PCC_PROTO_NOMEM;
  }
  *lookups = list;
  return PCC_PROTO_OK;
}

/* ---- POST /v1/report ---------------------------------------------------------------------- */

/* A reason is 1..PCC_REASON_LEN characters of [a-z0-9-]. */
static bool reason_ok(const char *reason)
{
  size_t len = strlen(reason);
  for (size_t i = 0; i < len; i++)
    if (!((reason[i] >= 'a' && reason[i] <= 'z') || (reason[i] >= '0' && reason[i] <= '9') ||
          reason[i] == '-'))
      return false;
  return len > 0 && len <= PCC_REASON_LEN;
}

void pcc_body_report_free(pcc_body_report *report)
{
  if (report == NULL)
    return;
  cJSON_Delete(report->doc);
  report->doc = NULL;
  report->n = 0;
}

bool pcc_body_report_parse(const uint8_t *body, size_t len, pcc_body_report *out)
{
  cJSON *doc = body_doc(body, len);
  const cJSON *fallbacks = cJSON_GetObjectItemCaseSensitive(doc, "fallbacks");
  bool ok = cJSON_IsObject(fallbacks) && cJSON_GetArraySize(fallbacks) <= PCC_REASONS_MAX;
  out->doc = doc;
  out->n = 0;
  const cJSON *item;
  cJSON_ArrayForEach(item, fallbacks) {
    int64_t count = -1;
    ok = ok && reason_ok(item->string) && cJSON_IsNumber(item) &&
         pcc_double_to_i64(item->valuedouble, &count) && count >= 0 && count <= 1000000000;
    if (!ok)
      break;
    out->items[out->n].reason = item->string;
    out->items[out->n].count = (uint64_t)count;
    out->n++;
  }
  if (!ok)
    pcc_body_report_free(out);
  return ok;
}
