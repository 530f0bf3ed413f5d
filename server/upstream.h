/* upstream.h: the upstream tier of a pycached (--upstream; docs/OPERATIONS.md, "Tiers: a
 * node-local daemon with an upstream"): other pycached servers (http://, https:// or unix:/PATH)
 * asked, in the order listed, to compile a source this server does not have before it compiles
 * it itself, and to compile the sources of a magic no backend here compiles.
 *
 * Nothing an upstream answers is trusted unverified: libpycached checks the entry (the pyc's
 * checksum and header, and that it answers the question: magic, opt, mtime, size, hash, digest)
 * and this module checks again that it answers the job's magic, opt, size, hash and digest
 * before it hands a blob out; a wrong answer is counted rejected, and its upstream skipped a
 * while like one that is down.
 *
 * Connections: one libpycached client per connection, a small pool per upstream guarded by a
 * mutex (at most PCC_UPSTREAM_IDLE_MAX idle ones kept; a caller without an idle one opens its
 * own). Every connect and compile is bounded (the connect and compile timeouts). A failure marks
 * the upstream down for a backoff (PCC_UPSTREAM_BACKOFF_MIN_MS doubling to
 * PCC_UPSTREAM_BACKOFF_MAX_MS) during which it is skipped without a syscall (a breaker), counted
 * skipped; then one caller probes it. Every call is safe from any thread. */
#ifndef PCC_UPSTREAM_H
#define PCC_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "proto.h"
#include "store.h"

typedef struct pcc_upstream pcc_upstream;

typedef enum {
  PCC_UPSTREAM_OK = 0,
  PCC_UPSTREAM_UNSUPPORTED, /* every upstream that answered has no compiler for the magic */
  PCC_UPSTREAM_DOWN,        /* none answered usefully: down, slow, an error, a wrong answer */
  PCC_UPSTREAM_INVALID,     /* a bad --upstream list or TLS/token file */
  PCC_UPSTREAM_NOMEM,
} pcc_upstream_status;

const char *pcc_upstream_strerror(pcc_upstream_status rc);

typedef struct {
  long connect_ms;          /* bound of one connect */
  long compile_ms;          /* bound of one compile request, the upstream's compile included */
  const char *ca_file;      /* CAs of the https:// upstreams (NULL: the system's) */
  const char *token_file;   /* a token file (pcc_token_load) sent to every upstream; NULL: none */
} pcc_upstream_config;

/* Parses list, "URL[,URL...]" (at most PCC_UPSTREAMS_MAX; each one pcc_client_open takes:
 * http://HOST:PORT, https://HOST:PORT or unix:/PATH), reads config->token_file, checks that a
 * client can be made for each URL and makes the handle; connects to nothing yet.
 * PCC_UPSTREAM_INVALID with a message naming the problem in err (err_len bytes, may be NULL).
 * *out is the caller's (pcc_upstream_close). */
pcc_upstream_status pcc_upstream_open(const char *list, const pcc_upstream_config *config,
                                      char *err, size_t err_len, pcc_upstream **out);

/* Whether list is one pcc_upstream_open takes (its syntax only; files are read at open). False
 * with the problem in err (err_len bytes). For the option's check (config.c). */
bool pcc_upstream_list_valid(const char *list, char *err, size_t err_len);

/* Closes every connection and wipes the token. NULL is fine. */
void pcc_upstream_close(pcc_upstream *upstream);

/* Asks the upstreams, in order, skipping those that are down, to compile source (len bytes, the
 * source of record: its mtime, size, Java hash and digest; path the requester's) for (magic,
 * opt). Blocks up to the connect and compile timeouts of each upstream tried: call it from a job
 * thread, never an HTTP thread. PCC_UPSTREAM_OK: *out is a verified heap copy laid out as
 * pcc_store_get_blob's (PCC_BLOB_HEADROOM bytes before the payload; free() it): the code, or the
 * compile error the upstream found. Otherwise *out is unchanged and the caller compiles (or, for
 * a magic it has no backend for, answers PCC_UPSTREAM_UNSUPPORTED as unsupported-magic). */
pcc_upstream_status pcc_upstream_compile(pcc_upstream *upstream, const pcc_magic *magic, int opt,
                                         const char *path, const pcc_path_record *record,
                                         const uint8_t *source, size_t len, pcc_blob **out);

/* The counters, for /v1/stats and /metrics. */
typedef struct {
  uint64_t hits;        /* blobs got (code and compile errors) */
  uint64_t misses;      /* compiles no upstream answered with a blob (compiled here, or
                           forwarded ones that failed) */
  uint64_t unsupported; /* answers "unsupported-magic" */
  uint64_t errors;      /* requests that failed: refused, 5xx, a broken response */
  uint64_t timeouts;    /* ... of those, the ones that ran out of time */
  uint64_t rejected;    /* answers that failed verification (never stored, never served) */
  uint64_t skipped;     /* upstreams not asked: down (backoff) */
} pcc_upstream_figures;
void pcc_upstream_figures_get(pcc_upstream *upstream, pcc_upstream_figures *out);

/* The upstreams: their count; upstream i's URL and whether it is up now. */
unsigned pcc_upstream_count(const pcc_upstream *upstream);
const char *pcc_upstream_url(const pcc_upstream *upstream, unsigned i);
bool pcc_upstream_up(pcc_upstream *upstream, unsigned i);

/* The "upstream" object of /v1/stats (docs/API.md): the counters and each upstream's state. The
 * caller owns it; NULL without memory. */
cJSON *pcc_upstream_json(pcc_upstream *upstream);

#endif
