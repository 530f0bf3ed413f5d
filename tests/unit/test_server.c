/* test_server.c: the Check suite of server/, without HTTP. It opens the real core (LMDB in a
 * temporary directory, real compiler workers) and calls the features' handlers through their
 * route rows, as server/http.c does: single-flight compiles (joiners, one compile, waiters
 * released when the worker dies, requests that go away), the bundle cache, the bounds on what one
 * request may make the server spend (counted magics, the compile queue, batches, backups),
 * config parsing (the command line, the --config file, the PYCACHED_* variables, --listen) and
 * limits, the route table against the roles of access control, and the
 * parsing of warm-start bodies and token files (numbers out of range, a NUL, the size limit). */
#include <check.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "bodies.h"
#include "config.h"
#include "core.h"
#include "feature_list.h"
#include "http.h"
#include "route.h"
#include "test_helpers.h"

static const pcc_feature *const all_features[] = {&pcc_cache_feature, &pcc_admin_feature,
                                                  &pcc_warm_feature};
#define N_FEATURES (sizeof all_features / sizeof all_features[0])

/* A worker that says hello like the real one, then dies on the first compile. */
static const char crashing_worker[] =
  "#!/usr/bin/python3\n"
  "import json, os, struct, sys, time\n"
  "hello = json.dumps({'magic': 'a70d0d0a', 'implementation': 'cpython', "
  "'version': '3.11.2'}).encode()\n"
  "os.write(1, struct.pack('<I', len(hello) + 1) + b'H' + hello)\n"
  "head = os.read(0, 5)\n"
  "time.sleep(0.3)\n" /* long enough for every joiner to join */
  "os._exit(3)\n";

typedef struct {
  char dir[256];
  pcc_config config;
  char *argv[32];
  int argc;
  pcc_core *core;
  void *states[N_FEATURES];
} server;

/* Opens the core and every feature on a fresh store; extra arguments go to the config. */
static void server_open(server *s, const char *const *extra)
{
  memset(s, 0, sizeof *s);
  test_make_tmpdir(s->dir, sizeof s->dir, "server");
  const char *worker = getenv("PCC_TEST_WORKER");
  ck_assert_msg(worker != NULL, "PCC_TEST_WORKER must name pycached-cpython-worker");
  const char *base[] = {"pycached", "--store", s->dir, "--workers", "1", "--worker", worker};
  for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
    s->argv[s->argc++] = (char *)base[i];
  for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
    s->argv[s->argc++] = (char *)extra[i];
  ck_assert_int_eq(pcc_config_parse(s->argc, s->argv, &s->config), PCC_CONFIG_OK);
  CHECK_RC(pcc_core_open(&s->config, &s->core), pcc_core_strerror);
  for (size_t i = 0; i < N_FEATURES; i++)
    ck_assert_int_eq(all_features[i]->open(s->core, &s->states[i]), 0);
}

static void server_close(server *s)
{
  for (size_t i = N_FEATURES; i-- > 0;) {
    if (all_features[i]->shutdown != NULL)
      all_features[i]->shutdown(s->states[i]);
    all_features[i]->close(s->states[i]);
  }
  pcc_core_close(s->core);
  test_remove_tree(s->dir);
}

/* The row of method and path, and its feature's state. */
static const pcc_route *find_route(server *s, const char *method, const char *path, void **state)
{
  for (size_t f = 0; f < N_FEATURES; f++)
    for (size_t r = 0; r < all_features[f]->n_routes; r++) {
      const pcc_route *route = &all_features[f]->routes[r];
      if (strcmp(route->method, method) == 0 && strcmp(route->path, path) == 0) {
        *state = s->states[f];
        return route;
      }
    }
  ck_abort_msg("no route %s %s", method, path);
  return NULL;
}

/* ---- requests with suspend and resume ---------------------------------------------------- */

typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t changed;
  unsigned suspended, resumed;
} connection;

static connection *connection_new(void)
{
  connection *c = calloc(1, sizeof *c);
  ck_assert_ptr_nonnull(c);
  pthread_mutex_init(&c->lock, NULL);
  pthread_cond_init(&c->changed, NULL);
  return c;
}

static void on_suspend(void *ctx)
{
  connection *c = ctx;
  pthread_mutex_lock(&c->lock);
  c->suspended++;
  pthread_mutex_unlock(&c->lock);
}

static void on_resume(void *ctx)
{
  connection *c = ctx;
  pthread_mutex_lock(&c->lock);
  c->resumed++;
  pthread_cond_broadcast(&c->changed);
  pthread_mutex_unlock(&c->lock);
}

/* Waits (at most 20 s) until the connection was resumed; false on timeout. */
static bool wait_resumed(connection *c)
{
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 20;
  pthread_mutex_lock(&c->lock);
  int rc = 0;
  while (c->resumed == 0 && rc == 0)
    rc = pthread_cond_timedwait(&c->changed, &c->lock, &until);
  bool resumed = c->resumed > 0;
  pthread_mutex_unlock(&c->lock);
  return resumed;
}

static void connection_free(connection *c)
{
  pthread_mutex_destroy(&c->lock);
  pthread_cond_destroy(&c->changed);
  free(c);
}

/* A compile request for path with source as its body. */
static void compile_request(server *s, pcc_request *req, const pcc_route *route,
                            const char *path, const char *source, connection *c)
{
  const pcc_backend *backends;
  pcc_core_backends(s->core, &backends);
  memset(req, 0, sizeof *req);
  req->route = route;
  req->params.present = PCC_PARAM_MAGIC | PCC_PARAM_PATH | PCC_PARAM_MTIME;
  req->params.magic = *pcc_compiler_magic(backends[0].compiler);
  req->params.path = path;
  req->params.path_len = strlen(path);
  req->params.mtime = 1700000000;
  req->body = (const uint8_t *)source;
  req->body_len = strlen(source);
  req->suspend = on_suspend;
  req->resume = on_resume;
  req->ctx = c;
}

/* A source that takes the worker a while to compile (so that joiners find its job running). */
static char *slow_source(int seed)
{
  const int lines = 20000;
  size_t cap = (size_t)lines * 48;
  char *text = malloc(cap);
  ck_assert_ptr_nonnull(text);
  size_t len = 0;
  for (int i = 0; i < lines; i++)
    len += (size_t)snprintf(text + len, cap - len, "def f%d(a):\n    return a * %d + %d\n", i,
                            i, seed);
  return text;
}

#define JOINERS 8

/* JOINERS compiles of one source, their answers and their connections. */
typedef struct {
  pcc_request reqs[JOINERS];
  pcc_answer answers[JOINERS];
  connection *conns[JOINERS];
} joiners;

/* Starts JOINERS compiles of one source; every one must be pending (the first queues the job,
 * the others join it). */
static void start_joiners(server *s, const char *source, joiners *j)
{
  void *state;
  const pcc_route *route = find_route(s, "POST", "/v1/compile", &state);
  for (int i = 0; i < JOINERS; i++) {
    static char paths[JOINERS][64];
    snprintf(paths[i], sizeof paths[i], "/src/joined_%d.py", i);
    j->conns[i] = connection_new();
    compile_request(s, &j->reqs[i], route, paths[i], source, j->conns[i]);
    pcc_answer_init(&j->answers[i]);
    route->handler(state, &j->reqs[i], &j->answers[i]);
    ck_assert_msg(j->answers[i].kind == PCC_ANSWER_PENDING, "compile %d: kind %d (%s)", i,
                  j->answers[i].kind, j->answers[i].message);
    ck_assert_uint_eq(j->conns[i]->suspended, 1);
  }
}

/* Waits for joiner i to be resumed and finishes its answer into *final. */
static void finish_joiner(joiners *j, int i, pcc_answer *final)
{
  ck_assert_msg(wait_resumed(j->conns[i]), "request %d was never resumed", i);
  pcc_answer_init(final);
  j->answers[i].finish(j->answers[i].pending, &j->reqs[i], final);
}

START_TEST(test_single_flight_joiners_share_one_compile)
{
  server s;
  server_open(&s, NULL);
  char *source = slow_source(1);
  joiners j;
  start_joiners(&s, source, &j);
  for (int i = 0; i < JOINERS; i++) {
    pcc_answer final;
    finish_joiner(&j, i, &final);
    ck_assert_int_eq(final.kind, PCC_ANSWER_ENTRY);
    ck_assert_str_eq(final.outcome, i == 0 ? "compiled" : "joined");
    pcc_answer_clear(&final);
    connection_free(j.conns[i]);
  }
  pcc_totals *totals = pcc_counters_totals(pcc_core_counters(s.core));
  const pcc_magic_counters *magics;
  ck_assert_uint_eq(pcc_counters_magics(pcc_core_counters(s.core), &magics, NULL), 1);
  ck_assert_uint_eq(atomic_load(&magics[0].compiles), 1);
  ck_assert_uint_eq(atomic_load(&totals->joined), JOINERS - 1);

  /* every joiner's path now hits, and a new compile of the source is answered from the store */
  void *state;
  const pcc_route *route = find_route(&s, "POST", "/v1/compile", &state);
  connection *c = connection_new();
  pcc_request again;
  pcc_answer answer;
  pcc_answer_init(&answer);
  compile_request(&s, &again, route, "/src/another.py", source, c);
  route->handler(state, &again, &answer);
  ck_assert_int_eq(answer.kind, PCC_ANSWER_ENTRY);
  ck_assert_str_eq(answer.outcome, "stored");
  ck_assert_uint_eq(c->suspended, 0);
  pcc_answer_clear(&answer);
  connection_free(c);
  ck_assert_uint_eq(atomic_load(&magics[0].compiles), 1);
  free(source);
  server_close(&s);
}
END_TEST

/* Requests that go away while the job runs (abandon) and requests that finish: the job lives
 * until the last one lets go, whatever the order (the ASan build catches a use after free or a
 * leak of the job). */
START_TEST(test_single_flight_abandoned_waiters)
{
  server s;
  server_open(&s, NULL);
  char *source = slow_source(2);
  joiners j;
  start_joiners(&s, source, &j);
  for (int i = 0; i < JOINERS; i += 2) /* half of them go away before the compile ends */
    j.answers[i].abandon(j.answers[i].pending);
  for (int i = 1; i < JOINERS; i += 2) {
    pcc_answer final;
    finish_joiner(&j, i, &final);
    ck_assert_int_eq(final.kind, PCC_ANSWER_ENTRY);
    ck_assert_str_eq(final.outcome, "joined"); /* the first requester went away */
    pcc_answer_clear(&final);
  }
  for (int i = 0; i < JOINERS; i++) {
    ck_assert(wait_resumed(j.conns[i])); /* an abandoned request is still resumed: harmless */
    connection_free(j.conns[i]);
  }
  free(source);
  server_close(&s);
}
END_TEST

START_TEST(test_single_flight_worker_death_releases_waiters)
{
  char dir[256], worker[300];
  test_make_tmpdir(dir, sizeof dir, "crashworker");
  chmod(dir, 0755); /* the workers run as a uid of their own when the tests run as root */
  snprintf(worker, sizeof worker, "%s/worker.py", dir);
  FILE *f = fopen(worker, "w");
  ck_assert_ptr_nonnull(f);
  fputs(crashing_worker, f);
  fclose(f);
  chmod(worker, 0755);
  server s;
  const char *extra[] = {"--worker", worker, NULL};
  server_open(&s, extra);
  joiners j;
  start_joiners(&s, "x = 1\n", &j);
  for (int i = 0; i < JOINERS; i++) {
    pcc_answer final;
    finish_joiner(&j, i, &final);
    ck_assert_int_eq(final.kind, PCC_ANSWER_ERROR);
    ck_assert_int_eq(final.error, PCC_ERR_COMPILER_UNAVAILABLE);
    ck_assert_uint_eq(pcc_http_status(final.error), 503);
    pcc_answer_clear(&final);
    connection_free(j.conns[i]);
  }
  ck_assert_uint_eq(atomic_load(&pcc_counters_totals(pcc_core_counters(s.core))->compiler_failures),
                    1);
  server_close(&s);
  test_remove_tree(dir);
}
END_TEST

/* A shutdown with compiles queued: every waiter is resumed with compiler-unavailable. */
START_TEST(test_shutdown_releases_queued_waiters)
{
  server s;
  server_open(&s, NULL);
  void *state;
  const pcc_route *route = find_route(&s, "POST", "/v1/compile", &state);
  enum { N = 4 };
  char *sources[N];
  char paths[N][32];
  pcc_request reqs[N];
  pcc_answer answers[N];
  connection *conns[N];
  for (int i = 0; i < N; i++) { /* distinct sources: one runs, the others wait in the queue */
    sources[i] = slow_source(100 + i);
    snprintf(paths[i], sizeof paths[i], "/src/q%d.py", i);
    conns[i] = connection_new();
    compile_request(&s, &reqs[i], route, paths[i], sources[i], conns[i]);
    pcc_answer_init(&answers[i]);
    route->handler(state, &reqs[i], &answers[i]);
    ck_assert_int_eq(answers[i].kind, PCC_ANSWER_PENDING);
  }
  pcc_cache_feature.shutdown(s.states[0]);
  unsigned unavailable = 0;
  for (int i = 0; i < N; i++) {
    ck_assert(wait_resumed(conns[i]));
    pcc_answer final;
    pcc_answer_init(&final);
    answers[i].finish(answers[i].pending, &reqs[i], &final);
    unavailable += final.kind == PCC_ANSWER_ERROR && final.error == PCC_ERR_COMPILER_UNAVAILABLE;
    pcc_answer_clear(&final);
    connection_free(conns[i]);
    free(sources[i]);
  }
  ck_assert_uint_ge(unavailable, N - 1); /* at most the one running compile ends with code */
  /* after shutdown a compile is refused at once */
  connection *c = connection_new();
  pcc_request late;
  pcc_answer answer;
  pcc_answer_init(&answer);
  compile_request(&s, &late, route, "/src/late.py", "y = 2\n", c);
  route->handler(state, &late, &answer);
  ck_assert_int_eq(answer.kind, PCC_ANSWER_ERROR);
  ck_assert_int_eq(answer.error, PCC_ERR_COMPILER_UNAVAILABLE);
  pcc_answer_clear(&answer);
  connection_free(c);
  server_close(&s);
}
END_TEST

/* ---- the bundle cache -------------------------------------------------------------------- */

/* Compiles a source at path (a real compile, answered at once or after waiting). */
static void compile_now(server *s, const char *path, const char *source)
{
  void *state;
  const pcc_route *route = find_route(s, "POST", "/v1/compile", &state);
  connection *c = connection_new();
  pcc_request req;
  pcc_answer answer;
  pcc_answer_init(&answer);
  compile_request(s, &req, route, path, source, c);
  route->handler(state, &req, &answer);
  if (answer.kind == PCC_ANSWER_PENDING) {
    ck_assert(wait_resumed(c));
    pcc_answer final;
    pcc_answer_init(&final);
    answer.finish(answer.pending, &req, &final);
    answer = final;
  }
  ck_assert_msg(answer.kind == PCC_ANSWER_ENTRY, "%s: %s", path, answer.message);
  pcc_answer_clear(&answer);
  connection_free(c);
}

/* Records profile name = {path} and fetches its bundle into *answer (kept by the caller). */
static void profile_and_bundle(server *s, const char *name, const char *path, bool record,
                               pcc_answer *answer)
{
  const pcc_backend *backends;
  pcc_core_backends(s->core, &backends);
  void *state;
  pcc_request req;
  memset(&req, 0, sizeof req);
  req.params.present = PCC_PARAM_MAGIC;
  req.params.magic = *pcc_compiler_magic(backends[0].compiler);
  req.args[0] = name;
  if (record) {
    char body[256];
    snprintf(body, sizeof body, "{\"paths\": [\"%s\"]}", path);
    req.route = find_route(s, "POST", "/v1/profile", &state);
    req.body = (const uint8_t *)body;
    req.body_len = strlen(body);
    pcc_answer recorded;
    pcc_answer_init(&recorded);
    req.route->handler(state, &req, &recorded);
    ck_assert_int_eq(recorded.kind, PCC_ANSWER_JSON);
    pcc_answer_clear(&recorded);
    req.body = NULL;
    req.body_len = 0;
  }
  req.route = find_route(s, "GET", "/v1/bundle", &state);
  pcc_answer_init(answer);
  req.route->handler(state, &req, answer);
  ck_assert_int_eq(answer->kind, PCC_ANSWER_BYTES);
  ck_assert(answer->release != NULL);
  ck_assert_str_eq(answer->headers[0].name, "X-Pycached-Bundle-Entries");
  ck_assert_str_eq(answer->headers[0].value, "1");
}

#define PROFILES (PCC_BUNDLE_SLOTS + 1)

START_TEST(test_bundle_cache_keeps_and_evicts)
{
  server s;
  server_open(&s, NULL);
  char paths[PROFILES][32], names[PROFILES][16];
  for (int i = 0; i < PROFILES; i++) {
    snprintf(paths[i], sizeof paths[i], "/src/b%d.py", i);
    snprintf(names[i], sizeof names[i], "prog%d", i);
    char source[64];
    snprintf(source, sizeof source, "VALUE = %d\n", i);
    compile_now(&s, paths[i], source);
  }
  for (int i = 0; i < PROFILES; i++) { /* every profile recorded before any bundle is built */
    pcc_answer first;
    profile_and_bundle(&s, names[i], paths[i], true, &first);
    pcc_answer_clear(&first);
  }
  /* the store did not change: the same bytes are served again (held by both answers) */
  pcc_answer a, b;
  profile_and_bundle(&s, names[PROFILES - 1], NULL, false, &a);
  profile_and_bundle(&s, names[PROFILES - 1], NULL, false, &b);
  ck_assert_ptr_eq(a.bytes, b.bytes);
  /* prog0 was built first and used least recently: the ninth bundle evicted it; it is built
   * anew (other bytes, since the held answers keep theirs alive) */
  pcc_answer c, d;
  profile_and_bundle(&s, names[0], NULL, false, &c);
  profile_and_bundle(&s, names[0], NULL, false, &d);
  ck_assert_ptr_eq(c.bytes, d.bytes);   /* now cached again */
  ck_assert_ptr_ne(c.bytes, a.bytes);
  pcc_answer_clear(&a);
  pcc_answer_clear(&b);
  pcc_answer_clear(&c);
  pcc_answer_clear(&d);
  /* a change to the store (a new compile) makes a cached bundle stale */
  pcc_answer before, after;
  profile_and_bundle(&s, names[1], NULL, false, &before);
  compile_now(&s, "/src/other.py", "OTHER = 1\n");
  profile_and_bundle(&s, names[1], NULL, false, &after);
  ck_assert_ptr_ne(before.bytes, after.bytes);
  pcc_answer_clear(&before);
  pcc_answer_clear(&after);
  server_close(&s);
}
END_TEST

START_TEST(test_bundle_cache_off)
{
  server s;
  const char *extra[] = {"--bundle-cache", "0", NULL};
  server_open(&s, extra);
  compile_now(&s, "/src/only.py", "ONLY = 1\n");
  pcc_answer a, b;
  profile_and_bundle(&s, "p", "/src/only.py", true, &a);
  profile_and_bundle(&s, "p", NULL, false, &b);
  ck_assert_ptr_ne(a.bytes, b.bytes); /* nothing kept: each request builds its own */
  pcc_answer_clear(&a);
  pcc_answer_clear(&b);
  server_close(&s);
}
END_TEST

/* ---- bounds on what one request may make the server spend (issue 10) -------------------- */

static bool admit_even(void *ctx, const pcc_magic *magic)
{
  (void)ctx;
  return magic->bytes[0] % 2 == 0;
}

/* A magic the admit function refuses is counted in "other", and asked about again next time. */
START_TEST(test_counters_fold_refused_magics)
{
  pcc_counters *counters = pcc_counters_open();
  ck_assert_ptr_nonnull(counters);
  pcc_counters_set_admit(counters, admit_even, NULL);
  const pcc_magic_counters *magics, *other;
  for (int round = 0; round < 2; round++)
    for (int i = 0; i < 20; i++) {
      pcc_magic magic = {{(uint8_t)i, 0x42, 0x0d, 0x0a}};
      pcc_magic_counters *m = pcc_counters_for(counters, &magic);
      atomic_fetch_add(&m->miss_absent, 1);
      pcc_counters_magics(counters, &magics, &other);
      ck_assert_msg((m == other) == (i % 2 == 1), "magic %d", i);
    }
  ck_assert_uint_eq(pcc_counters_magics(counters, &magics, &other), 10);
  for (unsigned i = 0; i < 10; i++) {
    ck_assert_uint_eq(magics[i].magic.bytes[0] % 2, 0);
    ck_assert_uint_eq(atomic_load(&magics[i].miss_absent), 2);
  }
  ck_assert_uint_eq(atomic_load(&other->miss_absent), 20);
  pcc_counters_close(counters);
}
END_TEST

/* The parameters of a lookup of path (mtime 1700000000, size 10) for magic. */
static pcc_params lookup_params(const pcc_magic *magic, const char *path)
{
  return (pcc_params){.present = PCC_PARAM_MAGIC | PCC_PARAM_PATH | PCC_PARAM_MTIME |
                                 PCC_PARAM_SIZE,
                      .magic = *magic, .path = path, .path_len = strlen(path),
                      .mtime = 1700000000, .size = 10};
}

/* Counters of their own for the magics a backend serves or the store holds; made-up ones share
 * "other". */
START_TEST(test_made_up_magics_fold_into_other)
{
  server s;
  server_open(&s, NULL);
  const pcc_backend *backends;
  pcc_core_backends(s.core, &backends);
  const pcc_magic served = *pcc_compiler_magic(backends[0].compiler);
  const pcc_magic stored = {{0x3b, 0x0d, 0x0d, 0x0a}}; /* CPython 3.6: no backend here */
  pcc_path_record record = {1700000000, 10, 7, {{1}}};
  pcc_blob blob = {.kind = PCC_BLOB_CODE, .hash = 7, .size = 10, .payload = (const uint8_t *)"c",
                   .payload_len = 1};
  CHECK_RC(pcc_store_put(pcc_core_store(s.core), "", &stored, 0, "/src/old.py", 11, &record,
                         &blob), pcc_store_strerror);
  const struct {
    pcc_magic magic;
    const char *path;
    pcc_answer_kind kind;
  } lookups[] = {
    {served, "/src/none.py", PCC_ANSWER_ERROR},  /* a miss */
    {stored, "/src/old.py", PCC_ANSWER_ENTRY},   /* a hit of an unserved magic */
  };
  for (size_t i = 0; i < 2; i++) {
    pcc_params params = lookup_params(&lookups[i].magic, lookups[i].path);
    pcc_answer answer;
    pcc_answer_init(&answer);
    pcc_core_lookup(s.core, "", &params, &answer);
    ck_assert_int_eq(answer.kind, lookups[i].kind);
    pcc_answer_clear(&answer);
  }
  for (unsigned i = 0; i < 2 * PCC_MAGICS_COUNTED; i++) { /* made up: each a new magic */
    pcc_magic magic = {{(uint8_t)(i >> 8), (uint8_t)i, 0x0d, 0x0a}};
    pcc_params params = lookup_params(&magic, "/src/any.py");
    pcc_answer answer;
    pcc_answer_init(&answer);
    pcc_core_lookup(s.core, "", &params, &answer);
    ck_assert_int_eq(answer.error, PCC_ERR_UNSUPPORTED_MAGIC);
    pcc_answer_clear(&answer);
  }
  const pcc_magic_counters *magics, *other;
  ck_assert_uint_eq(pcc_counters_magics(pcc_core_counters(s.core), &magics, &other), 2);
  ck_assert(pcc_magic_equal(&magics[0].magic, &served));
  ck_assert(pcc_magic_equal(&magics[1].magic, &stored));
  ck_assert_uint_eq(atomic_load(&magics[1].hits), 1);
  /* no backend compiles them: unsupported, not absent (issue 14) */
  ck_assert_uint_eq(atomic_load(&other->unsupported), 2 * PCC_MAGICS_COUNTED);
  ck_assert_uint_eq(atomic_load(&other->miss_absent), 0);
  server_close(&s);
}
END_TEST

/* stats --zero: every counter and histogram back to 0, the magics and per-entry hits kept. */
START_TEST(test_counters_zero_keeps_magics_and_entry_hits)
{
  pcc_counters *counters = pcc_counters_open();
  ck_assert_ptr_nonnull(counters);
  pcc_magic magic = {{0xa7, 0x0d, 0x0d, 0x0a}};
  pcc_magic_counters *m = pcc_counters_for(counters, &magic);
  atomic_fetch_add(&m->hits, 3);
  atomic_fetch_add(&m->miss_absent, 2);
  atomic_fetch_add(&m->unsupported, 1);
  pcc_counters_add_bundle_hits(m, 4);
  pcc_counters_add_reason(counters, m, "miss", 5);
  pcc_counters_record_hit(counters, &magic, 0, "/a.py", 5);
  pcc_totals *t = pcc_counters_totals(counters);
  atomic_fetch_add(&t->requests, 9);
  atomic_fetch_add(&t->bundles, 1);
  pcc_histogram_add(&t->hit_latency, 3000); /* 3 µs */
  pcc_histogram_add(&t->hit_latency, 40000);
  ck_assert_uint_eq(atomic_load(&m->hits), 7);
  ck_assert_uint_eq(atomic_load(&m->bundle_hits), 4);
  ck_assert_uint_eq(atomic_load(&t->hit_latency.buckets[2]), 1); /* 2 < 3 <= 3.5 µs */
  pcc_counters_zero(counters);
  const pcc_magic_counters *magics;
  ck_assert_uint_eq(pcc_counters_magics(counters, &magics, NULL), 1);
  ck_assert_ptr_eq(pcc_counters_for(counters, &magic), m);
  ck_assert_uint_eq(atomic_load(&m->hits) + atomic_load(&m->bundle_hits) +
                      atomic_load(&m->miss_absent) + atomic_load(&m->unsupported) +
                      atomic_load(&m->reason_counts[0]), 0);
  ck_assert_str_eq(m->reasons[0], "miss");
  ck_assert_uint_eq(atomic_load(&t->requests) + atomic_load(&t->bundles) +
                      atomic_load(&t->hit_latency.count) + atomic_load(&t->hit_latency.sum_ns), 0);
  for (size_t i = 0; i <= PCC_LATENCY_BUCKETS; i++)
    ck_assert_uint_eq(atomic_load(&t->hit_latency.buckets[i]), 0);
  uint64_t hits;
  int64_t last;
  pcc_counters_entry_hits(counters, &magic, 0, "/a.py", 5, &hits, &last);
  ck_assert_uint_eq(hits, 1);
  pcc_counters_close(counters);
}
END_TEST

static atomic_uint bodies_released;

/* A request's release_body, as http.c has it, for a body the test owns. */
static void release_test_body(pcc_request *req)
{
  atomic_fetch_add(&bodies_released, 1);
  req->body = NULL;
  req->body_len = 0;
}

/* Past --max-queued-compiles a new compile is busy (503) with Retry-After, at once; joining a
 * queued compile still works; a request that waits has let its body go. */
START_TEST(test_compile_queue_is_bounded)
{
  server s;
  const char *extra[] = {"--max-queued-compiles", "2", NULL};
  server_open(&s, extra); /* one worker */
  void *state;
  const pcc_route *route = find_route(&s, "POST", "/v1/compile", &state);
  enum { N = 6 };
  char *sources[N + 1];
  char paths[N + 1][32];
  pcc_request reqs[N + 1];
  pcc_answer answers[N + 1];
  connection *conns[N + 1];
  unsigned pending = 0, busy = 0;
  atomic_store(&bodies_released, 0);
  for (int i = 0; i <= N; i++) { /* the last one: the same source as the second */
    sources[i] = slow_source(i < N ? 200 + i : 201);
    snprintf(paths[i], sizeof paths[i], "/src/bounded%d.py", i);
    conns[i] = connection_new();
    compile_request(&s, &reqs[i], route, paths[i], sources[i], conns[i]);
    reqs[i].release_body = release_test_body;
    pcc_answer_init(&answers[i]);
    route->handler(state, &reqs[i], &answers[i]);
    if (answers[i].kind == PCC_ANSWER_PENDING) {
      pending++;
      ck_assert_ptr_null(reqs[i].body); /* the job has its own copy */
      continue;
    }
    ck_assert_msg(answers[i].kind == PCC_ANSWER_ERROR && answers[i].error == PCC_ERR_BUSY,
                  "compile %d: kind %d (%s)", i, answers[i].kind, answers[i].message);
    ck_assert_uint_eq(pcc_http_status(answers[i].error), 503);
    ck_assert_uint_eq(conns[i]->suspended, 0);
    ck_assert_str_eq(answers[i].headers[0].name, "Retry-After");
    ck_assert_int_ge(atoi(answers[i].headers[0].value), 1);
    ck_assert_int_le(atoi(answers[i].headers[0].value), PCC_RETRY_AFTER_MAX);
    ck_assert(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(answers[i].extra, "retry_after")));
    ck_assert_ptr_nonnull(reqs[i].body); /* answered at once: http.c frees it with the request */
    busy++;
    pcc_answer_clear(&answers[i]);
  }
  /* two queued and perhaps one taken by the worker already, plus the one that joined */
  ck_assert_msg(pending == 3 || pending == 4, "%u pending", pending);
  ck_assert_uint_eq(busy, N + 1 - pending);
  ck_assert_int_eq(answers[N].kind, PCC_ANSWER_PENDING);
  ck_assert_uint_eq(atomic_load(&bodies_released), pending);
  for (int i = 0; i <= N; i++) {
    if (answers[i].kind == PCC_ANSWER_PENDING) {
      ck_assert(wait_resumed(conns[i]));
      pcc_answer final;
      pcc_answer_init(&final);
      answers[i].finish(answers[i].pending, &reqs[i], &final);
      ck_assert_msg(final.kind == PCC_ANSWER_ENTRY, "%d: %s", i, final.message);
      ck_assert_str_eq(final.outcome, i == N ? "joined" : "compiled");
      pcc_answer_clear(&final);
    }
    connection_free(conns[i]);
    free(sources[i]);
  }
  server_close(&s);
}
END_TEST

/* Drains a STREAM answer through its producer, in pieces of varying size (1, 7 and 4096 bytes,
 * over and over, so that every boundary is crossed), into a NUL-terminated text. */
static char *drain_stream(pcc_answer *answer, size_t *len)
{
  ck_assert_int_eq(answer->kind, PCC_ANSWER_STREAM);
  pcc_dynbuf out;
  pcc_dynbuf_init(&out, 64 << 20);
  static const size_t sizes[] = {1, 7, 4096};
  uint8_t buf[4096];
  for (size_t call = 0;; call++) {
    ssize_t n = answer->produce(answer->stream_ctx, buf, sizes[call % 3]);
    ck_assert_int_ge(n, 0);
    if (n == 0)
      break;
    ck_assert_uint_le((size_t)n, sizes[call % 3]);
    ck_assert_int_eq(pcc_dynbuf_add(&out, buf, (size_t)n), PCC_PROTO_OK);
  }
  pcc_answer_clear(answer); /* frees the stream */
  pcc_dynbuf_add(&out, "", 1);
  char *text = pcc_dynbuf_take(&out, len);
  (*len)--;
  return text;
}

/* A batch: identical lookups answered once, the rest once a result would pass
 * --max-batch-response answered too-large, never more than the cap. */
START_TEST(test_batch_is_deduplicated_streamed_and_capped)
{
  server s;
  const char *extra[] = {"--max-batch-response", "1M", NULL};
  server_open(&s, extra);
  size_t big = 300000;
  char *source = malloc(big + 16);
  ck_assert_ptr_nonnull(source);
  memcpy(source, "S = '", 5);
  memset(source + 5, 'q', big);
  memcpy(source + 5 + big, "'\n", 3);
  char body[4096] = "{\"lookups\": [";
  for (int i = 0; i < 4; i++) {
    char path[32];
    snprintf(path, sizeof path, "/src/batched%d.py", i);
    compile_now(&s, path, source);
    size_t used = strlen(body);
    snprintf(body + used, sizeof body - used,
             "%s{\"magic\": \"a70d0d0a\", \"path\": \"%s\", \"mtime\": 1700000000, "
             "\"size\": %zu}", i ? ", " : "", path, strlen(source));
  }
  size_t used = strlen(body);
  snprintf(body + used, sizeof body - used,
           ", {\"magic\": \"a70d0d0a\", \"path\": \"/src/batched1.py\", \"mtime\": 1700000000, "
           "\"size\": %zu}, {\"path\": \"/src/no-magic.py\"}]}", strlen(source));
  void *state;
  pcc_request req;
  memset(&req, 0, sizeof req);
  req.route = find_route(&s, "POST", "/v1/batch", &state);
  req.body = (const uint8_t *)body;
  req.body_len = strlen(body);
  pcc_answer answer;
  pcc_answer_init(&answer);
  req.route->handler(state, &req, &answer);
  size_t len;
  char *text = drain_stream(&answer, &len);
  ck_assert_uint_le(len, 1 << 20);
  cJSON *doc = cJSON_Parse(text);
  const cJSON *results = cJSON_GetObjectItemCaseSensitive(doc, "results");
  ck_assert_int_eq(cJSON_GetArraySize(results), 6);
  static const char *const want[] = {"entry", "entry", "too-large", "too-large", "same_as",
                                     "bad-parameter"};
  for (int i = 0; i < 6; i++) {
    const cJSON *r = cJSON_GetArrayItem(results, i);
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(r, "error");
    const char *got = cJSON_IsString(error) ? error->valuestring
                      : cJSON_GetObjectItemCaseSensitive(r, "same_as") ? "same_as"
                      : cJSON_GetObjectItemCaseSensitive(r, "pyc")     ? "entry"
                                                                       : "?";
    ck_assert_msg(strcmp(got, want[i]) == 0, "result %d: %s, not %s", i, got, want[i]);
  }
  ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(results, 4),
                                                    "same_as")->valueint, 1);
  cJSON_Delete(doc);
  free(text);
  free(source);
  server_close(&s);
}
END_TEST

/* Shutdown waits for a backup copy in progress: once it returns, the copy is done and its
 * request resumed; later backups are refused. */
START_TEST(test_shutdown_waits_for_a_backup)
{
  server s;
  server_open(&s, NULL);
  const pcc_backend *backends;
  pcc_core_backends(s.core, &backends);
  enum { BLOBS = 200, BLOB = 64 << 10 }; /* 12.5 MiB: a copy that takes a while */
  uint8_t *payload = malloc(BLOB);
  ck_assert_ptr_nonnull(payload);
  for (int i = 0; i < BLOBS; i++) {
    for (size_t k = 0; k < BLOB; k++)
      payload[k] = (uint8_t)(k * 31 + (size_t)i * 7 + k / 255);
    char path[32];
    snprintf(path, sizeof path, "/src/big%d.py", i);
    pcc_path_record record = {1700000000, 10, 7, {{(uint8_t)i, (uint8_t)(i >> 8), 1}}};
    pcc_blob blob = {.kind = PCC_BLOB_CODE, .hash = 7, .size = 10, .payload = payload,
                     .payload_len = BLOB};
    CHECK_RC(pcc_store_put(pcc_core_store(s.core), "", pcc_compiler_magic(backends[0].compiler),
                           0, path, strlen(path), &record, &blob), pcc_store_strerror);
  }
  free(payload);
  void *state;
  pcc_request req;
  memset(&req, 0, sizeof req);
  req.route = find_route(&s, "GET", "/v1/admin/backup", &state);
  connection *c = connection_new();
  req.suspend = on_suspend;
  req.resume = on_resume;
  req.ctx = c;
  pcc_answer answer;
  pcc_answer_init(&answer);
  req.route->handler(state, &req, &answer);
  ck_assert_int_eq(answer.kind, PCC_ANSWER_PENDING);
  ck_assert_uint_eq(c->suspended, 1);
  pcc_admin_feature.shutdown(state);
  ck_assert_uint_eq(c->resumed, 1); /* no waiting here: shutdown did */
  pcc_answer final;
  pcc_answer_init(&final);
  answer.finish(answer.pending, &req, &final);
  ck_assert_msg(final.kind == PCC_ANSWER_FILE, "%s", final.message);
  struct stat st;
  ck_assert_int_eq(fstat(final.fd, &st), 0);
  ck_assert_uint_eq((uint64_t)st.st_size, final.file_size);
  ck_assert_uint_gt(final.file_size, (uint64_t)BLOBS * BLOB);
  ck_assert_uint_eq(st.st_nlink, 0); /* a temporary file, already unlinked */
  pcc_answer_clear(&final);
  pcc_answer_init(&answer);
  req.route->handler(state, &req, &answer);
  ck_assert_int_eq(answer.kind, PCC_ANSWER_ERROR);
  ck_assert_int_eq(answer.error, PCC_ERR_BUSY);
  pcc_answer_clear(&answer);
  connection_free(c);
  server_close(&s);
}
END_TEST

/* ---- config and limits -------------------------------------------------------------------- */

static pcc_config_status parse(pcc_config *config, const char *const *args)
{
  char *argv[16] = {(char *)"pycached"};
  int argc = 1;
  for (; args[argc - 1] != NULL; argc++)
    argv[argc] = (char *)args[argc - 1];
  FILE *saved = stderr;
  stderr = fopen("/dev/null", "w"); /* the usage messages are not the test's */
  pcc_config_status rc = pcc_config_parse(argc, argv, config);
  fclose(stderr);
  stderr = saved;
  return rc;
}

START_TEST(test_config_defaults_are_the_limits)
{
  pcc_config config;
  const char *none[] = {NULL};
  ck_assert_int_eq(parse(&config, none), PCC_CONFIG_OK);
  ck_assert_uint_eq(config.max_source, PCC_SOURCE_MAX_DEFAULT);
  ck_assert_uint_eq(config.max_profile_body, PCC_PROFILE_BODY_MAX_DEFAULT);
  ck_assert_uint_eq(config.max_batch_body, PCC_BATCH_BODY_MAX_DEFAULT);
  ck_assert_uint_eq(config.max_report_body, PCC_REPORT_BODY_MAX);
  ck_assert_uint_eq(config.max_batch, PCC_BATCH_LOOKUPS_DEFAULT);
  ck_assert_uint_eq(config.max_bundle, PCC_BUNDLE_MAX_DEFAULT);
  ck_assert_uint_eq(config.bundle_cache, PCC_BUNDLE_CACHE_DEFAULT);
  ck_assert_uint_eq(config.max_connections, PCC_CONNECTIONS_DEFAULT);
  ck_assert_uint_eq(config.max_connections_per_ip, PCC_CONNECTIONS_PER_IP_DEFAULT);
  ck_assert_uint_eq(config.header_timeout, PCC_HEADER_TIMEOUT_DEFAULT);
  ck_assert_uint_eq(config.body_timeout, PCC_BODY_TIMEOUT_DEFAULT);
  ck_assert_uint_eq(config.idle_timeout, PCC_IDLE_TIMEOUT_DEFAULT);
  ck_assert_uint_eq(config.port, 8700);
  ck_assert_str_eq(config.listen, "127.0.0.1");
  ck_assert_str_eq(config.store_dir, "./var/pycached");
  ck_assert_uint_eq(config.max_size, PCC_STORE_MAX_SIZE_DEFAULT);
  ck_assert_uint_eq(config.map_size, PCC_STORE_MAX_SIZE_DEFAULT / 2 * 3 + (64u << 20));
  ck_assert_uint_eq(config.max_profiles, PCC_PROFILES_MAX_DEFAULT);
  ck_assert_uint_eq(config.profile_days, PCC_PROFILE_DAYS_DEFAULT);
}
END_TEST

/* --max-size and --map-size: suffixes, each derived from the other, and the one rule between
 * them. */
START_TEST(test_config_store_sizes)
{
  pcc_config config;
  const struct {
    const char *args[5];
    pcc_config_status rc;
    uint64_t max, map;
  } cases[] = {
    {{"--max-size", "1GB", NULL}, PCC_CONFIG_OK, 1ull << 30, 4ull << 30},   /* the 4G floor */
    {{"--max-size", "4g", NULL}, PCC_CONFIG_OK, 4ull << 30, (6ull << 30) + (64ull << 20)},
    {{"--max-size", "512Kb", NULL}, PCC_CONFIG_OK, 512ull << 10, 4ull << 30},
    {{"--max-size", "1T", NULL}, PCC_CONFIG_OK, 1ull << 40, 1ull << 40},    /* the map's cap */
    {{"--map-size", "8M", NULL}, PCC_CONFIG_OK, (8ull << 20) / 3 * 2, 8ull << 20},
    {{"--map-size", "100G", NULL}, PCC_CONFIG_OK, 3ull << 30, 100ull << 30},
    {{"--map-size", "8MB", "--max-size", "2M", NULL}, PCC_CONFIG_OK, 2ull << 20, 8ull << 20},
    {{"--map-size", "8M", "--max-size", "8M", NULL}, PCC_CONFIG_OK, 8ull << 20, 8ull << 20},
    {{"--map-size", "8M", "--max-size", "9M", NULL}, PCC_CONFIG_USAGE, 0, 0},
    {{"--max-size", "2T", NULL}, PCC_CONFIG_USAGE, 0, 0},
    {{"--max-size", "63K", NULL}, PCC_CONFIG_USAGE, 0, 0},
    {{"--max-size", "3GiB", NULL}, PCC_CONFIG_USAGE, 0, 0},
    {{"--max-size", "B", NULL}, PCC_CONFIG_USAGE, 0, 0},
    {{"--max-profiles", "0", NULL}, PCC_CONFIG_USAGE, 0, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    pcc_config_status rc = parse(&config, cases[i].args);
    ck_assert_msg(rc == cases[i].rc, "case %zu: %d", i, (int)rc);
    if (rc == PCC_CONFIG_OK) {
      ck_assert_msg(config.max_size == cases[i].max, "case %zu: max %llu", i,
                    (unsigned long long)config.max_size);
      ck_assert_msg(config.map_size == cases[i].map, "case %zu: map %llu", i,
                    (unsigned long long)config.map_size);
    }
  }
  const char *days[] = {"--profile-days", "0", "--max-profiles", "5", NULL};
  ck_assert_int_eq(parse(&config, days), PCC_CONFIG_OK);
  ck_assert_uint_eq(config.profile_days, 0);
  ck_assert_uint_eq(config.max_profiles, 5);
}
END_TEST

START_TEST(test_config_values_and_bounds)
{
  pcc_config config;
  const char *sizes[] = {"--max-source", "2M", "--max-batch-body", "512K", "--max-batch", "7",
                         "--map-size", "1G", NULL};
  ck_assert_int_eq(parse(&config, sizes), PCC_CONFIG_OK);
  ck_assert_uint_eq(config.max_source, 2u << 20);
  ck_assert_uint_eq(config.max_batch_body, 512u << 10);
  ck_assert_uint_eq(config.max_batch, 7);
  ck_assert_uint_eq(config.map_size, 1u << 30);
  /* each bound, on both sides */
  const char *at_ceiling[] = {"--max-source", "32M", NULL};
  ck_assert_int_eq(parse(&config, at_ceiling), PCC_CONFIG_OK);
  const char *over_ceiling[] = {"--max-source", "33554433", NULL};
  ck_assert_int_eq(parse(&config, over_ceiling), PCC_CONFIG_USAGE);
  const char *workers_max[] = {"--workers", "64", NULL};
  ck_assert_int_eq(parse(&config, workers_max), PCC_CONFIG_OK);
  const char *workers_over[] = {"--workers", "65", NULL};
  ck_assert_int_eq(parse(&config, workers_over), PCC_CONFIG_USAGE);
  const char *zero_batch[] = {"--max-batch", "0", NULL};
  ck_assert_int_eq(parse(&config, zero_batch), PCC_CONFIG_USAGE);
  const char *bad_size[] = {"--max-bundle", "12Q", NULL};
  ck_assert_int_eq(parse(&config, bad_size), PCC_CONFIG_USAGE);
  const char *negative[] = {"--port", "-1", NULL};
  ck_assert_int_eq(parse(&config, negative), PCC_CONFIG_USAGE);
  const char *stray[] = {"extra", NULL};
  ck_assert_int_eq(parse(&config, stray), PCC_CONFIG_USAGE);
  const char *too_many_roots[] = {"--source-root", "/", "--source-root", "/", "--source-root",
                                  "/", NULL};
  ck_assert_int_eq(parse(&config, too_many_roots), PCC_CONFIG_OK); /* 3 of 16 */
  const char *no_header_time[] = {"--header-timeout", "0", NULL}; /* a deadline is a must */
  ck_assert_int_eq(parse(&config, no_header_time), PCC_CONFIG_USAGE);
  const char *connections[] = {"--header-timeout", "1", "--body-timeout", "86400",
                               "--max-connections-per-ip", "0", NULL};
  ck_assert_int_eq(parse(&config, connections), PCC_CONFIG_OK);
  ck_assert_uint_eq(config.max_connections_per_ip, 0); /* no per-address limit */
  const char *long_body[] = {"--body-timeout", "86401", NULL};
  ck_assert_int_eq(parse(&config, long_body), PCC_CONFIG_USAGE);
}
END_TEST

/* pcc_config_parse of args, with what it prints on stderr in err. */
static pcc_config_status parse_err(pcc_config *config, const char *const *args, char *err,
                                   size_t len)
{
  char *argv[16] = {(char *)"pycached"};
  int argc = 1;
  for (; args[argc - 1] != NULL; argc++)
    argv[argc] = (char *)args[argc - 1];
  FILE *saved = stderr, *tmp = tmpfile();
  ck_assert_ptr_nonnull(tmp);
  stderr = tmp;
  pcc_config_status rc = pcc_config_parse(argc, argv, config);
  stderr = saved;
  rewind(tmp);
  size_t n = fread(err, 1, len - 1, tmp);
  err[n] = '\0';
  fclose(tmp);
  return rc;
}

/* Writes len bytes of text into dir/name with mode; the path goes to path. */
static void write_config(char *path, size_t path_len, const char *dir, const char *name,
                         const char *text, size_t len, mode_t mode)
{
  ck_assert_int_lt(snprintf(path, path_len, "%s/%s", dir, name), (int)path_len);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(text, 1, len, f), len);
  fclose(f);
  ck_assert_int_eq(chmod(path, mode), 0);
}

/* --listen: every form, the port in it against --port, and what a bad one says. The first case
 * is issue 14's: `--listen 127.0.0.1:9000` was taken as the address "127.0.0.1:9000", which is
 * not a loopback one, and refused "without --tokens". */
START_TEST(test_config_listen_forms)
{
  static const struct {
    const char *args[5];
    const char *address, *name; /* NULL: refused */
    uint64_t port;
  } cases[] = {
    {{"--listen", "127.0.0.1:9000", NULL}, "127.0.0.1", "", 9000},
    {{"--listen", "127.0.0.1", NULL}, "127.0.0.1", "", 8700},
    {{"--listen", "10.1.2.3:0", NULL}, "10.1.2.3", "", 0},
    {{"--listen", "0.0.0.0:80", NULL}, "0.0.0.0", "", 80},
    {{"--listen", "[::1]:9001", NULL}, "::1", "", 9001},
    {{"--listen", "[::1]", NULL}, "::1", "", 8700},
    {{"--listen", "::1", NULL}, "::1", "", 8700},
    {{"--listen", "::", "--port", "5", NULL}, "::", "", 5},
    {{"--listen", "[0:0::1]:65535", NULL}, "::1", "0:0::1", 65535}, /* canonical, and as given */
    {{"--listen", "localhost:9002", NULL}, "127.0.0.1", "localhost", 9002}, /* its IPv4 one */
    {{"--listen", "127.0.0.1:9000", "--port", "9000", NULL}, "127.0.0.1", "", 9000},
    {{"--listen", "127.0.0.1:9000", "--port", "9001", NULL}, NULL, NULL, 0}, /* two ports */
    {{"--listen", "127.0.0.1:65536", NULL}, NULL, NULL, 0},
    {{"--listen", "127.0.0.1:", NULL}, NULL, NULL, 0},
    {{"--listen", "127.0.0.1:http", NULL}, NULL, NULL, 0},
    {{"--listen", "127.0.0.1:-1", NULL}, NULL, NULL, 0},
    {{"--listen", "1.2.3", NULL}, NULL, NULL, 0},
    {{"--listen", "1.2.3.4.5", NULL}, NULL, NULL, 0},
    {{"--listen", "not an address", NULL}, NULL, NULL, 0},
    {{"--listen", "", NULL}, NULL, NULL, 0},
    {{"--listen", "-x", NULL}, NULL, NULL, 0},
    {{"--listen", "[::1", NULL}, NULL, NULL, 0},
    {{"--listen", "[::1]9000", NULL}, NULL, NULL, 0},
    {{"--listen", "[127.0.0.1]", NULL}, NULL, NULL, 0},
    {{"--listen", "[]:80", NULL}, NULL, NULL, 0},
    {{"--listen", "::1:9000:x", NULL}, NULL, NULL, 0},
    {{"--listen", "host:1:2", NULL}, NULL, NULL, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    pcc_config config;
    char err[1024];
    pcc_config_status rc = parse_err(&config, cases[i].args, err, sizeof err);
    if (cases[i].address == NULL) {
      ck_assert_msg(rc == PCC_CONFIG_USAGE, "case %zu (%s): %d", i, cases[i].args[1], (int)rc);
      ck_assert_msg(strstr(err, "--listen") != NULL && strstr(err, "--port") != NULL,
                    "case %zu: %s", i, err);
      continue;
    }
    ck_assert_msg(rc == PCC_CONFIG_OK, "case %zu (%s): %s", i, cases[i].args[1], err);
    ck_assert_str_eq(config.listen, cases[i].address);
    ck_assert_str_eq(config.listen_name, cases[i].name);
    ck_assert_uint_eq(config.port, cases[i].port);
    ck_assert_str_eq(config.listen_arg, cases[i].args[1]);
  }
}
END_TEST

/* --worker-rss takes 0, so a size that wrapped round to 0 would pass: 2^64 must not. */
/* An unknown option is a usage error, whatever the size of the option table: getopt_long's '?'
 * once fell on --limits' value when the table reached 61 rows (the unknown option printed the
 * limits and the server exited 0). */
START_TEST(test_config_unknown_options_are_refused)
{
  pcc_config config;
  char err[512];
  const char *nonsense[] = {"--nonsense", NULL}, *short_one[] = {"-x", NULL};
  const char *missing[] = {"--port", NULL};
  ck_assert_int_eq(parse_err(&config, nonsense, err, sizeof err), PCC_CONFIG_USAGE);
  ck_assert_msg(strstr(err, "'--nonsense'") != NULL, "%s", err);
  ck_assert_int_eq(parse_err(&config, short_one, err, sizeof err), PCC_CONFIG_USAGE);
  ck_assert_int_eq(parse_err(&config, missing, err, sizeof err), PCC_CONFIG_USAGE);
  ck_assert_msg(strstr(err, "requires an argument") != NULL, "%s", err);
}
END_TEST

START_TEST(test_config_size_overflow)
{
  pcc_config config;
  static const struct {
    const char *value;
    pcc_config_status rc;
    uint64_t bytes;
  } cases[] = {
    {"0T", PCC_CONFIG_OK, 0},
    {"1T", PCC_CONFIG_OK, 1ull << 40},
    {"1tb", PCC_CONFIG_OK, 1ull << 40},
    {"1KB", PCC_CONFIG_OK, 1024}, /* KB is 1024, like K (docs/OPERATIONS.md) */
    {"1025G", PCC_CONFIG_USAGE, 0},
    {"16777216T", PCC_CONFIG_USAGE, 0},  /* 2^64 */
    {"18446744073709551616", PCC_CONFIG_USAGE, 0},
    {"17179869184G", PCC_CONFIG_USAGE, 0}, /* 2^64 */
    {"8388608T", PCC_CONFIG_USAGE, 0},     /* 2^63: past INT64 */
    {"1KiB", PCC_CONFIG_USAGE, 0},
    {"1.5G", PCC_CONFIG_USAGE, 0},
    {" 1G", PCC_CONFIG_USAGE, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *args[] = {"--worker-rss", cases[i].value, NULL};
    pcc_config_status rc = parse(&config, args);
    ck_assert_msg(rc == cases[i].rc, "%s: %d", cases[i].value, (int)rc);
    if (rc == PCC_CONFIG_OK)
      ck_assert_uint_eq(config.worker_rss, cases[i].bytes);
  }
}
END_TEST

/* The --config file: its syntax, its values under the command line's, and every refusal naming
 * FILE:LINE. */
START_TEST(test_config_file)
{
  char dir[256], path[320], other[320], err[1024];
  test_make_tmpdir(dir, sizeof dir, "config");
  static const char good[] = "# pycached.conf\n"
                             "listen = 127.0.0.1:9100\n"
                             "\n"
                             "max-source=2M\r\n"
                             "  source-root = /tmp  \n"
                             "source-root = /usr\n"
                             "insecure = true\n"
                             "on-damaged-store = quarantine\n"
                             "store = /var/lib/pycached store\n"
                             "   # indented comment";
  write_config(path, sizeof path, dir, "pycached.conf", good, strlen(good), 0600);
  pcc_config config;
  const char *plain[] = {"--config", path, NULL};
  ck_assert_msg(parse_err(&config, plain, err, sizeof err) == PCC_CONFIG_OK, "%s", err);
  ck_assert_str_eq(config.listen, "127.0.0.1");
  ck_assert_uint_eq(config.port, 9100);
  ck_assert_uint_eq(config.max_source, 2u << 20);
  ck_assert_uint_eq(config.n_source_roots, 2);
  ck_assert_str_eq(config.source_roots[0], "/tmp");
  ck_assert_str_eq(config.source_roots[1], "/usr");
  ck_assert(config.insecure);
  ck_assert_str_eq(config.on_damaged_store, "quarantine");
  ck_assert_str_eq(config.store_dir, "/var/lib/pycached store");
  ck_assert_str_eq(config.config_file, path);
  /* the command line over the file: --port over the file's listen port, a list replaced */
  const char *over[] = {"--config", path, "--port", "9200", "--source-root", "/srv", NULL};
  ck_assert_msg(parse_err(&config, over, err, sizeof err) == PCC_CONFIG_OK, "%s", err);
  ck_assert_uint_eq(config.port, 9200);
  ck_assert_uint_eq(config.n_source_roots, 1);
  ck_assert_str_eq(config.source_roots[0], "/srv");
  ck_assert_uint_eq(config.max_source, 2u << 20);
  const char *over_listen[] = {"--config", path, "--listen", "[::1]", NULL};
  ck_assert_int_eq(parse_err(&config, over_listen, err, sizeof err), PCC_CONFIG_OK);
  ck_assert_str_eq(config.listen, "::1");
  ck_assert_uint_eq(config.port, 8700); /* the file's port went with its listen */
  const char *open_only[] = {"--config", path, "--port", "0", NULL}; /* group-readable is fine */
  ck_assert_int_eq(chmod(path, 0644), 0);
  ck_assert_int_eq(parse_err(&config, open_only, err, sizeof err), PCC_CONFIG_OK);

  /* what is refused, and the words that must be in the message */
  static const struct {
    const char *text;
    const char *says;
  } bad[] = {
    {"port = 1\n\nbogus = 1\n", ":3: unknown key 'bogus'"},
    {"port = 1\nmax-source = 12Q\n", ":2: max-source: '12Q' is not a valid size"},
    {"port = 70000\n", ":1: port: 70000 is out of range"},
    {"port = 1\nport = 2\n", ":2: port given twice (first on line 1)"},
    {"listen 127.0.0.1\n", ":1: not a KEY = VALUE line"},
    {"port =\n", ":1: port: no value"},
    {"insecure = maybe\n", ":1: insecure: 'maybe' is not true or false"},
    {"on-damaged-store = delete\n", ":1: on-damaged-store: 'delete' is not one of"},
    {"config = /etc/other.conf\n", ":1: config is not set in a config file"},
    {"verify-store = true\n", ":1: verify-store is not set in a config file (command line"},
    {"listen = 127.0.0.1:99999\n", ":1: listen 127.0.0.1:99999: the port is not a number"},
    {"--port = 1\n", ":1: unknown key '--port'"},
    {"Port = 1\n", ":1: unknown key 'Port'"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    write_config(path, sizeof path, dir, "bad.conf", bad[i].text, strlen(bad[i].text), 0600);
    const char *args[] = {"--config", path, NULL};
    ck_assert_msg(parse_err(&config, args, err, sizeof err) == PCC_CONFIG_USAGE, "%s",
                  bad[i].text);
    ck_assert_msg(strstr(err, path) != NULL && strstr(err, bad[i].says) != NULL,
                  "%s: said %s", bad[i].text, err);
  }
  /* a NUL, and the line limit on both sides */
  write_config(path, sizeof path, dir, "nul.conf", "port = 1\0\n", 10, 0600);
  const char *nul[] = {"--config", path, NULL};
  ck_assert_int_eq(parse_err(&config, nul, err, sizeof err), PCC_CONFIG_USAGE);
  ck_assert_msg(strstr(err, ":1: a NUL byte") != NULL, "%s", err);
  static char line[PCC_CONFIG_LINE_MAX + 3];
  memset(line, ' ', sizeof line);
  memcpy(line, "port = 5", 8);
  line[PCC_CONFIG_LINE_MAX] = '\n'; /* PCC_CONFIG_LINE_MAX bytes before the newline */
  write_config(path, sizeof path, dir, "line.conf", line, PCC_CONFIG_LINE_MAX + 1, 0600);
  const char *at_line_max[] = {"--config", path, NULL};
  ck_assert_msg(parse_err(&config, at_line_max, err, sizeof err) == PCC_CONFIG_OK, "%s", err);
  ck_assert_uint_eq(config.port, 5);
  line[PCC_CONFIG_LINE_MAX] = ' ';
  line[PCC_CONFIG_LINE_MAX + 1] = '\n';
  write_config(path, sizeof path, dir, "line.conf", line, PCC_CONFIG_LINE_MAX + 2, 0600);
  ck_assert_int_eq(parse_err(&config, at_line_max, err, sizeof err), PCC_CONFIG_USAGE);
  ck_assert_msg(strstr(err, ":1: longer than the line limit") != NULL, "%s", err);
  /* the file limit on both sides: comment lines of 64 bytes */
  static char big[PCC_CONFIG_FILE_MAX + 64];
  for (size_t i = 0; i < sizeof big; i += 64) {
    memset(big + i, '#', 63);
    big[i + 63] = '\n';
  }
  write_config(path, sizeof path, dir, "big.conf", big, PCC_CONFIG_FILE_MAX, 0600);
  const char *big_args[] = {"--config", path, NULL};
  ck_assert_msg(parse_err(&config, big_args, err, sizeof err) == PCC_CONFIG_OK, "%s", err);
  write_config(path, sizeof path, dir, "big.conf", big, PCC_CONFIG_FILE_MAX + 1, 0600);
  ck_assert_int_eq(parse_err(&config, big_args, err, sizeof err), PCC_CONFIG_USAGE);
  ck_assert_msg(strstr(err, "larger than the limit") != NULL, "%s", err);
  /* who may write it: it may name the --tokens */
  write_config(path, sizeof path, dir, "mode.conf", "port = 1\n", 9, 0600);
  const char *mode_args[] = {"--config", path, NULL};
  static const mode_t refused_modes[] = {0666, 0602, 0620, 0660};
  for (size_t i = 0; i < sizeof refused_modes / sizeof refused_modes[0]; i++) {
    ck_assert_int_eq(chmod(path, refused_modes[i]), 0);
    ck_assert_int_eq(parse_err(&config, mode_args, err, sizeof err), PCC_CONFIG_USAGE);
    ck_assert_msg(strstr(err, "writable by its group or others") != NULL, "%s", err);
  }
  ck_assert_int_eq(chmod(path, 0600), 0);
  if (geteuid() == 0) { /* a file of another user (root may make one) */
    ck_assert_int_eq(chown(path, 4242, 4242), 0);
    ck_assert_int_eq(parse_err(&config, mode_args, err, sizeof err), PCC_CONFIG_USAGE);
    ck_assert_msg(strstr(err, "owned by another user") != NULL, "%s", err);
  }
  snprintf(other, sizeof other, "%s/missing.conf", dir);
  const char *missing[] = {"--config", other, NULL};
  ck_assert_int_eq(parse_err(&config, missing, err, sizeof err), PCC_CONFIG_USAGE);
  ck_assert_msg(strstr(err, "--config") && strstr(err, "No such file"), "%s", err);
  const char *directory[] = {"--config", dir, NULL};
  ck_assert_int_eq(parse_err(&config, directory, err, sizeof err), PCC_CONFIG_USAGE);
  ck_assert_msg(strstr(err, "not a regular file") != NULL, "%s", err);
  test_remove_tree(dir);
}
END_TEST

/* The PYCACHED_* variables: over the file, under the command line, lists split at commas and
 * replacing the file's, and a bad value naming its variable. */
START_TEST(test_config_environment)
{
  char dir[256], path[320], unreadable[320], err[1024];
  test_make_tmpdir(dir, sizeof dir, "config-env");
  static const char file[] = "listen = 127.0.0.1:9100\nmax-source = 2M\nsource-root = /f\n"
                             "insecure = true\nmax-batch = 7\n";
  write_config(path, sizeof path, dir, "pycached.conf", file, strlen(file), 0600);
  pcc_config config;
  const char *none[] = {NULL};
  ck_assert_int_eq(setenv("PYCACHED_MAX_SOURCE", "3M", 1), 0);
  ck_assert_int_eq(setenv("PYCACHED_SOURCE_ROOT", "/a,/b", 1), 0);
  ck_assert_int_eq(setenv("PYCACHED_INSECURE", "0", 1), 0);
  ck_assert_int_eq(setenv("PYCACHED_PORT", "9400", 1), 0);
  ck_assert_int_eq(setenv("PYCACHED_MAX_CONNECTIONS_PER_IP", "", 1), 0); /* empty: unset */
  ck_assert_int_eq(setenv("PYCACHED_VERIFY_STORE", "1", 1), 0); /* command line only */
  ck_assert_int_eq(setenv("PYCACHED_CONFIG", path, 1), 0);
  ck_assert_msg(parse_err(&config, none, err, sizeof err) == PCC_CONFIG_OK, "%s", err);
  ck_assert_str_eq(config.config_file, path);
  ck_assert_uint_eq(config.max_source, 3u << 20);   /* environment over file */
  ck_assert_uint_eq(config.max_batch, 7);           /* the file's */
  ck_assert_uint_eq(config.n_source_roots, 2);      /* replaced, not added to */
  ck_assert_str_eq(config.source_roots[0], "/a");
  ck_assert_str_eq(config.source_roots[1], "/b");
  ck_assert(!config.insecure);
  ck_assert_uint_eq(config.port, 9400);             /* over the file's listen port */
  ck_assert_str_eq(config.listen, "127.0.0.1");
  ck_assert_uint_eq(config.max_connections_per_ip, PCC_CONNECTIONS_PER_IP_DEFAULT);
  ck_assert(!config.verify_store);
  const char *flags[] = {"--max-source", "1M", "--source-root", "/c", "--insecure", NULL};
  ck_assert_msg(parse_err(&config, flags, err, sizeof err) == PCC_CONFIG_OK, "%s", err);
  ck_assert_uint_eq(config.max_source, 1u << 20);   /* command line over environment */
  ck_assert_uint_eq(config.n_source_roots, 1);
  ck_assert_str_eq(config.source_roots[0], "/c");
  ck_assert(config.insecure);
  /* --config over PYCACHED_CONFIG: the variable's file is not read */
  snprintf(unreadable, sizeof unreadable, "%s/missing.conf", dir);
  ck_assert_int_eq(setenv("PYCACHED_CONFIG", unreadable, 1), 0);
  const char *file_flag[] = {"--config", path, NULL};
  ck_assert_msg(parse_err(&config, file_flag, err, sizeof err) == PCC_CONFIG_OK, "%s", err);
  ck_assert_int_eq(parse_err(&config, none, err, sizeof err), PCC_CONFIG_USAGE);
  ck_assert_msg(strstr(err, "PYCACHED_CONFIG") != NULL, "%s", err);
  ck_assert_int_eq(unsetenv("PYCACHED_CONFIG"), 0);
  /* two ports in one layer */
  ck_assert_int_eq(setenv("PYCACHED_LISTEN", "[::1]:9300", 1), 0);
  ck_assert_int_eq(parse_err(&config, none, err, sizeof err), PCC_CONFIG_USAGE);
  ck_assert_msg(strstr(err, "PYCACHED_LISTEN [::1]:9300 and PYCACHED_PORT 9400") != NULL, "%s",
                err);
  ck_assert_int_eq(unsetenv("PYCACHED_PORT"), 0);
  ck_assert_int_eq(parse_err(&config, none, err, sizeof err), PCC_CONFIG_OK);
  ck_assert_str_eq(config.listen, "::1");
  ck_assert_uint_eq(config.port, 9300);
  /* bad values name their variable */
  static const struct {
    const char *name, *value, *says;
  } bad[] = {
    {"PYCACHED_MAX_SOURCE", "12Q", "PYCACHED_MAX_SOURCE: '12Q' is not a valid size"},
    {"PYCACHED_WORKERS", "65", "PYCACHED_WORKERS: 65 is out of range [0, 64]"},
    {"PYCACHED_SOURCE_ROOT", "/a,,/b", "PYCACHED_SOURCE_ROOT: an empty value"},
    {"PYCACHED_SOURCE_ROOT", "/a,", "PYCACHED_SOURCE_ROOT: an empty value"},
    {"PYCACHED_SERVER_NAME", "a,b,c,d,e,f,g,h,i", "PYCACHED_SERVER_NAME: at most 8 values"},
    {"PYCACHED_RETIRE_UNSERVED_MAGICS", "2", "PYCACHED_RETIRE_UNSERVED_MAGICS: '2' is not"},
    {"PYCACHED_LISTEN", "127.0.0.1:x", "PYCACHED_LISTEN 127.0.0.1:x: the port"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char saved[64] = "";
    const char *was = getenv(bad[i].name);
    snprintf(saved, sizeof saved, "%s", was ? was : "");
    ck_assert_int_eq(setenv(bad[i].name, bad[i].value, 1), 0);
    ck_assert_int_eq(parse_err(&config, none, err, sizeof err), PCC_CONFIG_USAGE);
    ck_assert_msg(strstr(err, bad[i].says) != NULL, "%s=%s: said %s", bad[i].name,
                  bad[i].value, err);
    ck_assert_int_eq(was ? setenv(bad[i].name, saved, 1) : unsetenv(bad[i].name), 0);
  }
  static char long_value[PCC_CONFIG_LINE_MAX + 2];
  memset(long_value, '1', sizeof long_value - 1);
  ck_assert_int_eq(setenv("PYCACHED_STORE", long_value, 1), 0);
  ck_assert_int_eq(parse_err(&config, none, err, sizeof err), PCC_CONFIG_USAGE);
  ck_assert_msg(strstr(err, "PYCACHED_STORE: longer than") != NULL, "%s", err);
  long_value[PCC_CONFIG_LINE_MAX] = '\0';
  ck_assert_int_eq(setenv("PYCACHED_STORE", long_value, 1), 0);
  ck_assert_int_eq(parse_err(&config, none, err, sizeof err), PCC_CONFIG_OK);
  test_remove_tree(dir);
}
END_TEST

START_TEST(test_limits_table)
{
  size_t n;
  const pcc_limit *limits = pcc_limits(&n);
  ck_assert_uint_gt(n, 20);
  for (size_t i = 0; i < n; i++) {
    ck_assert_msg(limits[i].value > 0, "%s is 0", limits[i].name);
    ck_assert_msg(strncmp(limits[i].name, "PCC_", 4) == 0, "%s", limits[i].name);
    for (size_t j = 0; j < i; j++)
      ck_assert_msg(strcmp(limits[i].name, limits[j].name) != 0, "%s twice", limits[i].name);
    /* a row that names an option is that option's default */
    if (limits[i].option != NULL && strcmp(limits[i].option, "--workers") != 0) {
      pcc_config config;
      const char *none[] = {NULL};
      ck_assert_int_eq(parse(&config, none), PCC_CONFIG_OK);
      bool found = false;
      for (size_t off = 0; off + sizeof(uint64_t) <= sizeof config; off += sizeof(uint64_t)) {
        const char *name = pcc_config_option_for(off);
        if (name != NULL && strcmp(name, limits[i].option + 2) == 0) {
          uint64_t value;
          memcpy(&value, (const char *)&config + off, sizeof value);
          ck_assert_msg(value == limits[i].value, "%s: default %llu, table %llu",
                        limits[i].option, (unsigned long long)value,
                        (unsigned long long)limits[i].value);
          found = true;
        }
      }
      ck_assert_msg(found, "%s names no option", limits[i].name);
    }
  }
}
END_TEST

/* A message longer than the answer's buffer is cut between characters, never inside one. */
START_TEST(test_messages_cut_between_characters)
{
  for (size_t pad = 0; pad < 4; pad++) {
    char path[1200];
    size_t len = 0;
    for (; len < pad; len++)
      path[len] = 'x';
    while (len + 9 < sizeof path) { /* 2-, 3- and 4-byte characters, and room for the NUL */
      memcpy(path + len, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x90\x8d", 9);
      len += 9;
    }
    path[len] = '\0';
    pcc_answer answer;
    pcc_answer_init(&answer);
    pcc_answer_error(&answer, PCC_ERR_STORE_FULL, "the store is full (%s was compiled)", path);
    size_t n = strlen(answer.message);
    ck_assert_uint_gt(n, 400);
    /* valid UTF-8 to the end: walk it */
    for (size_t i = 0; i < n;) {
      unsigned char c = (unsigned char)answer.message[i];
      size_t want = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : 4;
      ck_assert_msg(i + want <= n, "pad %zu: a character cut at byte %zu of %zu", pad, i, n);
      for (size_t k = 1; k < want; k++)
        ck_assert(((unsigned char)answer.message[i + k] & 0xc0) == 0x80);
      i += want;
    }
    pcc_answer_clear(&answer);
  }
}
END_TEST

/* ---- the route table ---------------------------------------------------------------------- */

START_TEST(test_route_table_is_sound)
{
  pcc_config config;
  const char *none[] = {NULL};
  ck_assert_int_eq(parse(&config, none), PCC_CONFIG_OK);
  for (size_t f = 0; f < N_FEATURES; f++)
    for (size_t r = 0; r < all_features[f]->n_routes; r++) {
      const pcc_route *route = &all_features[f]->routes[r];
      ck_assert(route->handler != NULL);
      ck_assert_msg(route->path[0] == '/', "%s", route->path);
      ck_assert_msg(route->required == 0 || route->params, "%s: required without params",
                    route->path);
      /* a body limit names a byte field of the config */
      if (route->body != PCC_ROUTE_NO_BODY) {
        ck_assert_uint_le(route->body - 1 + sizeof(uint64_t), sizeof config);
        uint64_t limit;
        memcpy(&limit, (const char *)&config + route->body - 1, sizeof limit);
        ck_assert_msg(limit > 0 && limit <= PCC_SOURCE_MAX_CEILING, "%s: limit %llu",
                      route->path, (unsigned long long)limit);
      }
      /* admin endpoints need the admin role (/metrics: read or admin, a scraper's token need
       * not be able to purge); nothing but health and the page is open */
      if (strncmp(route->path, "/v1/admin/", 10) == 0)
        ck_assert_msg(route->role == PCC_ROLE_ADMIN, "%s", route->path);
      if (strcmp(route->path, "/metrics") == 0)
        ck_assert_msg(route->role == (PCC_ROLE_READ | PCC_ROLE_ADMIN), "%s", route->path);
      if (route->role == 0)
        ck_assert_msg(strcmp(route->path, "/healthz") == 0 ||
                        strncmp(route->path, "/admin", 6) == 0, "%s is open", route->path);
      for (size_t g = 0; g <= f; g++)
        for (size_t q = 0; q < (g == f ? r : all_features[g]->n_routes); q++) {
          const pcc_route *other = &all_features[g]->routes[q];
          ck_assert_msg(strcmp(other->path, route->path) != 0 ||
                          strcmp(other->method, route->method) != 0,
                        "%s %s twice", route->method, route->path);
        }
    }
  ck_assert(pcc_http_path_matches("/v1/admin/magics/*/retire", "/v1/admin/magics/a70d0d0a/retire",
                                  NULL, NULL));
  ck_assert(!pcc_http_path_matches("/v1/admin/magics/*/retire", "/v1/admin/magics//retire", NULL,
                                   NULL));
  ck_assert(!pcc_http_path_matches("/v1/admin/magics/*/retire", "/v1/admin/magics/a/b/retire",
                                   NULL, NULL));
  ck_assert(!pcc_http_path_matches("/v1/code", "/v1/code/", NULL, NULL));
}
END_TEST

START_TEST(test_roles_against_the_route_table)
{
  char dir[256], file[300];
  test_make_tmpdir(dir, sizeof dir, "auth");
  snprintf(file, sizeof file, "%s/tokens.json", dir);
  FILE *f = fopen(file, "w");
  ck_assert_ptr_nonnull(f);
  fputs("{\"tokens\": [\n"
        " {\"name\": \"fleet\", \"token\": \"fleet-1f0e9d8c7b6a5f4e\", \"roles\": [\"read\"]},\n"
        " {\"name\": \"ci\", \"token\": \"ci-7b3f9a1e5c2d8f40aa\", \"roles\": [\"read\", "
        "\"compile\"]},\n"
        " {\"name\": \"ops\", \"token\": \"ops-2c8e4a6f0b1d9e37\", \"roles\": [\"read\", "
        "\"compile\", \"admin\"]}]}\n", f);
  fclose(f);
  pcc_auth *auth = NULL;
  char error[256];
  CHECK_RC(pcc_auth_open(file, &auth, error, sizeof error), pcc_auth_strerror);
  static const struct {
    const char *header;
    unsigned roles;
  } tokens[] = {
    {"Bearer fleet-1f0e9d8c7b6a5f4e", PCC_ROLE_READ},
    {"Bearer ci-7b3f9a1e5c2d8f40aa", PCC_ROLE_READ | PCC_ROLE_COMPILE},
    {"Bearer ops-2c8e4a6f0b1d9e37", PCC_ROLE_READ | PCC_ROLE_COMPILE | PCC_ROLE_ADMIN},
  };
  unsigned checked = 0;
  for (size_t f = 0; f < N_FEATURES; f++)
    for (size_t r = 0; r < all_features[f]->n_routes; r++) {
      const pcc_route *route = &all_features[f]->routes[r];
      if (route->role == 0)
        continue;
      for (size_t t = 0; t < 3; t++) {
        pcc_auth_identity who;
        pcc_auth_status rc = pcc_auth_check(auth, tokens[t].header, (pcc_role)route->role, &who);
        pcc_auth_status want = (tokens[t].roles & route->role) ? PCC_AUTH_OK : PCC_AUTH_NO_ROLE;
        ck_assert_msg(rc == want, "%s %s with %s: %s", route->method, route->path,
                      tokens[t].header, pcc_auth_strerror(rc));
        checked++;
      }
      ck_assert_int_eq(pcc_auth_check(auth, NULL, (pcc_role)route->role, NULL),
                       PCC_AUTH_MISSING);
      ck_assert_int_eq(pcc_auth_check(auth, "Bearer fleet-1f0e9d8c7b6a5f4f",
                                      (pcc_role)route->role, NULL), PCC_AUTH_UNKNOWN);
    }
  ck_assert_uint_ge(checked, 3 * 15);
  pcc_auth_close(auth);
  test_remove_tree(dir);
}
END_TEST

/* The numbers of a batch body: each lookup with one out of range or not whole is its own
 * bad-parameter result naming it (with float-cast-overflow in the sanitizer build, 1e300 once
 * converted to int64_t without a check ended the server: issue 11). */
START_TEST(test_batch_body_numbers)
{
  static const struct {
    const char *field, *number;
  } bad[] = {{"mtime", "1e300"}, {"mtime", "-1e300"}, {"mtime", "1.5"},
             {"mtime", "9223372036854775808"}, {"size", "1e300"}, {"size", "-1"},
             {"hash", "1e300"}, {"hash", "2147483648"}, {"opt", "1e300"}, {"opt", "3"}};
  char body[4096];
  size_t len = (size_t)snprintf(body, sizeof body, "{\"lookups\": [");
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) /* the first of two keys counts */
    len += (size_t)snprintf(body + len, sizeof body - len,
                            "{\"%s\": %s, \"magic\": \"a70d0d0a\", \"path\": \"/a.py\", "
                            "\"mtime\": 1, \"size\": 2}, ", bad[i].field, bad[i].number);
  len += (size_t)snprintf(body + len, sizeof body - len,
                          "{\"magic\": \"a70d0d0a\", \"path\": \"/a.py\", \"mtime\": 1e3, "
                          "\"size\": 2}, {\"magic\": \"a70d0d0a\", \"path\": \"/a.py\", "
                          "\"mtime\": \"1000\", \"size\": 2.0}]}");
  pcc_body_lookup *lookups = NULL;
  size_t n = 0;
  ck_assert_int_eq(pcc_body_batch_parse((const uint8_t *)body, len, 1000, 14, 1u << 20, &lookups,
                                        &n), PCC_PROTO_OK);
  const size_t n_bad = sizeof bad / sizeof bad[0];
  ck_assert_uint_eq(n, n_bad + 2);
  for (size_t i = 0; i < n_bad; i++) {
    ck_assert_msg(lookups[i].error != NULL, "%s: %s", bad[i].field, bad[i].number);
    cJSON *error = cJSON_Parse(lookups[i].error);
    ck_assert_str_eq(cJSON_GetObjectItem(error, "error")->valuestring, "bad-parameter");
    ck_assert_str_eq(cJSON_GetObjectItem(error, "param")->valuestring, bad[i].field);
    cJSON_Delete(error);
  }
  /* 1e3 is the whole number 1000: valid, and the same lookup as "1000" with size 2.0 */
  ck_assert_ptr_null(lookups[n_bad].error);
  ck_assert_int_eq(lookups[n_bad].params.mtime, 1000);
  ck_assert_ptr_null(lookups[n_bad + 1].error);
  ck_assert_uint_eq(lookups[n_bad + 1].same_as, n_bad);
  pcc_body_lookups_free(lookups, n);

  /* a report's counts: whole, 0..1e9 */
  pcc_body_report report;
  static const char ok_report[] = "{\"fallbacks\": {\"miss\": 1000000000, \"timeout\": 0}}";
  ck_assert(pcc_body_report_parse((const uint8_t *)ok_report, strlen(ok_report), &report));
  ck_assert_uint_eq(report.n, 2);
  ck_assert_uint_eq(report.items[0].count, 1000000000);
  pcc_body_report_free(&report);
  static const char *const bad_reports[] = {
    "{\"fallbacks\": {\"miss\": 1e300}}", "{\"fallbacks\": {\"miss\": 1000000001}}",
    "{\"fallbacks\": {\"miss\": -1}}", "{\"fallbacks\": {\"miss\": 0.5}}",
    "{\"fallbacks\": {\"Miss\": 1}}"};
  for (size_t i = 0; i < sizeof bad_reports / sizeof bad_reports[0]; i++)
    ck_assert_msg(!pcc_body_report_parse((const uint8_t *)bad_reports[i], strlen(bad_reports[i]),
                                         &report), "%s", bad_reports[i]);
}
END_TEST

/* pcc_auth_parse reads a token file's bytes as pcc_auth_open reads the file. */
START_TEST(test_auth_parse_is_open_without_the_file)
{
  static const char text[] = "{\"tokens\": [{\"name\": \"ops\", \"token\": "
                             "\"ops-2c8e4a6f0b1d9e37\", \"roles\": [\"admin\"]}]}";
  char error[256] = "";
  pcc_auth *auth = NULL;
  CHECK_RC(pcc_auth_parse(text, strlen(text), &auth, error, sizeof error), pcc_auth_strerror);
  ck_assert_uint_eq(pcc_auth_count(auth), 1);
  ck_assert_int_eq(pcc_auth_check(auth, "Bearer ops-2c8e4a6f0b1d9e37", PCC_ROLE_ADMIN, NULL),
                   PCC_AUTH_OK);
  ck_assert_int_eq(pcc_auth_reload(auth, error, sizeof error), PCC_AUTH_BAD_FILE);
  pcc_auth_close(auth);
  auth = NULL;
  /* read up to a NUL, as the file is; a text over the file limit is refused */
  char cut[sizeof text + 8];
  memcpy(cut, text, sizeof text);
  memcpy(cut + 20, "\0", 1);
  ck_assert_int_eq(pcc_auth_parse(cut, sizeof text, &auth, error, sizeof error),
                   PCC_AUTH_BAD_FILE);
  ck_assert_ptr_null(auth);
  char *big = calloc(PCC_TOKENS_FILE_MAX + 2, 1);
  ck_assert_ptr_nonnull(big);
  memset(big, ' ', PCC_TOKENS_FILE_MAX + 1);
  memcpy(big, text, strlen(text));
  ck_assert_int_eq(pcc_auth_parse(big, PCC_TOKENS_FILE_MAX + 1, &auth, error, sizeof error),
                   PCC_AUTH_BAD_FILE);
  ck_assert_int_eq(pcc_auth_parse(big, PCC_TOKENS_FILE_MAX, &auth, error, sizeof error),
                   PCC_AUTH_OK);
  pcc_auth_close(auth);
  free(big);
}
END_TEST

/* Rendezvous hashing (server/shared.c): deterministic, spread over the servers, and a server
 * taken out moves only its own keys, each to the next of its ranking. */
START_TEST(test_shared_rendezvous)
{
  const char *ids[] = {"10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"};
  unsigned counts[3] = {0}, moved = 0;
  pcc_magic magic = {{0xa7, 0x0d, 0x0d, 0x0a}};
  for (unsigned k = 0; k < 3000; k++) {
    pcc_digest digest;
    pcc_digest_compute(&k, sizeof k, &digest);
    char key[PCC_SHARED_KEY_LEN + 1];
    pcc_shared_key("blob", &magic, (int)(k % 3), &digest, key);
    ck_assert_int_eq(strncmp(key, "pcc:v1:blob:a70d0d0a:", 21), 0);
    unsigned order[3], again[3], without_first[2];
    pcc_shared_rank(ids, 3, key, order);
    pcc_shared_rank(ids, 3, key, again);
    ck_assert_mem_eq(order, again, sizeof order);
    ck_assert_uint_ne(order[0], order[1]);
    ck_assert_uint_ne(order[1], order[2]);
    ck_assert_uint_ne(order[0], order[2]);
    counts[order[0]]++;
    /* without server 0: keys it did not own stay, its own go to their second choice */
    pcc_shared_rank(ids + 1, 2, key, without_first);
    unsigned owner = without_first[0] + 1;
    if (order[0] == 0) {
      ck_assert_uint_eq(owner, order[1]);
      moved++;
    } else {
      ck_assert_uint_eq(owner, order[0]);
    }
  }
  for (unsigned i = 0; i < 3; i++) /* about 1000 each */
    ck_assert_msg(counts[i] > 850 && counts[i] < 1150, "server %u owns %u of 3000", i,
                  counts[i]);
  ck_assert_uint_eq(moved, counts[0]);
}
END_TEST

/* A bad --shared list is refused with a message naming the problem; a good one opens without
 * connecting anywhere. */
START_TEST(test_shared_lists)
{
  pcc_shared_config config = {50, 100, 60, 1000, NULL, NULL, NULL};
  const char *bad[] = {"", "redis://", "redis://host", "redis://:6379", "redis://h:0",
                       "redis://h:65536", "redis://h:12x", "http://h:1", "redis://h:1,redis://h:1",
                       "redis://h:1,"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    pcc_shared *shared = NULL;
    char err[256];
    ck_assert_msg(pcc_shared_open(bad[i], &config, err, sizeof err, &shared) ==
                  PCC_SHARED_INVALID, "%s was accepted", bad[i]);
    ck_assert_ptr_null(shared);
    ck_assert_ptr_nonnull(strstr(err, "--shared"));
  }
  pcc_shared *shared = NULL;
  ck_assert_int_eq(pcc_shared_open("redis://127.0.0.1:1,redis://localhost:6380", &config, NULL,
                                   0, &shared), PCC_SHARED_OK);
  ck_assert_uint_eq(pcc_shared_servers(shared), 2);
  ck_assert_str_eq(pcc_shared_server_id(shared, 1), "localhost:6380");
  ck_assert(pcc_shared_server_up(shared, 0)); /* nothing tried yet */
  pcc_shared_close(shared);
  pcc_shared_close(NULL);
}
END_TEST

/* The --shared-password-file file: one of the right mode opens (its trailing newline aside, a
 * byte under the limit fits), whatever else is refused at open with the option named and never
 * the password; a FIFO is refused at once, not waited on. --shared-user needs the file. */
START_TEST(test_shared_password_files)
{
  char dir[] = "/tmp/pcc-test-shared-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char good[64], fifo[64], big[64];
  snprintf(good, sizeof good, "%s/good", dir);
  snprintf(fifo, sizeof fifo, "%s/fifo", dir);
  snprintf(big, sizeof big, "%s/big", dir);
  static char password[PCC_SHARED_PASSWORD_MAX + 1];
  memset(password, 's', PCC_SHARED_PASSWORD_MAX);
  password[PCC_SHARED_PASSWORD_MAX] = '\n'; /* the limit and a newline: fits */
  int fd = open(good, O_WRONLY | O_CREAT | O_EXCL, 0600);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, password, sizeof password), (ssize_t)sizeof password);
  close(fd);
  fd = open(big, O_WRONLY | O_CREAT | O_EXCL, 0600);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, password, PCC_SHARED_PASSWORD_MAX), PCC_SHARED_PASSWORD_MAX);
  ck_assert_int_eq(write(fd, "ss", 2), 2); /* a byte over, no newline */
  close(fd);
  ck_assert_int_eq(mkfifo(fifo, 0600), 0);
  pcc_shared_config config = {50, 100, 60, 1000, NULL, good, "alice"};
  pcc_shared *shared = NULL;
  char err[512];
  ck_assert_int_eq(pcc_shared_open("redis://127.0.0.1:1", &config, err, sizeof err, &shared),
                   PCC_SHARED_OK);
  pcc_shared_close(shared);
  const struct {
    const char *file, *user, *what;
  } bad[] = {
    {fifo, NULL, "not a regular file"}, {dir, NULL, "not a regular file"},
    {big, NULL, "larger than the limit"}, {NULL, "alice", "without --shared-password-file"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    config.password_file = bad[i].file;
    config.user = bad[i].user;
    shared = NULL;
    ck_assert_int_eq(pcc_shared_open("redis://127.0.0.1:1", &config, err, sizeof err, &shared),
                     PCC_SHARED_INVALID);
    ck_assert_ptr_null(shared);
    ck_assert_msg(strstr(err, bad[i].what) != NULL, "%s", err);
    ck_assert_msg(strstr(err, bad[i].file ? "--shared-password-file" : "--shared-user") != NULL,
                  "%s", err);
    ck_assert_ptr_null(strstr(err, "ssss"));
  }
  unlink(good);
  unlink(big);
  unlink(fifo);
  rmdir(dir);
}
END_TEST

/* A bad --upstream list is refused with a message naming the problem; a good one opens without
 * connecting anywhere; a token file that cannot be read is refused at open. */
START_TEST(test_upstream_lists)
{
  pcc_upstream_config config = {200, 1000, NULL, NULL};
  const char *bad[] = {"", "ftp://h", "http://", "h:1", "http://h:1,", ",http://h:1",
                       "unix:relative.sock", "redis://h:1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    pcc_upstream *upstream = NULL;
    char err[512];
    ck_assert_msg(!pcc_upstream_list_valid(bad[i], err, sizeof err), "%s was valid", bad[i]);
    ck_assert_msg(pcc_upstream_open(bad[i], &config, err, sizeof err, &upstream) ==
                  PCC_UPSTREAM_INVALID, "%s was accepted", bad[i]);
    ck_assert_ptr_null(upstream);
    ck_assert_ptr_nonnull(strstr(err, "--upstream"));
  }
  char many[16 * 24] = "";
  for (int i = 0; i <= PCC_UPSTREAMS_MAX; i++)
    snprintf(many + strlen(many), sizeof many - strlen(many), "%shttp://h:%d", i ? "," : "",
             i + 1);
  char err[512];
  ck_assert(!pcc_upstream_list_valid(many, err, sizeof err));
  ck_assert_ptr_nonnull(strstr(err, "more than"));
  pcc_upstream *upstream = NULL;
  ck_assert_int_eq(pcc_upstream_open("http://127.0.0.1:1,unix:/nonexistent/p.sock", &config,
                                     err, sizeof err, &upstream), PCC_UPSTREAM_OK);
  ck_assert_uint_eq(pcc_upstream_count(upstream), 2);
  ck_assert_str_eq(pcc_upstream_url(upstream, 1), "unix:/nonexistent/p.sock");
  ck_assert(pcc_upstream_up(upstream, 0)); /* nothing tried yet */
  pcc_upstream_close(upstream);
  pcc_upstream_close(NULL);
  config.token_file = "/nonexistent/token";
  upstream = NULL;
  ck_assert_int_eq(pcc_upstream_open("http://127.0.0.1:1", &config, err, sizeof err, &upstream),
                   PCC_UPSTREAM_INVALID);
  ck_assert_ptr_null(upstream);
  ck_assert_ptr_nonnull(strstr(err, "--upstream-token-file"));
}
END_TEST

/* An upstream that refuses connections fails the compile at once (counted an error) and is then
 * skipped without a connect (counted skipped) until its backoff ends; nothing is handed out. */
START_TEST(test_upstream_breaker)
{
  pcc_upstream_config config = {200, 1000, NULL, NULL};
  pcc_upstream *upstream = NULL;
  ck_assert_int_eq(pcc_upstream_open("http://127.0.0.1:1,unix:/nonexistent/p.sock", &config,
                                     NULL, 0, &upstream), PCC_UPSTREAM_OK);
  pcc_magic magic;
  ck_assert_int_eq(pcc_magic_from_hex("a70d0d0a", &magic), PCC_PROTO_OK);
  static const uint8_t source[] = "X = 1\n";
  pcc_path_record record = {1700000000, sizeof source - 1, pcc_java_hash(source, sizeof source - 1),
                            {{0}}};
  pcc_digest_compute(source, sizeof source - 1, &record.digest);
  pcc_blob *blob = NULL;
  ck_assert_int_eq(pcc_upstream_compile(upstream, &magic, 0, "/tmp/x.py", &record, source,
                                        sizeof source - 1, &blob), PCC_UPSTREAM_DOWN);
  ck_assert_ptr_null(blob);
  pcc_upstream_figures f;
  pcc_upstream_figures_get(upstream, &f);
  ck_assert_uint_eq(f.errors, 2);
  ck_assert_uint_eq(f.misses, 1);
  ck_assert_uint_eq(f.skipped, 0);
  ck_assert(!pcc_upstream_up(upstream, 0) && !pcc_upstream_up(upstream, 1));
  ck_assert_int_eq(pcc_upstream_compile(upstream, &magic, 0, "/tmp/x.py", &record, source,
                                        sizeof source - 1, &blob), PCC_UPSTREAM_DOWN);
  pcc_upstream_figures_get(upstream, &f);
  ck_assert_uint_eq(f.errors, 2); /* not tried again within the backoff */
  ck_assert_uint_eq(f.skipped, 2);
  usleep((PCC_UPSTREAM_BACKOFF_MIN_MS + 50) * 1000);
  ck_assert_int_eq(pcc_upstream_compile(upstream, &magic, 0, "/tmp/x.py", &record, source,
                                        sizeof source - 1, &blob), PCC_UPSTREAM_DOWN);
  pcc_upstream_figures_get(upstream, &f);
  ck_assert_uint_eq(f.errors, 4); /* probed again after it */
  cJSON *json = pcc_upstream_json(upstream);
  ck_assert_ptr_nonnull(json);
  ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(json, "servers")), 2);
  cJSON_Delete(json);
  pcc_upstream_close(upstream);
}
END_TEST

static Suite *server_suite(void)
{
  Suite *suite = suite_create("server");
  TCase *flight = tcase_create("single-flight");
  tcase_set_timeout(flight, 120);
  tcase_add_test(flight, test_single_flight_joiners_share_one_compile);
  tcase_add_test(flight, test_single_flight_abandoned_waiters);
  tcase_add_test(flight, test_single_flight_worker_death_releases_waiters);
  tcase_add_test(flight, test_shutdown_releases_queued_waiters);
  suite_add_tcase(suite, flight);
  TCase *bundles = tcase_create("bundles");
  tcase_set_timeout(bundles, 120);
  tcase_add_test(bundles, test_bundle_cache_keeps_and_evicts);
  tcase_add_test(bundles, test_bundle_cache_off);
  suite_add_tcase(suite, bundles);
  TCase *bounds = tcase_create("bounds");
  tcase_set_timeout(bounds, 120);
  tcase_add_test(bounds, test_counters_fold_refused_magics);
  tcase_add_test(bounds, test_made_up_magics_fold_into_other);
  tcase_add_test(bounds, test_counters_zero_keeps_magics_and_entry_hits);
  tcase_add_test(bounds, test_compile_queue_is_bounded);
  tcase_add_test(bounds, test_batch_is_deduplicated_streamed_and_capped);
  tcase_add_test(bounds, test_shutdown_waits_for_a_backup);
  suite_add_tcase(suite, bounds);
  TCase *config = tcase_create("config");
  tcase_add_test(config, test_config_defaults_are_the_limits);
  tcase_add_test(config, test_config_values_and_bounds);
  tcase_add_test(config, test_config_store_sizes);
  tcase_add_test(config, test_config_listen_forms);
  tcase_add_test(config, test_config_size_overflow);
  tcase_add_test(config, test_config_unknown_options_are_refused);
  tcase_add_test(config, test_config_file);
  tcase_add_test(config, test_config_environment);
  tcase_add_test(config, test_limits_table);
  tcase_add_test(config, test_route_table_is_sound);
  tcase_add_test(config, test_roles_against_the_route_table);
  tcase_add_test(config, test_messages_cut_between_characters);
  suite_add_tcase(suite, config);
  TCase *shared = tcase_create("shared");
  tcase_add_test(shared, test_shared_rendezvous);
  tcase_add_test(shared, test_shared_lists);
  tcase_add_test(shared, test_shared_password_files);
  suite_add_tcase(suite, shared);
  TCase *upstream = tcase_create("upstream");
  tcase_add_test(upstream, test_upstream_lists);
  tcase_add_test(upstream, test_upstream_breaker);
  suite_add_tcase(suite, upstream);
  TCase *bodies = tcase_create("bodies");
  tcase_add_test(bodies, test_batch_body_numbers);
  tcase_add_test(bodies, test_auth_parse_is_open_without_the_file);
  suite_add_tcase(suite, bodies);
  return suite;
}

int main(void)
{
  return test_run_suite(server_suite());
}
