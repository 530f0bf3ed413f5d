/* pcc_limits.h: every hard limit of pycached in one table: what a buffer, body, queue, list or
 * response may hold. Server, clients, compiler pool and workers take their limits from here; the
 * rows marked "option" are the defaults of a pycached option that changes them (server/config.c,
 * `pycached --help`). `pycached --limits` prints this table (proto/pcc_limits.c holds its rows)
 * and docs/DESIGN.md, "Limits", lists it; the e2e suite checks that the two agree.
 *
 * Values are plain constant expressions, usable in array sizes and in #if. */
#ifndef PCC_PCC_LIMITS_H
#define PCC_PCC_LIMITS_H

#include <stddef.h>
#include <stdint.h>

#define PCC_KIB ((uint64_t)1 << 10)
#define PCC_MIB ((uint64_t)1 << 20)
#define PCC_GIB ((uint64_t)1 << 30)

/* ---- sources, paths, parameters (every side) ------------------------------------------------ */
#define PCC_PATH_MAX 4096                     /* bytes of a source path */
#define PCC_OPT_MAX 2                         /* highest optimization level */
#define PCC_SOURCE_MAX_DEFAULT (16 * PCC_MIB) /* option --max-source: a source file */
#define PCC_SOURCE_MAX_CEILING (32 * PCC_MIB) /* the most --max-source may be set to */

/* ---- HTTP request bodies (server) ----------------------------------------------------------- */
#define PCC_PROFILE_BODY_MAX_DEFAULT (4 * PCC_MIB) /* option --max-profile-body: POST /v1/profile */
#define PCC_BATCH_BODY_MAX_DEFAULT (1 * PCC_MIB)   /* option --max-batch-body: POST /v1/batch */
#define PCC_REPORT_BODY_MAX (64 * PCC_KIB)         /* POST /v1/report */
#define PCC_REQUEST_MEMORY (64 * PCC_KIB)          /* libmicrohttpd's per-connection memory */

/* ---- warm start (server) -------------------------------------------------------------------- */
#define PCC_BATCH_LOOKUPS_DEFAULT 1000              /* option --max-batch: lookups of one batch */
#define PCC_BUNDLE_MAX_DEFAULT (256 * PCC_MIB)      /* option --max-bundle: one bundle */
#define PCC_BUNDLE_CACHE_DEFAULT (512 * PCC_MIB)    /* option --bundle-cache: bundles kept built */
#define PCC_BUNDLE_SLOTS 8                          /* bundles kept built, at most */
#define PCC_PROFILE_NAME_MAX 200                    /* bytes of a profile name */
#define PCC_PROFILE_PATHS_MAX 20000                 /* paths of one profile, and of one POST */

/* ---- zstd on the wire (server) -------------------------------------------------------------- */
#define PCC_ZSTD_ANSWER_MIN 1024   /* bytes of a /v1/code or /v1/compile body from which it is sent
                                      with zstd to a client that accepts it */
#define PCC_ZSTD_ANSWER_LEVEL 1    /* zstd's level for those bodies (docs/BENCHMARKS.md, "Bytes on
                                      the wire (issue 15)") */
#define PCC_ZSTD_ANSWER_SAVING 10  /* percent of the body the zstd form must save, at least */

/* ---- admin listings (server) ---------------------------------------------------------------- */
#define PCC_LIST_LIMIT_DEFAULT 100 /* entries of one page of GET /v1/admin/entries */
#define PCC_LIST_LIMIT_MAX 1000    /* ... its `limit` parameter, at most */
#define PCC_LIST_SCAN_MAX 10000    /* keys one listing request may look at */

/* ---- counters (server) ---------------------------------------------------------------------- */
#define PCC_MAGICS_COUNTED 32       /* magics with counters of their own; more share "other" */
#define PCC_REASONS_MAX 16          /* fallback reasons clients may report, per magic */
#define PCC_REASON_LEN 32           /* bytes of a reason */
#define PCC_HIT_TABLE_SLOTS 65536   /* entries whose hits are counted since start */

/* ---- compiler workers ----------------------------------------------------------------------- */
#define PCC_FRAME_MAX (64 * PCC_MIB) /* a frame between pool and worker (worker.py: MAX_FRAME) */
#define PCC_FRAME_HELLO_MAX 4096     /* a worker's hello frame */
#define PCC_WORKERS_MAX 64           /* option --workers, at most */
#define PCC_JOB_WAITERS_MAX 65536    /* requests joined to one compile */
#define PCC_TIMEOUT_MEMORY_DEFAULT 60 /* option --timeout-memory: seconds a timed-out source is
                                          answered 504 at once */
#define PCC_TIMEOUTS_REMEMBERED 256   /* timed-out sources remembered */

/* ---- trust (store, auth) ------------------------------------------------------------------- */
#define PCC_NAMESPACE_MAX 32     /* bytes of a namespace name ([a-z0-9._-]) */
#define PCC_PATH_VERSIONS_MAX 16 /* (mtime, size) -> digest versions kept per path */

/* ---- access control ------------------------------------------------------------------------- */
#define PCC_TOKEN_MAX 512        /* bytes of a token */
#define PCC_TOKEN_FILE_MAX 4096  /* bytes of a client's token file, white space included */
#define PCC_TOKENS_FILE_MAX (1 * PCC_MIB) /* bytes of the server's --tokens file */

/* ---- the server's configuration (server/config.c) ------------------------------------------ */
#define PCC_CONFIG_FILE_MAX (64 * PCC_KIB) /* bytes of a --config file */
#define PCC_CONFIG_LINE_MAX 8192           /* bytes of one line of it, and of the value of one
                                              PYCACHED_* variable */
#define PCC_HOST_NAME_MAX 253              /* bytes of the host name of --listen (DNS's limit) */
#define PCC_TLS_FILE_MAX (1 * PCC_MIB)     /* bytes of a --tls-cert, --tls-key or --tls-client-ca
                                              file (PEM; a CA bundle fits) */
#define PCC_TLS_CHAIN_MAX 16               /* certificates of the --tls-cert chain */
#define PCC_TLS_RELOADS_MAX 1024           /* SIGHUP reloads of --tls-cert and --tls-key a
                                              process (each replaced pair is kept) */
#define PCC_UNIX_PATH_MAX 107              /* bytes of a unix socket's path, of --listen unix:PATH
                                              and of a client's unix: URL (sun_path less its NUL) */

/* ---- the shared tier on Redis (server/shared.c) -------------------------------------------- */
#define PCC_SHARED_SERVERS_MAX 16          /* Redis servers of --shared */
#define PCC_SHARED_VALUE_MAX (64 * PCC_MIB) /* bytes of a value the shared tier stores or reads */
#define PCC_SHARED_IDLE_MAX 8              /* idle connections kept per Redis server */
#define PCC_SHARED_BACKOFF_MIN_MS 100      /* ms a failed Redis server is skipped, first */
#define PCC_SHARED_BACKOFF_MAX_MS 5000     /* ... doubling on each failure up to this */
#define PCC_SHARED_REFUSAL_WARN_MS 60000  /* ms between two warnings of a Redis refusing us */
#define PCC_SHARED_POLL_MIN_MS 5           /* ms between the polls of a lock waiter, first */
#define PCC_SHARED_POLL_MAX_MS 200         /* ... doubling up to this */
#define PCC_SHARED_TIMEOUT_DEFAULT 100     /* option --shared-timeout: ms of one Redis command */
#define PCC_SHARED_CONNECT_TIMEOUT_DEFAULT 50 /* option --shared-connect-timeout: ms of a connect */
#define PCC_SHARED_TTL_DEFAULT (7 * 86400) /* option --shared-ttl: seconds a shared value lives */
#define PCC_SHARED_KEY_MIN 32              /* bytes of a --shared-key file, at least */
#define PCC_SHARED_KEY_FILE_MAX 4096       /* bytes of a --shared-key file, at most */
#define PCC_SHARED_PASSWORD_MAX 1024       /* bytes of the --shared-password-file password */
#define PCC_SHARED_USER_MAX 128            /* bytes of the --shared-user name */

/* ---- the upstream tier (server/upstream.c) ------------------------------------------------- */
#define PCC_UPSTREAMS_MAX 8                /* URLs of --upstream */
#define PCC_UPSTREAM_IDLE_MAX 8            /* idle connections kept per upstream */
#define PCC_UPSTREAM_BACKOFF_MIN_MS 200    /* ms a failed upstream is skipped, first */
#define PCC_UPSTREAM_BACKOFF_MAX_MS 10000  /* ... doubling on each failure up to this */
#define PCC_UPSTREAM_FORWARDERS 4          /* threads forwarding compiles of a magic no backend
                                              here compiles */
#define PCC_UPSTREAM_TIMEOUT_DEFAULT 10000 /* option --upstream-timeout: ms of one upstream compile */
#define PCC_UPSTREAM_CONNECT_TIMEOUT_DEFAULT 200 /* option --upstream-connect-timeout: ms of a connect */

/* ---- the server's logs (proto/log.c) -------------------------------------------------------- */
#define PCC_LOG_LINE_MAX 8192 /* bytes of one log or access-log line, its newline included
                                 (longer: cut and marked) */

/* ---- clients -------------------------------------------------------------------------------- */
#define PCC_RESPONSE_MAX_DEFAULT (64 * PCC_MIB) /* a response body libpycached accepts */
#define PCC_DOWNLOAD_MAX ((uint64_t)1 << 40)    /* a backup download: 1 TiB, the largest map */
#define PCC_EXPECT_CONTINUE_MIN (64 * PCC_KIB)  /* a request body from this size on waits for the
                                                   server's 100 Continue: a refusal (413, 401) is
                                                   read, not lost to a reset in mid-upload */

/* ---- compiler: pool and workers (more) ------------------------------------------------------ */
#define PCC_WORKERS_AUTO_MAX 256          /* --workers 0 (one per online core): workers, at most */
#define PCC_WORKER_ARGS_MAX 64            /* arguments of the worker command (the pool's argv) */
#define PCC_WORKER_NAME_PART_MAX 48       /* bytes of a hello's implementation, and its version */
#define PCC_WORKER_ERROR_TYPE_MAX 256     /* bytes of an error frame's exception type */
#define PCC_WORKER_ERROR_MESSAGE_MAX 4096 /* ... of its message (worker.py: MAX_MESSAGE) */
#define PCC_WORKER_NOFILE 16              /* descriptors a worker holds once Python runs */

/* ---- clients: pycachectl and libpycached ---------------------------------------------------- */
#define PCC_CLIENT_URL_MAX 2048          /* bytes of libpycached's base URL */
#define PCC_HOOK_URLS_MAX 8              /* servers the import hook's PYCACHED_URL may list */
#define PCC_HOOK_BREAKER_5XX_DEFAULT 3   /* PYCACHED_BREAKER_5XX: 5xx answers in a row from one
                                            server that open its breaker in the import hook */
#define PCC_HOOK_BREAKER_5XX_MAX 1000    /* ... the most PYCACHED_BREAKER_5XX may be set to */
#define PCC_CLIENT_RETRY_AFTER_MAX 300   /* seconds of a response's Retry-After libpycached
                                            reports, at most (the hook's breaker honours it) */
#define PCC_CLIENT_REQUEST_URL_MAX 16384 /* bytes of a request URL: base, escaped path, query */
#define PCC_CLIENT_HEADERS_MAX 16384     /* bytes of a response's status line and header lines
                                            libpycached reads (a chunked body's trailers too) */
#define PCC_CLIENT_CHUNK_LINE_MAX 256    /* bytes of a chunk-size line of a chunked response */
#define PCC_CLIENT_INTERIM_MAX 8         /* 1xx responses read before the final one */
#define PCC_CLIENT_REPLAY_MAX (64 * PCC_KIB) /* bytes of a response pcc_client_replay_response
                                                reads (tests and fuzzing) */
#define PCC_CLIENT_CONTINUE_WAIT_MS 1000 /* ms a POST waits for 100 Continue before it sends its
                                            body anyway (as curl does) */
#define PCC_CTL_TIMEOUT_MAX_MS 3600000   /* pycachectl --timeout, at most; a download's default */
#define PCC_CTL_QUERY_MAX 16384          /* bytes of an admin request's path and query, escaped */
#define PCC_CTL_PAGES_MAX 1000000        /* pages admin ls --all follows */
#define PCC_CTL_ANSWER_MAX 64            /* bytes of a confirmation answer read */
#define PCC_CTL_JSON_DEPTH_MAX 8         /* JSON nesting levels pycachectl prints as key lines */
#define PCC_CTL_SOURCE_LINE_MAX 240      /* bytes of a source line shown under a compile error */
#define PCC_CTL_WARM_DIRS_MAX 256        /* DIR arguments of warm */
#define PCC_CTL_WARM_JOBS_MAX 64         /* warm --jobs, at most */
#define PCC_CTL_WARM_FILES_MAX 1000000   /* *.py files of one warm run, all DIRs together */
#define PCC_CTL_WARM_TEXT_MAX (256 * PCC_MIB) /* bytes of their paths */
#define PCC_CTL_WARM_DEPTH_MAX 64        /* directory levels warm enters below a DIR */
#define PCC_CTL_WARM_REASON_MAX 512      /* bytes of one problem warm reports */

/* ---- compiler workers: confinement ---------------------------------------------------------- */
#define PCC_WORKER_COMPILES_DEFAULT 1000  /* option --worker-recycle: compiles of one worker */
#define PCC_WORKER_RSS_DEFAULT (64 * PCC_MIB) /* option --worker-rss: anonymous resident memory
                                                 of a worker after a compile before a fresh
                                                 one replaces it (its heap only grows) */

/* ---- the server's own memory (server/core.c) ------------------------------------------------ */
#define PCC_MALLOC_MMAP_THRESHOLD (128 * PCC_KIB) /* bytes from which an allocation is a mapping
                                                     of its own, returned to the kernel when
                                                     freed (fixed: glibc's sliding one kept
                                                     100 MB of freed buffers in its arenas) */
#define PCC_MALLOC_TRIM_THRESHOLD (1 * PCC_MIB) /* free bytes at the top of a heap returned at
                                                   once (fixed, like the mapping threshold) */
#define PCC_TRIM_SECONDS 5          /* seconds between two returns of the free memory of every
                                       heap to the kernel (malloc_trim), while the store changes */

/* ---- what one request may make the server spend (server) ------------------------------------ */
#define PCC_BATCH_RESPONSE_MAX_DEFAULT (64 * PCC_MIB) /* option --max-batch-response: bytes of
                                                         one POST /v1/batch answer */
#define PCC_BATCH_SMALL_MAX 128      /* bytes of a batch result that is a reference, too-large or
                                        bad-parameter object: kept free for each lookup to come */
#define PCC_QUEUED_COMPILES_DEFAULT 256 /* option --max-queued-compiles: compiles waiting for a
                                           worker, per backend (503 busy beyond) */
#define PCC_RETRY_AFTER_MAX 60       /* seconds a busy answer's Retry-After says, at most */
#define PCC_BACKUPS_AT_ONCE 1        /* backup copies made at a time (503 busy beyond) */
#define PCC_BACKUP_SHUTDOWN_WAIT 30  /* seconds shutdown waits for a backup copy, then cuts it */
#define PCC_MAGICS_REFRESH 60        /* seconds between two reads of the magics the store holds
                                        (which magics get counters of their own) */

/* ---- HTTP connections (server) -------------------------------------------------------------- */
#define PCC_CONNECTIONS_DEFAULT 1024       /* option --max-connections: served at once */
#define PCC_CONNECTIONS_PER_IP_DEFAULT 256 /* option --max-connections-per-ip: from one address */
#define PCC_CONNECTION_RESERVE 32          /* past --max-connections, for /healthz and admin */
#define PCC_RESERVE_TIMEOUT 2              /* seconds a reserve connection has for a request */
#define PCC_HEADER_TIMEOUT_DEFAULT 10      /* option --header-timeout: request line and headers */
#define PCC_BODY_TIMEOUT_DEFAULT 60        /* option --body-timeout: a request's body */
#define PCC_IDLE_TIMEOUT_DEFAULT 60        /* option --idle-timeout: kept alive without a request */
#define PCC_CONN_START_MS 5000            /* ms an accepted connection may take to reach
                                              libmicrohttpd's "started" before its slot is freed */
#define PCC_ACCEPT_BATCH 64                /* connections accepted before a look at the stop */
#define PCC_ACCEPT_BACKOFF_MS 100          /* pause of the accept thread when it cannot accept
                                              (out of descriptors and spare, out of memory) */

/* ---- the store and its profiles (server) ---------------------------------------------------- */
#define PCC_STORE_MAX_SIZE_DEFAULT (3 * PCC_GIB) /* option --max-size: payload bytes kept before
                                                    the least recently used blobs are evicted */
#define PCC_STORE_RESERVE_MIN 64      /* map pages kept for deletions, at least (1/32 of the map) */
#define PCC_STORE_RESERVE_MAX 8192    /* ... at most */
#define PCC_USE_TABLE_SLOTS 65536     /* blobs whose last use is held in memory between flushes */
#define PCC_USE_FLUSH_SECONDS 5       /* seconds between flushes of the last uses into the store */
#define PCC_DELETE_BATCH 4096         /* path entries one deletion transaction removes, at most */
#define PCC_STORE_CHECK_SECONDS 2     /* seconds the check of the store at start walks it, at most */
#define PCC_EVICT_BATCH 1024          /* references one eviction transaction removes, at most */
#define PCC_STORE_GROUP_MAX 64        /* concurrent puts one group commit writes, at most */
#define PCC_STORE_GROUP_BYTES (64 * PCC_MIB) /* bytes of values one group commit writes, at most
                                                (a larger put is a group of its own) */
#define PCC_STORE_ZSTD_MIN 1024      /* bytes of a code blob from which --store-compression zstd
                                        compresses it */
#define PCC_STORE_ZSTD_LEVEL 1       /* zstd's level for stored blobs */
#define PCC_STORE_ZSTD_SAVING 10     /* percent a stored blob's frame must save, at least */
#define PCC_PROFILES_MAX_DEFAULT 10000 /* option --max-profiles: profiles kept (the least recently
                                          updated go first) */
#define PCC_PROFILE_DAYS_DEFAULT 30   /* option --profile-days: days an unchanged profile is kept */
#define PCC_PROFILE_PATH_MAX 500      /* bytes of a path a profile records (longer: left out) */
#define PCC_PROFILE_BATCH 1024        /* paths merged into a profile per write transaction */
#define PCC_USE_UPDATE_SECONDS 60     /* a blob whose recorded use is younger (up to twice that)
                                         is not moved again in the order of uses */
/* ---- numbers in JSON (every side) ----------------------------------------------------------- */
#define PCC_JSON_INT_MAX ((int64_t)1 << 53) /* 2^53: the largest magnitude up to which a JSON
                                               number (a double) holds every integer; an entry's
                                               mtime and size, an error's line and offset */

/* One row of the table, for `pycached --limits` and the docs check. */
typedef struct {
  const char *name;   /* the macro's name */
  uint64_t value;
  const char *option; /* the pycached option that changes it, or NULL */
  const char *what;
} pcc_limit;

/* The rows, in the order above; *n gets their count. Static storage. */
const pcc_limit *pcc_limits(size_t *n);

#endif
