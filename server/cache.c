/* cache.c: the cache feature of pycached (docs/API.md): GET /healthz, GET /v1/stats, GET /v1/code
 * and POST /v1/compile. Compiles go through "parse once" jobs keyed by (magic, opt, digest): one
 * compile however many requests ask for the same source at once, queued per backend and fed to
 * its worker pool by dispatch threads. A request that waits for a job is suspended and resumed
 * when the job is done (a PENDING answer, answer.h). A job first asks the --upstream servers
 * (upstream.h), then the --shared tier on Redis (shared.h), and compiles here last; a blob
 * compiled here goes to the shared tier. With --upstream, compiles of a magic no backend here
 * compiles go through a queue of their own that only asks the upstreams (forwarded). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "route.h"
#include "pcc_log.h"

typedef enum {
  JOB_CODE,
  JOB_COMPILE_ERROR,
  JOB_UNAVAILABLE, /* crash, spawn failure, shutdown */
  JOB_TIMEOUT,
  JOB_STORE_FULL,
  JOB_INTERNAL,
  JOB_UNSUPPORTED, /* forwarded, and no upstream compiles the magic */
} job_result;

typedef struct {
  void (*resume)(void *);
  void *ctx;
} waiter;

typedef struct cache_queue cache_queue;
typedef struct cache cache;

typedef struct job {
  cache_queue *queue;      /* its backend's */
  pcc_magic magic;
  int opt;
  char *path;              /* the first requester's path, used as the code's filename */
  char ns[PCC_NAMESPACE_MAX + 1]; /* ... and namespace, where its path entry goes */
  pcc_path_record record;  /* its path entry (mtime, size, hash, digest) */
  uint8_t *source;         /* freed once compiled */
  size_t len;
  unsigned refs;           /* requests holding it + 1 while queued or compiling */
  job_result result;
  pcc_store_status store_rc; /* JOB_STORE_FULL: why */
  pcc_blob *blob;          /* JOB_CODE / JOB_COMPILE_ERROR */
  const char *from;        /* static: "shared" or "upstream" when the blob came from that tier,
                              NULL when it was compiled here */
  char message[256];
  pcc_dynbuf waiters;      /* waiter[], at most PCC_JOB_WAITERS_MAX */
  struct job *next;        /* in its backend's queue, then in the in-flight list */
} job;

/* One backend's queue and the threads that feed its worker pool; or, with forward set, the
 * queue of the compiles forwarded to --upstream (a magic no backend compiles). */
struct cache_queue {
  cache *cache;
  unsigned backend;        /* index in the core's backends; unused when forward */
  bool forward;
  pthread_cond_t work;     /* signalled when a job is queued (with cache->lock) */
  job *head, *tail;
  size_t queued;           /* jobs from head to tail, at most --max-queued-compiles */
  pthread_t *dispatchers;
  unsigned n_dispatchers;
};

/* A source whose compile timed out, answered 504 at once until `until` (--timeout-memory), so
 * that a fleet does not run a compile that cannot finish once a process. */
typedef struct {
  pcc_magic magic;
  int opt;
  pcc_digest digest;
  time_t until;     /* 0: free */
} timed_out;

struct cache {
  pcc_core *core;
  timed_out timeouts[PCC_TIMEOUTS_REMEMBERED]; /* a ring, guarded by lock */
  size_t next_timeout;
  pthread_mutex_t lock;    /* guards the queues, the in-flight list and closing */
  job *inflight;           /* compiling, for joining */
  bool closing;
  cache_queue queues[PCC_MAX_COMPILERS + 2]; /* one per backend, then the forward queue */
  unsigned n_queues;
  cache_queue *forward;    /* with --upstream: the last of queues; NULL otherwise */
};

/* ---- jobs ------------------------------------------------------------------------------ */

static size_t job_waiter_count(const job *j)
{
  return j->waiters.len / sizeof(waiter);
}

static const waiter *job_waiter(const job *j, size_t i)
{
  return (const waiter *)j->waiters.data + i;
}

static void job_free(job *j)
{
  free(j->path);
  free(j->source);
  free(j->blob);
  pcc_dynbuf_free(&j->waiters);
  free(j);
}

/* Drops one hold on a job; frees it on the last. Caller holds cache->lock. */
static void job_unref_locked(job *j)
{
  if (--j->refs == 0)
    job_free(j);
}

static bool job_matches(const job *j, const pcc_magic *magic, int opt, const pcc_digest *digest)
{
  return j->opt == opt && pcc_magic_equal(&j->magic, magic) &&
         pcc_digest_equal(&j->record.digest, digest);
}

/* A queued or compiling job for the same source, or NULL. Caller holds cache->lock. */
static job *find_job(cache *c, cache_queue *queue, const pcc_magic *magic, int opt,
                     const pcc_digest *digest)
{
  job *lists[] = {queue->head, c->inflight};
  for (size_t i = 0; i < 2; i++)
    for (job *j = lists[i]; j != NULL; j = j->next)
      if (job_matches(j, magic, opt, digest))
        return j;
  return NULL;
}

/* Adds a waiter and suspends its request. Caller holds cache->lock. */
static bool job_add_waiter(job *j, const pcc_request *req)
{
  waiter w = {req->resume, req->ctx};
  if (pcc_dynbuf_add(&j->waiters, &w, sizeof w) != PCC_PROTO_OK)
    return false;
  req->suspend(req->ctx); /* under the lock: resume cannot come first */
  j->refs++;
  return true;
}

/* A heap copy of blob in one allocation (free() it), with PCC_BLOB_HEADROOM bytes before the
 * payload, as pcc_store_get_blob's. */
static pcc_blob *blob_copy(const pcc_blob *blob)
{
  pcc_blob *copy = malloc(sizeof *copy + PCC_BLOB_HEADROOM + blob->payload_len + 1);
  if (copy == NULL)
    return NULL;
  *copy = *blob;
  uint8_t *payload = (uint8_t *)(copy + 1) + PCC_BLOB_HEADROOM;
  memcpy(payload, blob->payload, blob->payload_len);
  payload[blob->payload_len] = '\0';
  copy->payload = payload;
  return copy;
}

/* Stores a blob from elsewhere (the --shared tier, an --upstream: from names it; verified by
 * them) as a compile's (its compiler, times and all) and takes it as the job's result. Called
 * without the lock. */
static void job_take_blob(cache *c, job *j, pcc_blob *blob, const char *from)
{
  pcc_store_status store_rc = pcc_store_put(pcc_core_store(c->core), j->ns, &j->magic, j->opt,
                                            j->path, strlen(j->path), &j->record, blob);
  if (store_rc == PCC_STORE_OK || store_rc == PCC_STORE_DAMAGED) {
    j->blob = blob;
    j->from = from;
    j->result = blob->kind == PCC_BLOB_CODE ? JOB_CODE : JOB_COMPILE_ERROR;
    return;
  }
  free(blob);
  if (store_rc == PCC_STORE_FULL || store_rc == PCC_STORE_NOSPACE) {
    j->result = JOB_STORE_FULL;
    j->store_rc = store_rc;
  } else {
    j->result = JOB_INTERNAL;
    snprintf(j->message, sizeof j->message, "store: %s", pcc_store_strerror(store_rc));
  }
}

static void job_compile_here(cache *c, job *j);

/* Runs one job: from the first --upstream that compiles it (upstream.h), else from the
 * --shared tier when it has the blob (or another replica compiles it meanwhile; shared.h), else
 * through its backend's pool, and stores its outcome; a blob compiled here goes to the shared
 * tier. A forwarded job (no backend here) has the upstreams only. Called without the lock, on a
 * dispatcher thread. */
static void job_compile(cache *c, job *j)
{
  pcc_upstream *upstream = pcc_core_upstream(c->core);
  pcc_blob *blob = NULL;
  if (upstream != NULL) {
    pcc_upstream_status up_rc = pcc_upstream_compile(upstream, &j->magic, j->opt, j->path,
                                                     &j->record, j->source, j->len, &blob);
    if (up_rc == PCC_UPSTREAM_OK) {
      job_take_blob(c, j, blob, "upstream");
      return;
    }
    if (j->queue->forward) {
      j->result = up_rc == PCC_UPSTREAM_UNSUPPORTED ? JOB_UNSUPPORTED : JOB_UNAVAILABLE;
      snprintf(j->message, sizeof j->message, "no compiler here for this magic, and %s "
               "(--upstream)", up_rc == PCC_UPSTREAM_UNSUPPORTED ? "no upstream has one"
                                                                  : "no upstream answered");
      return;
    }
  }
  pcc_shared *shared = pcc_core_shared(c->core);
  pcc_shared_ticket ticket;
  if (shared != NULL &&
      pcc_shared_fetch(shared, &j->magic, j->opt, &j->record, &blob, &ticket) == PCC_SHARED_OK) {
    job_take_blob(c, j, blob, "shared");
    return;
  }
  job_compile_here(c, j);
  if (shared != NULL)
    pcc_shared_done(shared, &j->magic, j->opt, &j->record.digest, j->blob, &ticket);
}

/* Runs one job through its backend's pool and stores its outcome. Called without the lock. */
static void job_compile_here(cache *c, job *j)
{
  const pcc_backend *backends;
  pcc_core_backends(c->core, &backends);
  const pcc_backend *backend = &backends[j->queue->backend];
  pcc_counters *counters = pcc_core_counters(c->core);
  pcc_totals *totals = pcc_counters_totals(counters);
  pcc_compile_result *result = NULL;
  pcc_compiler_status rc = pcc_compiler_compile(backend->compiler, j->opt, j->path, j->source,
                                                j->len, &result);
  if (rc != PCC_COMPILER_OK) {
    atomic_fetch_add(rc == PCC_COMPILER_TIMEOUT ? &totals->timeouts : &totals->compiler_failures,
                     1);
    j->result = rc == PCC_COMPILER_TIMEOUT ? JOB_TIMEOUT : JOB_UNAVAILABLE;
    snprintf(j->message, sizeof j->message, "compiler: %s (%s)", pcc_compiler_strerror(rc),
             rc == PCC_COMPILER_TIMEOUT ? "the worker was killed and replaced"
                                        : "the worker has been replaced");
    pcc_logf(PCC_LOG_WARN, "compile of %s failed: %s", j->path, j->message);
    return;
  }
  if (!result->ok && result->transient) {
    /* MemoryError, RecursionError...: not the source's fault, so not stored; another try (more
     * --worker-memory, a worker less busy) may compile it */
    atomic_fetch_add(&totals->compiler_failures, 1);
    j->result = JOB_UNAVAILABLE;
    snprintf(j->message, sizeof j->message, "compiler: %s: %s (not the source's fault: not "
             "stored; try again or compile locally)", result->error_type ? result->error_type
                                                                           : "Error",
             result->error_message ? result->error_message : "");
    pcc_utf8_trim(j->message);
    pcc_logf(PCC_LOG_WARN, "compile of %s failed: %s", j->path, j->message);
    pcc_compile_result_free(result);
    return;
  }
  pcc_magic_counters *magic = pcc_counters_for(counters, &j->magic);
  atomic_fetch_add(&magic->compiles, 1);
  pcc_histogram_add(&totals->compile_latency, result->compile_us * 1000);
  pcc_blob blob = {.hash = j->record.hash,
                   .size = j->record.size,
                   .created = time(NULL),
                   .compile_us = result->compile_us};
  snprintf(blob.compiler, sizeof blob.compiler, "%s", backend->name);
  char *error_json = NULL;
  if (result->ok) {
    blob.kind = PCC_BLOB_CODE;
    blob.payload = result->marshal;
    blob.payload_len = result->marshal_len;
  } else {
    atomic_fetch_add(&magic->compile_errors, 1);
    cJSON *details = cJSON_CreateObject();
    cJSON_AddStringToObject(details, "type", result->error_type ? result->error_type : "Error");
    cJSON_AddStringToObject(details, "message",
                            result->error_message ? result->error_message : "");
    cJSON_AddNumberToObject(details, "line", result->error_line);
    cJSON_AddNumberToObject(details, "offset", result->error_offset);
    error_json = cJSON_PrintUnformatted(details);
    cJSON_Delete(details);
    blob.kind = PCC_BLOB_COMPILE_ERROR;
    blob.payload = (const uint8_t *)(error_json ? error_json : "{}");
    blob.payload_len = strlen((const char *)blob.payload);
  }
  pcc_store_status store_rc = pcc_store_put(pcc_core_store(c->core), j->ns, &j->magic, j->opt,
                                            j->path, strlen(j->path), &j->record, &blob);
  if (store_rc == PCC_STORE_OK || store_rc == PCC_STORE_DAMAGED) {
    /* damaged: answered, not stored (the store logged what the operator should do) */
    j->blob = blob_copy(&blob);
    j->result = j->blob == NULL ? JOB_INTERNAL : result->ok ? JOB_CODE : JOB_COMPILE_ERROR;
  } else if (store_rc == PCC_STORE_FULL || store_rc == PCC_STORE_NOSPACE) {
    j->result = JOB_STORE_FULL; /* the store logs the state; the answer says what to do */
    j->store_rc = store_rc;
  } else {
    j->result = JOB_INTERNAL;
    snprintf(j->message, sizeof j->message, "store: %s", pcc_store_strerror(store_rc));
  }
  if (j->result == JOB_INTERNAL && j->message[0] == '\0')
    snprintf(j->message, sizeof j->message, "out of memory");
  free(error_json);
  pcc_compile_result_free(result);
}

/* Seconds until a timed-out compile of (magic, opt, digest) may run again; 0 when it may now.
 * Caller holds cache->lock. */
static time_t timeout_left_locked(const cache *c, const pcc_magic *magic, int opt,
                                  const pcc_digest *digest)
{
  time_t now = time(NULL);
  for (size_t i = 0; i < PCC_TIMEOUTS_REMEMBERED; i++) {
    const timed_out *t = &c->timeouts[i];
    if (t->until > now && t->opt == opt && pcc_magic_equal(&t->magic, magic) &&
        pcc_digest_equal(&t->digest, digest))
      return t->until - now;
  }
  return 0;
}

/* Marks a job done and resumes its waiters. Caller holds cache->lock. */
static void job_finish_locked(cache *c, job *j)
{
  uint64_t memory = pcc_core_config(c->core)->timeout_memory;
  if (j->result == JOB_TIMEOUT && memory > 0) {
    timed_out *t = &c->timeouts[c->next_timeout++ % PCC_TIMEOUTS_REMEMBERED];
    *t = (timed_out){j->magic, j->opt, j->record.digest, time(NULL) + (time_t)memory};
  }
  job **link = &c->inflight;
  while (*link != NULL && *link != j)
    link = &(*link)->next;
  if (*link == j)
    *link = j->next;
  free(j->source);
  j->source = NULL;
  for (size_t i = 0; i < job_waiter_count(j); i++)
    job_waiter(j, i)->resume(job_waiter(j, i)->ctx);
  job_unref_locked(j); /* the dispatcher's hold */
}

/* The compiler of queue's backend; NULL for the forward queue. */
static pcc_compiler *backend_compiler(const cache *c, const cache_queue *queue)
{
  if (queue->forward)
    return NULL;
  const pcc_backend *backends;
  pcc_core_backends(c->core, &backends);
  return backends[queue->backend].compiler;
}

static void *dispatcher_main(void *arg)
{
  cache_queue *queue = arg;
  cache *c = queue->cache;
  pthread_mutex_lock(&c->lock);
  for (;;) {
    while (!c->closing && queue->head == NULL)
      pthread_cond_wait(&queue->work, &c->lock);
    if (c->closing)
      break;
    job *j = queue->head;
    queue->head = j->next;
    if (queue->head == NULL)
      queue->tail = NULL;
    queue->queued--;
    j->next = c->inflight; /* joinable while it compiles */
    c->inflight = j;
    pthread_mutex_unlock(&c->lock);
    job_compile(c, j);
    pthread_mutex_lock(&c->lock);
    job_finish_locked(c, j);
    /* answered: now replace a worker that failed or was recycled (pcc_compiler_repair) */
    pthread_mutex_unlock(&c->lock);
    if (!queue->forward)
      pcc_compiler_repair(backend_compiler(c, queue));
    pthread_mutex_lock(&c->lock);
  }
  pthread_mutex_unlock(&c->lock);
  return NULL;
}

/* ---- compiles -------------------------------------------------------------------------- */

/* The body must agree with what the query claims about it. */
static bool check_claims(const pcc_params *params, const pcc_path_record *actual,
                         pcc_answer *answer)
{
  const char *bad = NULL;
  if ((params->present & PCC_PARAM_SIZE) && params->size != actual->size)
    bad = "size";
  else if ((params->present & PCC_PARAM_HASH) && params->hash != actual->hash)
    bad = "hash";
  else if ((params->present & PCC_PARAM_DIGEST) &&
           !pcc_digest_equal(&params->digest, &actual->digest))
    bad = "digest";
  if (bad == NULL)
    return true;
  pcc_answer_error(answer, PCC_ERR_MISMATCH, "%s: the query disagrees with the uploaded source",
                   bad);
  pcc_answer_extra_string(answer, "param", bad);
  return false;
}

/* A stored blob of the source answers the compile at once ("stored"), recording this path's
 * entry. Returns false when there is none, or it was evicted before the entry was written
 * (answer untouched). */
static bool answer_stored(cache *c, const char *ns, const pcc_params *params,
                          const pcc_path_record *record, pcc_answer *answer)
{
  pcc_blob *blob = NULL;
  if (pcc_core_get_blob(c->core, &params->magic, params->opt, &record->digest, &blob) !=
      PCC_STORE_OK)
    return false;
  pcc_store_status rc = pcc_store_put(pcc_core_store(c->core), ns, &params->magic, params->opt,
                                      params->path, params->path_len, record, NULL);
  if (rc == PCC_STORE_OK) {
    pcc_answer_blob(answer, blob, &record->digest, true, "stored");
    return true;
  }
  free(blob);
  if (rc == PCC_STORE_NOTFOUND)
    return false; /* evicted meanwhile: compile it */
  pcc_answer_store_error(answer, rc);
  return true;
}

/* The seconds a client should wait before it asks again while the queue is full: the queue's
 * share of the workers at the mean compile time so far, 1 to PCC_RETRY_AFTER_MAX. Caller holds
 * cache->lock. */
static unsigned retry_after_locked(const cache *c, const cache_queue *queue)
{
  const pcc_backend *backends;
  pcc_core_backends(c->core, &backends);
  const pcc_histogram *h = &pcc_counters_totals(pcc_core_counters(c->core))->compile_latency;
  uint64_t count = atomic_load(&h->count), sum_ns = atomic_load(&h->sum_ns);
  double mean = count ? (double)sum_ns / 1e9 / (double)count : 1.0;
  unsigned workers = queue->forward ? queue->n_dispatchers
                                    : pcc_compiler_workers(backends[queue->backend].compiler);
  double wait = mean * ((double)queue->queued / (workers ? workers : 1) + 1);
  return wait >= PCC_RETRY_AFTER_MAX ? PCC_RETRY_AFTER_MAX : (unsigned)wait + 1; /* rounded up */
}

/* Joins the job compiling the source, or queues a new one; a PENDING answer either way, or
 * busy (with Retry-After) when a new job would pass --max-queued-compiles. Caller holds
 * cache->lock. */
static void join_or_queue_locked(cache *c, cache_queue *queue, pcc_request *req,
                                 const pcc_path_record *record, const uint8_t *source,
                                 size_t len, pcc_answer *answer)
{
  const pcc_params *params = &req->params;
  const uint64_t max_queued = pcc_core_config(c->core)->max_queued_compiles;
  job *j = find_job(c, queue, &params->magic, params->opt, &record->digest);
  if (j == NULL && queue->queued >= max_queued) {
    pcc_answer_error(answer, PCC_ERR_BUSY, "%zu compiles wait for a worker "
                     "(--max-queued-compiles); try again later", queue->queued);
    pcc_answer_retry_after(answer, retry_after_locked(c, queue));
    return;
  }
  if (j != NULL) {
    if (!job_add_waiter(j, req)) {
      pcc_answer_error(answer, PCC_ERR_INTERNAL, "too many requests wait for this compile");
      return;
    }
    atomic_fetch_add(&pcc_counters_totals(pcc_core_counters(c->core))->joined, 1);
  } else {
    j = calloc(1, sizeof *j);
    if (j != NULL)
      pcc_dynbuf_init(&j->waiters, PCC_JOB_WAITERS_MAX * sizeof(waiter));
    if (j == NULL || (j->path = strndup(params->path, params->path_len)) == NULL ||
        (j->source = malloc(len ? len : 1)) == NULL || !job_add_waiter(j, req)) {
      if (j != NULL)
        job_free(j);
      pcc_answer_error(answer, PCC_ERR_INTERNAL, "out of memory");
      return;
    }
    j->queue = queue;
    memcpy(j->ns, req->ns, sizeof j->ns);
    j->magic = params->magic;
    j->opt = params->opt;
    j->record = *record;
    memcpy(j->source, source, len);
    j->len = len;
    j->refs++; /* the dispatcher's */
    if (queue->tail)
      queue->tail->next = j;
    else
      queue->head = j;
    queue->tail = j;
    queue->queued++;
    pthread_cond_signal(&queue->work);
  }
  answer->kind = PCC_ANSWER_PENDING;
  answer->pending = j;
}

static void compile_finish(void *pending, pcc_request *req, pcc_answer *answer);
static void compile_abandon(void *pending);

/* POST /v1/compile: the body is the source, or empty for the server to read params->path under
 * a source root. Once the source is known, params gets its size, hash and digest. */
static void handle_compile(void *state, pcc_request *req, pcc_answer *answer)
{
  cache *c = state;
  pcc_params *params = &req->params;
  const pcc_config *config = pcc_core_config(c->core);
  const uint8_t *source = req->body;
  size_t len = req->body_len;
  uint8_t *read_bytes = NULL;
  int backend = pcc_core_backend_for(c->core, &params->magic);
  cache_queue *queue = backend >= 0 ? &c->queues[backend] : c->forward;
  if (queue == NULL) {
    atomic_fetch_add(&pcc_counters_for(pcc_core_counters(c->core), &params->magic)->unsupported,
                     1);
    pcc_core_answer_unsupported(c->core, answer);
    return;
  }
  if (source == NULL && (params->present & PCC_PARAM_SIZE) && params->size == 0) {
    source = (const uint8_t *)""; /* an empty source file, uploaded as an empty body */
  } else if (source == NULL) {
    if (!pcc_sources_read(pcc_core_sources(c->core), params->path, params->mtime,
                          config->max_source, &read_bytes, &len, answer))
      return;
    source = read_bytes ? read_bytes : (const uint8_t *)""; /* an empty file */
  }
  if (len > config->max_source) {
    pcc_answer_error(answer, PCC_ERR_TOO_LARGE, "source is %zu bytes; the limit is %llu", len,
                     (unsigned long long)config->max_source);
    goto done;
  }
  pcc_path_record record = {params->mtime, len, pcc_java_hash(source, len), {{0}}};
  pcc_digest_compute(source, len, &record.digest);
  if (!check_claims(params, &record, answer))
    goto done;
  params->size = record.size; /* the answer describes the source that was compiled */
  params->hash = record.hash;
  params->digest = record.digest;
  params->present |= PCC_PARAM_SIZE | PCC_PARAM_HASH | PCC_PARAM_DIGEST;
  if (answer_stored(c, req->ns, params, &record, answer))
    goto done;

  pthread_mutex_lock(&c->lock);
  time_t left = timeout_left_locked(c, &params->magic, params->opt, &record.digest);
  if (c->closing)
    pcc_answer_error(answer, PCC_ERR_COMPILER_UNAVAILABLE, "the server is shutting down");
  else if (left > 0)
    pcc_answer_error(answer, PCC_ERR_COMPILE_TIMEOUT, "this source's compile ran past "
                     "--compile-timeout; it is not tried again for %lld s (--timeout-memory)",
                     (long long)left);
  else if (find_job(c, queue, &params->magic, params->opt, &record.digest) ==
             NULL &&
           answer_stored(c, req->ns, params, &record, answer))
    ; /* a job finished between the first look and the lock: its blob answers */
  else
    join_or_queue_locked(c, queue, req, &record, source, len, answer);
  pthread_mutex_unlock(&c->lock);
  if (answer->kind == PCC_ANSWER_PENDING) {
    answer->finish = compile_finish;
    answer->abandon = compile_abandon;
    if (req->release_body != NULL) /* the job has its own copy of the source */
      req->release_body(req);
  }
done:
  free(read_bytes);
}

/* The answer of a finished job; releases the request's hold on it. The request that queued the
 * job answers "compiled", the others "joined". */
static void compile_finish(void *pending, pcc_request *req, pcc_answer *answer)
{
  job *j = pending;
  const pcc_params *params = &req->params;
  cache *c = j->queue->cache;
  /* the result was set before any waiter was resumed and never changes again */
  switch (j->result) {
  case JOB_CODE:
  case JOB_COMPILE_ERROR: {
    bool own_path = params->path_len == strlen(j->path) &&
                    memcmp(params->path, j->path, params->path_len) == 0 &&
                    params->mtime == j->record.mtime && strcmp(req->ns, j->ns) == 0;
    if (!own_path) { /* a joined request for another path: record its path entry too (with the
                        blob, should it have been evicted since) */
      pcc_path_record record = j->record;
      record.mtime = params->mtime;
      pcc_store_status rc = pcc_store_put(pcc_core_store(c->core), req->ns, &params->magic,
                                          params->opt, params->path, params->path_len, &record,
                                          j->blob);
      if (rc != PCC_STORE_OK && rc != PCC_STORE_DAMAGED)
        pcc_logf(PCC_LOG_ERROR, "cannot store a path entry: %s", pcc_store_strerror(rc));
    }
    pcc_blob *blob = blob_copy(j->blob);
    if (blob == NULL)
      pcc_answer_error(answer, PCC_ERR_INTERNAL, "out of memory");
    else
      pcc_answer_blob(answer, blob, &j->record.digest, true,
                      job_waiter(j, 0)->ctx != req->ctx ? "joined"
                      : j->from != NULL                   ? j->from
                                                          : "compiled");
    break;
  }
  case JOB_TIMEOUT:
    pcc_answer_error(answer, PCC_ERR_COMPILE_TIMEOUT, "%s", j->message);
    break;
  case JOB_STORE_FULL:
    pcc_answer_store_error(answer, j->store_rc);
    break;
  case JOB_UNAVAILABLE:
    pcc_answer_error(answer, PCC_ERR_COMPILER_UNAVAILABLE, "%s", j->message);
    break;
  case JOB_INTERNAL:
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "%s", j->message);
    break;
  case JOB_UNSUPPORTED:
    atomic_fetch_add(&pcc_counters_for(pcc_core_counters(c->core), &params->magic)->unsupported,
                     1);
    pcc_core_answer_unsupported(c->core, answer);
    break;
  }
  compile_abandon(j);
}

/* Releases a request's hold on a job (after its answer, or when it went away first). */
static void compile_abandon(void *pending)
{
  job *j = pending;
  cache *c = j->queue->cache;
  pthread_mutex_lock(&c->lock);
  job_unref_locked(j);
  pthread_mutex_unlock(&c->lock);
}

/* ---- lookups, health, stats ------------------------------------------------------------- */

static void handle_lookup(void *state, pcc_request *req, pcc_answer *answer)
{
  cache *c = state;
  pcc_core_lookup(c->core, req->ns, &req->params, answer);
}

static void handle_health(void *state, pcc_request *req, pcc_answer *answer)
{
  (void)state;
  (void)req;
  cJSON *json = cJSON_CreateObject();
  cJSON_AddStringToObject(json, "status", "ok");
  cJSON_AddStringToObject(json, "version", PCC_VERSION);
  pcc_answer_json(answer, json);
}

static void handle_stats(void *state, pcc_request *req, pcc_answer *answer)
{
  (void)req;
  cache *c = state;
  pcc_counters *counters = pcc_core_counters(c->core);
  const pcc_totals *totals = pcc_counters_totals(counters);
  cJSON *stats = cJSON_CreateObject();
  if (stats == NULL) {
    pcc_answer_json(answer, NULL);
    return;
  }
  uint64_t hits = 0, bundle_hits = 0, absent = 0, stale = 0, unsupported = 0, compiles = 0;
  uint64_t errors = 0, corruptions = 0;
  const pcc_magic_counters *magics, *other;
  unsigned n = pcc_counters_magics(counters, &magics, &other);
  for (unsigned i = 0; i <= n; i++) {
    const pcc_magic_counters *m = i < n ? &magics[i] : other;
    hits += atomic_load(&m->hits);
    bundle_hits += atomic_load(&m->bundle_hits);
    absent += atomic_load(&m->miss_absent);
    stale += atomic_load(&m->miss_stale);
    unsupported += atomic_load(&m->unsupported);
    compiles += atomic_load(&m->compiles);
    errors += atomic_load(&m->compile_errors);
    corruptions += atomic_load(&m->corruptions);
  }
  cJSON_AddStringToObject(stats, "version", PCC_VERSION);
  cJSON_AddNumberToObject(stats, "uptime", (double)(time(NULL) - pcc_core_started(c->core)));
  cJSON_AddNumberToObject(stats, "requests", (double)atomic_load(&totals->requests));
  cJSON_AddNumberToObject(stats, "hits", (double)hits);
  cJSON_AddNumberToObject(stats, "bundle_hits", (double)bundle_hits);
  cJSON *misses = cJSON_AddObjectToObject(stats, "misses");
  cJSON_AddNumberToObject(misses, "absent", (double)absent);
  cJSON_AddNumberToObject(misses, "stale", (double)stale);
  cJSON_AddNumberToObject(misses, "unsupported_magic", (double)unsupported);
  pcc_counters_add_ratio(stats, hits, absent + stale + unsupported);
  cJSON_AddNumberToObject(stats, "compiles", (double)compiles);
  cJSON_AddNumberToObject(stats, "compile_errors", (double)errors);
  cJSON_AddNumberToObject(stats, "joined", (double)atomic_load(&totals->joined));
  cJSON_AddNumberToObject(stats, "corruptions", (double)corruptions);
  cJSON_AddNumberToObject(stats, "compiler_failures",
                          (double)atomic_load(&totals->compiler_failures));
  cJSON_AddNumberToObject(stats, "compile_timeouts", (double)atomic_load(&totals->timeouts));
  cJSON_AddNumberToObject(stats, "bundles", (double)atomic_load(&totals->bundles));
  cJSON_AddNumberToObject(stats, "bundle_bytes", (double)atomic_load(&totals->bundle_bytes));
  cJSON_AddNumberToObject(stats, "profiles_received",
                          (double)atomic_load(&totals->profiles_received));
  size_t queued = 0, compiling = 0;
  pthread_mutex_lock(&c->lock);
  for (unsigned q = 0; q < c->n_queues; q++)
    queued += c->queues[q].queued;
  for (const job *j = c->inflight; j != NULL; j = j->next)
    compiling++;
  pthread_mutex_unlock(&c->lock);
  cJSON_AddNumberToObject(stats, "queued", (double)queued);
  cJSON_AddNumberToObject(stats, "compiling", (double)compiling);

  cJSON_AddItemToObject(stats, "store", pcc_core_store_json(c->core));
  if (pcc_core_shared(c->core) != NULL)
    cJSON_AddItemToObject(stats, "shared", pcc_shared_json(pcc_core_shared(c->core)));
  if (pcc_core_upstream(c->core) != NULL)
    cJSON_AddItemToObject(stats, "upstream", pcc_upstream_json(pcc_core_upstream(c->core)));
  cJSON *compilers = cJSON_AddArrayToObject(stats, "compilers");
  const pcc_backend *backends;
  unsigned n_backends = pcc_core_backends(c->core, &backends);
  for (unsigned b = 0; b < n_backends; b++) {
    cJSON *compiler = cJSON_CreateObject();
    char magic[2 * PCC_MAGIC_LEN + 1];
    pcc_magic_to_hex(pcc_compiler_magic(backends[b].compiler), magic);
    cJSON_AddStringToObject(compiler, "name", backends[b].name);
    cJSON_AddStringToObject(compiler, "magic", magic);
    cJSON_AddNumberToObject(compiler, "workers", pcc_compiler_workers(backends[b].compiler));
    cJSON_AddNumberToObject(compiler, "alive", pcc_compiler_alive(backends[b].compiler));
    cJSON_AddNumberToObject(compiler, "busy", pcc_compiler_busy(backends[b].compiler));
    cJSON_AddNumberToObject(compiler, "restarts",
                            (double)pcc_compiler_restarts(backends[b].compiler));
    cJSON_AddNumberToObject(compiler, "recycles",
                            (double)pcc_compiler_recycles(backends[b].compiler));
    cJSON_AddBoolToObject(compiler, "default", b == 0);
    cJSON_AddItemToArray(compilers, compiler);
  }
  pcc_answer_json(answer, stats);
}

/* POST /v1/admin/stats/zero: zeroes the counters (pcc_counters_zero: not the store, not the
 * per-entry hits, not the workers' restarts) and answers the stats as they are then. */
static void handle_stats_zero(void *state, pcc_request *req, pcc_answer *answer)
{
  cache *c = state;
  pcc_counters_zero(pcc_core_counters(c->core));
  PCC_LOG_AUDIT("stats-zero", "admin action", PCC_LOG_STR("result", "ok"),
                PCC_LOG_STR("token", req->token), PCC_LOG_STR("remote", req->remote));
  handle_stats(state, req, answer);
}

/* ---- the feature ------------------------------------------------------------------------ */

static void cache_shutdown(void *state);

static int cache_open(pcc_core *core, void **state)
{
  cache *c = calloc(1, sizeof *c);
  if (c == NULL)
    return -1;
  c->core = core;
  pthread_mutex_init(&c->lock, NULL);
  const pcc_backend *backends;
  unsigned n_backends = pcc_core_backends(core, &backends);
  *state = c;
  bool forward = pcc_core_upstream(core) != NULL;
  for (unsigned b = 0; b < n_backends + forward; b++) {
    cache_queue *queue = &c->queues[b];
    queue->cache = c;
    queue->backend = b;
    queue->forward = b == n_backends;
    pthread_cond_init(&queue->work, NULL);
    c->n_queues++; /* from here on, cache_close cleans it up */
    if (queue->forward)
      c->forward = queue;
    unsigned n = queue->forward ? PCC_UPSTREAM_FORWARDERS
                                : pcc_compiler_workers(backends[b].compiler);
    queue->dispatchers = calloc(n, sizeof *queue->dispatchers);
    if (queue->dispatchers == NULL)
      return -1;
    for (; queue->n_dispatchers < n; queue->n_dispatchers++)
      if (pthread_create(&queue->dispatchers[queue->n_dispatchers], NULL, dispatcher_main,
                         queue) != 0)
        break;
    if (queue->n_dispatchers == 0) {
      pcc_logf(PCC_LOG_ERROR, "cannot start the dispatch threads");
      return -1;
    }
  }
  return 0;
}

/* Stops dispatching: compiles in progress end (at most --compile-timeout), then what is still
 * queued fails as compiler-unavailable; every waiter is resumed. */
static void cache_shutdown(void *state)
{
  cache *c = state;
  if (c == NULL)
    return;
  pcc_shared_cancel(pcc_core_shared(c->core)); /* dispatchers waiting for another replica stop */
  pthread_mutex_lock(&c->lock);
  c->closing = true;
  for (unsigned q = 0; q < c->n_queues; q++)
    pthread_cond_broadcast(&c->queues[q].work);
  pthread_mutex_unlock(&c->lock);
  for (unsigned q = 0; q < c->n_queues; q++) {
    cache_queue *queue = &c->queues[q];
    for (unsigned i = 0; i < queue->n_dispatchers; i++)
      pthread_join(queue->dispatchers[i], NULL);
    queue->n_dispatchers = 0;
    pthread_mutex_lock(&c->lock);
    while (queue->head != NULL) {
      job *j = queue->head;
      queue->head = j->next;
      queue->queued--;
      j->result = JOB_UNAVAILABLE;
      snprintf(j->message, sizeof j->message, "the server is shutting down");
      j->next = c->inflight;
      c->inflight = j;
      job_finish_locked(c, j);
    }
    queue->tail = NULL;
    pthread_mutex_unlock(&c->lock);
  }
}

static void cache_close(void *state)
{
  cache *c = state;
  if (c == NULL)
    return;
  cache_shutdown(c);
  for (unsigned q = 0; q < c->n_queues; q++) {
    free(c->queues[q].dispatchers);
    pthread_cond_destroy(&c->queues[q].work);
  }
  pthread_mutex_destroy(&c->lock);
  free(c);
}

static const pcc_route cache_routes[] = {
  {"GET", "/healthz", 0, PCC_ROUTE_NO_BODY, false, 0, {NULL}, handle_health,
   "liveness and version"},
  {"GET", "/v1/stats", PCC_ROLE_READ, PCC_ROUTE_NO_BODY, false, 0, {NULL}, handle_stats,
   "the counters"},
  {"POST", "/v1/admin/stats/zero", PCC_ROLE_ADMIN, PCC_ROUTE_NO_BODY, false, 0, {NULL},
   handle_stats_zero, "zero the counters (not the store) and answer them"},
  {"GET", "/v1/code", PCC_ROLE_READ, PCC_ROUTE_NO_BODY, true,
   PCC_PARAM_MAGIC | PCC_PARAM_PATH | PCC_PARAM_MTIME | PCC_PARAM_SIZE, {NULL}, handle_lookup,
   "look up the code of a source"},
  {"POST", "/v1/compile", PCC_ROLE_COMPILE, PCC_ROUTE_BODY(max_source), true,
   PCC_PARAM_MAGIC | PCC_PARAM_PATH | PCC_PARAM_MTIME, {NULL}, handle_compile,
   "compile and store a source"},
};

const pcc_feature pcc_cache_feature = {
  "cache", cache_routes, sizeof cache_routes / sizeof cache_routes[0],
  cache_open, cache_shutdown, cache_close,
};
