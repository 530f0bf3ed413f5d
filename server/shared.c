/* shared.c: the shared blob tier on Redis (shared.h; docs/OPERATIONS.md, "Shared tier on
 * Redis"): the server list, rendezvous hashing, a bounded connection pool with a breaker per
 * server, the value format and its verification, and the compile lock.
 *
 * A value (little-endian):
 *   "PCCS" | version u8 (1) | kind u8 | opt u8 | magic (4) | digest (32) | hash i32 | size u64 |
 *   created i64 | compile_us u32 | compiler length u8 | compiler | payload length u32 | payload |
 *   checksum u64 (XXH3-64 of every byte before it)
 * and with --shared-key (version 2) | signature (HMAC-SHA256 of every byte before it, 32).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <sodium.h>

#include "pcc_limits.h"
#include "pcc_log.h"
#include "peer.h"
#include "shared.h"

#define VALUE_MAGIC "PCCS"
#define VALUE_VERSION 1        /* checksummed */
#define VALUE_VERSION_SIGNED 2 /* checksummed and signed (--shared-key) */
#define SIGNATURE_LEN crypto_auth_hmacsha256_BYTES
#define VALUE_FIXED (4 + 3 + PCC_MAGIC_LEN + PCC_DIGEST_LEN + 4 + 8 + 8 + 4 + 1 + 4 + 8)
#define ID_LEN 32 /* hex digits of a replica's lock value */

/* Frees the lock only if it still holds this replica's id. */
static const char unlock_script[] =
  "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end "
  "return 0";

typedef struct {
  char host[PCC_HOST_NAME_MAX + 1];
  int port;
  char id[PCC_HOST_NAME_MAX + 8]; /* "HOST:PORT": what rendezvous hashing hashes */
  pcc_peer peer;                   /* its breaker and idle connections (redisContext) */
  atomic_int_fast64_t refusal_warned_ms; /* when a refusal was last warned of; 0: never */
} server;

_Static_assert(PCC_SHARED_IDLE_MAX <= PCC_PEER_IDLE_SLOTS, "a Redis server's idle ones fit");

struct pcc_shared {
  pcc_shared_config config;
  server servers[PCC_SHARED_SERVERS_MAX];
  const char *ids[PCC_SHARED_SERVERS_MAX];
  unsigned n;
  char replica[ID_LEN + 1];        /* this process's lock value */
  bool signed_values;              /* --shared-key given */
  uint8_t key[crypto_auth_hmacsha256_KEYBYTES]; /* the SHA-256 of its bytes */
  char password[PCC_SHARED_PASSWORD_MAX]; /* --shared-password-file's; wiped at close */
  size_t password_len;             /* 0: no AUTH */
  char user[PCC_SHARED_USER_MAX + 1]; /* --shared-user; "": AUTH PASSWORD alone */
  atomic_bool cancelled;
  atomic_uint_fast64_t hits, misses, stores, corrupt, errors, timeouts, skipped, lock_waits,
    lock_expired;
};

const char *pcc_shared_strerror(pcc_shared_status rc)
{
  switch (rc) {
  case PCC_SHARED_OK: return "ok";
  case PCC_SHARED_MISS: return "not in the shared tier";
  case PCC_SHARED_DOWN: return "the shared tier's server is down or slow";
  case PCC_SHARED_INVALID: return "a bad --shared list";
  case PCC_SHARED_NOMEM: return "out of memory";
  }
  return "unknown shared-tier status";
}

static int64_t now_ms(void)
{
  return pcc_peer_now_ms();
}

static void conn_close(void *c)
{
  redisFree(c);
}

static struct timeval ms_timeval(unsigned ms)
{
  return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

/* ---- the list ---------------------------------------------------------------------------- */

/* One "redis://HOST:PORT" of len bytes into s. */
static bool parse_url(const char *url, size_t len, server *s, char *err, size_t err_len)
{
  static const char scheme[] = "redis://";
  const size_t scheme_len = sizeof scheme - 1;
  if (len <= scheme_len || memcmp(url, scheme, scheme_len) != 0) {
    snprintf(err, err_len, "'%.*s' is not redis://HOST:PORT", (int)len, url);
    return false;
  }
  const char *host = url + scheme_len, *end = url + len;
  const char *colon = NULL;
  for (const char *p = host; p < end; p++)
    if (*p == ':')
      colon = p;
  size_t host_len = colon ? (size_t)(colon - host) : 0;
  if (colon == NULL || host_len == 0 || host_len > PCC_HOST_NAME_MAX || colon + 1 == end ||
      end - colon - 1 > 5) {
    snprintf(err, err_len, "'%.*s' needs a host and a port (redis://HOST:PORT)",
             (int)len, url);
    return false;
  }
  long port = 0;
  for (const char *p = colon + 1; p < end; p++) {
    if (*p < '0' || *p > '9') {
      snprintf(err, err_len, "'%.*s': the port is not a number", (int)len, url);
      return false;
    }
    port = port * 10 + (*p - '0');
  }
  if (port < 1 || port > 65535) {
    snprintf(err, err_len, "'%.*s': the port is not 1 to 65535", (int)len, url);
    return false;
  }
  memcpy(s->host, host, host_len);
  s->host[host_len] = '\0';
  s->port = (int)port;
  snprintf(s->id, sizeof s->id, "%.*s:%ld", (int)host_len, host, port);
  return true;
}

/* Reads the secret file at path (--shared-key, --shared-password-file), a regular file that its
 * group and others may not use, into buf: at most cap bytes, *len of them. NULL, or why not (a
 * static text or strerror's). The caller checks the length and wipes buf. */
static const char *read_secret(const char *path, uint8_t *buf, size_t cap, size_t *len)
{
  *len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK); /* a FIFO does not block */
  struct stat sb;
  if (fd < 0 || fstat(fd, &sb) != 0) {
    const char *why = strerror(errno);
    if (fd >= 0)
      close(fd);
    return why;
  }
  const char *why = !S_ISREG(sb.st_mode)                 ? "not a regular file"
                    : (sb.st_mode & (S_IRWXG | S_IRWXO)) ? "its group or others may use it"
                                                         : NULL;
  int read_errno = why == NULL ? pcc_read_upto(fd, buf, cap, len) : 0;
  if (read_errno != 0)
    why = strerror(read_errno);
  close(fd);
  return why;
}

/* Reads the --shared-key file into shared->key (the SHA-256 of its bytes). */
static bool read_key(pcc_shared *shared, const char *path, char *err, size_t err_len)
{
  uint8_t bytes[PCC_SHARED_KEY_FILE_MAX + 1];
  size_t len = 0;
  const char *why = read_secret(path, bytes, sizeof bytes, &len);
  if (why == NULL && (len < PCC_SHARED_KEY_MIN || len > PCC_SHARED_KEY_FILE_MAX))
    why = len < PCC_SHARED_KEY_MIN ? "shorter than the least" : "larger than the limit";
  if (why != NULL) {
    snprintf(err, err_len, "--shared-key %s: %s (it must be a regular file of %d to %d bytes, "
             "mode 0600 or 0400: e.g. head -c 32 /dev/urandom)", path, why, PCC_SHARED_KEY_MIN,
             PCC_SHARED_KEY_FILE_MAX);
    sodium_memzero(bytes, sizeof bytes);
    return false;
  }
  crypto_hash_sha256(shared->key, bytes, len);
  sodium_memzero(bytes, sizeof bytes);
  shared->signed_values = true;
  return true;
}

/* Reads the --shared-password-file file into shared->password: its bytes but one trailing
 * newline. Messages name the file, never what it holds. */
static bool read_password(pcc_shared *shared, const char *path, char *err, size_t err_len)
{
  uint8_t bytes[PCC_SHARED_PASSWORD_MAX + 2]; /* a newline, and a byte to see a larger one */
  size_t len = 0;
  const char *why = read_secret(path, bytes, sizeof bytes, &len);
  if (why == NULL && len > 0 && bytes[len - 1] == '\n')
    len--;
  if (why == NULL && (len == 0 || len > PCC_SHARED_PASSWORD_MAX))
    why = len == 0 ? "empty" : "larger than the limit";
  if (why != NULL) {
    snprintf(err, err_len, "--shared-password-file %s: %s (it must be a regular file holding "
             "the password, 1 to %d bytes besides one trailing newline, mode 0600 or 0400)",
             path, why, PCC_SHARED_PASSWORD_MAX);
    sodium_memzero(bytes, sizeof bytes);
    return false;
  }
  memcpy(shared->password, bytes, len);
  shared->password_len = len;
  sodium_memzero(bytes, sizeof bytes);
  return true;
}

/* The --shared-user and --shared-password-file of config into shared; false with a message in
 * err otherwise. */
static bool read_auth(pcc_shared *shared, const pcc_shared_config *config, char *err,
                      size_t err_len)
{
  if (config->user != NULL) {
    size_t len = strlen(config->user);
    if (config->password_file == NULL || len == 0 || len > PCC_SHARED_USER_MAX) {
      if (config->password_file == NULL)
        snprintf(err, err_len, "--shared-user: given without --shared-password-file");
      else
        snprintf(err, err_len, "--shared-user: not 1 to %d bytes", PCC_SHARED_USER_MAX);
      return false;
    }
    memcpy(shared->user, config->user, len + 1);
  }
  return config->password_file == NULL || read_password(shared, config->password_file, err,
                                                        err_len);
}

/* Parses list into servers[0..*n) (host, port, id; nothing else initialised). False with a
 * message in err otherwise. */
static bool parse_list(const char *list, server *servers, unsigned *n, char *err,
                       size_t err_len)
{
  *n = 0;
  for (const char *p = list; *p != '\0';) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    if (*n == PCC_SHARED_SERVERS_MAX) {
      snprintf(err, err_len, "more than %d servers", PCC_SHARED_SERVERS_MAX);
      return false;
    }
    server *s = &servers[*n];
    if (!parse_url(p, len, s, err, err_len))
      return false;
    for (unsigned i = 0; i < *n; i++)
      if (strcmp(servers[i].id, s->id) == 0) {
        snprintf(err, err_len, "%s is listed twice", s->id);
        return false;
      }
    (*n)++;
    p += len;
    if (*p == ',' && *++p == '\0') {
      snprintf(err, err_len, "the list ends with a comma");
      return false;
    }
  }
  if (*n == 0) {
    snprintf(err, err_len, "no server listed");
    return false;
  }
  return true;
}

bool pcc_shared_list_valid(const char *list, char *err, size_t err_len)
{
  static server servers[PCC_SHARED_SERVERS_MAX]; /* config parsing is single-threaded */
  unsigned n;
  return parse_list(list, servers, &n, err, err_len);
}

pcc_shared_status pcc_shared_open(const char *list, const pcc_shared_config *config,
                                  char *err, size_t err_len, pcc_shared **out)
{
  char scratch[8];
  if (err == NULL) {
    err = scratch;
    err_len = sizeof scratch;
  }
  err[0] = '\0';
  pcc_shared *shared = calloc(1, sizeof *shared);
  if (shared == NULL)
    return PCC_SHARED_NOMEM;
  shared->config = *config;
  char why[400];
  if (!parse_list(list, shared->servers, &shared->n, why, sizeof why)) {
    snprintf(err, err_len, "--shared: %s", why);
    shared->n = 0; /* no mutex to destroy */
    pcc_shared_close(shared);
    return PCC_SHARED_INVALID;
  }
  for (unsigned i = 0; i < shared->n; i++) {
    pcc_peer_init(&shared->servers[i].peer, PCC_SHARED_IDLE_MAX, PCC_SHARED_BACKOFF_MIN_MS,
                  PCC_SHARED_BACKOFF_MAX_MS, conn_close);
    shared->ids[i] = shared->servers[i].id;
  }
  if (sodium_init() < 0 ||
      (config->key_file != NULL && !read_key(shared, config->key_file, err, err_len)) ||
      !read_auth(shared, config, err, err_len)) {
    if (err[0] == '\0')
      snprintf(err, err_len, "--shared: libsodium does not start");
    pcc_shared_close(shared);
    return PCC_SHARED_INVALID;
  }
  uint8_t random[ID_LEN / 2];
  if (getrandom(random, sizeof random, 0) != (ssize_t)sizeof random) {
    uint64_t fallback = (uint64_t)now_ms() ^ ((uint64_t)getpid() << 32);
    memset(random, 0, sizeof random);
    memcpy(random, &fallback, sizeof fallback);
  }
  for (size_t i = 0; i < sizeof random; i++)
    snprintf(shared->replica + 2 * i, 3, "%02x", random[i]);
  *out = shared;
  return PCC_SHARED_OK;
}

void pcc_shared_close(pcc_shared *shared)
{
  if (shared == NULL)
    return;
  for (unsigned i = 0; i < shared->n; i++)
    pcc_peer_destroy(&shared->servers[i].peer);
  sodium_memzero(shared->key, sizeof shared->key);
  sodium_memzero(shared->password, sizeof shared->password);
  free(shared);
}

void pcc_shared_cancel(pcc_shared *shared)
{
  if (shared != NULL)
    atomic_store(&shared->cancelled, true);
}

/* ---- rendezvous hashing ------------------------------------------------------------------ */

static uint64_t score(const char *id, const char *key)
{
  char buf[PCC_HOST_NAME_MAX + 16 + PCC_SHARED_KEY_LEN + 1];
  int len = snprintf(buf, sizeof buf, "%s\n%s", id, key);
  return pcc_checksum(buf, len < 0 ? 0 : (size_t)len < sizeof buf ? (size_t)len : sizeof buf - 1);
}

void pcc_shared_rank(const char *const *ids, unsigned n, const char *key, unsigned *order)
{
  uint64_t scores[PCC_SHARED_SERVERS_MAX];
  for (unsigned i = 0; i < n && i < PCC_SHARED_SERVERS_MAX; i++) {
    scores[i] = score(ids[i], key);
    unsigned at = i; /* insertion: highest first, ties keep the lower index first */
    while (at > 0 && scores[order[at - 1]] < scores[i]) {
      order[at] = order[at - 1];
      at--;
    }
    order[at] = i;
  }
}

void pcc_shared_key(const char *kind, const pcc_magic *magic, int opt, const pcc_digest *digest,
                    char *out)
{
  char magic_hex[2 * PCC_MAGIC_LEN + 1], digest_hex[PCC_DIGEST_HEX_LEN + 1];
  pcc_magic_to_hex(magic, magic_hex);
  pcc_digest_to_hex(digest, digest_hex);
  snprintf(out, PCC_SHARED_KEY_LEN + 1, "pcc:v1:%s:%s:%d:%s", kind, magic_hex, opt, digest_hex);
}

/* ---- connections and the breaker --------------------------------------------------------- */

/* Gives a connection that answered back to the pool and marks s up. */
static void conn_give(server *s, redisContext *c)
{
  if (pcc_peer_give(&s->peer, c))
    pcc_logf(PCC_LOG_INFO, "shared tier: %s is up again", s->id);
}

/* Did the command just run on c fail by running out of time (SO_RCVTIMEO, SO_SNDTIMEO)? */
static bool conn_timed_out(const redisContext *c)
{
  return c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* s answered with an error that every later request would get too (its AUTH refused, NOAUTH:
 * it wants a password, NOPERM: its ACL lacks what the tier needs). With down, it is down for its
 * backoff as a server that failed (c, the connection, closed; the idle ones too), so that it is
 * retried later rather than asked per request; otherwise c goes back to the pool (the refusal
 * costs the one round trip). A warning names what happened, Redis' message and hint (what to
 * do), at most once per PCC_SHARED_REFUSAL_WARN_MS a server (a partial ACL passes some commands
 * and refuses others: its refusals come and go); the others are debug lines. */
static void server_refused(pcc_shared *shared, server *s, redisContext *c, bool down,
                           const char *what, const char *message, const char *hint)
{
  atomic_fetch_add(&shared->errors, 1);
  if (shared->password_len > 0 &&
      memmem(message, strlen(message), shared->password, shared->password_len) != NULL)
    message = "(Redis' message holds the password: not shown)";
  unsigned backoff = 0;
  if (down)
    pcc_peer_failed(&s->peer, c, true, &backoff);
  else
    conn_give(s, c);
  int64_t now = now_ms(), last = atomic_load(&s->refusal_warned_ms);
  bool warn = (last == 0 || now - last >= PCC_SHARED_REFUSAL_WARN_MS) &&
              atomic_compare_exchange_strong(&s->refusal_warned_ms, &last, now > 0 ? now : 1);
  if (!warn)
    pcc_logf(PCC_LOG_DEBUG, "shared tier %s: %s (Redis: %s)", s->id, what, message);
  else if (down)
    pcc_logf(PCC_LOG_WARN, "shared tier %s: %s (Redis: %s): %s; down: skipped for %u ms, then "
             "retried (every %d ms at most while it refuses; this warning at most every %d s)",
             s->id, what, message, hint, backoff, PCC_SHARED_BACKOFF_MAX_MS,
             PCC_SHARED_REFUSAL_WARN_MS / 1000);
  else
    pcc_logf(PCC_LOG_WARN, "shared tier %s: %s (Redis: %s): %s (this warning at most every %d "
             "s)", s->id, what, message, hint, PCC_SHARED_REFUSAL_WARN_MS / 1000);
}

/* Sends AUTH ([--shared-user] password) on c, a new connection to s. True when Redis took it.
 * False when the connection failed (*timed_out: out of time; the caller marks s down) or when
 * Redis refused it (*refused: s is marked down here and c is closed). */
static bool conn_auth(pcc_shared *shared, server *s, redisContext *c, bool *refused,
                      bool *timed_out)
{
  const char *argv[3] = {"AUTH"};
  size_t lens[3] = {4};
  int argc = 1;
  if (shared->user[0] != '\0') {
    argv[argc] = shared->user;
    lens[argc++] = strlen(shared->user);
  }
  argv[argc] = shared->password;
  lens[argc++] = shared->password_len;
  redisReply *reply = redisCommandArgv(c, argc, argv, lens);
  if (reply == NULL || c->err != 0) {
    *timed_out = conn_timed_out(c);
    pcc_logf(PCC_LOG_DEBUG, "shared tier %s: AUTH: %s", s->id, c->errstr);
    if (reply != NULL)
      freeReplyObject(reply);
    return false;
  }
  *refused = reply->type == REDIS_REPLY_ERROR;
  if (*refused)
    server_refused(shared, s, c, true, "AUTH refused", reply->str, shared->user[0] != '\0'
                   ? "check --shared-user and --shared-password-file against the ACL user of "
                     "the Redis server"
                   : "check --shared-password-file against the requirepass of the Redis "
                     "server");
  freeReplyObject(reply);
  return !*refused;
}

/* A connection to s (*pooled: an idle one of the pool, which may have been closed since by
 * the server), or NULL when it is skipped (down: *skipped set, also when its AUTH was refused
 * just now, which marked it down) or cannot be reached (the caller marks it down; *timed_out
 * when the connect or AUTH ran out of time). fresh: connect a new one. A new connection has
 * sent AUTH when --shared-password-file is given. */
static redisContext *conn_take(pcc_shared *shared, server *s, bool fresh, bool *pooled,
                               bool *skipped, bool *timed_out)
{
  *skipped = *timed_out = *pooled = false;
  void *idle;
  if (!pcc_peer_take(&s->peer, fresh, &idle)) {
    atomic_fetch_add(&shared->skipped, 1);
    *skipped = true;
    return NULL;
  }
  redisContext *c = idle;
  *pooled = c != NULL;
  if (c != NULL)
    return c;
  c = redisConnectWithTimeout(s->host, s->port, ms_timeval(shared->config.connect_ms));
  if (c == NULL || c->err != 0 ||
      redisSetTimeout(c, ms_timeval(shared->config.command_ms)) != REDIS_OK) {
    *timed_out = errno == ETIMEDOUT || errno == EINPROGRESS;
    if (c != NULL)
      pcc_logf(PCC_LOG_DEBUG, "shared tier %s: %s", s->id, c->errstr);
    redisFree(c);
    return NULL; /* the caller marks it down */
  }
  bool refused = false;
  if (shared->password_len == 0 || conn_auth(shared, s, c, &refused, timed_out))
    return c;
  *skipped = refused; /* refused: marked down, c closed */
  if (!refused)
    redisFree(c); /* the caller marks it down */
  return NULL;
}

/* Marks s down for its backoff (doubling), its idle connections closed (likely as dead as the
 * one that failed); timed_out: the failure was a timeout. */
static void server_failed(pcc_shared *shared, server *s, bool timed_out)
{
  atomic_fetch_add(&shared->errors, 1);
  if (timed_out)
    atomic_fetch_add(&shared->timeouts, 1);
  unsigned backoff;
  if (pcc_peer_failed(&s->peer, NULL, true, &backoff))
    pcc_logf(PCC_LOG_WARN, "shared tier: %s is down or slow; skipped for %u ms, then retried",
             s->id, backoff);
}

/* The first server of key's ranking that is not skipped as down, or NULL; *conn a connection
 * to it (*pooled as conn_take's). */
static server *route(pcc_shared *shared, const char *key, redisContext **conn, bool *pooled)
{
  unsigned order[PCC_SHARED_SERVERS_MAX];
  pcc_shared_rank(shared->ids, shared->n, key, order);
  for (unsigned i = 0; i < shared->n; i++) {
    server *s = &shared->servers[order[i]];
    bool skipped, timed_out;
    *conn = conn_take(shared, s, false, pooled, &skipped, &timed_out);
    if (*conn != NULL)
      return s;
    if (!skipped)
      server_failed(shared, s, timed_out); /* could not connect: down from now */
  }
  return NULL;
}

/* The error replies that every later request would get too (the server refuses this replica,
 * not this request): warned of, rate-limited, and with down the server is treated as down for
 * its backoff (server_refused). */
typedef struct {
  const char *prefix; /* of Redis' message */
  bool down;          /* every command gets it: no use asking until the backoff has run */
  const char *what;
  const char *hint;   /* without --shared-password-file */
  const char *hint_with_password;
} refusal;

static const refusal refusals[] = {
  {"NOAUTH", true, "it wants a password",
   "give --shared-password-file (and --shared-user for an ACL user)",
   "check --shared-password-file and --shared-user"},
  {"NOPERM", false, "its ACL refuses a command or a key this replica needs",
   "the tier runs GET, SET, DEL and EVAL on keys pcc:* (docs/OPERATIONS.md, \"Redis with a "
   "password\")",
   "give --shared-user the commands GET, SET, DEL and EVAL on ~pcc:* (docs/OPERATIONS.md, "
   "\"Redis with a password\")"},
};

/* The refusal message is, or NULL for an error of this request alone. */
static const refusal *refusal_of(const char *message)
{
  for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++)
    if (strncmp(message, refusals[i].prefix, strlen(refusals[i].prefix)) == 0)
      return &refusals[i];
  return NULL;
}

/* Runs one command (argc words) on key's server. NULL when the server is down or failed (the
 * reply was not a reply); else the reply (freeReplyObject) and its server is up. A pooled
 * connection that fails at once (closed by a Redis restarted or by its `timeout`) is replaced by
 * a fresh one, once; a timeout is not tried again. */
static redisReply *command(pcc_shared *shared, const char *key, int argc, const char **argv,
                           const size_t *lens)
{
  redisContext *c = NULL;
  bool pooled = false;
  server *s = route(shared, key, &c, &pooled);
  if (s == NULL)
    return NULL;
  redisReply *reply = redisCommandArgv(c, argc, argv, lens);
  if (reply == NULL || c->err != 0) {
    bool timed_out = conn_timed_out(c);
    pcc_logf(PCC_LOG_DEBUG, "shared tier %s: %s", s->id, c->errstr);
    if (reply != NULL)
      freeReplyObject(reply);
    redisFree(c);
    bool skipped = false;
    c = pooled && !timed_out ? conn_take(shared, s, true, &pooled, &skipped, &timed_out) : NULL;
    if (c == NULL && skipped)
      return NULL; /* down meanwhile, or its AUTH refused (marked down) */
    reply = c != NULL ? redisCommandArgv(c, argc, argv, lens) : NULL;
    if (reply == NULL || c->err != 0) {
      if (c != NULL) {
        timed_out = conn_timed_out(c);
        if (reply != NULL)
          freeReplyObject(reply);
        redisFree(c);
      }
      server_failed(shared, s, timed_out);
      return NULL;
    }
  }
  const refusal *refused = reply->type == REDIS_REPLY_ERROR ? refusal_of(reply->str) : NULL;
  if (refused != NULL) {
    server_refused(shared, s, c, refused->down, refused->what, reply->str,
                   shared->password_len == 0 ? refused->hint : refused->hint_with_password);
    freeReplyObject(reply);
    return NULL;
  }
  conn_give(s, c);
  if (reply->type == REDIS_REPLY_ERROR) { /* e.g. OOM under maxmemory noeviction */
    pcc_logf(PCC_LOG_WARN, "shared tier %s: %s", s->id, reply->str);
    atomic_fetch_add(&shared->errors, 1);
    freeReplyObject(reply);
    return NULL;
  }
  return reply;
}

/* ---- values ------------------------------------------------------------------------------ */

static void put_u32(uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static uint64_t get_u64(const uint8_t *p)
{
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

/* The value of blob (malloc'd, *len its length), or NULL. */
static uint8_t *value_encode(const pcc_shared *shared, const pcc_magic *magic, int opt,
                             const pcc_digest *digest, const pcc_blob *blob, size_t *len)
{
  size_t name_len = strnlen(blob->compiler, PCC_COMPILER_NAME_MAX);
  size_t signature = shared->signed_values ? SIGNATURE_LEN : 0;
  if (blob->payload_len > PCC_SHARED_VALUE_MAX - VALUE_FIXED - name_len - signature)
    return NULL;
  *len = VALUE_FIXED + name_len + blob->payload_len + signature;
  uint8_t *v = malloc(*len), *p = v;
  if (v == NULL)
    return NULL;
  memcpy(p, VALUE_MAGIC, 4);
  p[4] = shared->signed_values ? VALUE_VERSION_SIGNED : VALUE_VERSION;
  p[5] = (uint8_t)blob->kind;
  p[6] = (uint8_t)opt;
  p += 7;
  memcpy(p, magic->bytes, PCC_MAGIC_LEN);
  p += PCC_MAGIC_LEN;
  memcpy(p, digest->bytes, PCC_DIGEST_LEN);
  p += PCC_DIGEST_LEN;
  put_u32(p, (uint32_t)blob->hash);
  put_u64(p + 4, blob->size);
  put_u64(p + 12, (uint64_t)blob->created);
  put_u32(p + 20, blob->compile_us);
  p[24] = (uint8_t)name_len;
  p += 25;
  memcpy(p, blob->compiler, name_len);
  p += name_len;
  put_u32(p, (uint32_t)blob->payload_len);
  p += 4;
  memcpy(p, blob->payload, blob->payload_len);
  p += blob->payload_len;
  put_u64(p, pcc_checksum(v, (size_t)(p - v)));
  p += 8;
  if (shared->signed_values)
    crypto_auth_hmacsha256(p, v, (size_t)(p - v), shared->key);
  return v;
}

/* Verifies a value read for the source of record under (magic, opt); the blob (a heap copy as
 * pcc_store_get_blob's) or NULL when anything is off, *why saying what. */
static pcc_blob *value_decode(const pcc_shared *shared, const uint8_t *v, size_t len,
                              const pcc_magic *magic, int opt, const pcc_path_record *record,
                              const char **why)
{
  *why = "too short";
  size_t signature = shared->signed_values ? SIGNATURE_LEN : 0;
  if (len < VALUE_FIXED + signature || len > PCC_SHARED_VALUE_MAX)
    return NULL;
  if (signature) { /* first: nothing of a value not signed with the key is looked at */
    *why = "signature (not written with this --shared-key)";
    len -= signature;
    if (crypto_auth_hmacsha256_verify(v + len, v, len, shared->key) != 0)
      return NULL;
  }
  *why = "checksum";
  if (get_u64(v + len - 8) != pcc_checksum(v, len - 8))
    return NULL;
  *why = v[4] == VALUE_VERSION_SIGNED ? "signed, and this replica has no --shared-key" : "format";
  if (memcmp(v, VALUE_MAGIC, 4) != 0 ||
      v[4] != (signature ? VALUE_VERSION_SIGNED : VALUE_VERSION) ||
      (v[5] != PCC_BLOB_CODE && v[5] != PCC_BLOB_COMPILE_ERROR))
    return NULL;
  const uint8_t *p = v + 7;
  *why = "not the key's magic, opt or digest";
  if (v[6] != (uint8_t)opt || memcmp(p, magic->bytes, PCC_MAGIC_LEN) != 0 ||
      memcmp(p + PCC_MAGIC_LEN, record->digest.bytes, PCC_DIGEST_LEN) != 0)
    return NULL;
  p += PCC_MAGIC_LEN + PCC_DIGEST_LEN;
  int32_t hash = (int32_t)get_u32(p);
  uint64_t size = get_u64(p + 4);
  *why = "not the source's size and hash";
  if (hash != record->hash || size != record->size)
    return NULL;
  int64_t created = (int64_t)get_u64(p + 12);
  uint32_t compile_us = get_u32(p + 20);
  size_t name_len = p[24];
  p += 25;
  *why = "lengths";
  if (name_len > PCC_COMPILER_NAME_MAX || (size_t)(p - v) + name_len + 4 + 8 > len)
    return NULL;
  const uint8_t *name = p;
  p += name_len;
  size_t payload_len = get_u32(p);
  p += 4;
  if ((size_t)(p - v) + payload_len + 8 != len)
    return NULL;
  *why = "compiler name";
  for (size_t i = 0; i < name_len; i++)
    if (name[i] < 0x20 || name[i] > 0x7e)
      return NULL;
  /* a code object's marshal starts with TYPE_CODE ('c', with or without FLAG_REF); an error is a
   * JSON object */
  *why = "payload";
  if (v[5] == PCC_BLOB_CODE && (payload_len == 0 || (p[0] & 0x7f) != 'c'))
    return NULL;
  if (v[5] == PCC_BLOB_COMPILE_ERROR) {
    cJSON *json = cJSON_ParseWithLength((const char *)p, payload_len);
    bool object = cJSON_IsObject(json);
    cJSON_Delete(json);
    if (!object)
      return NULL;
  }
  *why = "out of memory";
  pcc_blob *blob = malloc(sizeof *blob + PCC_BLOB_HEADROOM + payload_len + 1);
  if (blob == NULL)
    return NULL;
  *blob = (pcc_blob){.kind = v[5], .hash = hash, .size = size, .created = created,
                     .compile_us = compile_us, .payload_len = payload_len};
  memcpy(blob->compiler, name, name_len);
  blob->compiler[name_len] = '\0';
  uint8_t *payload = (uint8_t *)(blob + 1) + PCC_BLOB_HEADROOM;
  memcpy(payload, p, payload_len);
  payload[payload_len] = '\0';
  blob->payload = payload;
  *why = NULL;
  return blob;
}

/* ---- the operations ---------------------------------------------------------------------- */

/* GET of the blob key: OK with *out, MISS (none, or a bad one: deleted), or DOWN. */
static pcc_shared_status get_blob(pcc_shared *shared, const char *key, const pcc_magic *magic,
                                  int opt, const pcc_path_record *record, pcc_blob **out)
{
  const char *argv[] = {"GET", key};
  size_t lens[] = {3, strlen(key)};
  redisReply *reply = command(shared, key, 2, argv, lens);
  if (reply == NULL)
    return PCC_SHARED_DOWN;
  if (reply->type != REDIS_REPLY_STRING) {
    freeReplyObject(reply);
    return PCC_SHARED_MISS;
  }
  const char *why = NULL;
  *out = value_decode(shared, (const uint8_t *)reply->str, reply->len, magic, opt, record,
                      &why);
  freeReplyObject(reply);
  if (*out != NULL)
    return PCC_SHARED_OK;
  if (why != NULL && strcmp(why, "out of memory") == 0)
    return PCC_SHARED_MISS;
  atomic_fetch_add(&shared->corrupt, 1);
  pcc_logf(PCC_LOG_WARN, "shared tier: the value of %s is bad (%s): dropped, compiled here",
           key, why);
  const char *del[] = {"DEL", key};
  size_t del_lens[] = {3, strlen(key)};
  reply = command(shared, key, 2, del, del_lens);
  if (reply != NULL)
    freeReplyObject(reply);
  return PCC_SHARED_MISS;
}

/* SET lock NX PX: OK when taken, MISS when another holds it, DOWN. The lock is routed by the
 * blob's key, so that both live on one server. */
static pcc_shared_status take_lock(pcc_shared *shared, const char *route_key, const char *lock)
{
  char px[24];
  snprintf(px, sizeof px, "%u", shared->config.lock_ms);
  const char *argv[] = {"SET", lock, shared->replica, "NX", "PX", px};
  size_t lens[] = {3, strlen(lock), strlen(shared->replica), 2, 2, strlen(px)};
  redisReply *reply = command(shared, route_key, 6, argv, lens);
  if (reply == NULL)
    return PCC_SHARED_DOWN;
  bool taken = reply->type == REDIS_REPLY_STATUS;
  freeReplyObject(reply);
  return taken ? PCC_SHARED_OK : PCC_SHARED_MISS;
}

static void release_lock(pcc_shared *shared, const char *route_key, const char *lock)
{
  const char *argv[] = {"EVAL", unlock_script, "1", lock, shared->replica};
  size_t lens[] = {4, sizeof unlock_script - 1, 1, strlen(lock), strlen(shared->replica)};
  redisReply *reply = command(shared, route_key, 5, argv, lens);
  if (reply != NULL)
    freeReplyObject(reply);
}

/* With the lock just taken: GETs the blob once more, for a holder that stored it and freed the
 * lock between this replica's first GET and its SET NX. OK: *out, the lock freed; else MISS with
 * the lock held (ticket->holding), or DOWN. */
static pcc_shared_status locked_get(pcc_shared *shared, const char *key, const pcc_magic *magic,
                                    int opt, const pcc_path_record *record, pcc_blob **out,
                                    pcc_shared_ticket *ticket)
{
  char lock[PCC_SHARED_KEY_LEN + 1];
  pcc_shared_key("lock", magic, opt, &record->digest, lock);
  pcc_shared_status rc = get_blob(shared, key, magic, opt, record, out);
  if (rc == PCC_SHARED_OK) {
    atomic_fetch_add(&shared->hits, 1);
    release_lock(shared, key, lock);
    return rc;
  }
  ticket->holding = true; /* down: the lock expires by itself; pcc_shared_done tries anyway */
  return rc;
}

pcc_shared_status pcc_shared_fetch(pcc_shared *shared, const pcc_magic *magic, int opt,
                                   const pcc_path_record *record, pcc_blob **out,
                                   pcc_shared_ticket *ticket)
{
  *ticket = (pcc_shared_ticket){false, false};
  char key[PCC_SHARED_KEY_LEN + 1], lock[PCC_SHARED_KEY_LEN + 1];
  pcc_shared_key("blob", magic, opt, &record->digest, key);
  pcc_shared_key("lock", magic, opt, &record->digest, lock);
  pcc_shared_status rc = get_blob(shared, key, magic, opt, record, out);
  if (rc == PCC_SHARED_OK) {
    atomic_fetch_add(&shared->hits, 1);
    return rc;
  }
  atomic_fetch_add(&shared->misses, 1);
  if (rc == PCC_SHARED_DOWN)
    return rc;
  rc = take_lock(shared, key, lock);
  if (rc == PCC_SHARED_OK)
    return locked_get(shared, key, magic, opt, record, out, ticket);
  if (rc == PCC_SHARED_DOWN)
    return rc;
  /* another replica compiles it: wait for its blob, bounded by its lock's expiry */
  ticket->waited = true;
  atomic_fetch_add(&shared->lock_waits, 1);
  int64_t deadline = now_ms() + shared->config.lock_ms;
  unsigned delay_ms = PCC_SHARED_POLL_MIN_MS;
  while (!atomic_load(&shared->cancelled) && now_ms() < deadline) {
    struct timespec ts = {delay_ms / 1000, (long)(delay_ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
    delay_ms = delay_ms * 2 > PCC_SHARED_POLL_MAX_MS ? PCC_SHARED_POLL_MAX_MS : delay_ms * 2;
    rc = get_blob(shared, key, magic, opt, record, out);
    if (rc == PCC_SHARED_OK) {
      atomic_fetch_add(&shared->hits, 1);
      return rc;
    }
    if (rc == PCC_SHARED_DOWN)
      return rc;
    rc = take_lock(shared, key, lock); /* free again: its holder is done, gave up or died */
    if (rc == PCC_SHARED_OK) {
      rc = locked_get(shared, key, magic, opt, record, out, ticket);
      if (rc != PCC_SHARED_OK)
        atomic_fetch_add(&shared->lock_expired, 1);
      return rc;
    }
    if (rc == PCC_SHARED_DOWN)
      return rc;
  }
  atomic_fetch_add(&shared->lock_expired, 1);
  return PCC_SHARED_MISS;
}

void pcc_shared_done(pcc_shared *shared, const pcc_magic *magic, int opt,
                     const pcc_digest *digest, const pcc_blob *blob,
                     const pcc_shared_ticket *ticket)
{
  char key[PCC_SHARED_KEY_LEN + 1], lock[PCC_SHARED_KEY_LEN + 1];
  pcc_shared_key("blob", magic, opt, digest, key);
  pcc_shared_key("lock", magic, opt, digest, lock);
  size_t len = 0;
  uint8_t *value = blob ? value_encode(shared, magic, opt, digest, blob, &len) : NULL;
  if (value != NULL) {
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)shared->config.ttl);
    const char *argv[] = {"SET", key, (const char *)value, "EX", ttl};
    size_t lens[] = {3, strlen(key), len, 2, strlen(ttl)};
    redisReply *reply = command(shared, key, shared->config.ttl ? 5 : 3, argv, lens);
    if (reply != NULL) {
      atomic_fetch_add(&shared->stores, 1);
      freeReplyObject(reply);
    }
    free(value);
  }
  if (ticket->holding)
    release_lock(shared, key, lock);
}

/* ---- figures ----------------------------------------------------------------------------- */

void pcc_shared_figures_get(pcc_shared *shared, pcc_shared_figures *out)
{
  *out = (pcc_shared_figures){
    .hits = atomic_load(&shared->hits), .misses = atomic_load(&shared->misses),
    .stores = atomic_load(&shared->stores), .corrupt = atomic_load(&shared->corrupt),
    .errors = atomic_load(&shared->errors), .timeouts = atomic_load(&shared->timeouts),
    .skipped = atomic_load(&shared->skipped),
    .lock_waits = atomic_load(&shared->lock_waits),
    .lock_expired = atomic_load(&shared->lock_expired)};
}

unsigned pcc_shared_servers(const pcc_shared *shared)
{
  return shared->n;
}

const char *pcc_shared_server_id(const pcc_shared *shared, unsigned i)
{
  return shared->servers[i].id;
}

bool pcc_shared_server_up(pcc_shared *shared, unsigned i)
{
  return pcc_peer_up(&shared->servers[i].peer);
}

cJSON *pcc_shared_json(pcc_shared *shared)
{
  pcc_shared_figures f;
  pcc_shared_figures_get(shared, &f);
  cJSON *json = cJSON_CreateObject();
  const struct {
    const char *name;
    uint64_t value;
  } rows[] = {
    {"hits", f.hits}, {"misses", f.misses}, {"stores", f.stores}, {"corrupt", f.corrupt},
    {"errors", f.errors}, {"timeouts", f.timeouts}, {"skipped", f.skipped}, {"lock_waits", f.lock_waits},
    {"lock_expired", f.lock_expired},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
    cJSON_AddNumberToObject(json, rows[i].name, (double)rows[i].value);
  cJSON *servers = cJSON_AddArrayToObject(json, "servers");
  for (unsigned i = 0; i < shared->n; i++)
    pcc_peer_json(&shared->servers[i].peer, servers, "server", shared->servers[i].id);
  return json;
}
