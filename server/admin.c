/* admin.c: the admin API of pycached (docs/API.md, "Admin API"): statistics per magic and in
 * total with latency histograms (as JSON and as Prometheus text), entry listing with cursors,
 * deletion, invalidation, purge, the magic-number lifecycle (backends, retiring magics no
 * backend serves) and compacted backups. The cache logic itself is in service.c. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <lmdb.h>
#include <microhttpd.h>

#include "service_internal.h"

#define ENTRIES_LIMIT_DEFAULT 100
#define ENTRIES_LIMIT_MAX 1000
#define ENTRIES_SCAN_MAX 10000 /* keys one listing request may look at */

/* ---- statistics ------------------------------------------------------------------------ */

typedef struct {
  pcc_magic magic;
  const svc_counters *counters; /* for the fallbacks clients reported; NULL when none */
  uint64_t entries, bytes;
  uint64_t hits, absent, stale, compiles, compile_errors, corruptions;
  bool served;
} magic_figures;

typedef struct {
  magic_figures magics[SVC_MAGICS_MAX + 64];
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

/* Everything the stats and the metrics show, read once. */
static void take_snapshot(pcc_service *service, snapshot *snap)
{
  memset(snap, 0, sizeof *snap);
  pcc_store_magics(service->store, add_store_magic, snap);
  unsigned n = atomic_load(&service->n_magics);
  for (unsigned i = 0; i < n; i++) {
    const svc_counters *c = &service->magics[i];
    magic_figures *f = figures_for(snap, &c->magic);
    if (f == NULL)
      continue;
    f->counters = c;
    f->hits = atomic_load(&c->hits);
    f->absent = atomic_load(&c->miss_absent);
    f->stale = atomic_load(&c->miss_stale);
    f->compiles = atomic_load(&c->compiles);
    f->compile_errors = atomic_load(&c->compile_errors);
    f->corruptions = atomic_load(&c->corruptions);
  }
  magic_figures *t = &snap->total;
  for (size_t i = 0; i < snap->n; i++) {
    magic_figures *f = &snap->magics[i];
    f->served = svc_backend_for(service, &f->magic) != NULL;
    t->entries += f->entries;
    t->bytes += f->bytes;
    t->hits += f->hits;
    t->absent += f->absent;
    t->stale += f->stale;
    t->compiles += f->compiles;
    t->compile_errors += f->compile_errors;
    t->corruptions += f->corruptions;
  }
  const svc_counters *o = &service->other; /* magics past the counters' table */
  t->hits += atomic_load(&o->hits);
  t->absent += atomic_load(&o->miss_absent);
  t->stale += atomic_load(&o->miss_stale);
  t->compiles += atomic_load(&o->compiles);
  t->compile_errors += atomic_load(&o->compile_errors);
  t->corruptions += atomic_load(&o->corruptions);
  snap->have_store = pcc_store_stat(service->store, &snap->store) == PCC_STORE_OK;
}

/* {"reason": count} of the fallbacks clients reported for the magics in figures (n of them). */
static cJSON *fallbacks_json(const magic_figures *figures, size_t n)
{
  cJSON *obj = cJSON_CreateObject();
  for (size_t i = 0; i < n; i++) {
    const svc_counters *c = figures[i].counters;
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

static cJSON *histogram_json(const svc_histogram *h)
{
  cJSON *obj = cJSON_CreateObject();
  cJSON_AddNumberToObject(obj, "count", (double)atomic_load(&h->count));
  cJSON_AddNumberToObject(obj, "sum", (double)atomic_load(&h->sum_us) / 1e6);
  cJSON *buckets = cJSON_AddArrayToObject(obj, "buckets");
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= SVC_LATENCY_BUCKETS; i++) {
    cumulative += atomic_load(&h->buckets[i]);
    cJSON *pair = cJSON_CreateArray();
    cJSON_AddItemToArray(pair, i < SVC_LATENCY_BUCKETS
                                 ? cJSON_CreateNumber(svc_latency_bounds[i])
                                 : cJSON_CreateString("+Inf"));
    cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)cumulative));
    cJSON_AddItemToArray(buckets, pair);
  }
  return obj;
}

void svc_admin_stats(pcc_service *service, svc_answer *answer)
{
  snapshot *snap = malloc(sizeof *snap);
  cJSON *stats = cJSON_CreateObject();
  if (snap == NULL || stats == NULL) {
    free(snap);
    cJSON_Delete(stats);
    svc_answer_error(answer, 500, "internal", "out of memory");
    return;
  }
  take_snapshot(service, snap);
  cJSON_AddStringToObject(stats, "version", PCC_VERSION);
  cJSON *build = cJSON_AddObjectToObject(stats, "build");
  cJSON_AddStringToObject(build, "libmicrohttpd", MHD_get_version());
  cJSON_AddStringToObject(build, "lmdb", mdb_version(NULL, NULL, NULL));
  cJSON_AddStringToObject(build, "python", service->backends[0].name);
  cJSON_AddStringToObject(build, "cc", __VERSION__);
  cJSON_AddStringToObject(build, "date", __DATE__);
  cJSON_AddNumberToObject(stats, "uptime", (double)(time(NULL) - service->started));
  cJSON_AddNumberToObject(stats, "requests", (double)atomic_load(&service->requests));
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
  cJSON_AddItemToObject(latency, "hit", histogram_json(&service->hit_latency));
  cJSON_AddItemToObject(latency, "compile", histogram_json(&service->compile_latency));
  cJSON *store = cJSON_AddObjectToObject(stats, "store");
  if (snap->have_store) {
    cJSON_AddNumberToObject(store, "entries", (double)snap->store.paths);
    cJSON_AddNumberToObject(store, "blobs", (double)snap->store.blobs);
    cJSON_AddNumberToObject(store, "bytes", (double)snap->store.bytes);
    cJSON_AddNumberToObject(store, "used", (double)snap->store.used);
    cJSON_AddNumberToObject(store, "map_size", (double)snap->store.map_size);
  }
  free(snap);
  answer->http_status = 200;
  answer->json = stats;
}

/* ---- metrics (Prometheus text format 0.0.4) -------------------------------------------- */

typedef struct {
  char *text;
  size_t len, cap;
  bool failed;
} text_buf;

static void emit(text_buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void emit(text_buf *out, const char *fmt, ...)
{
  for (int attempt = 0; attempt < 2 && !out->failed; attempt++) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out->text + out->len, out->cap - out->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      out->failed = true;
    } else if ((size_t)n < out->cap - out->len) {
      out->len += (size_t)n;
      return;
    } else { /* grow and try once more */
      size_t cap = out->cap * 2 + (size_t)n;
      char *grown = realloc(out->text, cap);
      if (grown == NULL)
        out->failed = true;
      out->text = grown ? grown : out->text;
      out->cap = grown ? cap : out->cap;
    }
  }
}

/* One sample per magic of the magic_figures field at offset; type is "counter" or "gauge". */
static void emit_per_magic(text_buf *out, const snapshot *snap, const char *name,
                           const char *type, const char *help, size_t offset)
{
  emit(out, "# HELP pycached_%s %s\n# TYPE pycached_%s %s\n", name, help, name, type);
  for (size_t i = 0; i < snap->n; i++) {
    char hex[2 * PCC_MAGIC_LEN + 1];
    uint64_t value;
    pcc_magic_to_hex(&snap->magics[i].magic, hex);
    memcpy(&value, (const char *)&snap->magics[i] + offset, sizeof value);
    emit(out, "pycached_%s{magic=\"%s\"} %llu\n", name, hex, (unsigned long long)value);
  }
}

static void emit_histogram(text_buf *out, const char *name, const char *help,
                           const svc_histogram *h)
{
  emit(out, "# HELP pycached_%s %s\n# TYPE pycached_%s histogram\n", name, help, name);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < SVC_LATENCY_BUCKETS; i++) {
    cumulative += atomic_load(&h->buckets[i]);
    emit(out, "pycached_%s_bucket{le=\"%g\"} %llu\n", name, svc_latency_bounds[i],
         (unsigned long long)cumulative);
  }
  cumulative += atomic_load(&h->buckets[SVC_LATENCY_BUCKETS]);
  emit(out, "pycached_%s_bucket{le=\"+Inf\"} %llu\npycached_%s_sum %.6f\npycached_%s_count %llu\n",
       name, (unsigned long long)cumulative, name, (double)atomic_load(&h->sum_us) / 1e6, name,
       (unsigned long long)atomic_load(&h->count));
}

char *svc_metrics(pcc_service *service, size_t *len)
{
  snapshot *snap = malloc(sizeof *snap);
  text_buf out = {malloc(8192), 0, 8192, false};
  if (snap == NULL || out.text == NULL) {
    free(snap);
    free(out.text);
    return NULL;
  }
  take_snapshot(service, snap);
  emit(&out, "# HELP pycached_build_info pycached's version\n# TYPE pycached_build_info gauge\n"
             "pycached_build_info{version=\"%s\"} 1\n", PCC_VERSION);
  emit(&out, "# HELP pycached_uptime_seconds Seconds since start\n"
             "# TYPE pycached_uptime_seconds gauge\npycached_uptime_seconds %lld\n",
       (long long)(time(NULL) - service->started));
  emit(&out, "# HELP pycached_requests_total HTTP requests\n"
             "# TYPE pycached_requests_total counter\npycached_requests_total %llu\n",
       (unsigned long long)atomic_load(&service->requests));
  emit_per_magic(&out, snap, "hits_total", "counter", "Lookups answered from the store",
               offsetof(magic_figures, hits));
  emit(&out, "# HELP pycached_misses_total Lookups answered miss\n"
             "# TYPE pycached_misses_total counter\n");
  for (size_t i = 0; i < snap->n; i++) {
    char hex[2 * PCC_MAGIC_LEN + 1];
    pcc_magic_to_hex(&snap->magics[i].magic, hex);
    emit(&out, "pycached_misses_total{magic=\"%s\",reason=\"absent\"} %llu\n"
               "pycached_misses_total{magic=\"%s\",reason=\"stale\"} %llu\n",
         hex, (unsigned long long)snap->magics[i].absent, hex,
         (unsigned long long)snap->magics[i].stale);
  }
  emit_per_magic(&out, snap, "compiles_total", "counter", "Compiles run by a worker",
               offsetof(magic_figures, compiles));
  emit_per_magic(&out, snap, "compile_errors_total", "counter", "Compiles that raised",
               offsetof(magic_figures, compile_errors));
  emit_per_magic(&out, snap, "corruptions_total", "counter",
                 "Stored blobs dropped after a failed checksum",
               offsetof(magic_figures, corruptions));
  emit_per_magic(&out, snap, "entries", "gauge", "Path entries in the store",
                 offsetof(magic_figures, entries));
  emit_per_magic(&out, snap, "entry_bytes", "gauge", "Bytes of stored code",
                 offsetof(magic_figures, bytes));
  emit(&out, "# HELP pycached_client_fallbacks_total Fallbacks to local compilation clients "
             "reported, by reason\n# TYPE pycached_client_fallbacks_total counter\n");
  for (size_t i = 0; i < snap->n; i++) {
    const svc_counters *c = snap->magics[i].counters;
    unsigned reasons = c ? atomic_load(&c->n_reasons) : 0;
    char hex[2 * PCC_MAGIC_LEN + 1];
    pcc_magic_to_hex(&snap->magics[i].magic, hex);
    for (unsigned r = 0; r < reasons; r++)
      emit(&out, "pycached_client_fallbacks_total{magic=\"%s\",reason=\"%s\"} %llu\n", hex,
           c->reasons[r], (unsigned long long)atomic_load(&c->reason_counts[r]));
  }
  emit_histogram(&out, "hit_seconds", "Time to answer a lookup hit", &service->hit_latency);
  emit_histogram(&out, "compile_seconds", "Time a worker took to compile",
                 &service->compile_latency);
  if (snap->have_store)
    emit(&out, "# HELP pycached_store_used_bytes Bytes of the LMDB map in use\n"
               "# TYPE pycached_store_used_bytes gauge\npycached_store_used_bytes %llu\n"
               "# HELP pycached_store_map_bytes Size of the LMDB map\n"
               "# TYPE pycached_store_map_bytes gauge\npycached_store_map_bytes %llu\n",
         (unsigned long long)snap->store.used, (unsigned long long)snap->store.map_size);
  free(snap);
  if (out.failed) {
    free(out.text);
    return NULL;
  }
  *len = out.len;
  return out.text;
}

/* ---- entries --------------------------------------------------------------------------- */

typedef struct {
  pcc_service *service;
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
  svc_entry_hits(visit->service, &entry->magic, entry->opt, entry->path, entry->path_len, &hits,
                 &last);
  pcc_magic_to_hex(&entry->magic, magic);
  pcc_digest_to_hex(&entry->record.digest, digest);
  cJSON_AddStringToObject(obj, "magic", magic);
  cJSON_AddNumberToObject(obj, "opt", entry->opt);
  cJSON_AddStringToObject(obj, "path", path);
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

/* The store filter of a query; false (answer set) when it is malformed. */
static bool query_filter(const svc_admin_query *query, pcc_store_filter *filter,
                         svc_answer *answer)
{
  memset(filter, 0, sizeof *filter);
  filter->has_magic = query->params.present & PCC_PARAM_MAGIC;
  filter->magic = query->params.magic;
  filter->opt = (query->params.present & PCC_PARAM_OPT) ? query->params.opt : -1;
  if (query->prefix != NULL && query->prefix[0] != '\0') {
    filter->prefix = query->prefix;
    filter->prefix_len = strlen(query->prefix);
    if (query->prefix[0] != '/' || filter->prefix_len > PCC_PATH_MAX) {
      svc_answer_error(answer, 400, "bad-parameter", "prefix: an absolute path prefix");
      svc_answer_extra_string(answer, "param", "prefix");
      return false;
    }
  }
  return true;
}

static void hex_encode(const uint8_t *bytes, size_t len, char *out)
{
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 0xf];
  }
  out[2 * len] = '\0';
}

/* Decodes a cursor (hex of a store key); false for a malformed one. */
static bool cursor_decode(const char *text, uint8_t *out, size_t *len)
{
  size_t n = strlen(text);
  if (n % 2 != 0 || n / 2 > PCC_STORE_CURSOR_MAX)
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

void svc_admin_entries(pcc_service *service, const svc_admin_query *query, svc_answer *answer)
{
  pcc_store_filter filter;
  if (!query_filter(query, &filter, answer))
    return;
  int64_t limit = ENTRIES_LIMIT_DEFAULT;
  if (query->limit != NULL &&
      pcc_parse_i64(query->limit, 1, ENTRIES_LIMIT_MAX, &limit) != PCC_PROTO_OK) {
    svc_answer_error(answer, 400, "bad-parameter", "limit: a number from 1 to %d",
                     ENTRIES_LIMIT_MAX);
    svc_answer_extra_string(answer, "param", "limit");
    return;
  }
  uint8_t cursor[PCC_STORE_CURSOR_MAX], next[PCC_STORE_CURSOR_MAX];
  size_t cursor_len = 0, next_len = 0;
  if (query->cursor != NULL && !cursor_decode(query->cursor, cursor, &cursor_len)) {
    svc_answer_error(answer, 400, "bad-parameter", "cursor: not one this server gave");
    svc_answer_extra_string(answer, "param", "cursor");
    return;
  }
  entry_visit visit = {service, cJSON_CreateArray()};
  pcc_store_status rc = pcc_store_scan(service->store, &filter, cursor, cursor_len,
                                       (size_t)limit, ENTRIES_SCAN_MAX, add_entry, &visit, next,
                                       &next_len);
  if (rc != PCC_STORE_OK) {
    cJSON_Delete(visit.list);
    svc_answer_store_error(answer, rc);
    return;
  }
  cJSON *json = cJSON_CreateObject();
  cJSON_AddItemToObject(json, "entries", visit.list);
  if (next_len > 0) {
    char hex[2 * PCC_STORE_CURSOR_MAX + 1];
    hex_encode(next, next_len, hex);
    cJSON_AddStringToObject(json, "next_cursor", hex);
  } else {
    cJSON_AddNullToObject(json, "next_cursor");
  }
  answer->http_status = 200;
  answer->json = json;
}

/* A query must name one entry: magic and path (opt defaults to 0). */
static bool one_entry(const svc_admin_query *query, svc_answer *answer)
{
  const char *missing = !(query->params.present & PCC_PARAM_MAGIC) ? "magic"
                        : !(query->params.present & PCC_PARAM_PATH) ? "path"
                                                                     : NULL;
  if (missing == NULL)
    return true;
  svc_answer_error(answer, 400, "bad-parameter", "%s: required", missing);
  svc_answer_extra_string(answer, "param", missing);
  return false;
}

static cJSON *removed_json(uint64_t removed)
{
  cJSON *json = cJSON_CreateObject();
  cJSON_AddNumberToObject(json, "removed", (double)removed);
  return json;
}

void svc_admin_entry(pcc_service *service, const svc_admin_query *query, bool delete_it,
                     svc_answer *answer)
{
  if (!one_entry(query, answer))
    return;
  const pcc_params *p = &query->params;
  pcc_store_status rc;
  if (delete_it) {
    uint64_t removed = 0;
    rc = pcc_store_delete_one(service->store, &p->magic, p->opt, p->path, p->path_len, &removed);
    if (rc == PCC_STORE_OK && removed == 0)
      rc = PCC_STORE_NOTFOUND;
    if (rc == PCC_STORE_OK) {
      answer->http_status = 200;
      answer->json = removed_json(removed);
    }
  } else {
    entry_visit visit = {service, NULL};
    rc = pcc_store_get_entry(service->store, &p->magic, p->opt, p->path, p->path_len, add_entry,
                             &visit);
    if (rc == PCC_STORE_OK) {
      answer->http_status = 200;
      answer->json = visit.list;
    } else {
      cJSON_Delete(visit.list);
    }
  }
  if (rc == PCC_STORE_NOTFOUND)
    svc_answer_error(answer, 404, "not-found", "no entry for this magic, opt and path");
  else if (rc != PCC_STORE_OK)
    svc_answer_store_error(answer, rc);
}

static void delete_and_answer(pcc_service *service, const pcc_store_filter *filter,
                              svc_answer *answer)
{
  uint64_t removed = 0;
  pcc_store_status rc = pcc_store_delete(service->store, filter, &removed);
  if (rc != PCC_STORE_OK) {
    svc_answer_store_error(answer, rc);
    return;
  }
  answer->http_status = 200;
  answer->json = removed_json(removed);
}

void svc_admin_invalidate(pcc_service *service, const svc_admin_query *query,
                          svc_answer *answer)
{
  pcc_store_filter filter;
  if (!query_filter(query, &filter, answer))
    return;
  if (!filter.has_magic && filter.prefix_len == 0) {
    svc_answer_error(answer, 400, "bad-parameter",
                     "prefix or magic: say what to invalidate (purge removes everything)");
    svc_answer_extra_string(answer, "param", "prefix");
    return;
  }
  delete_and_answer(service, &filter, answer);
}

void svc_admin_purge(pcc_service *service, svc_answer *answer)
{
  delete_and_answer(service, NULL, answer);
}

/* ---- magics ------------------------------------------------------------------------------ */

static void add_magic_row(const pcc_magic *magic, uint64_t entries, uint64_t bytes, void *ctx)
{
  void **args = ctx;
  pcc_service *service = args[0];
  cJSON *list = args[1];
  char hex[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(magic, hex);
  cJSON *row = cJSON_CreateObject();
  cJSON_AddStringToObject(row, "magic", hex);
  cJSON_AddNumberToObject(row, "entries", (double)entries);
  cJSON_AddNumberToObject(row, "bytes", (double)bytes);
  cJSON_AddBoolToObject(row, "served", svc_backend_for(service, magic) != NULL);
  cJSON_AddItemToArray(list, row);
}

void svc_admin_magics(pcc_service *service, svc_answer *answer)
{
  cJSON *json = cJSON_CreateObject();
  cJSON *backends = cJSON_AddArrayToObject(json, "backends");
  for (unsigned b = 0; b < service->n_backends; b++) {
    const svc_backend *backend = &service->backends[b];
    char hex[2 * PCC_MAGIC_LEN + 1], implementation[PCC_COMPILER_NAME_MAX + 1];
    pcc_magic_to_hex(pcc_compiler_magic(backend->compiler), hex);
    /* names are "implementation-version" (compiler.h) */
    snprintf(implementation, sizeof implementation, "%s", backend->name);
    char *dash = strrchr(implementation, '-');
    const char *version = dash ? dash + 1 : "";
    if (dash)
      *dash = '\0';
    cJSON *row = cJSON_CreateObject();
    cJSON_AddStringToObject(row, "name", backend->name);
    cJSON_AddStringToObject(row, "implementation", implementation);
    cJSON_AddStringToObject(row, "version", version);
    cJSON_AddStringToObject(row, "magic", hex);
    cJSON_AddNumberToObject(row, "workers", pcc_compiler_workers(backend->compiler));
    cJSON_AddStringToObject(row, "interpreter", backend->interpreter);
    cJSON_AddBoolToObject(row, "default", b == 0);
    cJSON_AddItemToArray(backends, row);
  }
  void *args[2] = {service, cJSON_AddArrayToObject(json, "store")};
  pcc_store_status rc = pcc_store_magics(service->store, add_magic_row, args);
  if (rc != PCC_STORE_OK) {
    cJSON_Delete(json);
    svc_answer_store_error(answer, rc);
    return;
  }
  answer->http_status = 200;
  answer->json = json;
}

void svc_admin_retire(pcc_service *service, const char *magic_hex, svc_answer *answer)
{
  pcc_store_filter filter = {.has_magic = true, .opt = -1};
  if (pcc_magic_from_hex(magic_hex, &filter.magic) != PCC_PROTO_OK) {
    svc_answer_error(answer, 400, "bad-parameter", "magic: 8 hex digits ending in 0d0a");
    svc_answer_extra_string(answer, "param", "magic");
    return;
  }
  if (svc_backend_for(service, &filter.magic) != NULL) {
    svc_answer_error(answer, 409, "mismatch", "a compiler serves this magic; use invalidate");
    svc_answer_extra_string(answer, "param", "magic");
    return;
  }
  delete_and_answer(service, &filter, answer);
}

static void retire_if_unserved(const pcc_magic *magic, uint64_t entries, uint64_t bytes,
                               void *ctx)
{
  (void)bytes;
  pcc_service *service = ctx;
  if (svc_backend_for(service, magic) != NULL)
    return;
  pcc_store_filter filter = {.has_magic = true, .magic = *magic, .opt = -1};
  uint64_t removed = 0;
  char hex[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(magic, hex);
  pcc_store_status rc = pcc_store_delete(service->store, &filter, &removed);
  if (rc == PCC_STORE_OK)
    printf("pycached: retired magic %s: %llu entries removed\n", hex,
           (unsigned long long)removed);
  else
    fprintf(stderr, "pycached: cannot retire magic %s (%llu entries): %s\n", hex,
            (unsigned long long)entries, pcc_store_strerror(rc));
}

void svc_retire_unserved(pcc_service *service)
{
  pcc_store_magics(service->store, retire_if_unserved, service);
}

/* ---- backups ----------------------------------------------------------------------------- */

void svc_admin_backup(pcc_service *service, svc_answer *answer)
{
  const char *base = service->config.backup_dir;
  if (base == NULL) {
    svc_answer_error(answer, 403, "forbidden", "this server has no --backup-dir; use GET to "
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
    svc_answer_error(answer, 500, "internal", "cannot create a directory under %s: %s", base,
                     strerror(errno));
    return;
  }
  pcc_store_status rc = pcc_store_backup_dir(service->store, dir);
  if (rc != PCC_STORE_OK) {
    svc_answer_store_error(answer, rc);
    return;
  }
  char file[PATH_MAX + 16];
  struct stat st;
  snprintf(file, sizeof file, "%s/data.mdb", dir);
  cJSON *json = cJSON_CreateObject();
  cJSON_AddStringToObject(json, "path", dir);
  cJSON_AddNumberToObject(json, "bytes", stat(file, &st) == 0 ? (double)st.st_size : 0);
  answer->http_status = 200;
  answer->json = json;
}

pcc_store_status svc_backup_to_fd(pcc_service *service, int fd)
{
  return pcc_store_backup_fd(service->store, fd);
}
