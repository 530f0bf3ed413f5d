/* service_internal.h: what service.c (lookups, compiles, backends) and admin.c (the admin API)
 * share inside the server: the service's state, its counters and the answer helpers. Not a
 * public header. */
#ifndef PCC_SERVICE_INTERNAL_H
#define PCC_SERVICE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "service.h"

#define SVC_MAGICS_MAX 32          /* magics with their own counters; more share "other" */
#define SVC_LATENCY_BUCKETS 16
#define SVC_HIT_TABLE_SIZE (1u << 16) /* entries whose hits are counted (open addressing) */

#define SVC_REASONS_MAX 16   /* fallback reasons clients may report, per magic */
#define SVC_REASON_LEN 32

/* Counters of one magic number. Fallback reasons are added under counters_lock and published
 * by n_reasons, like the magics themselves. */
typedef struct {
  pcc_magic magic;
  atomic_uint_fast64_t hits, miss_absent, miss_stale, compiles, compile_errors, corruptions;
  char reasons[SVC_REASONS_MAX][SVC_REASON_LEN + 1];
  atomic_uint_fast64_t reason_counts[SVC_REASONS_MAX];
  atomic_uint n_reasons;
} svc_counters;

/* A latency histogram: counts per bucket (not cumulative), total count and sum. */
typedef struct {
  atomic_uint_fast64_t buckets[SVC_LATENCY_BUCKETS + 1];
  atomic_uint_fast64_t count, sum_us;
} svc_histogram;

extern const double svc_latency_bounds[SVC_LATENCY_BUCKETS]; /* seconds */

/* Hits of one entry since start (key 0: free slot). */
typedef struct {
  uint64_t key;
  uint64_t hits;
  int64_t last;
} svc_hit_slot;

/* A bundle built once and served to every start of the program while the store is unchanged.
 * refs: 1 while cached, plus 1 per response still sending it. */
typedef struct {
  atomic_uint refs;
  uint8_t *data;
  size_t len;
  unsigned entries;
} svc_bundle_bytes;

#define SVC_BUNDLE_SLOTS 8
#define SVC_BUNDLE_CACHE_BYTES ((size_t)512 << 20)

typedef struct {
  pcc_magic magic;
  int opt;
  char name[PCC_PROFILE_NAME_MAX + 1];
  uint64_t generation;      /* of the store when it was built */
  uint64_t last_used;
  svc_bundle_bytes *bytes;  /* NULL: free slot */
} svc_bundle_slot;

/* One compiler backend: a worker pool, its queue and its dispatch threads. */
typedef struct svc_backend {
  struct pcc_service *service;
  pcc_compiler *compiler;
  char name[PCC_COMPILER_NAME_MAX + 1];
  char interpreter[256];     /* "embedded" or the interpreter's path */
  pthread_cond_t work;       /* signalled when a job is queued (with service->lock) */
  svc_job *queue_head, *queue_tail;
  pthread_t *dispatchers;
  unsigned n_dispatchers;
} svc_backend;

struct pcc_service {
  pcc_config config;
  pcc_store *store;
  char *roots[PCC_MAX_SOURCE_ROOTS]; /* realpath of each --source-root */
  unsigned n_roots;
  svc_backend backends[PCC_MAX_COMPILERS + 1]; /* [0]: the embedded CPython, the default */
  unsigned n_backends;

  pthread_mutex_t lock;     /* guards the queues, the in-flight list and closing */
  svc_job *inflight;        /* compiling, for joining */
  bool closing;

  time_t started;
  atomic_uint_fast64_t requests, joined, compiler_failures, timeouts;
  pthread_mutex_t counters_lock; /* taken only to add a magic */
  svc_counters magics[SVC_MAGICS_MAX];
  atomic_uint n_magics;
  svc_counters other;
  svc_histogram hit_latency, compile_latency;
  pthread_mutex_t hits_lock;
  svc_hit_slot *hit_table;
  pthread_mutex_t bundles_lock;
  svc_bundle_slot bundles[SVC_BUNDLE_SLOTS];
  uint64_t bundle_clock;
};

/* Drops a reference to cached bundle bytes (the MHD free callback of a bundle response). */
void svc_bundle_release(void *bytes);
/* Empties the bundle cache (at close). */
void svc_bundle_cache_clear(pcc_service *service);

/* The counters of a magic (added on first use; "other" when the table is full). */
svc_counters *svc_counters_for(pcc_service *service, const pcc_magic *magic);
void svc_histogram_add(svc_histogram *histogram, uint64_t micros);

/* Hits of an entry since start: *hits 0 and *last 0 when never hit. */
void svc_entry_hits(pcc_service *service, const pcc_magic *magic, int opt, const char *path,
                    size_t path_len, uint64_t *hits, int64_t *last);

/* The backend compiling for magic, or NULL. */
svc_backend *svc_backend_for(pcc_service *service, const pcc_magic *magic);

void svc_answer_error(svc_answer *answer, unsigned status, const char *code, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));
void svc_answer_extra_string(svc_answer *answer, const char *name, const char *value);
void svc_answer_store_error(svc_answer *answer, pcc_store_status rc);

/* Deletes the entries of every magic no backend serves (at start, --retire-unserved-magics). */
void svc_retire_unserved(pcc_service *service);

#endif
