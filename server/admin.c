/* admin.c: the administration feature of pycached (docs/API.md, "Admin API"): statistics per
 * magic and in total with latency histograms (as JSON and as Prometheus text), entry listing
 * with cursors, deletion, invalidation, purge, import profiles (listed, shown, deleted), the
 * magic-number lifecycle (backends, retiring magics no backend serves), compacted backups
 * (written on the server, or copied to a temporary file and then downloaded) and the admin page.
 * At open, with --retire-unserved-magics, it retires the magics no backend serves. */
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
#include "pcc_log.h"

/* The feature's state: the core, and the backup copy in progress (see "backups"). */
typedef struct backup_job backup_job;

typedef struct {
  pcc_core *core;
  pthread_mutex_t lock;  /* guards copying, closing and the jobs' holds */
  pthread_cond_t idle;   /* signalled when a copy ends */
  backup_job *copying;   /* at most one (PCC_BACKUPS_AT_ONCE) */
  bool closing;
} admin;

_Static_assert(PCC_BACKUPS_AT_ONCE == 1, "admin.c makes one backup copy at a time");

static pcc_core *core_of(void *state)
{
  return ((admin *)state)->core;
}

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
  uint64_t hits, bundle_hits, absent, stale, unsupported, compiles, compile_errors, corruptions;
  bool served;
  bool other; /* the row of the magics without counters of their own (counters.h) */
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
  f->bundle_hits += atomic_load(&c->bundle_hits);
  f->absent += atomic_load(&c->miss_absent);
  f->stale += atomic_load(&c->miss_stale);
  f->unsupported += atomic_load(&c->unsupported);
  f->compiles += atomic_load(&c->compiles);
  f->compile_errors += atomic_load(&c->compile_errors);
  f->corruptions += atomic_load(&c->corruptions);
}

/* The name of a row: its magic in hex, or "other". */
static const char *figures_name(const magic_figures *f, char hex[2 * PCC_MAGIC_LEN + 1])
{
  if (f->other)
    return "other";
  pcc_magic_to_hex(&f->magic, hex);
  return hex;
}

/* Adds the row "other" when the magics without counters of their own have counted anything. */
static void add_other(snapshot *snap, const pcc_magic_counters *other)
{
  magic_figures f = {.counters = other, .other = true};
  add_counters(&f, other);
  bool used = f.hits || f.absent || f.stale || f.unsupported || f.compiles || f.compile_errors ||
              f.corruptions || atomic_load(&other->n_reasons) > 0;
  if (used && snap->n < sizeof snap->magics / sizeof snap->magics[0])
    snap->magics[snap->n++] = f;
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
  add_other(snap, other);
  magic_figures *t = &snap->total;
  for (size_t i = 0; i < snap->n; i++) {
    magic_figures *f = &snap->magics[i];
    f->served = !f->other && pcc_core_backend_for(core, &f->magic) >= 0;
    t->entries += f->entries;
    t->bytes += f->bytes;
    t->hits += f->hits;
    t->bundle_hits += f->bundle_hits;
    t->absent += f->absent;
    t->stale += f->stale;
    t->unsupported += f->unsupported;
    t->compiles += f->compiles;
    t->compile_errors += f->compile_errors;
    t->corruptions += f->corruptions;
  }
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
  cJSON_AddNumberToObject(obj, "bundle_hits", (double)f->bundle_hits);
  cJSON *misses = cJSON_AddObjectToObject(obj, "misses");
  cJSON_AddNumberToObject(misses, "absent", (double)f->absent);
  cJSON_AddNumberToObject(misses, "stale", (double)f->stale);
  cJSON_AddNumberToObject(misses, "unsupported_magic", (double)f->unsupported);
  pcc_counters_add_ratio(obj, f->hits, f->absent + f->stale + f->unsupported);
  cJSON_AddNumberToObject(obj, "compiles", (double)f->compiles);
  cJSON_AddNumberToObject(obj, "compile_errors", (double)f->compile_errors);
  cJSON_AddNumberToObject(obj, "corruptions", (double)f->corruptions);
  return obj;
}

static cJSON *histogram_json(const pcc_histogram *h)
{
  cJSON *obj = cJSON_CreateObject();
  cJSON_AddNumberToObject(obj, "count", (double)atomic_load(&h->count));
  cJSON_AddNumberToObject(obj, "sum", (double)atomic_load(&h->sum_ns) / 1e9);
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

/* The compilers' health: {"failures", "timeouts", "joined", "backends": [{"name", "magic",
 * "workers", "alive", "busy", "restarts", "recycles"}]}. */
static cJSON *compilers_json(pcc_core *core, const pcc_totals *totals)
{
  cJSON *obj = cJSON_CreateObject();
  cJSON_AddNumberToObject(obj, "failures", (double)atomic_load(&totals->compiler_failures));
  cJSON_AddNumberToObject(obj, "timeouts", (double)atomic_load(&totals->timeouts));
  cJSON_AddNumberToObject(obj, "joined", (double)atomic_load(&totals->joined));
  cJSON *list = cJSON_AddArrayToObject(obj, "backends");
  const pcc_backend *backends;
  unsigned n = pcc_core_backends(core, &backends);
  for (unsigned b = 0; b < n; b++) {
    const pcc_compiler *compiler = backends[b].compiler;
    char hex[2 * PCC_MAGIC_LEN + 1];
    pcc_magic_to_hex(pcc_compiler_magic(compiler), hex);
    cJSON *row = cJSON_CreateObject();
    cJSON_AddStringToObject(row, "name", backends[b].name);
    cJSON_AddStringToObject(row, "magic", hex);
    cJSON_AddNumberToObject(row, "workers", pcc_compiler_workers(compiler));
    cJSON_AddNumberToObject(row, "alive", pcc_compiler_alive(compiler));
    cJSON_AddNumberToObject(row, "busy", pcc_compiler_busy(compiler));
    cJSON_AddNumberToObject(row, "restarts", (double)pcc_compiler_restarts(compiler));
    cJSON_AddNumberToObject(row, "recycles", (double)pcc_compiler_recycles(compiler));
    cJSON_AddItemToArray(list, row);
  }
  return obj;
}

static void handle_stats(void *state, pcc_request *req, pcc_answer *answer)
{
  (void)req;
  pcc_core *core = core_of(state);
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
    cJSON *one = figures_json(&snap->magics[i]);
    cJSON_AddItemToObject(one, "fallbacks", fallbacks_json(&snap->magics[i], 1));
    cJSON_AddItemToObject(magics, figures_name(&snap->magics[i], hex), one);
  }
  cJSON_AddItemToObject(stats, "compilers", compilers_json(core, totals));
  cJSON *warm = cJSON_AddObjectToObject(stats, "warm");
  cJSON_AddNumberToObject(warm, "bundles", (double)atomic_load(&totals->bundles));
  cJSON_AddNumberToObject(warm, "bundle_entries", (double)snap->total.bundle_hits);
  cJSON_AddNumberToObject(warm, "bundle_bytes", (double)atomic_load(&totals->bundle_bytes));
  cJSON_AddNumberToObject(warm, "profiles_received",
                          (double)atomic_load(&totals->profiles_received));
  cJSON *latency = cJSON_AddObjectToObject(stats, "latency");
  cJSON_AddItemToObject(latency, "hit", histogram_json(&totals->hit_latency));
  cJSON_AddItemToObject(latency, "compile", histogram_json(&totals->compile_latency));
  cJSON_AddItemToObject(stats, "store", pcc_core_store_json(core));
  free(snap);
  pcc_answer_json(answer, stats);
}

/* ---- metrics (Prometheus text format 0.0.4) -------------------------------------------- */

#define METRICS_MAX (4 * PCC_MIB) /* the text of /metrics: a few hundred lines per magic */

static uint64_t pool_workers(const pcc_compiler *compiler)
{
  return pcc_compiler_workers(compiler);
}

static uint64_t pool_alive(const pcc_compiler *compiler)
{
  return pcc_compiler_alive(compiler);
}

static uint64_t pool_busy(const pcc_compiler *compiler)
{
  return pcc_compiler_busy(compiler);
}

/* One sample per magic of the magic_figures field at offset; type is "counter" or "gauge". */
static void emit_per_magic(pcc_dynbuf *out, const snapshot *snap, const char *name,
                           const char *type, const char *help, size_t offset)
{
  pcc_dynbuf_addf(out, "# HELP pycached_%s %s\n# TYPE pycached_%s %s\n", name, help, name, type);
  for (size_t i = 0; i < snap->n; i++) {
    char hex[2 * PCC_MAGIC_LEN + 1];
    uint64_t value;
    memcpy(&value, (const char *)&snap->magics[i] + offset, sizeof value);
    pcc_dynbuf_addf(out, "pycached_%s{magic=\"%s\"} %llu\n", name,
                    figures_name(&snap->magics[i], hex), (unsigned long long)value);
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
  pcc_dynbuf_addf(out, "pycached_%s_bucket{le=\"+Inf\"} %llu\npycached_%s_sum %.9f\n"
                  "pycached_%s_count %llu\n", name, (unsigned long long)cumulative, name,
                  (double)atomic_load(&h->sum_ns) / 1e9, name,
                  (unsigned long long)atomic_load(&h->count));
}

/* The health of each backend's worker pool, labelled by backend and magic. */
static void emit_compilers(pcc_core *core, pcc_dynbuf *out)
{
  const pcc_backend *backends;
  unsigned n = pcc_core_backends(core, &backends);
  const struct {
    const char *name, *type, *help;
    uint64_t (*value)(const pcc_compiler *compiler);
  } figures[] = {
    {"compiler_workers", "gauge", "Worker processes a backend runs (--workers)", pool_workers},
    {"compiler_workers_alive", "gauge", "Workers whose process is running", pool_alive},
    {"compiler_workers_busy", "gauge", "Workers compiling now (or being replaced)", pool_busy},
    {"compiler_restarts_total", "counter", "Workers replaced after a crash, timeout or protocol "
     "error", pcc_compiler_restarts},
    {"compiler_recycles_total", "counter", "Workers replaced after --worker-max-compiles or "
     "--worker-max-rss", pcc_compiler_recycles},
  };
  for (size_t f = 0; f < sizeof figures / sizeof figures[0]; f++) {
    pcc_dynbuf_addf(out, "# HELP pycached_%s %s\n# TYPE pycached_%s %s\n", figures[f].name,
                    figures[f].help, figures[f].name, figures[f].type);
    for (unsigned b = 0; b < n; b++) {
      char hex[2 * PCC_MAGIC_LEN + 1];
      pcc_magic_to_hex(pcc_compiler_magic(backends[b].compiler), hex);
      pcc_dynbuf_addf(out, "pycached_%s{backend=\"%s\",magic=\"%s\"} %llu\n", figures[f].name,
                      backends[b].name, hex,
                      (unsigned long long)figures[f].value(backends[b].compiler));
    }
  }
}

static void emit_shared(pcc_core *core, pcc_dynbuf *out);
static void emit_upstream(pcc_core *core, pcc_dynbuf *out);

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
    const char *magic = figures_name(&snap->magics[i], hex);
    pcc_dynbuf_addf(out, "pycached_misses_total{magic=\"%s\",reason=\"absent\"} %llu\n"
                    "pycached_misses_total{magic=\"%s\",reason=\"stale\"} %llu\n"
                    "pycached_misses_total{magic=\"%s\",reason=\"unsupported_magic\"} %llu\n",
                    magic, (unsigned long long)snap->magics[i].absent, magic,
                    (unsigned long long)snap->magics[i].stale, magic,
                    (unsigned long long)snap->magics[i].unsupported);
  }
  emit_per_magic(out, snap, "bundle_hits_total", "counter",
                 "Entries served in bundles (counted in pycached_hits_total too)",
                 offsetof(magic_figures, bundle_hits));
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
    const char *magic = figures_name(&snap->magics[i], hex);
    for (unsigned r = 0; r < reasons; r++)
      pcc_dynbuf_addf(out, "pycached_client_fallbacks_total{magic=\"%s\",reason=\"%s\"} %llu\n",
                      magic, c->reasons[r], (unsigned long long)atomic_load(&c->reason_counts[r]));
  }
  emit_compilers(core, out);
  const struct {
    const char *name, *help;
    const atomic_uint_fast64_t *value;
  } totals_figures[] = {
    {"compile_failures_total", "Compiles a worker failed (crashed, broke the protocol, or "
     "raised MemoryError or the like); answered 503", &totals->compiler_failures},
    {"compile_timeouts_total", "Compiles killed past --compile-timeout", &totals->timeouts},
    {"compiles_joined_total", "Compile requests that joined one in progress", &totals->joined},
    {"bundles_served_total", "Bundles served (GET /v1/bundle)", &totals->bundles},
    {"bundle_bytes_total", "Bytes of the bundles served, as sent", &totals->bundle_bytes},
    {"profiles_received_total", "Import profiles clients sent (POST /v1/profile)",
     &totals->profiles_received},
  };
  for (size_t i = 0; i < sizeof totals_figures / sizeof totals_figures[0]; i++)
    pcc_dynbuf_addf(out, "# HELP pycached_%s %s\n# TYPE pycached_%s counter\npycached_%s %llu\n",
                    totals_figures[i].name, totals_figures[i].help, totals_figures[i].name,
                    totals_figures[i].name,
                    (unsigned long long)atomic_load(totals_figures[i].value));
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
    {"store_evicted_bytes_total", "counter", "Payload bytes of the blobs evicted",
     s->evicted_bytes},
    {"store_damaged", "gauge", "1: the store's file is damaged (run pycached --verify-store)",
     s->damaged},
    {"store_corruptions_total", "counter", "Damaged records and faults the store met",
     s->corruptions},
  };
  for (size_t i = 0; snap->have_store && i < sizeof store_figures / sizeof store_figures[0]; i++)
    pcc_dynbuf_addf(out, "# HELP pycached_%s %s\n# TYPE pycached_%s %s\npycached_%s %llu\n",
                    store_figures[i].name, store_figures[i].help, store_figures[i].name,
                    store_figures[i].type, store_figures[i].name,
                    (unsigned long long)store_figures[i].value);
  emit_shared(core, out);
  emit_upstream(core, out);
}

/* The --shared tier's counters and each Redis server's state (nothing without --shared). */
static void emit_shared(pcc_core *core, pcc_dynbuf *out)
{
  pcc_shared *shared = pcc_core_shared(core);
  if (shared == NULL)
    return;
  pcc_shared_figures f;
  pcc_shared_figures_get(shared, &f);
  const struct {
    const char *name, *help;
    uint64_t value;
  } figures[] = {
    {"shared_hits_total", "Blobs taken from the shared tier instead of a compile", f.hits},
    {"shared_misses_total", "Shared-tier lookups before a compile that found nothing", f.misses},
    {"shared_stores_total", "Blobs this replica compiled and stored in the shared tier",
     f.stores},
    {"shared_corrupt_total", "Shared-tier values that failed verification (dropped, never "
     "served)", f.corrupt},
    {"shared_errors_total", "Redis commands that failed or timed out", f.errors},
    {"shared_timeouts_total", "Redis commands and connects of those that ran out of time",
     f.timeouts},
    {"shared_skipped_total", "Redis commands not sent: their server was down (backoff)",
     f.skipped},
    {"shared_lock_waits_total", "Compiles that waited for another replica's compile lock",
     f.lock_waits},
    {"shared_lock_expired_total", "Lock waits that ended without the blob (compiled here)",
     f.lock_expired},
  };
  for (size_t i = 0; i < sizeof figures / sizeof figures[0]; i++)
    pcc_dynbuf_addf(out, "# HELP pycached_%s %s\n# TYPE pycached_%s counter\npycached_%s %llu\n",
                    figures[i].name, figures[i].help, figures[i].name, figures[i].name,
                    (unsigned long long)figures[i].value);
  pcc_dynbuf_addf(out, "# HELP pycached_shared_server_up 1: the Redis server answers; 0: it is "
                  "skipped after a failure\n# TYPE pycached_shared_server_up gauge\n");
  for (unsigned i = 0; i < pcc_shared_servers(shared); i++)
    pcc_dynbuf_addf(out, "pycached_shared_server_up{server=\"%s\"} %d\n",
                    pcc_shared_server_id(shared, i), pcc_shared_server_up(shared, i) ? 1 : 0);
}

/* The --upstream tier's counters and each upstream's state (nothing without --upstream). */
static void emit_upstream(pcc_core *core, pcc_dynbuf *out)
{
  pcc_upstream *upstream = pcc_core_upstream(core);
  if (upstream == NULL)
    return;
  pcc_upstream_figures f;
  pcc_upstream_figures_get(upstream, &f);
  const struct {
    const char *name, *help;
    uint64_t value;
  } figures[] = {
    {"upstream_hits_total", "Blobs got from an upstream instead of a compile here", f.hits},
    {"upstream_misses_total", "Compiles no upstream answered with a blob (compiled here, or a "
     "forwarded one failed)", f.misses},
    {"upstream_unsupported_total", "Upstream answers unsupported-magic", f.unsupported},
    {"upstream_errors_total", "Upstream requests that failed (refused, an error status, cut)",
     f.errors},
    {"upstream_timeouts_total", "Upstream requests of those that ran out of time", f.timeouts},
    {"upstream_rejected_total", "Upstream answers that failed verification (never stored or "
     "served)", f.rejected},
    {"upstream_skipped_total", "Upstreams not asked: down (backoff)", f.skipped},
  };
  for (size_t i = 0; i < sizeof figures / sizeof figures[0]; i++)
    pcc_dynbuf_addf(out, "# HELP pycached_%s %s\n# TYPE pycached_%s counter\npycached_%s %llu\n",
                    figures[i].name, figures[i].help, figures[i].name, figures[i].name,
                    (unsigned long long)figures[i].value);
  pcc_dynbuf_addf(out, "# HELP pycached_upstream_up 1: the upstream answers; 0: it is skipped "
                  "after a failure\n# TYPE pycached_upstream_up gauge\n");
  for (unsigned i = 0; i < pcc_upstream_count(upstream); i++)
    pcc_dynbuf_addf(out, "pycached_upstream_up{upstream=\"%s\"} %d\n",
                    pcc_upstream_url(upstream, i), pcc_upstream_up(upstream, i) ? 1 : 0);
}

static void free_text(void *text)
{
  free(text);
}

static void handle_metrics(void *state, pcc_request *req, pcc_answer *answer)
{
  (void)req;
  pcc_core *core = core_of(state);
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
  pcc_core *core = core_of(state);
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

/* The audit line of a deletion (docs/OPERATIONS.md, "Audit lines"): the action, what it applied to
 * (filter, NULL: everything; path: one entry's path, else the filter's prefix; profile: a
 * profile's name), how it went and how many went, who asked (req NULL: the server itself). */
static void audit_delete(const pcc_request *req, const char *action,
                         const pcc_store_filter *filter, const char *path, const char *profile,
                         pcc_store_status rc, uint64_t removed)
{
  char magic[2 * PCC_MAGIC_LEN + 1];
  pcc_log_field f[12];
  size_t n = 0;
  f[n++] = PCC_LOG_STR("result", rc == PCC_STORE_OK ? "ok" : pcc_store_strerror(rc));
  f[n++] = PCC_LOG_INT("removed", removed);
  if (filter != NULL && filter->has_magic) {
    pcc_magic_to_hex(&filter->magic, magic);
    f[n++] = PCC_LOG_STR("magic", magic);
  }
  if (filter != NULL && filter->opt >= 0)
    f[n++] = PCC_LOG_INT("opt", filter->opt);
  if (filter != NULL && filter->ns != NULL)
    f[n++] = PCC_LOG_STR("namespace", filter->ns);
  if (path != NULL)
    f[n++] = PCC_LOG_STR("path", path);
  else if (filter != NULL && filter->prefix != NULL && filter->prefix_len > 0)
    f[n++] = PCC_LOG_STR("prefix", filter->prefix);
  if (profile != NULL)
    f[n++] = PCC_LOG_STR("profile", profile);
  f[n++] = PCC_LOG_STR("token", req ? req->token : "");
  f[n++] = PCC_LOG_STR("remote", req ? req->remote : "-");
  pcc_log_audit(action, rc == PCC_STORE_OK ? "admin action" : "admin action failed", f, n);
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
    pcc_store_filter what = {.has_magic = true, .magic = p->magic, .opt = p->opt, .ns = ns};
    audit_delete(req, "entry-delete", &what, p->path, NULL, rc, removed);
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
  entry_show_or_delete(core_of(state), req, false, answer);
}

static void handle_entry_delete(void *state, pcc_request *req, pcc_answer *answer)
{
  entry_show_or_delete(core_of(state), req, true, answer);
}

/* Deletes what filter matches (NULL: everything), answers how many went and writes the audit
 * line of action. */
static void delete_and_answer(pcc_core *core, const pcc_request *req, const char *action,
                              const pcc_store_filter *filter, pcc_answer *answer)
{
  uint64_t removed = 0;
  pcc_store_status rc = pcc_store_delete(pcc_core_store(core), filter, &removed);
  audit_delete(req, action, filter, NULL, NULL, rc, removed);
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
  delete_and_answer(core_of(state), req, "invalidate", &filter, answer);
}

static void handle_purge(void *state, pcc_request *req, pcc_answer *answer)
{
  delete_and_answer(core_of(state), req, "purge", NULL, answer);
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
  pcc_core *core = core_of(state);
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
    pcc_store_filter what = {.has_magic = true, .magic = p->magic, .opt = p->opt, .ns = ns};
    audit_delete(req, "profile-delete", &what, NULL, name, rc, removed);
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
  profile_show_or_delete(core_of(state), req, false, answer);
}

static void handle_profile_delete(void *state, pcc_request *req, pcc_answer *answer)
{
  profile_show_or_delete(core_of(state), req, true, answer);
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
  pcc_core *core = core_of(state);
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
  pcc_core *core = core_of(state);
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
  delete_and_answer(core, req, "retire", &filter, answer);
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
  audit_delete(NULL, "retire", &filter, NULL, NULL, rc, removed);
  if (rc == PCC_STORE_OK)
    printf("pycached: retired magic %s: %llu entries removed\n", hex,
           (unsigned long long)removed);
  else
    pcc_logf(PCC_LOG_ERROR, "cannot retire magic %s (%llu entries): %s", hex,
             (unsigned long long)entries, pcc_store_strerror(rc));
}

/* ---- backups -----------------------------------------------------------------------------
 * A backup is a compacted copy of the store (pcc_store_backup_fd) made by a thread of its own
 * while the request waits (PENDING), one copy at a time (PCC_BACKUPS_AT_ONCE; another is busy).
 * POST copies into a new directory under --backup-dir (0700, data.mdb 0600). GET copies into a
 * temporary file (0600, in --backup-dir or else the store's directory, unlinked as soon as it is
 * open) and only once the copy is complete serves that file, with its Content-Length: a copy
 * that failed is an error, never a 200 cut short, and no read transaction lasts longer than the
 * copy, however slowly the client reads. Shutdown waits for a copy in progress, at most
 * PCC_BACKUP_SHUTDOWN_WAIT seconds, then cuts it short (its writes fail from then on). */

#define BACKUP_RETRY_AFTER 5 /* seconds a busy answer asks a second backup to wait */

struct backup_job {
  admin *admin;
  int fd;                  /* the copy; -1 once a download's answer has it */
  char dir[PATH_MAX];      /* POST: the directory made for it; "" for a download */
  pcc_store_status rc;
  int error;               /* errno of a step after the store's copy (0: none) */
  uint64_t bytes;
  char token[sizeof ((pcc_auth_identity *)0)->name]; /* who asked, for the audit line */
  char remote[64];
  unsigned refs;           /* the thread's and the request's, guarded by admin->lock */
  bool abandoned;          /* the request went away */
  void (*resume)(void *ctx);
  void *ctx;
};

/* Drops a hold on a job; frees it on the last. Caller holds admin->lock. */
static void backup_unref_locked(backup_job *job)
{
  if (--job->refs > 0)
    return;
  if (job->fd >= 0)
    close(job->fd);
  free(job);
}

/* The copy: writes it, checks it, removes what a failed POST wrote, resumes the request. */
static void *backup_main(void *arg)
{
  backup_job *job = arg;
  admin *a = job->admin;
  job->rc = pcc_store_backup_fd(pcc_core_store(a->core), job->fd);
  struct stat st;
  if (job->rc == PCC_STORE_OK && ((job->dir[0] != '\0' && fsync(job->fd) != 0) ||
                                  fstat(job->fd, &st) != 0))
    job->error = errno;
  else if (job->rc == PCC_STORE_OK)
    job->bytes = (uint64_t)st.st_size;
  if (job->rc != PCC_STORE_OK || job->error != 0) {
    pcc_logf(PCC_LOG_ERROR, "backup copy failed: %s",
             job->error ? strerror(job->error) : pcc_store_strerror(job->rc));
    if (job->dir[0] != '\0') { /* no half copy is left to look like a backup */
      char file[PATH_MAX + 16];
      snprintf(file, sizeof file, "%s/data.mdb", job->dir);
      unlink(file);
      rmdir(job->dir);
    }
  }
  bool ok = job->rc == PCC_STORE_OK && job->error == 0;
  char target[PATH_MAX + 16];
  snprintf(target, sizeof target, "%s%s", job->dir, job->dir[0] ? "/data.mdb" : "");
  PCC_LOG_AUDIT("backup", ok ? "admin action" : "admin action failed",
                PCC_LOG_STR("result", ok ? "ok" : "failed"),
                PCC_LOG_STR("target", job->dir[0] ? target : "download"),
                PCC_LOG_INT("bytes", ok ? job->bytes : 0), PCC_LOG_STR("token", job->token),
                PCC_LOG_STR("remote", job->remote));
  pthread_mutex_lock(&a->lock);
  a->copying = NULL;
  pthread_cond_broadcast(&a->idle);
  if (!job->abandoned)
    job->resume(job->ctx);
  backup_unref_locked(job);
  pthread_mutex_unlock(&a->lock);
  return NULL;
}

/* Releases a request's hold on its job (after its answer, or when it went away first). */
static void backup_abandon(void *pending)
{
  backup_job *job = pending;
  admin *a = job->admin;
  pthread_mutex_lock(&a->lock);
  job->abandoned = true;
  backup_unref_locked(job);
  pthread_mutex_unlock(&a->lock);
}

/* The answer of a finished copy: the file (GET), where it is (POST), or why it failed. */
static void backup_finish(void *pending, pcc_request *req, pcc_answer *answer)
{
  (void)req;
  backup_job *job = pending;
  if (job->rc != PCC_STORE_OK || job->error != 0) {
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "the backup copy failed (%s); nothing was kept "
                     "(is the disk of %s full?)",
                     job->error ? strerror(job->error) : pcc_store_strerror(job->rc),
                     pcc_core_config(job->admin->core)->backup_dir ? "--backup-dir"
                                                                   : "the store");
  } else if (job->dir[0] == '\0') {
    pcc_answer_file(answer, job->fd, job->bytes, "application/octet-stream");
    job->fd = -1;
    pcc_answer_header(answer, MHD_HTTP_HEADER_CONTENT_DISPOSITION,
                      "attachment; filename=\"pycached-data.mdb\"");
  } else {
    cJSON *json = cJSON_CreateObject();
    cJSON_AddStringToObject(json, "path", job->dir);
    cJSON_AddNumberToObject(json, "bytes", (double)job->bytes);
    pcc_answer_json(answer, json);
  }
  backup_abandon(job);
}

/* POST's target: a new directory under base (0700) named by the time, and data.mdb in it
 * (0600). The descriptor, or -1 with errno set. */
static int backup_dir_target(const char *base, backup_job *job)
{
  char stamp[32];
  time_t now = time(NULL);
  struct tm tm;
  strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", gmtime_r(&now, &tm));
  int made = -1;
  errno = ENAMETOOLONG;
  for (int attempt = 0; attempt < 100 && made != 0; attempt++) {
    int n = attempt ? snprintf(job->dir, sizeof job->dir, "%s/%s-%d", base, stamp, attempt)
                    : snprintf(job->dir, sizeof job->dir, "%s/%s", base, stamp);
    if (n <= 0 || (size_t)n >= sizeof job->dir - 16)
      break;
    made = mkdir(job->dir, 0700);
    if (made != 0 && errno != EEXIST)
      break;
  }
  if (made != 0)
    return -1;
  char file[PATH_MAX + 16];
  snprintf(file, sizeof file, "%s/data.mdb", job->dir);
  int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    int saved = errno;
    rmdir(job->dir);
    errno = saved;
  }
  return fd;
}

/* GET's target: a temporary file in dir (0600), unlinked at once. The descriptor, or -1. */
static int backup_temp_target(const char *dir)
{
  char name[PATH_MAX];
  int n = snprintf(name, sizeof name, "%s/.pycached-download-XXXXXX", dir);
  if (n <= 0 || (size_t)n >= sizeof name) {
    errno = ENAMETOOLONG;
    return -1;
  }
  int fd = mkostemp(name, O_CLOEXEC);
  if (fd >= 0)
    unlink(name);
  return fd;
}

/* Starts a copy (download: GET's temporary file, else POST's directory) and suspends the
 * request until it is done; busy while another copy runs. */
static void backup_start(admin *a, pcc_request *req, bool download, pcc_answer *answer)
{
  const pcc_config *config = pcc_core_config(a->core);
  backup_job *job = calloc(1, sizeof *job);
  if (job == NULL) {
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "out of memory");
    return;
  }
  *job = (backup_job){.admin = a, .fd = -1, .refs = 2, .resume = req->resume, .ctx = req->ctx};
  snprintf(job->token, sizeof job->token, "%s", req->token ? req->token : "");
  snprintf(job->remote, sizeof job->remote, "%s", req->remote ? req->remote : "-");
  pthread_t thread;
  pthread_mutex_lock(&a->lock);
  if (a->closing) {
    pcc_answer_error(answer, PCC_ERR_BUSY, "the server is shutting down");
  } else if (a->copying != NULL) {
    pcc_answer_error(answer, PCC_ERR_BUSY, "a backup is being made; one at a time");
    pcc_answer_retry_after(answer, BACKUP_RETRY_AFTER);
  } else if ((job->fd = download ? backup_temp_target(config->backup_dir ? config->backup_dir
                                                                          : config->store_dir)
                                 : backup_dir_target(config->backup_dir, job)) < 0) {
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "cannot create the backup's file under %s: %s",
                     config->backup_dir ? config->backup_dir : config->store_dir,
                     strerror(errno));
  } else if (pthread_create(&thread, NULL, backup_main, job) != 0) {
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "cannot start the backup");
    if (!download) {
      char file[PATH_MAX + 16];
      snprintf(file, sizeof file, "%s/data.mdb", job->dir);
      unlink(file);
      rmdir(job->dir);
    }
  } else {
    pthread_detach(thread);
    a->copying = job;
    req->suspend(req->ctx); /* under the lock: the thread's resume cannot come first */
    pcc_answer_clear(answer);
    answer->kind = PCC_ANSWER_PENDING;
    answer->pending = job;
    answer->finish = backup_finish;
    answer->abandon = backup_abandon;
  }
  pthread_mutex_unlock(&a->lock);
  if (answer->kind != PCC_ANSWER_PENDING) {
    if (job->fd >= 0)
      close(job->fd);
    free(job);
  }
}

/* POST /v1/admin/backup: a copy under --backup-dir. */
static void handle_backup(void *state, pcc_request *req, pcc_answer *answer)
{
  admin *a = state;
  if (pcc_core_config(a->core)->backup_dir == NULL) {
    pcc_answer_error(answer, PCC_ERR_FORBIDDEN, "this server has no --backup-dir; use GET to "
                     "download a copy");
    return;
  }
  backup_start(a, req, false, answer);
}

/* GET /v1/admin/backup: the copy, downloaded once it is complete. */
static void handle_backup_download(void *state, pcc_request *req, pcc_answer *answer)
{
  backup_start(state, req, true, answer);
}

/* Waits for a copy in progress (at most PCC_BACKUP_SHUTDOWN_WAIT s, then cuts it short: its
 * descriptor becomes /dev/full, so its next write fails) and refuses new ones. */
static void backups_shutdown(admin *a)
{
  pthread_mutex_lock(&a->lock);
  a->closing = true;
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += PCC_BACKUP_SHUTDOWN_WAIT;
  while (a->copying != NULL && pthread_cond_timedwait(&a->idle, &a->lock, &until) == 0)
    ;
  if (a->copying != NULL) {
    pcc_logf(PCC_LOG_WARN, "a backup copy still runs after %d s; cutting it short",
             PCC_BACKUP_SHUTDOWN_WAIT);
    int full = open("/dev/full", O_WRONLY | O_CLOEXEC);
    if (full >= 0) {
      dup3(full, a->copying->fd, O_CLOEXEC); /* the job's fd stays open until the copy ends */
      close(full);
    }
    while (a->copying != NULL)
      pthread_cond_wait(&a->idle, &a->lock);
  }
  pthread_mutex_unlock(&a->lock);
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
  admin *a = calloc(1, sizeof *a);
  if (a == NULL)
    return -1;
  a->core = core;
  pthread_mutex_init(&a->lock, NULL);
  pthread_cond_init(&a->idle, NULL);
  *state = a;
  return 0;
}

/* A backup copy in progress ends before the store closes. */
static void admin_shutdown(void *state)
{
  if (state != NULL)
    backups_shutdown(state);
}

static void admin_close(void *state)
{
  admin *a = state;
  if (a == NULL)
    return;
  backups_shutdown(a);
  pthread_mutex_destroy(&a->lock);
  pthread_cond_destroy(&a->idle);
  free(a); /* the core is not ours */
}

#define ADMIN PCC_ROLE_ADMIN
#define NO_BODY PCC_ROUTE_NO_BODY
#define FILTER_ARGS {"prefix", "cursor", "limit", "namespace"} /* in the order of ARG_* */

static const pcc_route admin_routes[] = {
  {"GET", "/admin", 0, NO_BODY, false, 0, {NULL}, handle_page, "the admin page"},
  {"GET", "/admin/", 0, NO_BODY, false, 0, {NULL}, handle_page, "the admin page"},
  /* a scraper needs no token that can purge: read (or admin, which keeps it on the reserve) */
  {"GET", "/metrics", PCC_ROLE_READ | ADMIN, NO_BODY, false, 0, {NULL}, handle_metrics,
   "Prometheus metrics"},
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
  admin_open, admin_shutdown, admin_close,
};
