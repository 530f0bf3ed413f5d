/* counters.c: pycached's counters (counters.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "counters.h"

#define HIT_PROBES 16

const double pcc_latency_bounds[PCC_LATENCY_BUCKETS] = {
  0.000001, 0.000002, 0.0000035, 0.000005, 0.0000075, 0.00001, 0.00002, 0.000035, 0.00005,
  0.000075, 0.0001,   0.00015,   0.00025,  0.0005,    0.001,   0.0025,  0.005,    0.01,
  0.025,    0.05,     0.1,       0.25,     1,         2.5,     5,       10,
};

/* Hits of one entry since start (key 0: free slot). */
typedef struct {
  uint64_t key;
  uint64_t hits;
  int64_t last;
} hit_slot;

struct pcc_counters {
  pcc_totals totals;
  pthread_mutex_t lock; /* taken only to add a magic or a reason */
  pcc_magic_counters magics[PCC_MAGICS_COUNTED];
  atomic_uint n_magics;
  pcc_magic_counters other;
  bool (*admit)(void *ctx, const pcc_magic *magic); /* NULL: every magic */
  void *admit_ctx;
  pthread_mutex_t hits_lock;
  hit_slot *hit_table;
};

pcc_counters *pcc_counters_open(void)
{
  pcc_counters *counters = calloc(1, sizeof *counters);
  if (counters == NULL)
    return NULL;
  counters->hit_table = calloc(PCC_HIT_TABLE_SLOTS, sizeof *counters->hit_table);
  if (counters->hit_table == NULL) {
    free(counters);
    return NULL;
  }
  pthread_mutex_init(&counters->lock, NULL);
  pthread_mutex_init(&counters->hits_lock, NULL);
  return counters;
}

void pcc_counters_close(pcc_counters *counters)
{
  if (counters == NULL)
    return;
  pthread_mutex_destroy(&counters->lock);
  pthread_mutex_destroy(&counters->hits_lock);
  free(counters->hit_table);
  free(counters);
}

pcc_totals *pcc_counters_totals(pcc_counters *counters)
{
  return &counters->totals;
}

void pcc_counters_set_admit(pcc_counters *counters,
                            bool (*admit)(void *ctx, const pcc_magic *magic), void *ctx)
{
  counters->admit = admit;
  counters->admit_ctx = ctx;
}

pcc_magic_counters *pcc_counters_for(pcc_counters *counters, const pcc_magic *magic)
{
  unsigned n = atomic_load(&counters->n_magics);
  for (unsigned i = 0; i < n; i++)
    if (pcc_magic_equal(&counters->magics[i].magic, magic))
      return &counters->magics[i];
  pthread_mutex_lock(&counters->lock);
  pcc_magic_counters *found = &counters->other;
  n = atomic_load(&counters->n_magics);
  unsigned i = 0;
  while (i < n && !pcc_magic_equal(&counters->magics[i].magic, magic))
    i++;
  if (i < n) {
    found = &counters->magics[i];
  } else if (n < PCC_MAGICS_COUNTED &&
             (counters->admit == NULL || counters->admit(counters->admit_ctx, magic))) {
    counters->magics[n].magic = *magic; /* written before the count that publishes it */
    atomic_store(&counters->n_magics, n + 1);
    found = &counters->magics[n];
  }
  pthread_mutex_unlock(&counters->lock);
  return found;
}

unsigned pcc_counters_magics(const pcc_counters *counters, const pcc_magic_counters **first,
                             const pcc_magic_counters **other)
{
  *first = counters->magics;
  if (other != NULL)
    *other = &counters->other;
  return atomic_load(&counters->n_magics);
}

static void zero_magic(pcc_magic_counters *m)
{
  atomic_uint_fast64_t *fields[] = {&m->hits,        &m->bundle_hits, &m->miss_absent,
                                    &m->miss_stale,  &m->unsupported, &m->compiles,
                                    &m->compile_errors, &m->corruptions};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
    atomic_store(fields[i], 0);
  for (unsigned r = 0; r < PCC_REASONS_MAX; r++)
    atomic_store(&m->reason_counts[r], 0);
}

static void zero_histogram(pcc_histogram *h)
{
  for (size_t i = 0; i <= PCC_LATENCY_BUCKETS; i++)
    atomic_store(&h->buckets[i], 0);
  atomic_store(&h->count, 0);
  atomic_store(&h->sum_ns, 0);
}

void pcc_counters_zero(pcc_counters *counters)
{
  unsigned n = atomic_load(&counters->n_magics);
  for (unsigned i = 0; i < n; i++)
    zero_magic(&counters->magics[i]);
  zero_magic(&counters->other);
  pcc_totals *t = &counters->totals;
  atomic_uint_fast64_t *fields[] = {&t->requests, &t->joined, &t->compiler_failures,
                                    &t->timeouts, &t->bundles, &t->bundle_bytes,
                                    &t->profiles_received};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
    atomic_store(fields[i], 0);
  zero_histogram(&t->hit_latency);
  zero_histogram(&t->compile_latency);
}

void pcc_counters_add_bundle_hits(pcc_magic_counters *magic, uint64_t n)
{
  atomic_fetch_add(&magic->hits, n);
  atomic_fetch_add(&magic->bundle_hits, n);
}

void pcc_counters_add_reason(pcc_counters *counters, pcc_magic_counters *magic,
                             const char *reason, uint64_t n)
{
  unsigned count = atomic_load(&magic->n_reasons);
  for (unsigned i = 0; i < count; i++)
    if (strcmp(magic->reasons[i], reason) == 0) {
      atomic_fetch_add(&magic->reason_counts[i], n);
      return;
    }
  pthread_mutex_lock(&counters->lock);
  count = atomic_load(&magic->n_reasons);
  unsigned i = 0;
  while (i < count && strcmp(magic->reasons[i], reason) != 0)
    i++;
  if (i == count && count < PCC_REASONS_MAX) {
    size_t len = strnlen(reason, PCC_REASON_LEN);
    memcpy(magic->reasons[i], reason, len);
    magic->reasons[i][len] = '\0';
    atomic_store(&magic->n_reasons, count + 1); /* published after the name is written */
  }
  if (i < PCC_REASONS_MAX && i <= count)
    atomic_fetch_add(&magic->reason_counts[i], n);
  pthread_mutex_unlock(&counters->lock);
}

void pcc_counters_add_ratio(cJSON *obj, uint64_t hits, uint64_t misses)
{
  if (hits + misses == 0)
    cJSON_AddNullToObject(obj, "hit_ratio");
  else
    cJSON_AddNumberToObject(obj, "hit_ratio", (double)hits / (double)(hits + misses));
}

void pcc_histogram_add(pcc_histogram *histogram, uint64_t nanos)
{
  size_t bucket = 0;
  while (bucket < PCC_LATENCY_BUCKETS && (double)nanos > pcc_latency_bounds[bucket] * 1e9)
    bucket++;
  atomic_fetch_add(&histogram->buckets[bucket], 1);
  atomic_fetch_add(&histogram->count, 1);
  atomic_fetch_add(&histogram->sum_ns, nanos);
}

static uint64_t hit_key(const pcc_magic *magic, int opt, const char *path, size_t path_len)
{
  uint32_t m;
  memcpy(&m, magic->bytes, sizeof m);
  uint64_t key = pcc_checksum(path, path_len) ^ (((uint64_t)m << 8 | (uint64_t)opt) *
                                                 0x9e3779b97f4a7c15ull);
  return key ? key : 1; /* 0 marks a free slot */
}

/* Counts a hit of key at now. Caller holds hits_lock. */
static void record_hit_locked(pcc_counters *counters, uint64_t key, int64_t now)
{
  for (unsigned i = 0; i < HIT_PROBES; i++) {
    hit_slot *slot = &counters->hit_table[(key + i) & (PCC_HIT_TABLE_SLOTS - 1)];
    if (slot->key == 0 || slot->key == key) {
      slot->key = key;
      slot->hits++;
      slot->last = now;
      break;
    }
  } /* a full neighbourhood: this entry's hits go uncounted */
}

void pcc_counters_record_hit(pcc_counters *counters, const pcc_magic *magic, int opt,
                             const char *path, size_t path_len)
{
  uint64_t key = hit_key(magic, opt, path, path_len);
  pthread_mutex_lock(&counters->hits_lock);
  record_hit_locked(counters, key, time(NULL));
  pthread_mutex_unlock(&counters->hits_lock);
}

void pcc_counters_record_hits(pcc_counters *counters, const pcc_magic *magic, int opt,
                              const char *paths, size_t len)
{
  int64_t now = time(NULL);
  pthread_mutex_lock(&counters->hits_lock);
  for (size_t at = 0; at < len;) {
    size_t path_len = strnlen(paths + at, len - at);
    record_hit_locked(counters, hit_key(magic, opt, paths + at, path_len), now);
    at += path_len + 1;
  }
  pthread_mutex_unlock(&counters->hits_lock);
}

void pcc_counters_entry_hits(pcc_counters *counters, const pcc_magic *magic, int opt,
                             const char *path, size_t path_len, uint64_t *hits, int64_t *last)
{
  uint64_t key = hit_key(magic, opt, path, path_len);
  *hits = 0;
  *last = 0;
  pthread_mutex_lock(&counters->hits_lock);
  for (unsigned i = 0; i < HIT_PROBES; i++) {
    const hit_slot *slot = &counters->hit_table[(key + i) & (PCC_HIT_TABLE_SLOTS - 1)];
    if (slot->key == key) {
      *hits = slot->hits;
      *last = slot->last;
      break;
    }
    if (slot->key == 0)
      break;
  }
  pthread_mutex_unlock(&counters->hits_lock);
}
