/* warm.c: the warm-start feature of pycached (docs/API.md, "Warm start"): import profiles
 * recorded by clients (POST /v1/profile), bundles that serve a whole profile's pycs in one
 * response (GET /v1/bundle; built once and kept while the store is unchanged), batched lookups
 * (POST /v1/batch) and the fallbacks clients report at exit (POST /v1/report). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>
#include <stdatomic.h>

#include "route.h"

/* A bundle built once and served to every start of the program while the store is unchanged.
 * refs: 1 while cached, plus 1 per response still sending it. */
typedef struct {
  atomic_uint refs;
  uint8_t *data;
  size_t len;
  unsigned entries;
  pcc_digest *digests; /* of its entries' blobs, whose uses each serving records */
} bundle_bytes;

typedef struct {
  pcc_magic magic;
  int opt;
  char ns[PCC_NAMESPACE_MAX + 1];
  char name[PCC_PROFILE_NAME_MAX + 1];
  uint64_t generation;   /* of the store when it was built */
  uint64_t last_used;
  bundle_bytes *bytes;   /* NULL: free slot */
} bundle_slot;

typedef struct {
  pcc_core *core;
  pthread_mutex_t lock;  /* guards the slots */
  bundle_slot slots[PCC_BUNDLE_SLOTS];
  uint64_t clock;
} warm;

/* Route arguments, in each row's order */
enum { ARG_PROFILE, ARG_FORMAT };

/* A profile name: 1..PCC_PROFILE_NAME_MAX printable characters. */
static bool profile_name_ok(const char *name, pcc_answer *answer)
{
  size_t len = name ? strlen(name) : 0;
  bool ok = len > 0 && len <= PCC_PROFILE_NAME_MAX;
  for (size_t i = 0; ok && i < len; i++)
    ok = (unsigned char)name[i] >= 0x20 && name[i] != 0x7f;
  if (!ok) {
    pcc_answer_bad_parameter(answer, "profile", "1 to %d printable characters",
                             PCC_PROFILE_NAME_MAX);
  }
  return ok;
}

static void handle_profile(void *state, pcc_request *req, pcc_answer *answer)
{
  warm *w = state;
  const pcc_params *params = &req->params;
  const char *name = req->args[ARG_PROFILE];
  const uint8_t *body = req->body;
  size_t len = req->body_len;
  if (!profile_name_ok(name, answer))
    return;
  cJSON *doc = body ? cJSON_ParseWithLength((const char *)body, len) : NULL;
  const cJSON *paths = cJSON_GetObjectItemCaseSensitive(doc, "paths");
  int n = cJSON_GetArraySize(paths);
  const char **list = n > 0 ? calloc((size_t)n, sizeof *list) : NULL;
  size_t count = 0;
  bool ok = cJSON_IsArray(paths) && n <= PCC_PROFILE_PATHS_MAX && (n == 0 || list != NULL);
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
    pcc_answer_error(answer, PCC_ERR_BAD_PARAMETER, "body: want {\"paths\": [absolute paths]}, "
                     "at most %d", PCC_PROFILE_PATHS_MAX);
    pcc_answer_extra_string(answer, "param", "paths");
  } else {
    size_t total = 0;
    pcc_store_status rc = pcc_store_profile_merge(pcc_core_store(w->core), req->ns,
                                                  &params->magic, params->opt, name, list, count,
                                                  &total);
    if (rc == PCC_STORE_OK) {
      cJSON *json = cJSON_CreateObject();
      cJSON_AddNumberToObject(json, "paths", (double)total);
      pcc_answer_json(answer, json);
    } else {
      pcc_answer_store_error(answer, rc);
    }
  }
  free(list);
  cJSON_Delete(doc);
}

/* The paths of a profile, copied out of the store's read transaction: one dynbuf of
 * NUL-terminated paths, read one after the other. */
static void copy_path(const char *path, size_t len, void *ctx)
{
  pcc_dynbuf *paths = ctx;
  if (pcc_dynbuf_reserve(paths, len + 1) == PCC_PROTO_OK) {
    pcc_dynbuf_add(paths, path, len);
    pcc_dynbuf_add(paths, "", 1);
  }
}

/* Adds the stored entry of one path (code only, checksum verified) to the bundle (its digest to
 * digests, which has room for every path: a path takes 2 bytes of the list at least) or JSON. */
static void bundle_add(warm *w, const char *ns, const pcc_params *params, const char *path,
                       pcc_bundle_writer *writer, cJSON *entries, pcc_digest *digests,
                       unsigned *added)
{
  pcc_path_record record;
  pcc_blob *blob = NULL;
  pcc_store *store = pcc_core_store(w->core);
  if (pcc_store_get_path(store, ns, &params->magic, params->opt, path, strlen(path), &record) !=
        PCC_STORE_OK ||
      pcc_store_get_blob(store, &params->magic, params->opt, &record.digest, &blob) !=
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
  pcc_answer served;
  pcc_answer_init(&served);
  pcc_answer_blob(&served, blob, &record.digest, true, "hit");
  pcc_entry_view view;
  uint8_t *pyc = pcc_answer_entry_view(&entry_params, &served, &view);
  if (pyc != NULL && writer != NULL) {
    pcc_bundle_entry entry = {path, entry_params.path_len, record.mtime, record.size,
                              record.hash, record.digest, pyc, view.pyc_len, 0};
    if (pcc_bundle_writer_add(writer, &entry) == PCC_PROTO_OK)
      digests[(*added)++] = record.digest;
  } else if (pyc != NULL) {
    cJSON *item = pcc_entry_to_json(&view);
    if (item != NULL) {
      cJSON_AddItemToArray(entries, item);
      (*added)++;
    }
  }
  free(pyc);
  pcc_answer_clear(&served);
}

/* Builds the bundle of a profile: the binary form into *data (caller frees) with the digests of
 * its entries into *digests (caller frees) or, with doc set, the entries into doc's "entries".
 * Returns false (answer set) on a store error or no profile. */
static bool build_bundle(warm *w, const char *ns, const pcc_params *params, const char *name,
                         cJSON *doc, uint8_t **data, size_t *len, pcc_digest **digests,
                         unsigned *added, pcc_answer *answer)
{
  pcc_dynbuf paths;
  pcc_dynbuf_init(&paths, (size_t)PCC_PROFILE_PATHS_MAX * (PCC_PATH_MAX + 1));
  pcc_store_status rc = pcc_store_profile_read(pcc_core_store(w->core), ns, &params->magic,
                                               params->opt, name, copy_path, &paths);
  pcc_bundle_writer *writer = NULL;
  bool ok = false;
  *added = 0;
  if (rc == PCC_STORE_NOTFOUND)
    pcc_answer_error(answer, PCC_ERR_NOT_FOUND, "no profile of that name for this magic and opt");
  else if (rc != PCC_STORE_OK)
    pcc_answer_store_error(answer, rc);
  else if (doc == NULL &&
           pcc_bundle_writer_open(&params->magic, params->opt,
                                  (size_t)pcc_core_config(w->core)->max_bundle,
                                  &writer) != PCC_PROTO_OK)
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "out of memory");
  else if (doc == NULL && (*digests = calloc(paths.len / 2 + 1, sizeof **digests)) == NULL)
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "out of memory");
  else
    ok = true;
  cJSON *entries = doc ? cJSON_GetObjectItemCaseSensitive(doc, "entries") : NULL;
  for (size_t at = 0; ok && at < paths.len; at += strlen((char *)paths.data + at) + 1)
    bundle_add(w, ns, params, (char *)paths.data + at, writer, entries,
               doc ? NULL : *digests, added);
  if (ok && writer != NULL && pcc_bundle_writer_finish(writer, data, len) != PCC_PROTO_OK) {
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "cannot finish the bundle");
    ok = false;
  }
  pcc_bundle_writer_close(writer);
  pcc_dynbuf_free(&paths);
  if (!ok && doc == NULL && digests != NULL) {
    free(*digests);
    *digests = NULL;
  }
  return ok;
}

/* Drops a reference to cached bundle bytes (the release callback of a bundle answer). */
static void bundle_release(void *ctx)
{
  bundle_bytes *bytes = ctx;
  if (bytes != NULL && atomic_fetch_sub(&bytes->refs, 1) == 1) {
    free(bytes->data);
    free(bytes->digests);
    free(bytes);
  }
}

static bool slot_is(const bundle_slot *slot, const char *ns, const pcc_params *params,
                    const char *name)
{
  return slot->bytes != NULL && slot->opt == params->opt &&
         pcc_magic_equal(&slot->magic, &params->magic) && strcmp(slot->name, name) == 0 &&
         strcmp(slot->ns, ns) == 0;
}

/* The cached bundle of (magic, opt, name) at this generation, with a reference taken, or NULL. */
static bundle_bytes *cache_take(warm *w, const char *ns, const pcc_params *params,
                                const char *name, uint64_t generation)
{
  bundle_bytes *found = NULL;
  pthread_mutex_lock(&w->lock);
  for (size_t i = 0; i < PCC_BUNDLE_SLOTS && found == NULL; i++) {
    bundle_slot *slot = &w->slots[i];
    if (slot_is(slot, ns, params, name) && slot->generation == generation) {
      found = slot->bytes;
      atomic_fetch_add(&found->refs, 1);
      slot->last_used = ++w->clock;
    }
  }
  pthread_mutex_unlock(&w->lock);
  return found;
}

/* Caches a fresh bundle (its reference for the cache is already counted in refs), replacing
 * an older one of the same profile, else a free or the least recently used slot; the cache
 * keeps at most --bundle-cache bytes. */
static void cache_put(warm *w, const char *ns, const pcc_params *params, const char *name,
                      uint64_t generation, bundle_bytes *bytes)
{
  const size_t limit = (size_t)pcc_core_config(w->core)->bundle_cache;
  pthread_mutex_lock(&w->lock);
  bundle_slot *victim = &w->slots[0];
  size_t total = bytes->len;
  for (size_t i = 0; i < PCC_BUNDLE_SLOTS; i++) {
    bundle_slot *slot = &w->slots[i];
    if (slot_is(slot, ns, params, name) || slot->bytes == NULL) {
      victim = slot;
      break;
    }
    if (slot->last_used < victim->last_used)
      victim = slot;
  }
  bundle_release(victim->bytes);
  victim->bytes = NULL;
  for (size_t i = 0; i < PCC_BUNDLE_SLOTS; i++) /* then make room */
    total += w->slots[i].bytes ? w->slots[i].bytes->len : 0;
  for (size_t i = 0; i < PCC_BUNDLE_SLOTS && total > limit; i++)
    if (w->slots[i].bytes != NULL) {
      total -= w->slots[i].bytes->len;
      bundle_release(w->slots[i].bytes);
      w->slots[i].bytes = NULL;
    }
  if (total <= limit) {
    victim->magic = params->magic;
    victim->opt = params->opt;
    snprintf(victim->name, sizeof victim->name, "%s", name);
    snprintf(victim->ns, sizeof victim->ns, "%s", ns);
    victim->generation = generation;
    victim->last_used = ++w->clock;
    victim->bytes = bytes;
  } else {
    bundle_release(bytes); /* too big to keep: only this response has it */
  }
  pthread_mutex_unlock(&w->lock);
}

/* GET /v1/bundle: every valid stored pyc of a profile, binary or (format=json) as JSON. */
static void handle_bundle(void *state, pcc_request *req, pcc_answer *answer)
{
  warm *w = state;
  const pcc_params *params = &req->params;
  const char *name = req->args[ARG_PROFILE], *format = req->args[ARG_FORMAT];
  if (!profile_name_ok(name, answer))
    return;
  unsigned added = 0;
  if (format != NULL && strcmp(format, "json") == 0) {
    cJSON *doc = cJSON_CreateObject();
    char hex[2 * PCC_MAGIC_LEN + 1];
    pcc_magic_to_hex(&params->magic, hex);
    cJSON_AddStringToObject(doc, "magic", hex);
    cJSON_AddNumberToObject(doc, "opt", params->opt);
    cJSON_AddStringToObject(doc, "profile", name);
    cJSON_AddArrayToObject(doc, "entries");
    if (!build_bundle(w, req->ns, params, name, doc, NULL, NULL, NULL, &added, answer)) {
      cJSON_Delete(doc);
      return;
    }
    pcc_answer_json(answer, doc);
    return;
  }
  uint64_t generation = pcc_store_generation(pcc_core_store(w->core));
  bundle_bytes *bytes = cache_take(w, req->ns, params, name, generation);
  bool cached = bytes != NULL;
  if (bytes == NULL) {
    uint8_t *data = NULL;
    size_t len = 0;
    pcc_digest *digests = NULL;
    if (!build_bundle(w, req->ns, params, name, NULL, &data, &len, &digests, &added, answer))
      return;
    bytes = malloc(sizeof *bytes);
    if (bytes == NULL) {
      free(data);
      free(digests);
      pcc_answer_error(answer, PCC_ERR_INTERNAL, "out of memory");
      return;
    }
    atomic_init(&bytes->refs, 2); /* the cache's and this response's */
    bytes->data = data;
    bytes->len = len;
    bytes->entries = added;
    bytes->digests = digests;
    cache_put(w, req->ns, params, name, generation, bytes);
  } else { /* served from memory: its blobs are used all the same (eviction is by last use) */
    for (unsigned i = 0; i < bytes->entries; i++)
      pcc_store_touch(pcc_core_store(w->core), &params->magic, params->opt, &bytes->digests[i]);
  }
  char entries[16];
  snprintf(entries, sizeof entries, "%u", bytes->entries);
  pcc_answer_bytes(answer, bytes->data, bytes->len, "application/x-pycached-bundle",
                   bundle_release, bytes);
  pcc_answer_header(answer, "X-Pycached-Bundle-Entries", entries);
  pcc_answer_header(answer, "X-Pycached-Bundle-Cache", cached ? "hit" : "built");
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
static cJSON *batch_one(warm *w, const char *ns, const cJSON *lookup)
{
  json_getter getter = {.object = lookup};
  pcc_params params;
  const char *bad = NULL;
  pcc_proto_status rc =
    cJSON_IsObject(lookup)
      ? pcc_params_parse(json_param, &getter,
                         PCC_PARAM_MAGIC | PCC_PARAM_PATH | PCC_PARAM_MTIME | PCC_PARAM_SIZE,
                         &params, &bad)
      : PCC_PROTO_INVALID;
  if (rc != PCC_PROTO_OK) {
    cJSON *item = pcc_error_to_json("bad-parameter", bad ? bad : "each lookup is an object");
    if (item != NULL && bad != NULL)
      cJSON_AddStringToObject(item, "param", bad);
    return item;
  }
  pcc_answer answer;
  pcc_answer_init(&answer);
  pcc_core_lookup(w->core, ns, &params, &answer);
  cJSON *item = NULL;
  if (answer.kind == PCC_ANSWER_ENTRY) {
    pcc_entry_view view;
    uint8_t *pyc = pcc_answer_entry_view(&params, &answer, &view);
    item = pyc ? pcc_entry_to_json(&view) : NULL;
    free(pyc);
  } else {
    item = pcc_answer_error_json(&answer);
  }
  pcc_answer_clear(&answer);
  return item;
}

/* POST /v1/batch: the JSON body {"lookups": [...]} answered one by one as /v1/code would. */
static void handle_batch(void *state, pcc_request *req, pcc_answer *answer)
{
  warm *w = state;
  const uint64_t max = pcc_core_config(w->core)->max_batch;
  cJSON *doc = req->body ? cJSON_ParseWithLength((const char *)req->body, req->body_len) : NULL;
  const cJSON *lookups = cJSON_GetObjectItemCaseSensitive(doc, "lookups");
  int n = cJSON_GetArraySize(lookups);
  if (!cJSON_IsArray(lookups) || (uint64_t)n > max) {
    cJSON_Delete(doc);
    pcc_answer_error(answer, PCC_ERR_BAD_PARAMETER, "body: want {\"lookups\": [...]} with at "
                     "most %llu lookups", (unsigned long long)max);
    pcc_answer_extra_string(answer, "param", "lookups");
    return;
  }
  cJSON *json = cJSON_CreateObject();
  cJSON *results = cJSON_AddArrayToObject(json, "results");
  const cJSON *lookup;
  cJSON_ArrayForEach(lookup, lookups) {
    cJSON *item = batch_one(w, req->ns, lookup);
    cJSON_AddItemToArray(results, item ? item : cJSON_CreateNull());
  }
  cJSON_Delete(doc);
  pcc_answer_json(answer, json);
}

/* ---- client reports ------------------------------------------------------------------------ */

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

/* POST /v1/report: the JSON body {"fallbacks": {"reason": count, ...}} a client sends at exit,
 * added to the counters of its magic. */
static void handle_report(void *state, pcc_request *req, pcc_answer *answer)
{
  warm *w = state;
  cJSON *doc = req->body ? cJSON_ParseWithLength((const char *)req->body, req->body_len) : NULL;
  const cJSON *fallbacks = cJSON_GetObjectItemCaseSensitive(doc, "fallbacks");
  bool ok = cJSON_IsObject(fallbacks) && cJSON_GetArraySize(fallbacks) <= PCC_REASONS_MAX;
  const cJSON *item;
  cJSON_ArrayForEach(item, fallbacks) {
    ok = ok && reason_ok(item->string) && cJSON_IsNumber(item) && item->valuedouble >= 0 &&
         item->valuedouble <= 1e9 && item->valuedouble == (double)(int64_t)item->valuedouble;
  }
  if (!ok) {
    cJSON_Delete(doc);
    pcc_answer_error(answer, PCC_ERR_BAD_PARAMETER, "body: want {\"fallbacks\": {reason: "
                     "count}} with at most %d reasons of [a-z0-9-]", PCC_REASONS_MAX);
    pcc_answer_extra_string(answer, "param", "fallbacks");
    return;
  }
  pcc_counters *counters = pcc_core_counters(w->core);
  pcc_magic_counters *magic = pcc_counters_for(counters, &req->params.magic);
  cJSON_ArrayForEach(item, fallbacks) {
    pcc_counters_add_reason(counters, magic, item->string, (uint64_t)item->valuedouble);
  }
  cJSON_Delete(doc);
  cJSON *json = cJSON_CreateObject();
  cJSON_AddBoolToObject(json, "recorded", true);
  pcc_answer_json(answer, json);
}

/* ---- the feature --------------------------------------------------------------------------- */

static int warm_open(pcc_core *core, void **state)
{
  warm *w = calloc(1, sizeof *w);
  if (w == NULL)
    return -1;
  w->core = core;
  pthread_mutex_init(&w->lock, NULL);
  *state = w;
  return 0;
}

/* Empties the bundle cache (responses still sending a bundle keep theirs) and frees. */
static void warm_close(void *state)
{
  warm *w = state;
  if (w == NULL)
    return;
  for (size_t i = 0; i < PCC_BUNDLE_SLOTS; i++)
    bundle_release(w->slots[i].bytes);
  pthread_mutex_destroy(&w->lock);
  free(w);
}

static const pcc_route warm_routes[] = {
  {"POST", "/v1/profile", PCC_ROLE_READ, PCC_ROUTE_BODY(max_profile_body), true,
   PCC_PARAM_MAGIC, {"profile", NULL}, handle_profile, "record a program's imports"},
  {"GET", "/v1/bundle", PCC_ROLE_READ, PCC_ROUTE_NO_BODY, true, PCC_PARAM_MAGIC,
   {"profile", "format", NULL}, handle_bundle, "every stored pyc of a profile at once"},
  {"POST", "/v1/batch", PCC_ROLE_READ, PCC_ROUTE_BODY(max_batch_body), false, 0, {NULL},
   handle_batch, "many lookups in one request"},
  {"POST", "/v1/report", PCC_ROLE_READ, PCC_ROUTE_BODY(max_report_body), true, PCC_PARAM_MAGIC,
   {NULL}, handle_report, "the fallbacks a client had"},
};

const pcc_feature pcc_warm_feature = {
  "warm", warm_routes, sizeof warm_routes / sizeof warm_routes[0],
  warm_open, NULL, warm_close,
};
