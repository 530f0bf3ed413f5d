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

/* Builds the bundle of a profile: the binary form into *data (caller frees) or, with doc set,
 * the entries into doc's "entries". Returns false (answer set) on a store error or no profile. */
static bool build_bundle(pcc_service *service, const pcc_params *params, const char *name,
                         cJSON *doc, uint8_t **data, size_t *len, unsigned *added,
                         svc_answer *answer)
{
  path_copy copy = {0};
  pcc_store_status rc = pcc_store_profile_read(service->store, &params->magic, params->opt, name,
                                               copy_path, &copy);
  pcc_bundle_writer *writer = NULL;
  bool ok = false;
  *added = 0;
  if (rc == PCC_STORE_NOTFOUND)
    svc_answer_error(answer, 404, "not-found", "no profile of that name for this magic and opt");
  else if (rc != PCC_STORE_OK)
    svc_answer_store_error(answer, rc);
  else if (doc == NULL && pcc_bundle_writer_open(&params->magic, params->opt, BUNDLE_MAX_BYTES,
                                                 &writer) != PCC_PROTO_OK)
    svc_answer_error(answer, 500, "internal", "out of memory");
  else
    ok = true;
  cJSON *entries = doc ? cJSON_GetObjectItemCaseSensitive(doc, "entries") : NULL;
  for (size_t i = 0; ok && i < copy.n; i++)
    bundle_add(service, params, copy.paths[i], writer, entries, added);
  if (ok && writer != NULL && pcc_bundle_writer_finish(writer, data, len) != PCC_PROTO_OK) {
    svc_answer_error(answer, 500, "internal", "cannot finish the bundle");
    ok = false;
  }
  pcc_bundle_writer_close(writer);
  for (size_t i = 0; i < copy.n; i++)
    free(copy.paths[i]);
  free(copy.paths);
  return ok;
}

void svc_bundle_release(void *ctx)
{
  svc_bundle_bytes *bytes = ctx;
  if (bytes != NULL && atomic_fetch_sub(&bytes->refs, 1) == 1) {
    free(bytes->data);
    free(bytes);
  }
}

void svc_bundle_cache_clear(pcc_service *service)
{
  for (size_t i = 0; i < SVC_BUNDLE_SLOTS; i++) {
    svc_bundle_release(service->bundles[i].bytes);
    service->bundles[i].bytes = NULL;
  }
}

static bool slot_is(const svc_bundle_slot *slot, const pcc_params *params, const char *name)
{
  return slot->bytes != NULL && slot->opt == params->opt &&
         pcc_magic_equal(&slot->magic, &params->magic) && strcmp(slot->name, name) == 0;
}

/* The cached bundle of (magic, opt, name) at this generation, with a reference taken, or NULL. */
static svc_bundle_bytes *cache_take(pcc_service *service, const pcc_params *params,
                                    const char *name, uint64_t generation)
{
  svc_bundle_bytes *found = NULL;
  pthread_mutex_lock(&service->bundles_lock);
  for (size_t i = 0; i < SVC_BUNDLE_SLOTS && found == NULL; i++) {
    svc_bundle_slot *slot = &service->bundles[i];
    if (slot_is(slot, params, name) && slot->generation == generation) {
      found = slot->bytes;
      atomic_fetch_add(&found->refs, 1);
      slot->last_used = ++service->bundle_clock;
    }
  }
  pthread_mutex_unlock(&service->bundles_lock);
  return found;
}

/* Caches a fresh bundle (its reference for the cache is already counted in refs), replacing
 * an older one of the same profile, else a free or the least recently used slot; the cache
 * keeps at most SVC_BUNDLE_CACHE_BYTES. */
static void cache_put(pcc_service *service, const pcc_params *params, const char *name,
                      uint64_t generation, svc_bundle_bytes *bytes)
{
  pthread_mutex_lock(&service->bundles_lock);
  svc_bundle_slot *victim = &service->bundles[0];
  size_t total = bytes->len;
  for (size_t i = 0; i < SVC_BUNDLE_SLOTS; i++) {
    svc_bundle_slot *slot = &service->bundles[i];
    if (slot_is(slot, params, name) || slot->bytes == NULL) {
      victim = slot;
      break;
    }
    if (slot->last_used < victim->last_used)
      victim = slot;
  }
  svc_bundle_release(victim->bytes);
  victim->bytes = NULL;
  for (size_t i = 0; i < SVC_BUNDLE_SLOTS; i++) /* then make room */
    total += service->bundles[i].bytes ? service->bundles[i].bytes->len : 0;
  for (size_t i = 0; i < SVC_BUNDLE_SLOTS && total > SVC_BUNDLE_CACHE_BYTES; i++)
    if (service->bundles[i].bytes != NULL) {
      total -= service->bundles[i].bytes->len;
      svc_bundle_release(service->bundles[i].bytes);
      service->bundles[i].bytes = NULL;
    }
  if (total <= SVC_BUNDLE_CACHE_BYTES) {
    victim->magic = params->magic;
    victim->opt = params->opt;
    snprintf(victim->name, sizeof victim->name, "%s", name);
    victim->generation = generation;
    victim->last_used = ++service->bundle_clock;
    victim->bytes = bytes;
  } else {
    svc_bundle_release(bytes); /* too big to keep: only this response has it */
  }
  pthread_mutex_unlock(&service->bundles_lock);
}

void svc_bundle(pcc_service *service, const pcc_params *params, const char *name, bool json,
                svc_answer *answer)
{
  if (!profile_name_ok(name, answer))
    return;
  unsigned added = 0;
  if (json) {
    cJSON *doc = cJSON_CreateObject();
    char hex[2 * PCC_MAGIC_LEN + 1];
    pcc_magic_to_hex(&params->magic, hex);
    cJSON_AddStringToObject(doc, "magic", hex);
    cJSON_AddNumberToObject(doc, "opt", params->opt);
    cJSON_AddStringToObject(doc, "profile", name);
    cJSON_AddArrayToObject(doc, "entries");
    if (!build_bundle(service, params, name, doc, NULL, NULL, &added, answer)) {
      cJSON_Delete(doc);
      return;
    }
    answer->http_status = 200;
    answer->json = doc;
    return;
  }
  uint64_t generation = pcc_store_generation(service->store);
  svc_bundle_bytes *bytes = cache_take(service, params, name, generation);
  if (bytes == NULL) {
    uint8_t *data = NULL;
    size_t len = 0;
    if (!build_bundle(service, params, name, NULL, &data, &len, &added, answer))
      return;
    bytes = malloc(sizeof *bytes);
    if (bytes == NULL) {
      free(data);
      svc_answer_error(answer, 500, "internal", "out of memory");
      return;
    }
    atomic_init(&bytes->refs, 2); /* the cache's and this response's */
    bytes->data = data;
    bytes->len = len;
    bytes->entries = added;
    cache_put(service, params, name, generation, bytes);
  }
  answer->http_status = 200;
  answer->raw = bytes->data;
  answer->raw_len = bytes->len;
  answer->raw_entries = bytes->entries;
  answer->raw_type = "application/x-pycached-bundle";
  answer->raw_release = svc_bundle_release;
  answer->raw_ctx = bytes;
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

/* ---- client reports ------------------------------------------------------------------------ */

/* A reason is 1..SVC_REASON_LEN characters of [a-z0-9-]. */
static bool reason_ok(const char *reason)
{
  size_t len = strlen(reason);
  for (size_t i = 0; i < len; i++)
    if (!((reason[i] >= 'a' && reason[i] <= 'z') || (reason[i] >= '0' && reason[i] <= '9') ||
          reason[i] == '-'))
      return false;
  return len > 0 && len <= SVC_REASON_LEN;
}

/* Adds n to a reason of a magic's counters (a new reason takes a slot while there is one). */
static void count_reason(pcc_service *service, svc_counters *counters, const char *reason,
                         uint64_t n)
{
  unsigned count = atomic_load(&counters->n_reasons);
  for (unsigned i = 0; i < count; i++)
    if (strcmp(counters->reasons[i], reason) == 0) {
      atomic_fetch_add(&counters->reason_counts[i], n);
      return;
    }
  pthread_mutex_lock(&service->counters_lock);
  count = atomic_load(&counters->n_reasons);
  unsigned i = 0;
  while (i < count && strcmp(counters->reasons[i], reason) != 0)
    i++;
  if (i == count && count < SVC_REASONS_MAX) {
    snprintf(counters->reasons[i], sizeof counters->reasons[i], "%s", reason);
    atomic_store(&counters->n_reasons, count + 1); /* published after the name is written */
  }
  if (i < SVC_REASONS_MAX && i <= count)
    atomic_fetch_add(&counters->reason_counts[i], n);
  pthread_mutex_unlock(&service->counters_lock);
}

void svc_report(pcc_service *service, const pcc_params *params, const uint8_t *body, size_t len,
                svc_answer *answer)
{
  cJSON *doc = body ? cJSON_ParseWithLength((const char *)body, len) : NULL;
  const cJSON *fallbacks = cJSON_GetObjectItemCaseSensitive(doc, "fallbacks");
  bool ok = cJSON_IsObject(fallbacks) && cJSON_GetArraySize(fallbacks) <= SVC_REASONS_MAX;
  const cJSON *item;
  cJSON_ArrayForEach(item, fallbacks) {
    ok = ok && reason_ok(item->string) && cJSON_IsNumber(item) && item->valuedouble >= 0 &&
         item->valuedouble <= 1e9 && item->valuedouble == (double)(int64_t)item->valuedouble;
  }
  if (!ok) {
    cJSON_Delete(doc);
    svc_answer_error(answer, 400, "bad-parameter", "body: want {\"fallbacks\": {reason: count}}"
                     " with at most %d reasons of [a-z0-9-]", SVC_REASONS_MAX);
    svc_answer_extra_string(answer, "param", "fallbacks");
    return;
  }
  svc_counters *counters = svc_counters_for(service, &params->magic);
  cJSON_ArrayForEach(item, fallbacks) {
    count_reason(service, counters, item->string, (uint64_t)item->valuedouble);
  }
  cJSON_Delete(doc);
  answer->http_status = 200;
  answer->json = cJSON_CreateObject();
  cJSON_AddBoolToObject(answer->json, "recorded", true);
}
