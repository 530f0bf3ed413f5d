/* core.h: the core of pycached that every feature (cache.c, admin.c, warm.c) builds on: the
 * configuration, the LMDB store, the compiler backends (one worker pool per interpreter), the
 * source roots (sources.c) and the counters, plus the validated lookup that both single lookups and batches
 * use. The core never calls a feature. */
#ifndef PCC_CORE_H
#define PCC_CORE_H

#include <stdbool.h>
#include <time.h>

#include "answer.h"
#include "compiler.h"
#include "config.h"
#include "counters.h"
#include "shared.h"
#include "upstream.h"
#include "sources.h"
#include "store.h"

typedef struct pcc_core pcc_core;

typedef enum {
  PCC_CORE_OK = 0,
  PCC_CORE_STORE,    /* the store could not be opened */
  PCC_CORE_COMPILER, /* a compiler pool could not be started */
  PCC_CORE_CONFIG,   /* a bad configuration value (source root, worker path, user) */
  PCC_CORE_NOMEM,
  PCC_CORE_DAMAGED,  /* the store is damaged and --on-damaged-store=refuse (the message says
                        what to do) */
} pcc_core_status;

const char *pcc_core_strerror(pcc_core_status rc);

/* One compiler backend: a worker pool for one interpreter (one magic). */
typedef struct {
  pcc_compiler *compiler;
  char name[PCC_COMPILER_NAME_MAX + 1]; /* "implementation-version" */
  char interpreter[256];                /* "embedded" or the interpreter's path */
} pcc_backend;

/* Exit statuses of pycached --verify-store. */
enum { PCC_VERIFY_SOUND = 0, PCC_VERIFY_DAMAGED = 3, PCC_VERIFY_UNOPENED = 4 };

/* pycached --verify-store: opens the store of config read-only, checks every record
 * (pcc_store_verify, blobs' checksums included), prints one line per problem and a summary on
 * stdout. Returns the exit status: PCC_VERIFY_SOUND, PCC_VERIFY_DAMAGED (damaged records or a
 * damaged file, also one LMDB cannot open), PCC_VERIFY_UNOPENED (no store, no access). */
int pcc_core_verify_store(const pcc_config *config);

/* Copies config, opens the store and the counters, resolves the source roots, starts a worker
 * pool per backend (the embedded CPython, then each --compiler) and the store's upkeep thread
 * (eviction past --max-size, the last uses written in batches, profiles past --profile-days
 * dropped), and the handles of the --shared and --upstream tiers (connecting to nothing
 * yet). The store is checked first (a walk of its tables bounded by
 * PCC_STORE_CHECK_SECONDS); a damaged one is refused (PCC_CORE_DAMAGED) or, with
 * --on-damaged-store=quarantine, moved aside for an empty one. On failure prints why to stderr.
 * *out is the caller's (pcc_core_close). */
pcc_core_status pcc_core_open(const pcc_config *config, pcc_core **out);
/* Stops the upkeep thread and the workers, writes the last uses and closes the store. Features
 * using the core must be closed first. NULL is fine. */
void pcc_core_close(pcc_core *core);

/* What the core holds; each lives as long as the core. */
const pcc_config *pcc_core_config(const pcc_core *core);
pcc_store *pcc_core_store(pcc_core *core);
pcc_counters *pcc_core_counters(pcc_core *core);
time_t pcc_core_started(const pcc_core *core);
/* The shared tier of --shared (shared.h), or NULL without one. */
pcc_shared *pcc_core_shared(pcc_core *core);
/* The upstream tier of --upstream (upstream.h), or NULL without one. */
pcc_upstream *pcc_core_upstream(pcc_core *core);

/* The backends: *first gets the array (index 0 is the default backend), the result its count. */
unsigned pcc_core_backends(const pcc_core *core, const pcc_backend **first);
/* The index of the backend compiling for magic, or -1. */
int pcc_core_backend_for(const pcc_core *core, const pcc_magic *magic);

/* The --source-root directories (sources.h). */
const pcc_sources *pcc_core_sources(const pcc_core *core);

/* Reads a blob; a blob that failed its checksum (dropped by the store) is counted as a
 * corruption and reported as PCC_STORE_NOTFOUND. *out as pcc_store_get_blob. */
pcc_store_status pcc_core_get_blob(pcc_core *core, const pcc_magic *magic, int opt,
                                   const pcc_digest *digest, pcc_blob **out);

/* Does the blob (of the version's digest) hold the compile of the version's source: the same
 * size and Java hash? A path entry has no checksum of its own; this is what keeps a damaged one
 * (a digest changed into another stored blob's) from being served. False: counted as a
 * corruption and logged; the caller answers a miss. */
bool pcc_core_blob_matches(pcc_core *core, const pcc_magic *magic, const pcc_blob *blob,
                           const pcc_path_record *version);

/* The store's figures as the "store" object of GET /v1/stats and GET /v1/admin/stats (docs/API.md:
 * entries, blobs, bytes, max_size, profiles, used, free, map_size, page_size, evictions); an empty
 * object when the store cannot say. The caller owns it. */
cJSON *pcc_core_store_json(pcc_core *core);

/* unsupported-magic, listing the magics the backends compile for. */
void pcc_core_answer_unsupported(const pcc_core *core, pcc_answer *answer);

/* The lookup of GET /v1/code (magic, path, mtime and size present in params) in namespace ns:
 * an ENTRY answer (outcome "hit") when a version of the path entry matches, a miss (with its
 * reason), unsupported-magic for a magic without a backend and no valid entry, or a store error.
 * Counted and timed. Never writes. */
void pcc_core_lookup(pcc_core *core, const char *ns, const pcc_params *params,
                     pcc_answer *answer);

#endif
