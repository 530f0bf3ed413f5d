/* counters.h: the counters of pycached, read by /v1/stats, the admin stats and /metrics: per
 * magic (hits, misses, compiles, errors, corruptions, the fallbacks clients report), server-wide
 * totals, latency histograms and the hits of each entry since start. Lock-free on the hit path:
 * atomics, and a mutex only to add a magic or a reason. */
#ifndef PCC_COUNTERS_H
#define PCC_COUNTERS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "proto.h"

#define PCC_LATENCY_BUCKETS 26

/* The counters of one magic. hits counts every entry served (by /v1/code, a batch or a bundle),
 * bundle_hits those of them a bundle served; unsupported the lookups and compiles of a magic no
 * backend compiles (not counted as absent). Fallback reasons are published by n_reasons once
 * written. */
typedef struct {
  pcc_magic magic;
  atomic_uint_fast64_t hits, bundle_hits, miss_absent, miss_stale, unsupported, compiles,
    compile_errors, corruptions;
  char reasons[PCC_REASONS_MAX][PCC_REASON_LEN + 1];
  atomic_uint_fast64_t reason_counts[PCC_REASONS_MAX];
  atomic_uint n_reasons;
} pcc_magic_counters;

/* A latency histogram: counts per bucket (not cumulative), total count and sum (ns). */
typedef struct {
  atomic_uint_fast64_t buckets[PCC_LATENCY_BUCKETS + 1];
  atomic_uint_fast64_t count, sum_ns;
} pcc_histogram;

/* Upper bounds of the buckets, in seconds (the last bucket is +Inf): a log scale from 1 µs, so
 * that a hit of a few µs falls in a bucket of its own, to 10 s for compiles. */
extern const double pcc_latency_bounds[PCC_LATENCY_BUCKETS];

/* Server-wide counters: bundles served (their entries are in each magic's bundle_hits), their
 * bytes as sent, and the import profiles clients sent (POST /v1/profile, stored). */
typedef struct {
  atomic_uint_fast64_t requests, joined, compiler_failures, timeouts;
  atomic_uint_fast64_t bundles, bundle_bytes, profiles_received;
  pcc_histogram hit_latency, compile_latency;
} pcc_totals;

typedef struct pcc_counters pcc_counters;

/* All zero. *out is the caller's (pcc_counters_close). NULL without memory. */
pcc_counters *pcc_counters_open(void);
void pcc_counters_close(pcc_counters *counters); /* NULL is fine */

/* The totals; they live as long as counters. */
pcc_totals *pcc_counters_totals(pcc_counters *counters);

/* Which magics may get counters of their own: admit(ctx, magic) is asked, under the counters'
 * lock, when a magic not counted yet is first counted; a magic it refuses is counted in "other"
 * (and asked about again next time). Without it (the default) every magic is admitted. Set it
 * before the counters are shared; ctx must outlive them. */
void pcc_counters_set_admit(pcc_counters *counters,
                            bool (*admit)(void *ctx, const pcc_magic *magic), void *ctx);

/* The counters of a magic, added on first use when admitted; past PCC_MAGICS_COUNTED magics, or
 * for a magic not admitted, the shared "other" counters. Thread-safe; the result lives as long as
 * counters. */
pcc_magic_counters *pcc_counters_for(pcc_counters *counters, const pcc_magic *magic);

/* The magics counted so far: *first gets the array, the result its length. The "other" counters
 * (magics past the table, and those not admitted) through *other. Entries are never removed. */
unsigned pcc_counters_magics(const pcc_counters *counters, const pcc_magic_counters **first,
                             const pcc_magic_counters **other);

/* Zeroes the counters of every magic (the magics and reason names stay), the totals and the
 * histograms (ccache -z): what /v1/stats counts starts again from 0. The per-entry hits stay
 * (admin ls still tells which entries were served). Thread-safe; counts made while it runs may
 * survive it or not. */
void pcc_counters_zero(pcc_counters *counters);

/* Counts n entries served by a bundle of magic: hits and bundle_hits. */
void pcc_counters_add_bundle_hits(pcc_magic_counters *magic, uint64_t n);

/* Adds n to a fallback reason of a magic (a new reason takes a slot while there is one). */
void pcc_counters_add_reason(pcc_counters *counters, pcc_magic_counters *magic,
                             const char *reason, uint64_t n);

/* Adds "hit_ratio" to obj: hits / (hits + misses), misses of every kind (absent, stale,
 * unsupported magic); null before any lookup. */
void pcc_counters_add_ratio(cJSON *obj, uint64_t hits, uint64_t misses);

/* Counts one observation of nanos ns (ns: a hit takes a few µs). */
void pcc_histogram_add(pcc_histogram *histogram, uint64_t nanos);

/* Counts a hit of the entry (magic, opt, path); its count and last time are kept in a bounded
 * table (PCC_HIT_TABLE_SLOTS), entries past it go uncounted. */
void pcc_counters_record_hit(pcc_counters *counters, const pcc_magic *magic, int opt,
                             const char *path, size_t path_len);
/* Counts a hit of each of the entries (magic, opt, path) whose paths are the NUL-terminated
 * strings one after the other in len bytes of paths (a bundle's), under one lock. */
void pcc_counters_record_hits(pcc_counters *counters, const pcc_magic *magic, int opt,
                              const char *paths, size_t len);
/* The hits of an entry since start; *hits and *last 0 when never hit. */
void pcc_counters_entry_hits(pcc_counters *counters, const pcc_magic *magic, int opt,
                             const char *path, size_t path_len, uint64_t *hits, int64_t *last);

#endif
