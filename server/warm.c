/* warm.c: what makes a fleet start warm (docs/API.md, "Warm start"): import profiles recorded
 * by clients, bundles that serve a whole profile's pycs in one response, and batched lookups. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service_internal.h"

#define PROFILE_PATHS_PER_POST 20000
#define BUNDLE_MAX_BYTES ((size_t)256 << 20)
#define BATCH_MAX 1000

/* A profile name: 1..PCC_PROFILE_NAME_MAX printable characters. */
static bool profile_name_ok(const char *name, svc_answer *answer)
{
  size_t len = name ? strlen(name) : 0;
  bool ok = len > 0 && len <= PCC_PROFILE_NAME_MAX;
  for (size_t i = 0; ok && i < len; i++)
    ok = (unsigned char)name[i] >= 0x20 && name[i] != 0x7f;
  if (!ok) {
    svc_answer_error(answer, 400, "bad-parameter", "profile: 1 to %d printable characters",
                     PCC_PROFILE_NAME_MAX);
    svc_answer_extra_string(answer, "param", "profile");
  }
  return ok;
}

void svc_profile_record(pcc_service *service, const pcc_params *params, const char *name,
                        const uint8_t *body, size_t len, svc_answer *answer)
{
  if (!profile_name_ok(name, answer))
    return;
  cJSON *doc = body ? cJSON_ParseWithLength((const char *)body, len) : NULL;
  const cJSON *paths = cJSON_GetObjectItemCaseSensitive(doc, "paths");
  int n = cJSON_GetArraySize(paths);
  const char **list = n > 0 ? calloc((size_t)n, sizeof *list) : NULL;
  size_t count = 0;
  bool ok = cJSON_IsArray(paths) && n <= PROFILE_PATHS_PER_POST && (n == 0 || list != NULL);
  const cJSON *item;
  cJSON_ArrayForEach(item, paths) {
    if (!ok)
      break;
    ok = cJSON_IsString(item) && item->valuestring[0] == '/' &&
         strlen(item->valuestring) <= PCC_PATH_MAX;
    if (ok)
      list[count++] = item->valuestring;
  }
  if (!ok) {
    svc_answer_error(answer, 400, "bad-parameter", "body: want {\"paths\": [absolute paths]}, "
                     "at most %d", PROFILE_PATHS_PER_POST);
    svc_answer_extra_string(answer, "param", "paths");
  } else {
    size_t total = 0;
    pcc_store_status rc = pcc_store_profile_merge(service->store, &params->magic, params->opt,
                                                  name, list, count, &total);
    if (rc == PCC_STORE_OK) {
      answer->http_status = 200;
      answer->json = cJSON_CreateObject();
      cJSON_AddNumberToObject(answer->json, "paths", (double)total);
    } else {
      svc_answer_store_error(answer, rc);
    }
  }
  free(list);
  cJSON_Delete(doc);
}

typedef struct {
  char **paths;
  size_t n, cap;
} path_copy;

static void copy_path(const char *path, size_t len, void *ctx)
{
  path_copy *copy = ctx;
  if (copy->n == copy->cap) {
    size_t cap = copy->cap ? 2 * copy->cap : 256;
    char **grown = realloc(copy->paths, cap * sizeof *grown);
    if (grown == NULL)
      return;
    copy->paths = grown;
    copy->cap = cap;
  }
  char *path_copy_ = strndup(path, len);
  if (path_copy_ != NULL)
    copy->paths[copy->n++] = path_copy_;
}

/* Adds the stored entry of one path (code only, checksum verified) to the bundle or JSON. */
static void bundle_add(pcc_service *service, const pcc_params *params, const char *path,
                       pcc_bundle_writer *writer, cJSON *entries, unsigned *added)
{
  pcc_path_record record;
  pcc_blob *blob = NULL;
  if (pcc_store_get_path(service->store, &params->magic, params->opt, path, strlen(path),
                         &record) != PCC_STORE_OK ||
      pcc_store_get_blob(service->store, &params->magic, params->opt, &record.digest, &blob) !=
        PCC_STORE_OK)
    return; /* absent, or corrupt (dropped): the client asks for it on its own */
  if (blob->kind != PCC_BLOB_CODE) {
    free(blob);
    return;
  }
  pcc_params entry_params = *params;
  entry_params.path = path;
  entry_params.path_len = strlen(path);
  entry_params.mtime = record.mtime;
  entry_params.size = record.size;
  svc_answer served = {.blob = blob, .digest = record.digest, .hash_checked = true,
                       .compiler = blob->compiler};
  pcc_entry_view view;
  uint8_t *pyc = svc_entry_view(&entry_params, &served, &view);
  if (pyc != NULL && writer != NULL) {
    pcc_bundle_entry entry = {path, entry_params.path_len, record.mtime, record.size,
                              record.hash, record.digest, pyc, view.pyc_len, 0};
    if (pcc_bundle_writer_add(writer, &entry) == PCC_PROTO_OK)
      (*added)++;
  } else if (pyc != NULL) {
    cJSON *item = pcc_entry_to_json(&view);
    if (item != NULL) {
      cJSON_AddItemToArray(entries, item);
      (*added)++;
    }
  }
  free(pyc);
  free(blob);
}

void svc_bundle(pcc_service *service, const pcc_params *params, const char *name, bool json,
                svc_answer *answer)
{
  if (!profile_name_ok(name, answer))
    return;
  path_copy copy = {0};
  pcc_store_status rc = pcc_store_profile_read(service->store, &params->magic, params->opt, name,
                                               copy_path, &copy);
  pcc_bundle_writer *writer = NULL;
  cJSON *doc = NULL, *entries = NULL;
  unsigned added = 0;
  if (rc == PCC_STORE_NOTFOUND) {
    svc_answer_error(answer, 404, "not-found", "no profile of that name for this magic and opt");
  } else if (rc != PCC_STORE_OK) {
    svc_answer_store_error(answer, rc);
  } else if (json) {
    doc = cJSON_CreateObject();
    char hex[2 * PCC_MAGIC_LEN + 1];
    pcc_magic_to_hex(&params->magic, hex);
    cJSON_AddStringToObject(doc, "magic", hex);
    cJSON_AddNumberToObject(doc, "opt", params->opt);
    cJSON_AddStringToObject(doc, "profile", name);
    entries = cJSON_AddArrayToObject(doc, "entries");
  } else if (pcc_bundle_writer_open(&params->magic, params->opt, BUNDLE_MAX_BYTES, &writer) !=
             PCC_PROTO_OK) {
    svc_answer_error(answer, 500, "internal", "out of memory");
  }
  if (doc != NULL || writer != NULL) {
    for (size_t i = 0; i < copy.n; i++)
      bundle_add(service, params, copy.paths[i], writer, entries, &added);
    answer->http_status = 200;
    answer->raw_entries = added;
    if (doc != NULL) {
      answer->json = doc;
    } else if (pcc_bundle_writer_finish(writer, &answer->raw, &answer->raw_len) ==
               PCC_PROTO_OK) {
      answer->raw_type = "application/x-pycached-bundle";
    } else {
      svc_answer_error(answer, 500, "internal", "cannot finish the bundle");
    }
  }
  pcc_bundle_writer_close(writer);
  for (size_t i = 0; i < copy.n; i++)
    free(copy.paths[i]);
  free(copy.paths);
}

/* Reads a lookup's parameters from a JSON object (strings or numbers) for pcc_params_parse. */
typedef struct {
  const cJSON *object;
  char numbers[7][32]; /* numbers printed, one slot a parameter */
  int used;
} json_getter;

static const char *json_param(void *ctx, const char *name)
{
  json_getter *getter = ctx;
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(getter->object, name);
  if (cJSON_IsString(item))
    return item->valuestring;
  if (!cJSON_IsNumber(item) || getter->used == 7)
    return NULL;
  char *slot = getter->numbers[getter->used++];
  if (item->valuedouble != (double)(int64_t)item->valuedouble)
    snprintf(slot, 32, "%.17g", item->valuedouble); /* not whole: parse rejects it */
  else
    snprintf(slot, 32, "%lld", (long long)item->valuedouble);
  return slot;
}

/* One lookup of a batch, answered as the item /v1/code would send. */
static cJSON *batch_one(pcc_service *service, const cJSON *lookup)
{
  json_getter getter = {.object = lookup};
  pcc_params params;
  const char *bad = NULL;
  svc_answer answer;
  memset(&answer, 0, sizeof answer);
  pcc_proto_status rc =
    cJSON_IsObject(lookup)
      ? pcc_params_parse(json_param, &getter,
                         PCC_PARAM_MAGIC | PCC_PARAM_PATH | PCC_PARAM_MTIME | PCC_PARAM_SIZE,
                         &params, &bad)
      : PCC_PROTO_INVALID;
  cJSON *item = NULL;
  if (rc != PCC_PROTO_OK) {
    item = pcc_error_to_json("bad-parameter", bad ? bad : "each lookup is an object");
    if (item != NULL && bad != NULL)
      cJSON_AddStringToObject(item, "param", bad);
    return item;
  }
  svc_lookup(service, &params, &answer);
  if (answer.error == NULL) {
    pcc_entry_view view;
    uint8_t *pyc = svc_entry_view(&params, &answer, &view);
    item = pyc ? pcc_entry_to_json(&view) : NULL;
    free(pyc);
  } else {
    item = pcc_error_to_json(answer.error, answer.message);
    for (cJSON *extra = answer.extra ? answer.extra->child : NULL; item && extra;
         extra = extra->next)
      cJSON_AddItemToObject(item, extra->string, cJSON_Duplicate(extra, true));
  }
  svc_answer_clear(&answer);
  return item;
}

void svc_batch(pcc_service *service, const uint8_t *body, size_t len, svc_answer *answer)
{
  cJSON *doc = body ? cJSON_ParseWithLength((const char *)body, len) : NULL;
  const cJSON *lookups = cJSON_GetObjectItemCaseSensitive(doc, "lookups");
  int n = cJSON_GetArraySize(lookups);
  if (!cJSON_IsArray(lookups) || n > BATCH_MAX) {
    cJSON_Delete(doc);
    svc_answer_error(answer, 400, "bad-parameter", "body: want {\"lookups\": [...]} with at most "
                     "%d lookups", BATCH_MAX);
    svc_answer_extra_string(answer, "param", "lookups");
    return;
  }
  cJSON *json = cJSON_CreateObject();
  cJSON *results = cJSON_AddArrayToObject(json, "results");
  const cJSON *lookup;
  cJSON_ArrayForEach(lookup, lookups) {
    cJSON *item = batch_one(service, lookup);
    cJSON_AddItemToArray(results, item ? item : cJSON_CreateNull());
  }
  cJSON_Delete(doc);
  answer->http_status = 200;
  answer->json = json;
}
