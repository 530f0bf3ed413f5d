/* service.c: the cache logic of pycached (see service.h): validation of lookups against the
 * store, "parse once" compiles through a queue of jobs keyed by (magic, opt, digest), the
 * dispatch threads that feed the compiler pool, and the counters of /v1/stats. */
#include <errno.h>
#include <pwd.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "service_internal.h"

#define WORKER_NAME "pycached-cpython-worker"
#define WORKER_SCRIPT "worker.py"

typedef enum {
  JOB_CODE,
  JOB_COMPILE_ERROR,
  JOB_UNAVAILABLE, /* crash, spawn failure, shutdown */
  JOB_TIMEOUT,
  JOB_STORE_FULL,
  JOB_INTERNAL,
} job_result;

typedef struct {
  void (*resume)(void *);
  void *ctx;
} waiter;

struct svc_job {
  svc_backend *backend;
  pcc_magic magic;
  int opt;
  char *path;              /* the first requester's path, used as the code's filename */
  pcc_path_record record;  /* its path entry (mtime, size, hash, digest) */
  uint8_t *source;         /* freed once compiled */
  size_t len;
  unsigned refs;           /* requests holding it + 1 while queued or compiling */
  job_result result;
  pcc_blob *blob;          /* JOB_CODE / JOB_COMPILE_ERROR */
  char message[256];
  waiter *waiters;
  size_t n_waiters, cap_waiters;
  svc_job *next;           /* in its backend's queue, then in the in-flight list */
};

const double svc_latency_bounds[SVC_LATENCY_BUCKETS] = {
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
  0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10,
};

const char *pcc_service_strerror(pcc_service_status rc)
{
  switch (rc) {
  case PCC_SERVICE_OK: return "ok";
  case PCC_SERVICE_STORE: return "cannot open the store";
  case PCC_SERVICE_COMPILER: return "cannot start the compiler workers";
  case PCC_SERVICE_CONFIG: return "bad configuration";
  case PCC_SERVICE_NOMEM: return "out of memory";
  }
  return "unknown service status";
}

/* ---- answers --------------------------------------------------------------------------- */

uint8_t *svc_entry_view(const pcc_params *params, const svc_answer *answer,
                        pcc_entry_view *view)
{
  const pcc_blob *blob = answer->blob;
  size_t pyc_len = PCC_PYC_HEADER_LEN + blob->payload_len;
  uint8_t *pyc = malloc(pyc_len);
  if (pyc == NULL)
    return NULL;
  pcc_pyc_header header;
  pcc_pyc_header_init(&header, &params->magic, params->mtime, params->size);
  pcc_pyc_header_write(&header, pyc);
  memcpy(pyc + PCC_PYC_HEADER_LEN, blob->payload, blob->payload_len);
  *view = (pcc_entry_view){
    .magic = params->magic,
    .opt = params->opt,
    .path = params->path,
    .mtime = params->mtime,
    .size = params->size,
    .hash = blob->hash,
    .hash_checked = answer->hash_checked,
    .digest = answer->digest,
    .pyc = pyc,
    .pyc_len = pyc_len,
    .checksum = pcc_checksum(pyc, pyc_len),
    .compiler = answer->compiler,
  };
  return pyc;
}

void svc_answer_clear(svc_answer *answer)
{
  cJSON_Delete(answer->extra);
  cJSON_Delete(answer->json);
  if (answer->raw_release != NULL)
    answer->raw_release(answer->raw_ctx);
  else
    free(answer->raw);
  free(answer->blob);
  memset(answer, 0, sizeof *answer);
}

void svc_answer_error(svc_answer *answer, unsigned status, const char *code, const char *fmt,
                      ...)
{
  answer->http_status = status;
  answer->error = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(answer->message, sizeof answer->message, fmt, ap);
  va_end(ap);
}

void svc_answer_extra_string(svc_answer *answer, const char *name, const char *value)
{
  if (answer->extra == NULL)
    answer->extra = cJSON_CreateObject();
  if (answer->extra != NULL)
    cJSON_AddStringToObject(answer->extra, name, value);
}

/* A stored compile error becomes 422 compile-error with type, message, line, offset. */
static void answer_compile_error(svc_answer *answer, const pcc_blob *blob)
{
  cJSON *details = cJSON_ParseWithLength((const char *)blob->payload, blob->payload_len);
  const cJSON *message = cJSON_GetObjectItemCaseSensitive(details, "message");
  svc_answer_error(answer, 422, "compile-error", "%s",
               cJSON_IsString(message) ? message->valuestring : "compile error");
  answer->extra = cJSON_CreateObject();
  static const char *const fields[] = {"type", "line", "offset"};
  for (size_t i = 0; i < 3 && answer->extra != NULL && details != NULL; i++) {
    cJSON *item = cJSON_GetObjectItemCaseSensitive(details, fields[i]);
    if (item != NULL)
      cJSON_AddItemToObject(answer->extra, fields[i], cJSON_Duplicate(item, true));
  }
  cJSON_Delete(details);
}

/* Takes ownership of blob: a code blob is served, an error blob answered as 422. */
static void answer_blob(svc_answer *answer, pcc_blob *blob,
                        const pcc_digest *digest, const pcc_params *params, const char *outcome)
{
  if (blob->kind == PCC_BLOB_COMPILE_ERROR) {
    answer_compile_error(answer, blob);
    free(blob);
    return;
  }
  answer->http_status = 200;
  answer->blob = blob;
  answer->digest = *digest;
  answer->compiler = blob->compiler;
  answer->outcome = outcome;
  answer->hash_checked = (params->present & PCC_PARAM_HASH) != 0;
}

void svc_answer_store_error(svc_answer *answer, pcc_store_status rc)
{
  if (rc == PCC_STORE_FULL)
    svc_answer_error(answer, 507, "store-full", "the store is full; raise --map-size");
  else
    svc_answer_error(answer, 500, "internal", "store: %s", pcc_store_strerror(rc));
}

/* ---- counters ------------------------------------------------------------------------ */

svc_counters *svc_counters_for(pcc_service *service, const pcc_magic *magic)
{
  unsigned n = atomic_load(&service->n_magics);
  for (unsigned i = 0; i < n; i++)
    if (pcc_magic_equal(&service->magics[i].magic, magic))
      return &service->magics[i];
  pthread_mutex_lock(&service->counters_lock);
  svc_counters *found = &service->other;
  n = atomic_load(&service->n_magics);
  unsigned i = 0;
  while (i < n && !pcc_magic_equal(&service->magics[i].magic, magic))
    i++;
  if (i < n) {
    found = &service->magics[i];
  } else if (n < SVC_MAGICS_MAX) {
    service->magics[n].magic = *magic; /* written before the count that publishes it */
    atomic_store(&service->n_magics, n + 1);
    found = &service->magics[n];
  }
  pthread_mutex_unlock(&service->counters_lock);
  return found;
}

void svc_histogram_add(svc_histogram *histogram, uint64_t micros)
{
  size_t bucket = 0;
  while (bucket < SVC_LATENCY_BUCKETS && (double)micros > svc_latency_bounds[bucket] * 1e6)
    bucket++;
  atomic_fetch_add(&histogram->buckets[bucket], 1);
  atomic_fetch_add(&histogram->count, 1);
  atomic_fetch_add(&histogram->sum_us, micros);
}

static uint64_t micros_since(const struct timespec *start)
{
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  int64_t us = (int64_t)(now.tv_sec - start->tv_sec) * 1000000 +
               (now.tv_nsec - start->tv_nsec) / 1000;
  return us > 0 ? (uint64_t)us : 0;
}

static uint64_t hit_key(const pcc_magic *magic, int opt, const char *path, size_t path_len)
{
  uint32_t m;
  memcpy(&m, magic->bytes, sizeof m);
  uint64_t key = pcc_checksum(path, path_len) ^ (((uint64_t)m << 8 | (uint64_t)opt) *
                                                 0x9e3779b97f4a7c15ull);
  return key ? key : 1; /* 0 marks a free slot */
}

#define HIT_PROBES 16

static void record_hit(pcc_service *service, const pcc_params *params)
{
  uint64_t key = hit_key(&params->magic, params->opt, params->path, params->path_len);
  pthread_mutex_lock(&service->hits_lock);
  for (unsigned i = 0; i < HIT_PROBES; i++) {
    svc_hit_slot *slot = &service->hit_table[(key + i) & (SVC_HIT_TABLE_SIZE - 1)];
    if (slot->key == 0 || slot->key == key) {
      slot->key = key;
      slot->hits++;
      slot->last = time(NULL);
      break;
    }
  } /* a full neighbourhood: this entry's hits go uncounted */
  pthread_mutex_unlock(&service->hits_lock);
}

void svc_entry_hits(pcc_service *service, const pcc_magic *magic, int opt, const char *path,
                    size_t path_len, uint64_t *hits, int64_t *last)
{
  uint64_t key = hit_key(magic, opt, path, path_len);
  *hits = 0;
  *last = 0;
  pthread_mutex_lock(&service->hits_lock);
  for (unsigned i = 0; i < HIT_PROBES; i++) {
    const svc_hit_slot *slot = &service->hit_table[(key + i) & (SVC_HIT_TABLE_SIZE - 1)];
    if (slot->key == key) {
      *hits = slot->hits;
      *last = slot->last;
      break;
    }
    if (slot->key == 0)
      break;
  }
  pthread_mutex_unlock(&service->hits_lock);
}

/* ---- lookups --------------------------------------------------------------------------- */

svc_backend *svc_backend_for(pcc_service *service, const pcc_magic *magic)
{
  for (unsigned i = 0; i < service->n_backends; i++)
    if (pcc_magic_equal(magic, pcc_compiler_magic(service->backends[i].compiler)))
      return &service->backends[i];
  return NULL;
}

/* 422 unsupported-magic, listing the magics this server compiles for. */
static void answer_unsupported(pcc_service *service, svc_answer *answer)
{
  svc_answer_error(answer, 422, "unsupported-magic", "no compiler for this magic number");
  answer->extra = cJSON_CreateObject();
  cJSON *magics = cJSON_AddArrayToObject(answer->extra, "magics");
  for (unsigned i = 0; i < service->n_backends; i++) {
    char hex[2 * PCC_MAGIC_LEN + 1];
    pcc_magic_to_hex(pcc_compiler_magic(service->backends[i].compiler), hex);
    cJSON_AddItemToArray(magics, cJSON_CreateString(hex));
  }
}

/* Reads a blob, counting and hiding corruption (the store has already dropped it). */
static pcc_store_status get_blob(pcc_service *service, const pcc_magic *magic, int opt,
                                 const pcc_digest *digest, pcc_blob **out)
{
  pcc_store_status rc = pcc_store_get_blob(service->store, magic, opt, digest, out);
  if (rc == PCC_STORE_CORRUPT) {
    atomic_fetch_add(&svc_counters_for(service, magic)->corruptions, 1);
    fprintf(stderr, "pycached: a stored blob failed its checksum and was dropped\n");
    rc = PCC_STORE_NOTFOUND;
  }
  return rc;
}

/* A miss; for a magic no backend compiles, unsupported-magic (its stored entries still hit). */
static void answer_miss(pcc_service *service, svc_answer *answer, const pcc_magic *magic,
                        bool stale)
{
  svc_counters *counters = svc_counters_for(service, magic);
  atomic_fetch_add(stale ? &counters->miss_stale : &counters->miss_absent, 1);
  if (svc_backend_for(service, magic) == NULL) {
    answer_unsupported(service, answer);
    return;
  }
  svc_answer_error(answer, 404, "miss", stale ? "the cached entry does not match this source"
                                              : "nothing cached for this path");
  svc_answer_extra_string(answer, "reason", stale ? "stale" : "absent");
}

/* A hit: counted, timed, its entry's hits recorded. */
static void answer_hit(pcc_service *service, svc_answer *answer, pcc_blob *blob,
                       const pcc_digest *digest, const pcc_params *params,
                       const struct timespec *start)
{
  bool code = blob->kind == PCC_BLOB_CODE;
  answer_blob(answer, blob, digest, params, "hit");
  if (code) {
    atomic_fetch_add(&svc_counters_for(service, &params->magic)->hits, 1);
    record_hit(service, params);
    svc_histogram_add(&service->hit_latency, micros_since(start));
  }
}

void svc_lookup(pcc_service *service, const pcc_params *params, svc_answer *answer)
{
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  bool check_hash = params->present & PCC_PARAM_HASH;
  bool check_digest = params->present & PCC_PARAM_DIGEST;
  pcc_path_record record;
  pcc_blob *blob = NULL;
  pcc_store_status rc = pcc_store_get_path(service->store, &params->magic, params->opt,
                                           params->path, params->path_len, &record);
  if (rc != PCC_STORE_OK && rc != PCC_STORE_NOTFOUND) {
    svc_answer_store_error(answer, rc);
    return;
  }
  bool found = rc == PCC_STORE_OK;
  if (found && record.mtime == params->mtime && record.size == params->size &&
      (!check_hash || record.hash == params->hash) &&
      (!check_digest || pcc_digest_equal(&record.digest, &params->digest))) {
    rc = get_blob(service, &params->magic, params->opt, &record.digest, &blob);
    if (rc == PCC_STORE_OK) {
      answer_hit(service, answer, blob, &record.digest, params, &start);
      return;
    }
    if (rc != PCC_STORE_NOTFOUND) {
      svc_answer_store_error(answer, rc);
      return;
    }
  }
  /* The same source compiled for another path or mtime: adopt it without a recompile. */
  if (check_hash && check_digest &&
      get_blob(service, &params->magic, params->opt, &params->digest, &blob) == PCC_STORE_OK) {
    if (blob->hash == params->hash && blob->size == params->size) {
      pcc_path_record fresh = {params->mtime, params->size, params->hash, params->digest};
      rc = pcc_store_put(service->store, &params->magic, params->opt, params->path,
                         params->path_len, &fresh, NULL);
      if (rc != PCC_STORE_OK)
        fprintf(stderr, "pycached: cannot update a path entry: %s\n", pcc_store_strerror(rc));
      answer_hit(service, answer, blob, &params->digest, params, &start);
      return;
    }
    free(blob);
  }
  answer_miss(service, answer, &params->magic, found);
}

/* ---- compiles -------------------------------------------------------------------------- */

/* Is resolved (a realpath) equal to or below one of the source roots? */
static bool under_root(pcc_service *service, const char *resolved)
{
  for (unsigned i = 0; i < service->n_roots; i++) {
    size_t n = strlen(service->roots[i]);
    if (strncmp(resolved, service->roots[i], n) == 0 &&
        (resolved[n] == '/' || resolved[n] == '\0' || (n == 1 && resolved[0] == '/')))
      return true;
  }
  return false;
}

/* Reads params->path for a compile with an empty body, confined to the source roots. */
static bool read_source_file(pcc_service *service, const pcc_params *params, uint8_t **out,
                             size_t *out_len, svc_answer *answer)
{
  char resolved[PATH_MAX];
  if (service->n_roots == 0) {
    svc_answer_error(answer, 403, "forbidden", "empty body: this server reads no files itself "
                 "(no --source-root); upload the source");
    return false;
  }
  if (realpath(params->path, resolved) == NULL) {
    /* do not tell what exists outside the roots */
    svc_answer_error(answer, 403, "forbidden", "path is not a readable file under a source root");
    return false;
  }
  if (!under_root(service, resolved)) {
    svc_answer_error(answer, 403, "forbidden", "path resolves outside every source root");
    return false;
  }
  int fd = open(resolved, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    if (fd >= 0)
      close(fd);
    svc_answer_error(answer, 404, "not-found", "no regular file at this path");
    return false;
  }
  if ((uint64_t)st.st_size > service->config.max_source) {
    close(fd);
    svc_answer_error(answer, 413, "too-large", "source is %lld bytes; the limit is %llu",
                 (long long)st.st_size, (unsigned long long)service->config.max_source);
    return false;
  }
  if (st.st_mtim.tv_sec != params->mtime) {
    close(fd);
    svc_answer_error(answer, 409, "mismatch", "mtime: the file's mtime is %lld",
                 (long long)st.st_mtim.tv_sec);
    svc_answer_extra_string(answer, "param", "mtime");
    return false;
  }
  size_t cap = (size_t)st.st_size, len = 0;
  uint8_t *bytes = malloc(cap + 1);
  ssize_t n = 1;
  while (bytes != NULL && len < cap && n > 0) {
    n = read(fd, bytes + len, cap - len);
    if (n > 0)
      len += (size_t)n;
    else if (n < 0 && errno == EINTR)
      n = 1;
  }
  close(fd);
  if (bytes == NULL || n < 0 || len != cap) {
    free(bytes);
    svc_answer_error(answer, 500, "internal", "cannot read the source file");
    return false;
  }
  *out = bytes;
  *out_len = len;
  return true;
}

/* The body must agree with what the query claims about it. */
static bool check_claims(const pcc_params *params, const pcc_path_record *actual,
                         svc_answer *answer)
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
  svc_answer_error(answer, 409, "mismatch", "%s: the query disagrees with the uploaded source", bad);
  svc_answer_extra_string(answer, "param", bad);
  return false;
}

static bool job_matches(const svc_job *job, const pcc_magic *magic, int opt,
                        const pcc_digest *digest)
{
  return job->opt == opt && pcc_magic_equal(&job->magic, magic) &&
         pcc_digest_equal(&job->record.digest, digest);
}

/* A queued or compiling job for the same source, or NULL. Caller holds service->lock. */
static svc_job *find_job(pcc_service *service, svc_backend *backend, const pcc_magic *magic,
                         int opt, const pcc_digest *digest)
{
  svc_job *lists[] = {backend->queue_head, service->inflight};
  for (size_t i = 0; i < 2; i++)
    for (svc_job *job = lists[i]; job != NULL; job = job->next)
      if (job_matches(job, magic, opt, digest))
        return job;
  return NULL;
}

static void job_free(svc_job *job)
{
  free(job->path);
  free(job->source);
  free(job->blob);
  free(job->waiters);
  free(job);
}

/* Adds a waiter and suspends its request. Caller holds service->lock. */
static bool job_add_waiter(svc_job *job, void (*suspend)(void *), void (*resume)(void *),
                           void *ctx)
{
  if (job->n_waiters == job->cap_waiters) {
    size_t cap = job->cap_waiters ? 2 * job->cap_waiters : 4;
    waiter *grown = realloc(job->waiters, cap * sizeof *grown);
    if (grown == NULL)
      return false;
    job->waiters = grown;
    job->cap_waiters = cap;
  }
  suspend(ctx); /* under the lock: resume cannot come first */
  job->waiters[job->n_waiters++] = (waiter){resume, ctx};
  job->refs++;
  return true;
}

bool svc_compile_begin(pcc_service *service, pcc_params *params, const uint8_t *source,
                       size_t len, void (*suspend)(void *), void (*resume)(void *), void *ctx,
                       svc_job **job_out, svc_answer *answer)
{
  uint8_t *read_bytes = NULL;
  bool final = true;
  svc_backend *backend = svc_backend_for(service, &params->magic);
  if (backend == NULL) {
    answer_unsupported(service, answer);
    return true;
  }
  if (source == NULL && (params->present & PCC_PARAM_SIZE) && params->size == 0) {
    source = (const uint8_t *)""; /* an empty source file, uploaded as an empty body */
  } else if (source == NULL) {
    if (!read_source_file(service, params, &read_bytes, &len, answer))
      return true;
    source = read_bytes;
  }
  if (len > service->config.max_source) {
    svc_answer_error(answer, 413, "too-large", "source is %zu bytes; the limit is %llu", len,
                 (unsigned long long)service->config.max_source);
    goto done;
  }
  pcc_path_record record = {params->mtime, len, pcc_java_hash(source, len), {{0}}};
  pcc_digest_compute(source, len, &record.digest);
  if (!check_claims(params, &record, answer))
    goto done;
  params->size = record.size;
  params->hash = record.hash;
  params->digest = record.digest;
  params->present |= PCC_PARAM_SIZE | PCC_PARAM_HASH | PCC_PARAM_DIGEST;

  pcc_blob *blob = NULL;
  pcc_store_status rc = get_blob(service, &params->magic, params->opt, &record.digest, &blob);
  if (rc == PCC_STORE_OK) {
    rc = pcc_store_put(service->store, &params->magic, params->opt, params->path,
                       params->path_len, &record, NULL);
    if (rc == PCC_STORE_OK)
      answer_blob(answer, blob, &record.digest, params, "stored");
    else {
      free(blob);
      svc_answer_store_error(answer, rc);
    }
    goto done;
  }

  pthread_mutex_lock(&service->lock);
  svc_job *job = find_job(service, backend, &params->magic, params->opt, &record.digest);
  if (service->closing) {
    svc_answer_error(answer, 503, "compiler-unavailable", "the server is shutting down");
  } else if (job != NULL) {
    if (job_add_waiter(job, suspend, resume, ctx)) {
      atomic_fetch_add(&service->joined, 1);
      *job_out = job;
      final = false;
    } else {
      svc_answer_error(answer, 500, "internal", "out of memory");
    }
  } else if ((job = calloc(1, sizeof *job)) != NULL &&
             (job->path = strndup(params->path, params->path_len)) != NULL &&
             (job->source = malloc(len ? len : 1)) != NULL &&
             job_add_waiter(job, suspend, resume, ctx)) {
    job->backend = backend;
    job->magic = params->magic;
    job->opt = params->opt;
    job->record = record;
    memcpy(job->source, source, len);
    job->len = len;
    job->refs++; /* the dispatcher's */
    job->next = NULL;
    if (backend->queue_tail)
      backend->queue_tail->next = job;
    else
      backend->queue_head = job;
    backend->queue_tail = job;
    pthread_cond_signal(&backend->work);
    *job_out = job;
    final = false;
  } else {
    if (job != NULL)
      job_free(job);
    svc_answer_error(answer, 500, "internal", "out of memory");
  }
  pthread_mutex_unlock(&service->lock);
done:
  free(read_bytes);
  return final;
}

static pcc_blob *blob_copy(const pcc_blob *blob)
{
  pcc_blob *copy = malloc(sizeof *copy + blob->payload_len + 1);
  if (copy == NULL)
    return NULL;
  *copy = *blob;
  uint8_t *payload = (uint8_t *)(copy + 1);
  memcpy(payload, blob->payload, blob->payload_len);
  payload[blob->payload_len] = '\0';
  copy->payload = payload;
  return copy;
}

/* Drops one hold on a job; frees it on the last. Caller holds service->lock. */
static void job_unref_locked(svc_job *job)
{
  if (--job->refs == 0)
    job_free(job);
}

void svc_compile_finish(pcc_service *service, svc_job *job, const void *ctx,
                        const pcc_params *params, svc_answer *answer)
{
  /* the result was set before any waiter was resumed and never changes again */
  switch (job->result) {
  case JOB_CODE:
  case JOB_COMPILE_ERROR: {
    bool own_path = params->path_len == strlen(job->path) &&
                    memcmp(params->path, job->path, params->path_len) == 0 &&
                    params->mtime == job->record.mtime;
    if (!own_path) { /* a joined request for another path: record its path entry too */
      pcc_path_record record = job->record;
      record.mtime = params->mtime;
      pcc_store_status rc = pcc_store_put(service->store, &params->magic, params->opt,
                                          params->path, params->path_len, &record, NULL);
      if (rc != PCC_STORE_OK)
        fprintf(stderr, "pycached: cannot store a path entry: %s\n", pcc_store_strerror(rc));
    }
    pcc_blob *blob = blob_copy(job->blob);
    if (blob == NULL)
      svc_answer_error(answer, 500, "internal", "out of memory");
    else
      answer_blob(answer, blob, &job->record.digest, params,
                  job->waiters[0].ctx == ctx ? "compiled" : "joined");
    break;
  }
  case JOB_TIMEOUT:
    svc_answer_error(answer, 504, "compile-timeout", "%s", job->message);
    break;
  case JOB_STORE_FULL:
    svc_answer_error(answer, 507, "store-full", "%s", job->message);
    break;
  case JOB_UNAVAILABLE:
    svc_answer_error(answer, 503, "compiler-unavailable", "%s", job->message);
    break;
  case JOB_INTERNAL:
    svc_answer_error(answer, 500, "internal", "%s", job->message);
    break;
  }
  svc_job_release(service, job);
}

void svc_job_release(pcc_service *service, svc_job *job)
{
  pthread_mutex_lock(&service->lock);
  job_unref_locked(job);
  pthread_mutex_unlock(&service->lock);
}

/* Runs one job through the pool and stores its outcome. Called without the lock. */
static void job_compile(pcc_service *service, svc_job *job)
{
  pcc_compile_result *result = NULL;
  pcc_compiler_status rc = pcc_compiler_compile(job->backend->compiler, job->opt, job->path,
                                                job->source, job->len, &result);
  if (rc != PCC_COMPILER_OK) {
    atomic_fetch_add(rc == PCC_COMPILER_TIMEOUT ? &service->timeouts
                                                : &service->compiler_failures, 1);
    job->result = rc == PCC_COMPILER_TIMEOUT ? JOB_TIMEOUT : JOB_UNAVAILABLE;
    snprintf(job->message, sizeof job->message, "compiler: %s (%s)", pcc_compiler_strerror(rc),
             rc == PCC_COMPILER_TIMEOUT ? "the worker was killed and replaced"
                                        : "the worker has been replaced");
    fprintf(stderr, "pycached: compile of %s failed: %s\n", job->path, job->message);
    return;
  }
  svc_counters *counters = svc_counters_for(service, &job->magic);
  atomic_fetch_add(&counters->compiles, 1);
  svc_histogram_add(&service->compile_latency, result->compile_us);
  pcc_blob blob = {.hash = job->record.hash,
                   .size = job->record.size,
                   .created = time(NULL),
                   .compile_us = result->compile_us};
  snprintf(blob.compiler, sizeof blob.compiler, "%s", job->backend->name);
  char *error_json = NULL;
  if (result->ok) {
    blob.kind = PCC_BLOB_CODE;
    blob.payload = result->marshal;
    blob.payload_len = result->marshal_len;
  } else {
    atomic_fetch_add(&counters->compile_errors, 1);
    cJSON *details = cJSON_CreateObject();
    cJSON_AddStringToObject(details, "type", result->error_type ? result->error_type : "Error");
    cJSON_AddStringToObject(details, "message", result->error_message ? result->error_message : "");
    cJSON_AddNumberToObject(details, "line", result->error_line);
    cJSON_AddNumberToObject(details, "offset", result->error_offset);
    error_json = cJSON_PrintUnformatted(details);
    cJSON_Delete(details);
    blob.kind = PCC_BLOB_COMPILE_ERROR;
    blob.payload = (const uint8_t *)(error_json ? error_json : "{}");
    blob.payload_len = strlen((const char *)blob.payload);
  }
  pcc_store_status store_rc = pcc_store_put(service->store, &job->magic, job->opt, job->path,
                                            strlen(job->path), &job->record, &blob);
  if (store_rc == PCC_STORE_OK) {
    job->blob = blob_copy(&blob);
    job->result = job->blob == NULL ? JOB_INTERNAL
                  : result->ok      ? JOB_CODE
                                    : JOB_COMPILE_ERROR;
  } else if (store_rc == PCC_STORE_FULL) {
    job->result = JOB_STORE_FULL;
    snprintf(job->message, sizeof job->message, "the store is full (%s was compiled but not "
             "stored); raise --map-size", job->path);
    fprintf(stderr, "pycached: %s\n", job->message);
  } else {
    job->result = JOB_INTERNAL;
    snprintf(job->message, sizeof job->message, "store: %s", pcc_store_strerror(store_rc));
  }
  if (job->result == JOB_INTERNAL && job->message[0] == '\0')
    snprintf(job->message, sizeof job->message, "out of memory");
  free(error_json);
  pcc_compile_result_free(result);
}

/* Marks a job done and resumes its waiters. Caller holds service->lock. */
static void job_finish_locked(pcc_service *service, svc_job *job)
{
  svc_job **link = &service->inflight;
  while (*link != NULL && *link != job)
    link = &(*link)->next;
  if (*link == job)
    *link = job->next;
  free(job->source);
  job->source = NULL;
  for (size_t i = 0; i < job->n_waiters; i++)
    job->waiters[i].resume(job->waiters[i].ctx);
  job_unref_locked(job); /* the dispatcher's hold */
}

static void *dispatcher_main(void *arg)
{
  svc_backend *backend = arg;
  pcc_service *service = backend->service;
  pthread_mutex_lock(&service->lock);
  for (;;) {
    while (!service->closing && backend->queue_head == NULL)
      pthread_cond_wait(&backend->work, &service->lock);
    if (service->closing)
      break;
    svc_job *job = backend->queue_head;
    backend->queue_head = job->next;
    if (backend->queue_head == NULL)
      backend->queue_tail = NULL;
    job->next = service->inflight; /* joinable while it compiles */
    service->inflight = job;
    pthread_mutex_unlock(&service->lock);
    job_compile(service, job);
    pthread_mutex_lock(&service->lock);
    job_finish_locked(service, job);
  }
  pthread_mutex_unlock(&service->lock);
  return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

/* The directory of the pycached executable, into dir. */
static bool self_dir(char *dir, size_t len)
{
  ssize_t n = readlink("/proc/self/exe", dir, len - 1);
  if (n <= 0)
    return false;
  dir[n] = '\0';
  char *slash = strrchr(dir, '/');
  if (slash != NULL)
    *slash = '\0';
  return true;
}

/* The first of candidates (printf patterns taking pycached's directory) that exists with mode;
 * false when none does (out then holds the last one tried). */
static bool find_file(const char *const *candidates, size_t n, int mode, char *out, size_t len)
{
  char self[PATH_MAX];
  bool have_self = self_dir(self, sizeof self);
  for (size_t i = 0; i < n; i++) {
    if (strstr(candidates[i], "%s") != NULL && !have_self)
      continue;
    int written = snprintf(out, len, candidates[i], self);
    if (written > 0 && (size_t)written < len && access(out, mode) == 0)
      return true;
  }
  return false;
}

/* The embedded-CPython worker: --worker, else next to pycached (installed or build tree). */
static bool find_worker(const pcc_config *config, char *out, size_t len)
{
  if (config->worker != NULL) {
    snprintf(out, len, "%s", config->worker);
    return access(out, X_OK) == 0;
  }
  static const char *const candidates[] = {
    "%s/" WORKER_NAME, "%s/../compiler/" WORKER_NAME, "%s/../libexec/" WORKER_NAME,
    PCC_LIBEXECDIR "/" WORKER_NAME};
  return find_file(candidates, sizeof candidates / sizeof candidates[0], X_OK, out, len);
}

/* compiler/worker.py, which other interpreters run: installed, else in the source tree. */
static bool find_worker_script(char *out, size_t len)
{
  static const char *const candidates[] = {"%s/../share/pycached/" WORKER_SCRIPT,
                                           PCC_DATADIR "/pycached/" WORKER_SCRIPT,
                                           PCC_SOURCE_DIR "/compiler/" WORKER_SCRIPT};
  return find_file(candidates, sizeof candidates / sizeof candidates[0], R_OK, out, len);
}

/* The user the workers run as: --worker-user, else "nobody" when the server runs as root (a
 * compiler should not run with the server's rights, least of all root's). False when a named
 * user does not exist. */
static bool worker_identity(const pcc_config *config, pcc_compiler_config *out)
{
  const char *name = config->worker_user;
  if (name == NULL && geteuid() != 0)
    return true; /* not root: the workers keep the server's (unprivileged) user */
  struct passwd entry, *found = NULL;
  char buf[4096];
  if (getpwnam_r(name ? name : "nobody", &entry, buf, sizeof buf, &found) != 0 || found == NULL) {
    fprintf(stderr, "pycached: no user %s for the compiler workers%s\n", name ? name : "nobody",
            name ? "" : "; they run as root");
    return name == NULL;
  }
  out->drop_privileges = true;
  out->uid = found->pw_uid;
  out->gid = found->pw_gid;
  return true;
}

/* Starts one backend: its worker pool and dispatch threads. interpreter NULL: embedded. */
static pcc_service_status backend_start(pcc_service *service, const char *interpreter)
{
  const pcc_config *config = &service->config;
  svc_backend *backend = &service->backends[service->n_backends];
  char program[PATH_MAX];
  const char *argv[6] = {NULL};
  if (interpreter == NULL) {
    if (!find_worker(config, program, sizeof program)) {
      fprintf(stderr, "pycached: compiler worker %s is not executable (see --worker)\n", program);
      return PCC_SERVICE_CONFIG;
    }
    argv[0] = program;
  } else {
    if (access(interpreter, X_OK) != 0 || !find_worker_script(program, sizeof program)) {
      fprintf(stderr, "pycached: --compiler %s: not executable, or %s missing\n", interpreter,
              WORKER_SCRIPT);
      return PCC_SERVICE_CONFIG;
    }
    /* isolated (no environment, no user site), no site, no bytecode writing */
    const char *script_argv[] = {interpreter, "-I", "-S", "-B", program, NULL};
    memcpy(argv, script_argv, sizeof script_argv);
  }
  pcc_compiler_config compiler_config = {
    .argv = argv,
    .workers = (unsigned)config->workers,
    .timeout_ms = (unsigned)(config->compile_timeout * 1000),
    .memory_limit = config->worker_memory,
    .max_frame = 0, /* the workers' own limit: 64 MiB, above --max-source's maximum */
  };
  if (!worker_identity(config, &compiler_config))
    return PCC_SERVICE_CONFIG;
  pcc_compiler_status rc = pcc_compiler_open(&compiler_config, &backend->compiler);
  if (rc != PCC_COMPILER_OK) {
    fprintf(stderr, "pycached: %s: %s\n", argv[0], pcc_compiler_strerror(rc));
    return PCC_SERVICE_COMPILER;
  }
  if (svc_backend_for(service, pcc_compiler_magic(backend->compiler)) != NULL) {
    fprintf(stderr, "pycached: --compiler %s: another backend already compiles its magic\n",
            interpreter);
    pcc_compiler_close(backend->compiler);
    backend->compiler = NULL;
    return PCC_SERVICE_CONFIG;
  }
  backend->service = service;
  snprintf(backend->name, sizeof backend->name, "%s", pcc_compiler_name(backend->compiler));
  snprintf(backend->interpreter, sizeof backend->interpreter, "%s",
           interpreter ? interpreter : "embedded");
  pthread_cond_init(&backend->work, NULL);
  service->n_backends++; /* from here on, backend_stop cleans it up */
  unsigned n = pcc_compiler_workers(backend->compiler);
  backend->dispatchers = calloc(n, sizeof *backend->dispatchers);
  if (backend->dispatchers == NULL)
    return PCC_SERVICE_NOMEM;
  for (; backend->n_dispatchers < n; backend->n_dispatchers++)
    if (pthread_create(&backend->dispatchers[backend->n_dispatchers], NULL, dispatcher_main,
                       backend) != 0)
      break;
  return backend->n_dispatchers > 0 ? PCC_SERVICE_OK : PCC_SERVICE_NOMEM;
}

pcc_service_status pcc_service_open(const pcc_config *config, pcc_service **out)
{
  pcc_service *service = calloc(1, sizeof *service);
  if (service == NULL)
    return PCC_SERVICE_NOMEM;
  service->config = *config;
  service->started = time(NULL);
  pthread_mutex_init(&service->lock, NULL);
  pthread_mutex_init(&service->counters_lock, NULL);
  pthread_mutex_init(&service->hits_lock, NULL);
  pthread_mutex_init(&service->bundles_lock, NULL);
  service->hit_table = calloc(SVC_HIT_TABLE_SIZE, sizeof *service->hit_table);
  if (service->hit_table == NULL) {
    pcc_service_close(service);
    return PCC_SERVICE_NOMEM;
  }

  for (unsigned i = 0; i < config->n_source_roots; i++) {
    service->roots[i] = realpath(config->source_roots[i], NULL);
    if (service->roots[i] == NULL) {
      fprintf(stderr, "pycached: --source-root %s: %s\n", config->source_roots[i],
              strerror(errno));
      pcc_service_close(service);
      return PCC_SERVICE_CONFIG;
    }
    service->n_roots++;
  }

  pcc_store_status store_rc = pcc_store_open(config->store_dir, config->map_size,
                                             &service->store);
  if (store_rc != PCC_STORE_OK) {
    fprintf(stderr, "pycached: store %s: %s\n", config->store_dir, pcc_store_strerror(store_rc));
    pcc_service_close(service);
    return PCC_SERVICE_STORE;
  }

  pcc_service_status rc = backend_start(service, NULL);
  for (unsigned i = 0; i < config->n_compilers && rc == PCC_SERVICE_OK; i++)
    rc = backend_start(service, config->compilers[i]);
  if (rc != PCC_SERVICE_OK) {
    pcc_service_close(service);
    return rc;
  }
  if (config->retire_unserved)
    svc_retire_unserved(service);
  *out = service;
  return PCC_SERVICE_OK;
}

void pcc_service_shutdown(pcc_service *service)
{
  if (service == NULL)
    return;
  pthread_mutex_lock(&service->lock);
  service->closing = true;
  for (unsigned b = 0; b < service->n_backends; b++)
    pthread_cond_broadcast(&service->backends[b].work);
  pthread_mutex_unlock(&service->lock);
  /* compiles in progress end (at most --compile-timeout); then fail what is still queued */
  for (unsigned b = 0; b < service->n_backends; b++) {
    svc_backend *backend = &service->backends[b];
    for (unsigned i = 0; i < backend->n_dispatchers; i++)
      pthread_join(backend->dispatchers[i], NULL);
    backend->n_dispatchers = 0;
    pthread_mutex_lock(&service->lock);
    while (backend->queue_head != NULL) {
      svc_job *job = backend->queue_head;
      backend->queue_head = job->next;
      job->result = JOB_UNAVAILABLE;
      snprintf(job->message, sizeof job->message, "the server is shutting down");
      job->next = service->inflight;
      service->inflight = job;
      job_finish_locked(service, job);
    }
    backend->queue_tail = NULL;
    pthread_mutex_unlock(&service->lock);
  }
}

void pcc_service_close(pcc_service *service)
{
  if (service == NULL)
    return;
  pcc_service_shutdown(service);
  for (unsigned b = 0; b < service->n_backends; b++) {
    pcc_compiler_close(service->backends[b].compiler);
    free(service->backends[b].dispatchers);
    pthread_cond_destroy(&service->backends[b].work);
  }
  pcc_store_close(service->store);
  for (unsigned i = 0; i < service->n_roots; i++)
    free(service->roots[i]);
  free(service->hit_table);
  svc_bundle_cache_clear(service);
  pthread_mutex_destroy(&service->bundles_lock);
  pthread_mutex_destroy(&service->hits_lock);
  pthread_mutex_destroy(&service->counters_lock);
  pthread_mutex_destroy(&service->lock);
  free(service);
}

/* ---- stats ----------------------------------------------------------------------------- */

void svc_count_request(pcc_service *service)
{
  atomic_fetch_add(&service->requests, 1);
}

cJSON *svc_stats(pcc_service *service)
{
  cJSON *stats = cJSON_CreateObject();
  if (stats == NULL)
    return NULL;
  uint64_t hits = 0, absent = 0, stale = 0, compiles = 0, errors = 0, corruptions = 0;
  unsigned n = atomic_load(&service->n_magics);
  for (unsigned i = 0; i <= n; i++) {
    svc_counters *c = i < n ? &service->magics[i] : &service->other;
    hits += atomic_load(&c->hits);
    absent += atomic_load(&c->miss_absent);
    stale += atomic_load(&c->miss_stale);
    compiles += atomic_load(&c->compiles);
    errors += atomic_load(&c->compile_errors);
    corruptions += atomic_load(&c->corruptions);
  }
  cJSON_AddStringToObject(stats, "version", PCC_VERSION);
  cJSON_AddNumberToObject(stats, "uptime", (double)(time(NULL) - service->started));
  cJSON_AddNumberToObject(stats, "requests", (double)atomic_load(&service->requests));
  cJSON_AddNumberToObject(stats, "hits", (double)hits);
  cJSON *misses = cJSON_AddObjectToObject(stats, "misses");
  cJSON_AddNumberToObject(misses, "absent", (double)absent);
  cJSON_AddNumberToObject(misses, "stale", (double)stale);
  cJSON_AddNumberToObject(stats, "compiles", (double)compiles);
  cJSON_AddNumberToObject(stats, "compile_errors", (double)errors);
  cJSON_AddNumberToObject(stats, "joined", (double)atomic_load(&service->joined));
  cJSON_AddNumberToObject(stats, "corruptions", (double)corruptions);
  cJSON_AddNumberToObject(stats, "compiler_failures",
                          (double)atomic_load(&service->compiler_failures));
  cJSON_AddNumberToObject(stats, "compile_timeouts", (double)atomic_load(&service->timeouts));

  pcc_store_stats store;
  cJSON *store_json = cJSON_AddObjectToObject(stats, "store");
  if (pcc_store_stat(service->store, &store) == PCC_STORE_OK) {
    cJSON_AddNumberToObject(store_json, "entries", (double)store.paths);
    cJSON_AddNumberToObject(store_json, "blobs", (double)store.blobs);
    cJSON_AddNumberToObject(store_json, "bytes", (double)store.bytes);
    cJSON_AddNumberToObject(store_json, "used", (double)store.used);
    cJSON_AddNumberToObject(store_json, "map_size", (double)store.map_size);
  }

  cJSON *compilers = cJSON_AddArrayToObject(stats, "compilers");
  for (unsigned b = 0; b < service->n_backends; b++) {
    const svc_backend *backend = &service->backends[b];
    cJSON *compiler = cJSON_CreateObject();
    char magic[2 * PCC_MAGIC_LEN + 1];
    pcc_magic_to_hex(pcc_compiler_magic(backend->compiler), magic);
    cJSON_AddStringToObject(compiler, "name", backend->name);
    cJSON_AddStringToObject(compiler, "magic", magic);
    cJSON_AddNumberToObject(compiler, "workers", pcc_compiler_workers(backend->compiler));
    cJSON_AddNumberToObject(compiler, "restarts",
                            (double)pcc_compiler_restarts(backend->compiler));
    cJSON_AddBoolToObject(compiler, "default", b == 0);
    cJSON_AddItemToArray(compilers, compiler);
  }
  return stats;
}
