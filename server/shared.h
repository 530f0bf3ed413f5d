/* shared.h: the shared blob tier of a fleet of pycached replicas, on Redis (--shared; docs/
 * OPERATIONS.md, "Shared tier on Redis"). Only content-addressed blobs go there, keyed
 * pcc:v1:blob:MAGICHEX:OPT:DIGESTHEX and spread over the listed servers by rendezvous hashing
 * (the highest XXH3-64 of "SERVER-ID\nKEY" wins; a server found down hands its keys to the
 * next-highest). Nothing read from Redis is trusted: a value is verified in full (format, its
 * XXH3-64 checksum, the magic, opt and digest of its key, the size and Java hash of the source it
 * is asked for, size bounds; with --shared-key, its HMAC-SHA256 signature first) before anything
 * uses it; a bad one is deleted and counted corrupt.
 * A replica about to compile takes a short lock (SET pcc:v1:lock:... ID NX PX) so that a fleet
 * compiles a source once; the others wait for the blob, bounded by the lock's expiry.
 *
 * Connections: synchronous hiredis, a small pool per server guarded by a mutex (at most
 * PCC_SHARED_IDLE_MAX idle ones kept; a caller without an idle one connects its own). Every
 * connect and command is bounded (the connect and command timeouts). A failure marks the server
 * down for a backoff (PCC_SHARED_BACKOFF_MIN_MS doubling to PCC_SHARED_BACKOFF_MAX_MS) during
 * which it is skipped without a syscall (a breaker); then one caller probes it. With
 * --shared-password-file every new connection sends AUTH first; a refused AUTH, or a Redis that
 * answers NOAUTH (it wants a password this replica lacks), marks the server down the same way,
 * with one warning while it stays down. Every call is safe from any thread. */
#ifndef PCC_SHARED_H
#define PCC_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "proto.h"
#include "store.h"

typedef struct pcc_shared pcc_shared;

typedef enum {
  PCC_SHARED_OK = 0,
  PCC_SHARED_MISS,     /* no such value (or it was bad, and dropped) */
  PCC_SHARED_DOWN,     /* the server for the key is down, timed out or answered an error */
  PCC_SHARED_INVALID,  /* a bad --shared list */
  PCC_SHARED_NOMEM,
} pcc_shared_status;

const char *pcc_shared_strerror(pcc_shared_status rc);

typedef struct {
  unsigned connect_ms; /* bound of one connect */
  unsigned command_ms; /* bound of one command's reply */
  uint64_t ttl;        /* seconds a stored value lives (EX); 0: none (Redis' maxmemory policy) */
  unsigned lock_ms;    /* PX of a compile lock: how long others wait for its holder */
  const char *key_file; /* --shared-key: a secret of the fleet; every value is signed with
                           HMAC-SHA256 under its SHA-256, and one without a valid signature is
                           never used. NULL: values carry the checksum only */
  const char *password_file; /* --shared-password-file: the Redis password (the file's bytes,
                                one trailing newline aside), sent with AUTH on every new
                                connection. NULL: no AUTH */
  const char *user;     /* --shared-user: the ACL user of that password (AUTH USER PASSWORD);
                           NULL: AUTH PASSWORD (requirepass). Only with password_file */
} pcc_shared_config;

/* Parses list, "redis://HOST:PORT[,redis://HOST:PORT...]" (at most PCC_SHARED_SERVERS_MAX; HOST a
 * numeric address or a name in /etc/hosts: a DNS look-up is not bounded by connect_ms), reads
 * config->key_file (a regular file of PCC_SHARED_KEY_MIN to PCC_SHARED_KEY_FILE_MAX bytes that
 * its group and others may not read) and config->password_file (a regular file, the same mode,
 * of 1 to PCC_SHARED_PASSWORD_MAX bytes besides one trailing newline; kept in the handle until
 * pcc_shared_close wipes it; config->user is copied), and makes the handle; connects to nothing
 * yet. PCC_SHARED_INVALID with a message naming the problem in err (err_len bytes, may be NULL;
 * never the password). *out is the caller's (pcc_shared_close). */
pcc_shared_status pcc_shared_open(const char *list, const pcc_shared_config *config,
                                  char *err, size_t err_len, pcc_shared **out);
/* Whether list parses as pcc_shared_open wants it; false with the problem in err (err_len
 * bytes). For the option's check (config.c); not thread-safe. */
bool pcc_shared_list_valid(const char *list, char *err, size_t err_len);

/* Closes every connection and wipes the key and the password. NULL is fine. */
void pcc_shared_close(pcc_shared *shared);

/* Makes every wait of pcc_shared_fetch end at once (shutdown). */
void pcc_shared_cancel(pcc_shared *shared);

/* What a compile should do about the shared tier (pcc_shared_fetch's answer). */
typedef struct {
  bool holding;     /* this replica holds the compile lock: pcc_shared_done must follow */
  bool waited;      /* it waited for another replica's compile */
} pcc_shared_ticket;

/* Before compiling the source of record (its digest, size and Java hash) for (magic, opt): GETs
 * its blob; on a miss takes the compile lock, or, when another replica holds it, polls for the
 * blob (backoff 5 ms doubling to 200 ms) until the blob comes (PCC_SHARED_OK), the lock is free
 * again (it takes it) or lock_ms pass (counted lock_expired). Blocks up to lock_ms and a few
 * commands: call it from a job thread, never an HTTP thread. PCC_SHARED_OK: *out is a verified
 * heap copy laid out as pcc_store_get_blob's (PCC_BLOB_HEADROOM bytes before the payload; free()
 * it). Otherwise compile, and call pcc_shared_done with *ticket afterwards. */
pcc_shared_status pcc_shared_fetch(pcc_shared *shared, const pcc_magic *magic, int opt,
                                   const pcc_path_record *record, pcc_blob **out,
                                   pcc_shared_ticket *ticket);

/* After the compile that a pcc_shared_fetch miss asked for: SETs blob (when not NULL: the
 * compile's result, with the TTL) and frees the lock when ticket says this replica holds it and
 * it is still its own (a compare-and-delete script). Failures are counted, never reported: the
 * tier only saves work. */
void pcc_shared_done(pcc_shared *shared, const pcc_magic *magic, int opt,
                     const pcc_digest *digest, const pcc_blob *blob,
                     const pcc_shared_ticket *ticket);

/* The "shared" object of /v1/stats (docs/API.md): the counters and each server's state. The
 * caller owns it; NULL without memory. */
cJSON *pcc_shared_json(pcc_shared *shared);

/* The counters, for /metrics. */
typedef struct {
  uint64_t hits, misses, stores, corrupt, errors, timeouts, skipped, lock_waits, lock_expired;
} pcc_shared_figures;
void pcc_shared_figures_get(pcc_shared *shared, pcc_shared_figures *out);
/* The servers: their count; server i's id ("HOST:PORT") and whether it is up now. */
unsigned pcc_shared_servers(const pcc_shared *shared);
const char *pcc_shared_server_id(const pcc_shared *shared, unsigned i);
bool pcc_shared_server_up(pcc_shared *shared, unsigned i);

/* Rendezvous hashing, exposed for tests: fills order[0..n) with the indexes of ids (n server
 * ids) from the highest XXH3-64 of "ID\nKEY" to the lowest (ties: the lower index first). */
void pcc_shared_rank(const char *const *ids, unsigned n, const char *key, unsigned *order);

/* The key of the blob of (magic, opt, digest) into out (PCC_SHARED_KEY_LEN + 1 bytes); kind is
 * "blob" or "lock". */
#define PCC_SHARED_KEY_LEN (12 + 2 * PCC_MAGIC_LEN + 4 + 2 * PCC_DIGEST_LEN)
void pcc_shared_key(const char *kind, const pcc_magic *magic, int opt, const pcc_digest *digest,
                    char *out);

#endif
