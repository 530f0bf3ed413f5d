/* admin.c: the administration feature of pycached (docs/API.md, "Admin API"): statistics per
 * magic and in total with latency histograms (as JSON and as Prometheus text), entry listing
 * with cursors, deletion, invalidation, purge, import profiles (listed, shown, deleted), the
 * magic-number lifecycle (backends, retiring magics no backend serves), compacted backups
 * (written on the server, or streamed) and the admin page. At open, with
 * --retire-unserved-magics, it retires the magics no backend serves. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <microhttpd.h>

#include "admin_assets.h"
#include "route.h"

/* Route arguments (the order of each row's args) */
enum { ARG_PREFIX, ARG_CURSOR, ARG_LIMIT, ARG_NAMESPACE };
enum { ARG_ENTRY_NAMESPACE }; /* the rows of one entry */
enum { ARG_PROFILES_NAMESPACE, ARG_PROFILES_CURSOR, ARG_PROFILES_LIMIT }; /* profile listings */
enum { ARG_PROFILE_NAME, ARG_PROFILE_NAMESPACE };                        /* one profile */

/* ---- statistics ------------------------------------------------------------------------ */

typedef struct {
  pcc_magic magic;
  const pcc_magic_counters *counters; /* for the fallbacks clients reported; NULL when none */
  uint64_t entries, bytes;
  uint64_t hits, absent, stale, compiles, compile_errors, corruptions;
  bool served;
} magic_figures;

typedef struct {
  magic_figures magics[PCC_MAGICS_COUNTED + 64];
  size_t n;
  magic_figures total;
  pcc_store_stats store;
  bool have_store;
} snapshot;

static magic_figures *figures_for(snapshot *snap, const pcc_magic *magic)
{
  for (size_t i = 0; i < snap->n; i++)
    if (pcc_magic_equal(&snap->magics[i].magic, magic))
      return &snap->magics[i];
  if (snap->n == sizeof snap->magics / sizeof snap->magics[0])
    return NULL;
  magic_figures *f = &snap->magics[snap->n++];
  memset(f, 0, sizeof *f);
  f->magic = *magic;
  return f;
}

static void add_store_magic(const pcc_magic *magic, uint64_t entries, uint64_t bytes, void *ctx)
{
  magic_figures *f = figures_for(ctx, magic);
  if (f != NULL) {
    f->entries = entries;
    f->bytes = bytes;
  }
}

/* Adds the counters of one magic to figures. */
static void add_counters(magic_figures *f, const pcc_magic_counters *c)
{
  f->hits += atomic_load(&c->hits);
  f->absent += atomic_load(&c->miss_absent);
  f->stale += atomic_load(&c->miss_stale);
  f->compiles += atomic_load(&c->compiles);
  f->compile_errors += atomic_load(&c->compile_errors);
  f->corruptions += atomic_load(&c->corruptions);
}

/* Everything the stats and the metrics show, read once. */
static void take_snapshot(pcc_core *core, snapshot *snap)
{
  memset(snap, 0, sizeof *snap);
  pcc_store_magics(pcc_core_store(core), add_store_magic, snap);
  const pcc_magic_counters *magics, *other;
  unsigned n = pcc_counters_magics(pcc_core_counters(core), &magics, &other);
  for (unsigned i = 0; i < n; i++) {
    magic_figures *f = figures_for(snap, &magics[i].magic);
    if (f == NULL)
      continue;
    f->counters = &magics[i];
    add_counters(f, &magics[i]);
  }
  magic_figures *t = &snap->total;
  for (size_t i = 0; i < snap->n; i++) {
    magic_figures *f = &snap->magics[i];
    f->served = pcc_core_backend_for(core, &f->magic) >= 0;
    t->entries += f->entries;
    t->bytes += f->bytes;
    t->hits += f->hits;
    t->absent += f->absent;
    t->stale += f->stale;
    t->compiles += f->compiles;
    t->compile_errors += f->compile_errors;
    t->corruptions += f->corruptions;
  }
  add_counters(t, other); /* magics past the counters' table */
  snap->have_store = pcc_store_stat(pcc_core_store(core), &snap->store) == PCC_STORE_OK;
}

/* {"reason": count} of the fallbacks clients reported for the magics in figures (n of them). */
static cJSON *fallbacks_json(const magic_figures *figures, size_t n)
{
  cJSON *obj = cJSON_CreateObject();
  for (size_t i = 0; i < n; i++) {
    const pcc_magic_counters *c = figures[i].counters;
    unsigned reasons = c ? atomic_load(&c->n_reasons) : 0;
    for (unsigned r = 0; r < reasons; r++) {
      double count = (double)atomic_load(&c->reason_counts[r]);
      cJSON *have = cJSON_GetObjectItemCaseSensitive(obj, c->reasons[r]);
      if (have != NULL)
        cJSON_SetNumberValue(have, have->valuedouble + count);
      else
        cJSON_AddNumberToObject(obj, c->reasons[r], count);
    }
  }
  return obj;
}

static cJSON *figures_json(const magic_figures *f)
{
  cJSON *obj = cJSON_CreateObject();
  cJSON_AddNumberToObject(obj, "entries", (double)f->entries);
  cJSON_AddNumberToObject(obj, "bytes", (double)f->bytes);
  cJSON_AddNumberToObject(obj, "hits", (double)f->hits);
  cJSON *misses = cJSON_AddObjectToObject(obj, "misses");
  cJSON_AddNumberToObject(misses, "absent", (double)f->absent);
  cJSON_AddNumberToObject(misses, "stale", (double)f->stale);
  cJSON_AddNumberToObject(obj, "compiles", (double)f->compiles);
  cJSON_AddNumberToObject(obj, "compile_errors", (double)f->compile_errors);
  cJSON_AddNumberToObject(obj, "corruptions", (double)f->corruptions);
  return obj;
}

static cJSON *histogram_json(const pcc_histogram *h)
{
  cJSON *obj = cJSON_CreateObject();
  cJSON_AddNumberToObject(obj, "count", (double)atomic_load(&h->count));
  cJSON_AddNumberToObject(obj, "sum", (double)atomic_load(&h->sum_us) / 1e6);
  cJSON *buckets = cJSON_AddArrayToObject(obj, "buckets");
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= PCC_LATENCY_BUCKETS; i++) {
    cumulative += atomic_load(&h->buckets[i]);
    cJSON *pair = cJSON_CreateArray();
    cJSON_AddItemToArray(pair, i < PCC_LATENCY_BUCKETS
                                 ? cJSON_CreateNumber(pcc_latency_bounds[i])
                                 : cJSON_CreateString("+Inf"));
    cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)cumulative));
    cJSON_AddItemToArray(buckets, pair);
  }
  return obj;
}

static void handle_stats(void *state, pcc_request *req, pcc_answer *answer)
{
  (void)req;
  pcc_core *core = state;
  const pcc_totals *totals = pcc_counters_totals(pcc_core_counters(core));
  snapshot *snap = malloc(sizeof *snap);
  cJSON *stats = cJSON_CreateObject();
  if (snap == NULL || stats == NULL) {
    free(snap);
    cJSON_Delete(stats);
    pcc_answer_json(answer, NULL);
    return;
  }
  take_snapshot(core, snap);
  const pcc_backend *backends;
  pcc_core_backends(core, &backends);
  cJSON_AddStringToObject(stats, "version", PCC_VERSION);
  cJSON *build = cJSON_AddObjectToObject(stats, "build");
  cJSON_AddStringToObject(build, "libmicrohttpd", MHD_get_version());
  cJSON_AddStringToObject(build, "lmdb", mdb_version(NULL, NULL, NULL));
  cJSON_AddStringToObject(build, "python", backends[0].name);
  cJSON_AddStringToObject(build, "cc", __VERSION__);
  cJSON_AddStringToObject(build, "date", __DATE__);
  cJSON_AddNumberToObject(stats, "uptime", (double)(time(NULL) - pcc_core_started(core)));
  cJSON_AddNumberToObject(stats, "requests", (double)atomic_load(&totals->requests));
  cJSON *total = figures_json(&snap->total);
  cJSON_AddItemToObject(total, "fallbacks", fallbacks_json(snap->magics, snap->n));
  cJSON_AddItemToObject(stats, "total", total);
  cJSON *magics = cJSON_AddObjectToObject(stats, "magics");
  for (size_t i = 0; i < snap->n; i++) {
    char hex[2 * PCC_MAGIC_LEN + 1];
    pcc_magic_to_hex(&snap->magics[i].magic, hex);
    cJSON *one = figures_json(&snap->magics[i]);
    cJSON_AddItemToObject(one, "fallbacks", fallbacks_json(&snap->magics[i], 1));
    cJSON_AddItemToObject(magics, hex, one);
  }
  cJSON *latency = cJSON_AddObjectToObject(stats, "latency");
  cJSON_AddItemToObject(latency, "hit", histogram_json(&totals->hit_latency));
  cJSON_AddItemToObject(latency, "compile", histogram_json(&totals->compile_latency));
  cJSON_AddItemToObject(stats, "store", pcc_core_store_json(core));
  free(snap);
  pcc_answer_json(answer, stats);
}

/* ---- metrics (Prometheus text format 0.0.4) -------------------------------------------- */

#define METRICS_MAX (4 * PCC_MIB) /* the text of /metrics: a few hundred lines per magic */

/* One sample per magic of the magic_figures field at offset; type is "counter" or "gauge". */
static void emit_per_magic(pcc_dynbuf *out, const snapshot *snap, const char *name,
                           const char *type, const char *help, size_t offset)
{
  pcc_dynbuf_addf(out, "# HELP pycached_%s %s\n# TYPE pycached_%s %s\n", name, help, name, type);
  for (size_t i = 0; i < snap->n; i++) {
    char hex[2 * PCC_MAGIC_LEN + 1];
    uint64_t value;
    pcc_magic_to_hex(&snap->magics[i].magic, hex);
    memcpy(&value, (const char *)&snap->magics[i] + offset, sizeof value);
    pcc_dynbuf_addf(out, "pycached_%s{magic=\"%s\"} %llu\n", name, hex,
                    (unsigned long long)value);
  }
}

static void emit_histogram(pcc_dynbuf *out, const char *name, const char *help,
                           const pcc_histogram *h)
{
  pcc_dynbuf_addf(out, "# HELP pycached_%s %s\n# TYPE pycached_%s histogram\n", name, help, name);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < PCC_LATENCY_BUCKETS; i++) {
    cumulative += atomic_load(&h->buckets[i]);
    pcc_dynbuf_addf(out, "pycached_%s_bucket{le=\"%g\"} %llu\n", name, pcc_latency_bounds[i],
                    (unsigned long long)cumulative);
  }
  cumulative += atomic_load(&h->buckets[PCC_LATENCY_BUCKETS]);
  pcc_dynbuf_addf(out, "pycached_%s_bucket{le=\"+Inf\"} %llu\npycached_%s_sum %.6f\n"
                  "pycached_%s_count %llu\n", name, (unsigned long long)cumulative, name,
                  (double)atomic_load(&h->sum_us) / 1e6, name,
                  (unsigned long long)atomic_load(&h->count));
}

/* The Prometheus text into out (bounded by its maximum: a text cut short is an error). */
static void metrics_text(pcc_core *core, const snapshot *snap, pcc_dynbuf *out)
{
  const pcc_totals *totals = pcc_counters_totals(pcc_core_counters(core));
  pcc_dynbuf_addf(out, "# HELP pycached_build_info pycached's version\n"
                  "# TYPE pycached_build_info gauge\npycached_build_info{version=\"%s\"} 1\n",
                  PCC_VERSION);
  pcc_dynbuf_addf(out, "# HELP pycached_uptime_seconds Seconds since start\n"
                  "# TYPE pycached_uptime_seconds gauge\npycached_uptime_seconds %lld\n",
                  (long long)(time(NULL) - pcc_core_started(core)));
  pcc_dynbuf_addf(out, "# HELP pycached_requests_total HTTP requests\n"
                  "# TYPE pycached_requests_total counter\npycached_requests_total %llu\n",
                  (unsigned long long)atomic_load(&totals->requests));
  emit_per_magic(out, snap, "hits_total", "counter", "Lookups answered from the store",
                 offsetof(magic_figures, hits));
  pcc_dynbuf_addf(out, "# HELP pycached_misses_total Lookups answered miss\n"
                  "# TYPE pycached_misses_total counter\n");
  for (size_t i = 0; i < snap->n; i++) {
    char hex[2 * PCC_MAGIC_LEN + 1];
    pcc_magic_to_hex(&snap->magics[i].magic, hex);
    pcc_dynbuf_addf(out, "pycached_misses_total{magic=\"%s\",reason=\"absent\"} %llu\n"
                    "pycached_misses_total{magic=\"%s\",reason=\"stale\"} %llu\n",
                    hex, (unsigned long long)snap->magics[i].absent, hex,
                    (unsigned long long)snap->magics[i].stale);
  }
  emit_per_magic(out, snap, "compiles_total", "counter", "Compiles run by a worker",
                 offsetof(magic_figures, compiles));
  emit_per_magic(out, snap, "compile_errors_total", "counter", "Compiles that raised",
                 offsetof(magic_figures, compile_errors));
  emit_per_magic(out, snap, "corruptions_total", "counter",
                 "Stored blobs dropped after a failed checksum",
                 offsetof(magic_figures, corruptions));
  emit_per_magic(out, snap, "entries", "gauge", "Path entries in the store",
                 offsetof(magic_figures, entries));
  emit_per_magic(out, snap, "entry_bytes", "gauge", "Bytes of stored code",
                 offsetof(magic_figures, bytes));
  pcc_dynbuf_addf(out, "# HELP pycached_client_fallbacks_total Fallbacks to local compilation "
                  "clients reported, by reason\n# TYPE pycached_client_fallbacks_total counter\n");
  for (size_t i = 0; i < snap->n; i++) {
    const pcc_magic_counters *c = snap->magics[i].counters;
    unsigned reasons = c ? atomic_load(&c->n_reasons) : 0;
    char hex[2 * PCC_MAGIC_LEN + 1];
    pcc_magic_to_hex(&snap->magics[i].magic, hex);
    for (unsigned r = 0; r < reasons; r++)
      pcc_dynbuf_addf(out, "pycached_client_fallbacks_total{magic=\"%s\",reason=\"%s\"} %llu\n",
                      hex, c->reasons[r], (unsigned long long)atomic_load(&c->reason_counts[r]));
  }
  emit_histogram(out, "hit_seconds", "Time to answer a lookup hit", &totals->hit_latency);
  emit_histogram(out, "compile_seconds", "Time a worker took to compile",
                 &totals->compile_latency);
  const pcc_store_stats *s = &snap->store;
  const struct {
    const char *name, *type, *help;
    uint64_t value;
  } store_figures[] = {
    {"store_entries", "gauge", "Path entries in the store", s->entries},
    {"store_blobs", "gauge", "Stored code objects and compile errors", s->blobs},
    {"store_bytes", "gauge", "Payload bytes of the stored blobs (what --max-size bounds)",
     s->bytes},
    {"store_max_bytes", "gauge", "--max-size: payload bytes kept before eviction", s->max_size},
    {"store_profiles", "gauge", "Import profiles in the store", s->profiles},
    {"store_used_bytes", "gauge", "Bytes of the LMDB pages in use", s->used},
    {"store_free_bytes", "gauge", "Bytes of free LMDB pages, reused by later writes", s->free},
    {"store_map_bytes", "gauge", "--map-size: the most the store's file may grow to",
     s->map_size},
    {"store_evictions_total", "counter", "Blobs evicted as least recently used", s->evictions},
  };
  for (size_t i = 0; snap->have_store && i < sizeof store_figures / sizeof store_figures[0]; i++)
    pcc_dynbuf_addf(out, "# HELP pycached_%s %s\n# TYPE pycached_%s %s\npycached_%s %llu\n",
                    store_figures[i].name, store_figures[i].help, store_figures[i].name,
                    store_figures[i].type, store_figures[i].name,
                    (unsigned long long)store_figures[i].value);
}

static void free_text(void *text)
{
  free(text);
}

static void handle_metrics(void *state, pcc_request *req, pcc_answer *answer)
{
  (void)req;
  pcc_core *core = state;
  snapshot *snap = malloc(sizeof *snap);
  pcc_dynbuf out;
  pcc_dynbuf_init(&out, METRICS_MAX);
  if (snap == NULL) {
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "out of memory");
    return;
  }
  take_snapshot(core, snap);
  metrics_text(core, snap, &out);
  free(snap);
  if (out.error != PCC_PROTO_OK) { /* a text cut short */
    pcc_dynbuf_free(&out);
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "out of memory");
    return;
  }
  size_t len;
  char *text = pcc_dynbuf_take(&out, &len);
  pcc_answer_bytes(answer, text, len, "text/plain; version=0.0.4; charset=utf-8", free_text,
                   text);
}

/* ---- entries --------------------------------------------------------------------------- */

typedef struct {
  pcc_core *core;
  cJSON *list;
} entry_visit;

static void add_entry(const pcc_store_entry *entry, void *ctx)
{
  entry_visit *visit = ctx;
  char magic[2 * PCC_MAGIC_LEN + 1], digest[PCC_DIGEST_HEX_LEN + 1];
  char *path = strndup(entry->path, entry->path_len);
  cJSON *obj = cJSON_CreateObject();
  if (path == NULL || obj == NULL) {
    free(path);
    cJSON_Delete(obj);
    return;
  }
  uint64_t hits;
  int64_t last;
  pcc_counters_entry_hits(pcc_core_counters(visit->core), &entry->magic, entry->opt, entry->path,
                          entry->path_len, &hits, &last);
  pcc_magic_to_hex(&entry->magic, magic);
  pcc_digest_to_hex(&entry->record.digest, digest);
  cJSON_AddStringToObject(obj, "magic", magic);
  cJSON_AddNumberToObject(obj, "opt", entry->opt);
  cJSON_AddStringToObject(obj, "namespace", entry->ns);
  cJSON_AddStringToObject(obj, "path", path);
  cJSON_AddNumberToObject(obj, "versions", entry->versions);
  cJSON_AddNumberToObject(obj, "mtime", (double)entry->record.mtime);
  cJSON_AddNumberToObject(obj, "size", (double)entry->record.size);
  cJSON_AddNumberToObject(obj, "hash", entry->record.hash);
  cJSON_AddStringToObject(obj, "digest", digest);
  if (entry->has_blob) {
    cJSON_AddStringToObject(obj, "kind",
                            entry->kind == PCC_BLOB_CODE ? "code" : "compile-error");
    cJSON_AddNumberToObject(obj, "bytes", (double)entry->bytes);
    cJSON_AddNumberToObject(obj, "compile_us", entry->compile_us);
    cJSON_AddNumberToObject(obj, "created", (double)entry->created);
    cJSON_AddStringToObject(obj, "compiler", entry->compiler);
  } else {
    cJSON_AddStringToObject(obj, "kind", "missing");
  }
  cJSON_AddNumberToObject(obj, "hits", (double)hits);
  if (last > 0)
    cJSON_AddNumberToObject(obj, "last_hit", (double)last);
  else
    cJSON_AddNullToObject(obj, "last_hit");
  free(path);
  if (cJSON_IsArray(visit->list))
    cJSON_AddItemToArray(visit->list, obj);
  else /* a single entry */
    visit->list = obj;
}

/* The store filter of a request (magic, opt, prefix, namespace: prefix and ns as given, may be
 * NULL); false (answer set) when malformed. */
static bool filter_of(const pcc_request *req, const char *prefix, const char *ns,
                      pcc_store_filter *filter, pcc_answer *answer)
{
  memset(filter, 0, sizeof *filter);
  if (ns != NULL && ns[0] != '\0' && !pcc_namespace_ok(ns)) {
    pcc_answer_bad_parameter(answer, "namespace", "1 to %d characters of [a-z0-9._-]",
                             PCC_NAMESPACE_MAX);
    return false;
  }
  filter->ns = ns; /* "" is the default namespace, absent any */
  filter->has_magic = req->params.present & PCC_PARAM_MAGIC;
  filter->magic = req->params.magic;
  filter->opt = (req->params.present & PCC_PARAM_OPT) ? req->params.opt : -1;
  if (prefix != NULL && prefix[0] != '\0') {
    filter->prefix = prefix;
    filter->prefix_len = strlen(prefix);
    if (prefix[0] != '/' || filter->prefix_len > PCC_PATH_MAX) {
      pcc_answer_bad_parameter(answer, "prefix", "an absolute path prefix");
      return false;
    }
  }
  return true;
}

static bool request_filter(const pcc_request *req, pcc_store_filter *filter, pcc_answer *answer)
{
  return filter_of(req, req->args[ARG_PREFIX], req->args[ARG_NAMESPACE], filter, answer);
}

/* Decodes a cursor (hex of a store key of at most max bytes); false for a malformed one. */
static bool cursor_decode(const char *text, size_t max, uint8_t *out, size_t *len)
{
  size_t n = strlen(text);
  if (n % 2 != 0 || n / 2 > max)
    return false;
  for (size_t i = 0; i < n / 2; i++) {
    char pair[3] = {text[2 * i], text[2 * i + 1], '\0'};
    char *end = NULL;
    long value = strtol(pair, &end, 16);
    if (*end != '\0' || pair[0] == '-' || pair[0] == '+' || pair[0] == ' ')
      return false;
    out[i] = (uint8_t)value;
  }
  *len = n / 2;
  return true;
}

/* The `limit` and `cursor` of a listing (a cursor of at most cursor_max bytes, into cursor);
 * false (answer set) when malformed. */
static bool page_of(const char *limit_text, const char *cursor_text, size_t cursor_max,
                    int64_t *limit, uint8_t *cursor, size_t *cursor_len, pcc_answer *answer)
{
  *limit = PCC_LIST_LIMIT_DEFAULT;
  *cursor_len = 0;
  if (limit_text != NULL &&
      pcc_parse_i64(limit_text, 1, PCC_LIST_LIMIT_MAX, limit) != PCC_PROTO_OK) {
    pcc_answer_bad_parameter(answer, "limit", "a number from 1 to %d", PCC_LIST_LIMIT_MAX);
    return false;
  }
  if (cursor_text != NULL && !cursor_decode(cursor_text, cursor_max, cursor, cursor_len)) {
    pcc_answer_bad_parameter(answer, "cursor", "not one this server gave");
    return false;
  }
  return true;
}

/* Answers {"<name>": list, "next_cursor": hex of next or null}. Takes list. */
static void answer_page(pcc_answer *answer, const char *name, cJSON *list, const uint8_t *next,
                        size_t next_len)
{
  cJSON *json = cJSON_CreateObject();
  cJSON_AddItemToObject(json, name, list);
  if (next_len > 0) {
    char hex[2 * PCC_STORE_CURSOR_MAX + 1];
    pcc_hex_encode(next, next_len, hex);
    cJSON_AddStringToObject(json, "next_cursor", hex);
  } else {
    cJSON_AddNullToObject(json, "next_cursor");
  }
  pcc_answer_json(answer, json);
}

static void handle_entries(void *state, pcc_request *req, pcc_answer *answer)
{
  pcc_core *core = state;
  pcc_store_filter filter;
  int64_t limit;
  uint8_t cursor[PCC_STORE_CURSOR_MAX], next[PCC_STORE_CURSOR_MAX];
  size_t cursor_len = 0, next_len = 0;
  if (!request_filter(req, &filter, answer) ||
      !page_of(req->args[ARG_LIMIT], req->args[ARG_CURSOR], PCC_STORE_CURSOR_MAX, &limit, cursor,
               &cursor_len, answer))
    return;
  entry_visit visit = {core, cJSON_CreateArray()};
  pcc_store_status rc = pcc_store_scan(pcc_core_store(core), &filter, cursor, cursor_len,
                                       (size_t)limit, PCC_LIST_SCAN_MAX, add_entry, &visit, next,
                                       &next_len);
  if (rc != PCC_STORE_OK) {
    cJSON_Delete(visit.list);
    pcc_answer_store_error(answer, rc);
    return;
  }
  answer_page(answer, "entries", visit.list, next, next_len);
}

static cJSON *removed_json(uint64_t removed)
{
  cJSON *json = cJSON_CreateObject();
  cJSON_AddNumberToObject(json, "removed", (double)removed);
  return json;
}

/* The namespace of a request naming one entry or profile: the argument, "" (the default one)
 * without it; NULL (answer set) when malformed. */
static const char *named_namespace(const char *arg, pcc_answer *answer)
{
  const char *ns = arg ? arg : "";
  if (ns[0] != '\0' && !pcc_namespace_ok(ns)) {
    pcc_answer_bad_parameter(answer, "namespace", "1 to %d characters of [a-z0-9._-]",
                             PCC_NAMESPACE_MAX);
    return NULL;
  }
  return ns;
}

/* Sets the answer of a store call about one named thing that did not succeed (not found: 404
 * with `missing` as the message); does nothing on PCC_STORE_OK. */
static void answer_named(pcc_answer *answer, pcc_store_status rc, const char *missing)
{
  if (rc == PCC_STORE_NOTFOUND)
    pcc_answer_error(answer, PCC_ERR_NOT_FOUND, "%s", missing);
  else if (rc != PCC_STORE_OK)
    pcc_answer_store_error(answer, rc);
}

/* GET and DELETE /v1/admin/entry: one entry, named by magic and path (opt defaults to 0) in a
 * namespace (the default one without `namespace`). */
static void entry_show_or_delete(pcc_core *core, const pcc_request *req, bool delete_it,
                                 pcc_answer *answer)
{
  const pcc_params *p = &req->params;
  const char *ns = named_namespace(req->args[ARG_ENTRY_NAMESPACE], answer);
  pcc_store_status rc;
  if (ns == NULL)
    return;
  if (delete_it) {
    uint64_t removed = 0;
    rc = pcc_store_delete_one(pcc_core_store(core), ns, &p->magic, p->opt, p->path,
                              p->path_len, &removed);
    if (rc == PCC_STORE_OK && removed == 0)
      rc = PCC_STORE_NOTFOUND;
    if (rc == PCC_STORE_OK)
      pcc_answer_json(answer, removed_json(removed));
  } else {
    entry_visit visit = {core, NULL};
    rc = pcc_store_get_entry(pcc_core_store(core), ns, &p->magic, p->opt, p->path, p->path_len,
                             add_entry, &visit);
    if (rc == PCC_STORE_OK)
      pcc_answer_json(answer, visit.list);
    else
      cJSON_Delete(visit.list);
  }
  answer_named(answer, rc, "no entry for this magic, opt and path");
}

static void handle_entry(void *state, pcc_request *req, pcc_answer *answer)
{
  entry_show_or_delete(state, req, false, answer);
}

static void handle_entry_delete(void *state, pcc_request *req, pcc_answer *answer)
{
  entry_show_or_delete(state, req, true, answer);
}

static void delete_and_answer(pcc_core *core, const pcc_store_filter *filter, pcc_answer *answer)
{
  uint64_t removed = 0;
  pcc_store_status rc = pcc_store_delete(pcc_core_store(core), filter, &removed);
  if (rc != PCC_STORE_OK)
    pcc_answer_store_error(answer, rc);
  else
    pcc_answer_json(answer, removed_json(removed));
}

static void handle_invalidate(void *state, pcc_request *req, pcc_answer *answer)
{
  pcc_store_filter filter;
  if (!request_filter(req, &filter, answer))
    return;
  if (!filter.has_magic && filter.prefix_len == 0 && filter.ns == NULL) {
    pcc_answer_bad_parameter(answer, "prefix",
                             "say what to invalidate, with prefix or magic (purge removes "
                             "everything)");
    return;
  }
  delete_and_answer(state, &filter, answer);
}

static void handle_purge(void *state, pcc_request *req, pcc_answer *answer)
{
  (void)req;
  delete_and_answer(state, NULL, answer);
}

/* ---- profiles ----------------------------------------------------------------------------- */

static cJSON *profile_json(const pcc_store_profile *profile)
{
  char hex[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(&profile->magic, hex);
  cJSON *obj = cJSON_CreateObject();
  cJSON_AddStringToObject(obj, "magic", hex);
  cJSON_AddNumberToObject(obj, "opt", profile->opt);
  cJSON_AddStringToObject(obj, "namespace", profile->ns);
  cJSON_AddStringToObject(obj, "profile", profile->name);
  cJSON_AddNumberToObject(obj, "paths", (double)profile->paths);
  cJSON_AddNumberToObject(obj, "updated", (double)profile->updated);
  return obj;
}

static void add_profile(const pcc_store_profile *profile, void *ctx)
{
  cJSON_AddItemToArray(ctx, profile_json(profile));
}

/* GET /v1/admin/profiles?[magic][&opt][&namespace][&limit][&cursor] */
static void handle_profiles(void *state, pcc_request *req, pcc_answer *answer)
{
  pcc_core *core = state;
  pcc_store_filter filter;
  int64_t limit;
  uint8_t cursor[PCC_STORE_PROFILE_CURSOR_MAX], next[PCC_STORE_PROFILE_CURSOR_MAX];
  size_t cursor_len = 0, next_len = 0;
  if (!filter_of(req, NULL, req->args[ARG_PROFILES_NAMESPACE], &filter, answer) ||
      !page_of(req->args[ARG_PROFILES_LIMIT], req->args[ARG_PROFILES_CURSOR],
               PCC_STORE_PROFILE_CURSOR_MAX, &limit, cursor, &cursor_len, answer))
    return;
  cJSON *list = cJSON_CreateArray();
  pcc_store_status rc = pcc_store_profiles_scan(pcc_core_store(core), &filter, cursor,
                                                cursor_len, (size_t)limit, add_profile, list,
                                                next, &next_len);
  if (rc != PCC_STORE_OK) {
    cJSON_Delete(list);
    pcc_answer_store_error(answer, rc);
    return;
  }
  answer_page(answer, "profiles", list, next, next_len);
}

static void add_profile_path(const char *path, size_t len, void *ctx)
{
  char *copy = strndup(path, len);
  if (copy != NULL)
    cJSON_AddItemToArray(ctx, cJSON_CreateString(copy));
  free(copy);
}

/* GET and DELETE /v1/admin/profile?magic&opt&profile[&namespace]: one profile of a namespace
 * (the default one without `namespace`). */
static void profile_show_or_delete(pcc_core *core, const pcc_request *req, bool delete_it,
                                   pcc_answer *answer)
{
  const pcc_params *p = &req->params;
  const char *name = req->args[ARG_PROFILE_NAME];
  const char *ns = named_namespace(req->args[ARG_PROFILE_NAMESPACE], answer);
  pcc_store *store = pcc_core_store(core);
  pcc_store_profile profile;
  pcc_store_status rc;
  if (ns == NULL)
    return;
  if (delete_it) {
    uint64_t removed = 0;
    rc = pcc_store_profile_delete(store, ns, &p->magic, p->opt, name, &removed);
    if (rc == PCC_STORE_OK && removed == 0)
      rc = PCC_STORE_NOTFOUND;
    if (rc == PCC_STORE_OK)
      pcc_answer_json(answer, removed_json(removed));
  } else if ((rc = pcc_store_profile_get(store, ns, &p->magic, p->opt, name, &profile)) ==
             PCC_STORE_OK) {
    cJSON *json = profile_json(&profile);
    cJSON *list = cJSON_AddArrayToObject(json, "list");
    rc = pcc_store_profile_read(store, ns, &p->magic, p->opt, name, add_profile_path, list);
    if (rc == PCC_STORE_OK)
      pcc_answer_json(answer, json);
    else
      cJSON_Delete(json);
  }
  if (rc == PCC_STORE_INVALID)
    pcc_answer_bad_parameter(answer, "profile", "1 to %d bytes", PCC_PROFILE_NAME_MAX);
  else
    answer_named(answer, rc, "no profile of that name for this magic and opt");
}

static void handle_profile(void *state, pcc_request *req, pcc_answer *answer)
{
  profile_show_or_delete(state, req, false, answer);
}

static void handle_profile_delete(void *state, pcc_request *req, pcc_answer *answer)
{
  profile_show_or_delete(state, req, true, answer);
}

/* ---- magics ------------------------------------------------------------------------------ */

typedef struct {
  pcc_core *core;
  cJSON *list;
} magic_rows;

static void add_magic_row(const pcc_magic *magic, uint64_t entries, uint64_t bytes, void *ctx)
{
  magic_rows *rows = ctx;
  char hex[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(magic, hex);
  cJSON *row = cJSON_CreateObject();
  cJSON_AddStringToObject(row, "magic", hex);
  cJSON_AddNumberToObject(row, "entries", (double)entries);
  cJSON_AddNumberToObject(row, "bytes", (double)bytes);
  cJSON_AddBoolToObject(row, "served", pcc_core_backend_for(rows->core, magic) >= 0);
  cJSON_AddItemToArray(rows->list, row);
}

static void handle_magics(void *state, pcc_request *req, pcc_answer *answer)
{
  (void)req;
  pcc_core *core = state;
  cJSON *json = cJSON_CreateObject();
  cJSON *list = cJSON_AddArrayToObject(json, "backends");
  const pcc_backend *backends;
  unsigned n = pcc_core_backends(core, &backends);
  for (unsigned b = 0; b < n; b++) {
    char hex[2 * PCC_MAGIC_LEN + 1], implementation[PCC_COMPILER_NAME_MAX + 1];
    pcc_magic_to_hex(pcc_compiler_magic(backends[b].compiler), hex);
    /* names are "implementation-version" (compiler.h) */
    snprintf(implementation, sizeof implementation, "%s", backends[b].name);
    char *dash = strrchr(implementation, '-');
    const char *version = dash ? dash + 1 : "";
    if (dash)
      *dash = '\0';
    cJSON *row = cJSON_CreateObject();
    cJSON_AddStringToObject(row, "name", backends[b].name);
    cJSON_AddStringToObject(row, "implementation", implementation);
    cJSON_AddStringToObject(row, "version", version);
    cJSON_AddStringToObject(row, "magic", hex);
    cJSON_AddNumberToObject(row, "workers", pcc_compiler_workers(backends[b].compiler));
    cJSON_AddStringToObject(row, "interpreter", backends[b].interpreter);
    cJSON_AddBoolToObject(row, "default", b == 0);
    cJSON_AddItemToArray(list, row);
  }
  magic_rows rows = {core, cJSON_AddArrayToObject(json, "store")};
  pcc_store_status rc = pcc_store_magics(pcc_core_store(core), add_magic_row, &rows);
  if (rc != PCC_STORE_OK) {
    cJSON_Delete(json);
    pcc_answer_store_error(answer, rc);
    return;
  }
  pcc_answer_json(answer, json);
}

/* POST /v1/admin/magics/MAGIC/retire */
static void handle_retire(void *state, pcc_request *req, pcc_answer *answer)
{
  pcc_core *core = state;
  pcc_store_filter filter = {.has_magic = true, .opt = -1};
  if (pcc_magic_from_hex(req->path_arg, &filter.magic) != PCC_PROTO_OK) {
    pcc_answer_bad_parameter(answer, "magic", "8 hex digits ending in 0d0a");
    return;
  }
  if (pcc_core_backend_for(core, &filter.magic) >= 0) {
    pcc_answer_error(answer, PCC_ERR_MISMATCH, "a compiler serves this magic; use invalidate");
    pcc_answer_extra_string(answer, "param", "magic");
    return;
  }
  delete_and_answer(core, &filter, answer);
}

static void retire_if_unserved(const pcc_magic *magic, uint64_t entries, uint64_t bytes,
                               void *ctx)
{
  (void)bytes;
  pcc_core *core = ctx;
  if (pcc_core_backend_for(core, magic) >= 0)
    return;
  pcc_store_filter filter = {.has_magic = true, .magic = *magic, .opt = -1};
  uint64_t removed = 0;
  char hex[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(magic, hex);
  pcc_store_status rc = pcc_store_delete(pcc_core_store(core), &filter, &removed);
  if (rc == PCC_STORE_OK)
    printf("pycached: retired magic %s: %llu entries removed\n", hex,
           (unsigned long long)removed);
  else
    fprintf(stderr, "pycached: cannot retire magic %s (%llu entries): %s\n", hex,
            (unsigned long long)entries, pcc_store_strerror(rc));
}

/* ---- backups ----------------------------------------------------------------------------- */

static void handle_backup(void *state, pcc_request *req, pcc_answer *answer)
{
  (void)req;
  pcc_core *core = state;
  const char *base = pcc_core_config(core)->backup_dir;
  if (base == NULL) {
    pcc_answer_error(answer, PCC_ERR_FORBIDDEN, "this server has no --backup-dir; use GET to "
                     "download a copy");
    return;
  }
  char dir[PATH_MAX], stamp[32];
  time_t now = time(NULL);
  struct tm tm;
  strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", gmtime_r(&now, &tm));
  int made = -1;
  for (int attempt = 0; attempt < 100 && made != 0; attempt++) {
    int n = attempt ? snprintf(dir, sizeof dir, "%s/%s-%d", base, stamp, attempt)
                    : snprintf(dir, sizeof dir, "%s/%s", base, stamp);
    if (n <= 0 || (size_t)n >= sizeof dir)
      break;
    made = mkdir(dir, 0750);
    if (made != 0 && errno != EEXIST)
      break;
  }
  if (made != 0) {
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "cannot create a directory under %s: %s", base,
                     strerror(errno));
    return;
  }
  pcc_store_status rc = pcc_store_backup_dir(pcc_core_store(core), dir);
  if (rc != PCC_STORE_OK) {
    pcc_answer_store_error(answer, rc);
    return;
  }
  char file[PATH_MAX + 16];
  struct stat st;
  snprintf(file, sizeof file, "%s/data.mdb", dir);
  cJSON *json = cJSON_CreateObject();
  cJSON_AddStringToObject(json, "path", dir);
  cJSON_AddNumberToObject(json, "bytes", stat(file, &st) == 0 ? (double)st.st_size : 0);
  pcc_answer_json(answer, json);
}

typedef struct {
  pcc_core *core;
  int fd;
} backup_job;

/* Writes the store's compacted copy into the pipe the download reads (a thread of its own, so
 * that the HTTP thread streams while LMDB writes). */
static void *backup_writer(void *arg)
{
  backup_job *job = arg;
  pcc_store_status rc = pcc_store_backup_fd(pcc_core_store(job->core), job->fd);
  if (rc != PCC_STORE_OK)
    fprintf(stderr, "pycached: backup download: %s\n", pcc_store_strerror(rc));
  close(job->fd);
  free(job);
  return NULL;
}

static void handle_backup_download(void *state, pcc_request *req, pcc_answer *answer)
{
  (void)req;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "cannot create a pipe");
    return;
  }
  backup_job *job = malloc(sizeof *job);
  pthread_t thread;
  if (job != NULL)
    *job = (backup_job){state, fds[1]};
  if (job == NULL || pthread_create(&thread, NULL, backup_writer, job) != 0) {
    free(job);
    close(fds[0]);
    close(fds[1]);
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "cannot start the backup");
    return;
  }
  pthread_detach(thread);
  pcc_answer_clear(answer);
  answer->kind = PCC_ANSWER_STREAM;
  answer->fd = fds[0];
  answer->content_type = "application/octet-stream";
  pcc_answer_header(answer, MHD_HTTP_HEADER_CONTENT_DISPOSITION,
                    "attachment; filename=\"pycached-data.mdb\"");
}

/* ---- the admin page ---------------------------------------------------------------------- */

static void handle_page(void *state, pcc_request *req, pcc_answer *answer)
{
  (void)state;
  const unsigned char *data;
  size_t len;
  const char *type;
  if (!pcc_admin_asset_find(req->route->path, &data, &len, &type)) {
    pcc_answer_error(answer, PCC_ERR_NOT_FOUND, "no such file");
    return;
  }
  pcc_answer_bytes(answer, data, len, type, NULL, NULL);
  pcc_answer_header(answer, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  pcc_answer_header(answer, "X-Content-Type-Options", "nosniff");
  pcc_answer_header(answer, "X-Frame-Options", "DENY");
}

/* ---- the feature ------------------------------------------------------------------------- */

static int admin_open(pcc_core *core, void **state)
{
  if (pcc_core_config(core)->retire_unserved)
    pcc_store_magics(pcc_core_store(core), retire_if_unserved, core);
  *state = core;
  return 0;
}

static void admin_close(void *state)
{
  (void)state; /* the core is not ours */
}

#define ADMIN PCC_ROLE_ADMIN
#define NO_BODY PCC_ROUTE_NO_BODY
#define FILTER_ARGS {"prefix", "cursor", "limit", "namespace"} /* in the order of ARG_* */

static const pcc_route admin_routes[] = {
  {"GET", "/admin", 0, NO_BODY, false, 0, {NULL}, handle_page, "the admin page"},
  {"GET", "/admin/", 0, NO_BODY, false, 0, {NULL}, handle_page, "the admin page"},
  {"GET", "/metrics", ADMIN, NO_BODY, false, 0, {NULL}, handle_metrics, "Prometheus metrics"},
  {"GET", "/v1/admin/stats", ADMIN, NO_BODY, false, 0, {NULL}, handle_stats,
   "totals, per-magic counters, latency, store usage"},
  {"GET", "/v1/admin/entries", ADMIN, NO_BODY, true, 0, FILTER_ARGS, handle_entries,
   "list entries, a page at a time"},
  {"GET", "/v1/admin/entry", ADMIN, NO_BODY, true, PCC_PARAM_MAGIC | PCC_PARAM_PATH,
   {"namespace", NULL}, handle_entry, "one entry"},
  {"DELETE", "/v1/admin/entry", ADMIN, NO_BODY, true, PCC_PARAM_MAGIC | PCC_PARAM_PATH,
   {"namespace", NULL}, handle_entry_delete, "remove one entry"},
  {"POST", "/v1/admin/invalidate", ADMIN, NO_BODY, true, 0, FILTER_ARGS, handle_invalidate,
   "remove the entries of a magic, namespace and/or path prefix (and, without a prefix, their "
   "profiles)"},
  {"POST", "/v1/admin/purge", ADMIN, NO_BODY, false, 0, {NULL}, handle_purge,
   "remove every entry and profile"},
  {"GET", "/v1/admin/profiles", ADMIN, NO_BODY, true, 0, {"namespace", "cursor", "limit", NULL},
   handle_profiles, "list import profiles, a page at a time"},
  {"GET", "/v1/admin/profile", ADMIN, NO_BODY, true, PCC_PARAM_MAGIC, {"profile", "namespace"},
   handle_profile, "one import profile and its paths"},
  {"DELETE", "/v1/admin/profile", ADMIN, NO_BODY, true, PCC_PARAM_MAGIC,
   {"profile", "namespace"}, handle_profile_delete, "remove one import profile"},
  {"GET", "/v1/admin/magics", ADMIN, NO_BODY, false, 0, {NULL}, handle_magics,
   "backends and the magics in the store"},
  {"POST", "/v1/admin/magics/*/retire", ADMIN, NO_BODY, false, 0, {NULL}, handle_retire,
   "remove the entries of a magic no backend serves"},
  {"POST", "/v1/admin/backup", ADMIN, NO_BODY, false, 0, {NULL}, handle_backup,
   "write a compacted copy under --backup-dir"},
  {"GET", "/v1/admin/backup", ADMIN, NO_BODY, false, 0, {NULL}, handle_backup_download,
   "download a compacted copy"},
};

const pcc_feature pcc_admin_feature = {
  "admin", admin_routes, sizeof admin_routes / sizeof admin_routes[0],
  admin_open, NULL, admin_close,
};
