/* core.c: the core of pycached (core.h): configuration, store, compiler backends, source roots,
 * counters and the validated lookup, and the store's upkeep: a thread that writes the last uses
 * of blobs in batches, evicts the least recently used past --max-size and drops profiles older
 * than --profile-days (docs/DESIGN.md, "Eviction"), never on the lookup path, and gives the
 * server's free memory back to the kernel after compiles (DESIGN.md, "Memory"). */
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core.h"
#include "pcc_log.h"

#define WORKER_NAME "pycached-cpython-worker"
#define UPKEEP_TICK_MS 250            /* how often the upkeep thread looks at the store */
#define UPKEEP_LOG_SECONDS 60         /* evictions are logged at most this often, summed */
#define PROFILE_EXPIRY_SECONDS 3600   /* how often old profiles are looked for */
#define WORKER_SCRIPT "worker.py"

/* The magics the store holds, for the counters: read when first needed, then again when the
 * store has changed (its generation), at most every PCC_MAGICS_REFRESH seconds. Guarded by lock. */
typedef struct {
  pthread_mutex_t lock;
  bool read;
  uint64_t generation; /* of the store when read */
  time_t at;           /* when read */
  pcc_magic magics[PCC_MAGICS_COUNTED];
  unsigned n;
} stored_magics;

struct pcc_core {
  pcc_config config;
  pcc_store *store;
  pcc_counters *counters;
  pcc_shared *shared;   /* --shared; NULL: none */
  pcc_upstream *upstream; /* --upstream; NULL: none */
  pcc_sources *sources; /* the --source-root directories */
  pcc_backend backends[PCC_MAX_COMPILERS + 1]; /* [0]: the default: the embedded CPython, or
                                                * with --no-embedded the first --compiler */
  unsigned n_backends;
  stored_magics stored;
  time_t started;
  pthread_t upkeep;        /* the store's upkeep thread, when upkeep_running */
  bool upkeep_running;
  bool stopping;           /* guarded by lock: the upkeep thread ends */
  pthread_mutex_t lock;
  pthread_cond_t wake;
};

const char *pcc_core_strerror(pcc_core_status rc)
{
  switch (rc) {
  case PCC_CORE_OK: return "ok";
  case PCC_CORE_STORE: return "cannot open the store";
  case PCC_CORE_COMPILER: return "cannot start the compiler workers";
  case PCC_CORE_CONFIG: return "bad configuration";
  case PCC_CORE_NOMEM: return "out of memory";
  case PCC_CORE_DAMAGED: return "the store is damaged";
  }
  return "unknown core status";
}

/* ---- backends -------------------------------------------------------------------------- */

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

/* Started as root without --worker-user, the workers run as the first id from WORKER_ID_BASE on
 * (at most WORKER_ID_SCAN tried) that names neither a user nor a group. 70000 lies outside the
 * ranges others allocate from: Debian's system and on-demand ids (up to 64999), systemd's
 * DynamicUser= ids (61184..65519), nobody (65534) and the subordinate ids of /etc/subuid (from
 * 100000 by default). */
#define WORKER_ID_BASE 70000u
#define WORKER_ID_SCAN 1000u

/* Whether id names no user and no group; an error of the user database counts as a name. */
static bool id_unnamed(unsigned id)
{
  struct passwd user, *user_found = NULL;
  struct group group, *group_found = NULL;
  char buf[4096];
  int rc = getpwuid_r((uid_t)id, &user, buf, sizeof buf, &user_found);
  if ((rc != 0 && rc != ENOENT && rc != ESRCH) || user_found != NULL)
    return false;
  rc = getgrgid_r((gid_t)id, &group, buf, sizeof buf, &group_found);
  return (rc == 0 || rc == ENOENT || rc == ESRCH) && group_found == NULL;
}

/* The user the workers run as. A compiler should not run with the server's rights, least of all
 * root's: started as root, the server runs them as --worker-user, else as a uid and gid of their
 * own that no file, process or other service on the host has (nobody's are shared with every
 * service that uses it; a subverted worker could signal or trace those). Not root, they keep the
 * server's unprivileged user. False when the named user does not exist or no id is free. */
static bool worker_identity(const pcc_config *config, pcc_compiler_config *out)
{
  const char *name = config->worker_user;
  if (name == NULL && geteuid() != 0)
    return true; /* not root: the workers keep the server's (unprivileged) user */
  if (name == NULL) {
    for (unsigned id = WORKER_ID_BASE; id < WORKER_ID_BASE + WORKER_ID_SCAN; id++) {
      if (id_unnamed(id)) {
        pcc_logf(PCC_LOG_INFO, "compiler workers run as uid and gid %u (no user's)", id);
        out->drop_privileges = true;
        out->uid = (uid_t)id;
        out->gid = (gid_t)id;
        return true;
      }
    }
    pcc_logf(PCC_LOG_ERROR, "no free uid for the compiler workers in %u..%u (--worker-user)",
      WORKER_ID_BASE, WORKER_ID_BASE + WORKER_ID_SCAN - 1);
    return false;
  }
  struct passwd entry, *found = NULL;
  char buf[4096];
  if (getpwnam_r(name, &entry, buf, sizeof buf, &found) != 0 || found == NULL) {
    pcc_logf(PCC_LOG_ERROR, "no user %s for the compiler workers", name);
    return false;
  }
  out->drop_privileges = true;
  out->uid = found->pw_uid;
  out->gid = found->pw_gid;
  return true;
}

/* After a failed start: when the workers' uid cannot search a directory on the way to the
 * interpreter or the worker script, says which, and what to do. The pool exposes an interpreter
 * behind such a directory in a private mount namespace (compiler.h); this is what is left when
 * it could not (no CAP_SYS_ADMIN, as in some containers; the directory inside the prefix; the
 * worker script behind it). */
static void unreachable_hint(const pcc_compiler_config *compiler_config)
{
  if (!compiler_config->drop_privileges)
    return;
  for (const char *const *arg = compiler_config->argv; *arg; arg++) {
    char dir[PATH_MAX];
    unsigned mode = 0;
    if ((*arg)[0] != '/' ||
        !pcc_compiler_unreachable(*arg, compiler_config->uid, compiler_config->gid, dir,
                                  sizeof dir, &mode))
      continue;
    pcc_logf(PCC_LOG_ERROR, "the compiler workers' uid %u cannot search %s (mode %04o) on the "
      "way to %s%s; fix: install the interpreter where uid %u can reach it, grant it "
      "(chmod o+x %s, or setfacl -m u:%u:x %s), or choose the workers' user "
      "(--worker-user)", (unsigned)compiler_config->uid, dir, mode, *arg,
      arg == compiler_config->argv
        ? ", and its prefix could not be exposed to them in a private mount namespace "
          "(needs CAP_SYS_ADMIN; the closed directory must lie above PREFIX/bin)"
        : "",
      (unsigned)compiler_config->uid, dir, (unsigned)compiler_config->uid, dir);
    return;
  }
}

/* Starts one backend's worker pool. interpreter NULL: the embedded CPython. */
static pcc_core_status backend_start(pcc_core *core, const char *interpreter)
{
  const pcc_config *config = &core->config;
  pcc_backend *backend = &core->backends[core->n_backends];
  char program[PATH_MAX];
  const char *argv[6] = {NULL};
  if (interpreter == NULL) {
    if (!find_worker(config, program, sizeof program)) {
      pcc_logf(PCC_LOG_ERROR, "compiler worker %s is not executable (see --worker)", program);
      return PCC_CORE_CONFIG;
    }
    argv[0] = program;
  } else {
    if (access(interpreter, X_OK) != 0 || !find_worker_script(program, sizeof program)) {
      pcc_logf(PCC_LOG_ERROR, "--compiler %s: not executable, or %s missing", interpreter,
        WORKER_SCRIPT);
      return PCC_CORE_CONFIG;
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
    .max_frame = 0, /* the frame limit of pcc_limits.h */
    .max_compiles = (unsigned)config->worker_recycle,
    .max_rss = config->worker_rss,
  };
  if (!worker_identity(config, &compiler_config))
    return PCC_CORE_CONFIG;
  pcc_compiler_status rc = pcc_compiler_open(&compiler_config, &backend->compiler);
  if (rc != PCC_COMPILER_OK) {
    pcc_logf(PCC_LOG_ERROR, "%s: %s", argv[0], pcc_compiler_strerror(rc));
    unreachable_hint(&compiler_config);
    return PCC_CORE_COMPILER;
  }
  if (pcc_core_backend_for(core, pcc_compiler_magic(backend->compiler)) >= 0) {
    pcc_logf(PCC_LOG_ERROR, "--compiler %s: another backend already compiles its magic",
      interpreter);
    pcc_compiler_close(backend->compiler);
    backend->compiler = NULL;
    return PCC_CORE_CONFIG;
  }
  snprintf(backend->name, sizeof backend->name, "%s", pcc_compiler_name(backend->compiler));
  snprintf(backend->interpreter, sizeof backend->interpreter, "%s",
           interpreter ? interpreter : "embedded");
  core->n_backends++;
  return PCC_CORE_OK;
}

unsigned pcc_core_backends(const pcc_core *core, const pcc_backend **first)
{
  *first = core->backends;
  return core->n_backends;
}

int pcc_core_backend_for(const pcc_core *core, const pcc_magic *magic)
{
  for (unsigned i = 0; i < core->n_backends; i++)
    if (pcc_magic_equal(magic, pcc_compiler_magic(core->backends[i].compiler)))
      return (int)i;
  return -1;
}

void pcc_core_answer_unsupported(const pcc_core *core, pcc_answer *answer)
{
  pcc_answer_error(answer, PCC_ERR_UNSUPPORTED_MAGIC, "no compiler for this magic number");
  answer->extra = cJSON_CreateObject();
  cJSON *magics = cJSON_AddArrayToObject(answer->extra, "magics");
  for (unsigned i = 0; i < core->n_backends; i++) {
    char hex[2 * PCC_MAGIC_LEN + 1];
    pcc_magic_to_hex(pcc_compiler_magic(core->backends[i].compiler), hex);
    cJSON_AddItemToArray(magics, cJSON_CreateString(hex));
  }
}

/* ---- counted magics --------------------------------------------------------------------- */

static void add_stored_magic(const pcc_magic *magic, uint64_t entries, uint64_t bytes, void *ctx)
{
  (void)entries;
  (void)bytes;
  stored_magics *stored = ctx;
  if (stored->n < PCC_MAGICS_COUNTED)
    stored->magics[stored->n++] = *magic;
}

/* The counters' admit: a magic gets counters of its own when a backend serves it or the store
 * holds it; the magics clients make up are counted together in "other" (docs/API.md). */
static bool counted_magic(void *ctx, const pcc_magic *magic)
{
  pcc_core *core = ctx;
  if (pcc_core_backend_for(core, magic) >= 0)
    return true;
  stored_magics *stored = &core->stored;
  pthread_mutex_lock(&stored->lock);
  uint64_t generation = pcc_store_generation(core->store);
  time_t now = time(NULL);
  if (!stored->read ||
      (generation != stored->generation && now - stored->at >= PCC_MAGICS_REFRESH)) {
    stored->n = 0;
    stored->read = pcc_store_magics(core->store, add_stored_magic, stored) == PCC_STORE_OK;
    stored->generation = generation;
    stored->at = now;
  }
  bool found = false;
  for (unsigned i = 0; i < stored->n && !found; i++)
    found = pcc_magic_equal(&stored->magics[i], magic);
  pthread_mutex_unlock(&stored->lock);
  return found;
}

/* ---- the store's upkeep ------------------------------------------------------------------ */

typedef struct {
  time_t last_flush, last_expiry, last_log, last_trim;
  uint64_t trimmed_generation; /* the store's generation at the last malloc_trim */
  uint64_t evicted_unlogged; /* blobs evicted since the last log line */
  pcc_store_status failed[3]; /* the last outcome of eviction, flushes, expiry: logged on a
                                 change only */
} upkeep_state;

enum { UPKEEP_EVICT, UPKEEP_FLUSH, UPKEEP_EXPIRE };

/* Logs a failure of one kind of upkeep when it differs from that kind's last outcome. */
static void upkeep_log_failure(upkeep_state *state, int kind, pcc_store_status rc)
{
  static const char *const what[] = {"eviction", "writing the last uses",
                                     "dropping old profiles"};
  if (rc != PCC_STORE_OK && rc != state->failed[kind])
    pcc_logf(PCC_LOG_ERROR, "store upkeep: %s: %s", what[kind], pcc_store_strerror(rc));
  state->failed[kind] = rc;
}

/* One round: evict past --max-size (which writes the uses first), else write the uses when
 * enough wait or they have waited long enough, and now and then drop old profiles. */
static void upkeep_round(pcc_core *core, upkeep_state *state)
{
  const pcc_config *config = &core->config;
  time_t now = time(NULL);
  uint64_t evicted = 0;
  pcc_store_status rc = pcc_store_evict(core->store, &evicted);
  upkeep_log_failure(state, UPKEEP_EVICT, rc);
  if (evicted > 0)
    state->last_flush = now; /* eviction wrote the uses */
  state->evicted_unlogged += evicted;
  if (state->evicted_unlogged > 0 && now - state->last_log >= UPKEEP_LOG_SECONDS) {
    pcc_logf(PCC_LOG_INFO, "evicted %llu least recently used blobs (and the entries naming "
       "them) to keep the store under --max-size %llu bytes",
       (unsigned long long)state->evicted_unlogged, (unsigned long long)config->max_size);
    state->evicted_unlogged = 0;
    state->last_log = now;
  }
  size_t pending = pcc_store_pending_uses(core->store);
  if (pending > 0 && (pending >= PCC_USE_TABLE_SLOTS / 4 ||
                      now - state->last_flush >= PCC_USE_FLUSH_SECONDS)) {
    upkeep_log_failure(state, UPKEEP_FLUSH, pcc_store_flush_uses(core->store, NULL));
    state->last_flush = now;
  }
  if (config->profile_days > 0 && now - state->last_expiry >= PROFILE_EXPIRY_SECONDS) {
    uint64_t removed = 0;
    rc = pcc_store_profiles_expire(core->store,
                                   (int64_t)now - (int64_t)config->profile_days * 86400,
                                   &removed);
    upkeep_log_failure(state, UPKEEP_EXPIRE, rc);
    if (removed > 0)
      pcc_logf(PCC_LOG_INFO, "dropped %llu profiles not updated for %llu days",
         (unsigned long long)removed, (unsigned long long)config->profile_days);
    state->last_expiry = now;
  }
  /* Compiles free source, frame and marshal buffers in every HTTP and dispatch thread's arena;
   * give the free pages back while the store changes, and once after a burst ends. */
  uint64_t generation = pcc_store_generation(core->store);
  if (generation != state->trimmed_generation && now - state->last_trim >= PCC_TRIM_SECONDS) {
    malloc_trim(0);
    state->trimmed_generation = generation;
    state->last_trim = now;
  }
}

/* glibc's allocator, as the server uses it: fixed thresholds instead of the sliding ones, under
 * which freeing one large mapped buffer (a source, a frame from a worker, a response) raised the
 * mapping threshold to its size, so that every later buffer of up to that size came from the
 * arenas of the HTTP and dispatch threads and stayed there once freed (100 MB after three
 * prewarms of sympy, 93 MB of it free). Called before any thread starts. */
static void memory_policy(void)
{
  (void)mallopt(M_MMAP_THRESHOLD, (int)PCC_MALLOC_MMAP_THRESHOLD);
  (void)mallopt(M_TRIM_THRESHOLD, (int)PCC_MALLOC_TRIM_THRESHOLD);
}

static void *upkeep_main(void *arg)
{
  pcc_core *core = arg;
  upkeep_state state = {time(NULL), 0, 0, 0, 0, 0,
                        {PCC_STORE_OK, PCC_STORE_OK, PCC_STORE_OK}};
  pthread_mutex_lock(&core->lock);
  while (!core->stopping) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += UPKEEP_TICK_MS * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&core->wake, &core->lock, &until);
    if (core->stopping)
      break;
    pthread_mutex_unlock(&core->lock);
    upkeep_round(core, &state);
    pthread_mutex_lock(&core->lock);
  }
  pthread_mutex_unlock(&core->lock);
  return NULL;
}

cJSON *pcc_core_store_json(pcc_core *core)
{
  pcc_store_stats stats;
  if (pcc_store_stat(core->store, &stats) != PCC_STORE_OK)
    return cJSON_CreateObject();
  const struct {
    const char *name;
    uint64_t value;
  } figures[] = {
    {"entries", stats.entries},   {"blobs", stats.blobs},       {"bytes", stats.bytes},
    {"max_size", stats.max_size}, {"profiles", stats.profiles}, {"used", stats.used},
    {"free", stats.free},         {"map_size", stats.map_size}, {"page_size", stats.page_size},
    {"evictions", stats.evictions},
  };
  cJSON *json = cJSON_CreateObject();
  for (size_t i = 0; i < sizeof figures / sizeof figures[0]; i++)
    cJSON_AddNumberToObject(json, figures[i].name, (double)figures[i].value);
  cJSON_AddBoolToObject(json, "damaged", stats.damaged);
  cJSON_AddNumberToObject(json, "corruptions", (double)stats.corruptions);
  return json;
}

/* ---- a damaged store (docs/OPERATIONS.md, "A damaged store") ----------------------------- */

#define CHECK_LINES_MAX 20 /* problems the check at start prints */

static void print_problem(const char *line, void *ctx)
{
  unsigned *printed = ctx;
  if ((*printed)++ < CHECK_LINES_MAX)
    pcc_logf(PCC_LOG_WARN, "store check: %s", line);
}

/* Moves data.mdb and lock.mdb of dir aside, as NAME.damaged-YYYYmmddTHHMMSSZ in dir. False
 * (printed) when data.mdb cannot be moved. */
static bool quarantine(const char *dir)
{
  char stamp[32], from[PATH_MAX], to[PATH_MAX];
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  static const char *const names[] = {"data.mdb", "lock.mdb"};
  for (size_t i = 0; i < 2; i++) {
    int a = snprintf(from, sizeof from, "%s/%s", dir, names[i]);
    int b = snprintf(to, sizeof to, "%s/%s.damaged-%s", dir, names[i], stamp);
    if (a <= 0 || (size_t)a >= sizeof from || b <= 0 || (size_t)b >= sizeof to)
      return false;
    if (rename(from, to) != 0 && (i == 0 || errno != ENOENT)) {
      pcc_logf(PCC_LOG_ERROR, "cannot move %s to %s: %s", from, to, strerror(errno));
      return false;
    }
    if (i == 0)
      pcc_logf(PCC_LOG_WARN, "--on-damaged-store=quarantine: the damaged store was moved to "
         "%s; starting on an empty store (it fills again as clients compile)", to);
  }
  return true;
}

/* Opens the store and checks it (every table walked, every record's bounds, order and shape, for
 * at most PCC_STORE_CHECK_SECONDS: a full check of a large store, blobs' checksums included,
 * is --verify-store's), then applies --on-damaged-store to a damaged one. */
static pcc_core_status open_store(pcc_core *core)
{
  const pcc_config *config = &core->config;
  pcc_store_config store_config = {.map_size = config->map_size,
                                   .max_size = config->max_size,
                                   .compress = strcmp(config->store_compression, "zstd") == 0,
                                   .max_profiles = config->max_profiles};
  pcc_store_status rc = pcc_store_open(config->store_dir, &store_config, &core->store);
  bool damaged = rc == PCC_STORE_DAMAGED;
  if (rc == PCC_STORE_OK) {
    pcc_store_report report;
    unsigned printed = 0;
    rc = pcc_store_verify(core->store, false, PCC_STORE_CHECK_SECONDS, print_problem, &printed,
                          &report);
    if (rc == PCC_STORE_OK && !report.complete)
      pcc_logf(PCC_LOG_WARN, "store check: stopped after %u s (%llu records looked at): run "
         "pycached --verify-store for a full check", PCC_STORE_CHECK_SECONDS,
         (unsigned long long)report.records);
    /* The check reads no payloads: what it finds is damage to LMDB's pages or to the shape of
     * records, which a later write could spread (LMDB edits a page by its nodes' sizes), so any
     * of it is a damaged store. Blobs whose bytes changed are found by their checksums when
     * read, missed, and replaced by the next compile. */
    damaged = rc == PCC_STORE_OK && (report.structural > 0 || report.damaged > 0);
    if (damaged) {
      pcc_store_close(core->store);
      core->store = NULL;
    }
  }
  if (!damaged && rc != PCC_STORE_OK) {
    pcc_logf(PCC_LOG_ERROR, "store %s: %s", config->store_dir, pcc_store_strerror(rc));
    return PCC_CORE_STORE;
  }
  if (!damaged)
    return PCC_CORE_OK;
  if (strcmp(config->on_damaged_store, "quarantine") != 0) {
    pcc_logf(PCC_LOG_ERROR, "store %s/data.mdb is damaged: refusing to start. See the "
      "problems with `pycached --verify-store --store %s`; then start with "
      "--on-damaged-store=quarantine (moves the file aside and starts on an empty store: "
      "a cache fills again), or restore a backup into %s (docs/OPERATIONS.md, \"A damaged "
      "store\")", config->store_dir, config->store_dir, config->store_dir);
    return PCC_CORE_DAMAGED;
  }
  if (!quarantine(config->store_dir))
    return PCC_CORE_DAMAGED;
  rc = pcc_store_open(config->store_dir, &store_config, &core->store);
  if (rc != PCC_STORE_OK) {
    pcc_logf(PCC_LOG_ERROR, "store %s: %s", config->store_dir, pcc_store_strerror(rc));
    return PCC_CORE_STORE;
  }
  return PCC_CORE_OK;
}

static void print_line(const char *line, void *ctx)
{
  (void)ctx;
  printf("%s\n", line);
}

int pcc_core_verify_store(const pcc_config *config)
{
  char file[PATH_MAX];
  struct stat st;
  int n = snprintf(file, sizeof file, "%s/data.mdb", config->store_dir);
  if (n <= 0 || (size_t)n >= sizeof file || stat(file, &st) != 0) {
    pcc_logf(PCC_LOG_ERROR, "no store at %s (no data.mdb)", config->store_dir);
    return PCC_VERIFY_UNOPENED;
  }
  pcc_store_config store_config = {.map_size = config->map_size, .read_only = true};
  pcc_store *store = NULL;
  pcc_store_status rc = pcc_store_open(config->store_dir, &store_config, &store);
  if (rc == PCC_STORE_NOTFOUND) {
    printf("store %s: empty, or of an older format (emptied when the server starts): nothing "
           "to check\n", config->store_dir);
    return PCC_VERIFY_SOUND;
  }
  if (rc != PCC_STORE_OK) {
    printf("store %s: cannot be opened: %s\n", file, pcc_store_strerror(rc));
    return rc == PCC_STORE_DAMAGED ? PCC_VERIFY_DAMAGED : PCC_VERIFY_UNOPENED;
  }
  pcc_store_report report;
  rc = pcc_store_verify(store, true, 0, print_line, NULL, &report);
  pcc_store_close(store);
  if (rc != PCC_STORE_OK) {
    printf("store %s: cannot be checked: %s\n", file, pcc_store_strerror(rc));
    return PCC_VERIFY_UNOPENED;
  }
  bool sound = report.damaged == 0 && report.structural == 0;
  printf("store %s: %llu entries, %llu blobs, %llu records, %llu damaged records, %llu problems "
         "of the file: %s\n", file, (unsigned long long)report.entries,
         (unsigned long long)report.blobs, (unsigned long long)report.records,
         (unsigned long long)report.damaged, (unsigned long long)report.structural,
         sound ? "sound" : report.structural > 0 ? "DAMAGED (docs/OPERATIONS.md, \"A damaged "
                                                    "store\")"
                                                  : "damaged records (they miss until compiled "
                                                    "again)");
  return sound ? PCC_VERIFY_SOUND : PCC_VERIFY_DAMAGED;
}

/* ---- life cycle ------------------------------------------------------------------------- */

pcc_core_status pcc_core_open(const pcc_config *config, pcc_core **out)
{
  memory_policy();
  pcc_core *core = calloc(1, sizeof *core);
  if (core == NULL)
    return PCC_CORE_NOMEM;
  core->config = *config;
  core->started = time(NULL);
  pthread_mutex_init(&core->stored.lock, NULL);
  pthread_mutex_init(&core->lock, NULL);
  pthread_cond_init(&core->wake, NULL);
  core->counters = pcc_counters_open();
  if (core->counters == NULL) {
    pcc_core_close(core);
    return PCC_CORE_NOMEM;
  }
  core->sources = pcc_sources_open(config->source_roots, config->n_source_roots);
  if (core->sources == NULL) {
    pcc_core_close(core);
    return PCC_CORE_CONFIG;
  }
  if (config->shared != NULL && config->shared[0] != '\0') {
    /* a compile lock outlives the holder's compile (--compile-timeout) by a little */
    pcc_shared_config shared_config = {
      .connect_ms = (unsigned)config->shared_connect_timeout,
      .command_ms = (unsigned)config->shared_timeout,
      .ttl = config->shared_ttl,
      .lock_ms = (unsigned)(config->compile_timeout * 1000 + 2000),
      .key_file = config->shared_key,
      .password_file = config->shared_password_file,
      .user = config->shared_user};
    char err[512];
    pcc_shared_status shared_rc = pcc_shared_open(config->shared, &shared_config, err,
                                                  sizeof err, &core->shared);
    if (shared_rc != PCC_SHARED_OK) {
      pcc_logf(PCC_LOG_ERROR, "%s", shared_rc == PCC_SHARED_INVALID ? err
                                    : pcc_shared_strerror(shared_rc));
      pcc_core_close(core);
      return shared_rc == PCC_SHARED_INVALID ? PCC_CORE_CONFIG : PCC_CORE_NOMEM;
    }
  }
  if (config->upstream != NULL && config->upstream[0] != '\0') {
    pcc_upstream_config upstream_config = {
      .connect_ms = (long)config->upstream_connect_timeout,
      .compile_ms = (long)config->upstream_timeout,
      .ca_file = config->upstream_ca_file,
      .token_file = config->upstream_token_file};
    char err[512];
    pcc_upstream_status upstream_rc = pcc_upstream_open(config->upstream, &upstream_config, err,
                                                        sizeof err, &core->upstream);
    if (upstream_rc != PCC_UPSTREAM_OK) {
      pcc_logf(PCC_LOG_ERROR, "%s", upstream_rc == PCC_UPSTREAM_INVALID ? err
                                    : pcc_upstream_strerror(upstream_rc));
      pcc_core_close(core);
      return upstream_rc == PCC_UPSTREAM_INVALID ? PCC_CORE_CONFIG : PCC_CORE_NOMEM;
    }
  }
  pcc_core_status rc = open_store(core);
  if (rc != PCC_CORE_OK) {
    pcc_core_close(core);
    return rc;
  }
  if (config->no_embedded && config->n_compilers == 0) {
    pcc_logf(PCC_LOG_ERROR, "--no-embedded needs at least one --compiler");
    rc = PCC_CORE_CONFIG;
  } else if (!config->no_embedded) {
    rc = backend_start(core, NULL);
  }
  for (unsigned i = 0; i < config->n_compilers && rc == PCC_CORE_OK; i++)
    rc = backend_start(core, config->compilers[i]);
  if (rc == PCC_CORE_OK && pthread_create(&core->upkeep, NULL, upkeep_main, core) != 0) {
    pcc_logf(PCC_LOG_ERROR, "cannot start the store's upkeep thread");
    rc = PCC_CORE_NOMEM;
  }
  core->upkeep_running = rc == PCC_CORE_OK;
  if (rc != PCC_CORE_OK) {
    pcc_core_close(core);
    return rc;
  }
  pcc_counters_set_admit(core->counters, counted_magic, core);
  *out = core;
  return PCC_CORE_OK;
}

void pcc_core_close(pcc_core *core)
{
  if (core == NULL)
    return;
  if (core->upkeep_running) {
    pthread_mutex_lock(&core->lock);
    core->stopping = true;
    pthread_cond_signal(&core->wake);
    pthread_mutex_unlock(&core->lock);
    pthread_join(core->upkeep, NULL);
  }
  for (unsigned b = 0; b < core->n_backends; b++)
    pcc_compiler_close(core->backends[b].compiler);
  if (core->store != NULL)
    pcc_store_flush_uses(core->store, NULL); /* the order of uses outlives the process */
  pcc_store_close(core->store);
  pthread_cond_destroy(&core->wake);
  pthread_mutex_destroy(&core->lock);
  pcc_sources_close(core->sources);
  pcc_shared_close(core->shared);
  pcc_upstream_close(core->upstream);
  pcc_counters_close(core->counters);
  pthread_mutex_destroy(&core->stored.lock);
  free(core);
}

const pcc_config *pcc_core_config(const pcc_core *core)
{
  return &core->config;
}

pcc_store *pcc_core_store(pcc_core *core)
{
  return core->store;
}

pcc_counters *pcc_core_counters(pcc_core *core)
{
  return core->counters;
}

pcc_shared *pcc_core_shared(pcc_core *core)
{
  return core->shared;
}

pcc_upstream *pcc_core_upstream(pcc_core *core)
{
  return core->upstream;
}

time_t pcc_core_started(const pcc_core *core)
{
  return core->started;
}

const pcc_sources *pcc_core_sources(const pcc_core *core)
{
  return core->sources;
}

/* ---- lookups --------------------------------------------------------------------------- */

pcc_store_status pcc_core_get_blob(pcc_core *core, const pcc_magic *magic, int opt,
                                   const pcc_digest *digest, pcc_blob **out)
{
  pcc_store_status rc = pcc_store_get_blob(core->store, magic, opt, digest, out);
  if (rc == PCC_STORE_CORRUPT)
    pcc_logf(PCC_LOG_ERROR, "a stored blob failed its checksum: missed until its source is "
             "compiled again");
  if (rc == PCC_STORE_CORRUPT || rc == PCC_STORE_DAMAGED) { /* the store logged the damage */
    atomic_fetch_add(&pcc_counters_for(core->counters, magic)->corruptions, 1);
    rc = PCC_STORE_NOTFOUND;
  }
  return rc;
}

bool pcc_core_blob_matches(pcc_core *core, const pcc_magic *magic, const pcc_blob *blob,
                           const pcc_path_record *version)
{
  if (blob->size == version->size && blob->hash == version->hash)
    return true;
  atomic_fetch_add(&pcc_counters_for(core->counters, magic)->corruptions, 1);
  pcc_logf(PCC_LOG_ERROR, "a path entry names a blob of another source (a damaged entry): "
           "missed until its source is compiled again");
  return false;
}

static uint64_t nanos_since(const struct timespec *start)
{
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  int64_t ns = (int64_t)(now.tv_sec - start->tv_sec) * 1000000000 +
               (now.tv_nsec - start->tv_nsec);
  return ns > 0 ? (uint64_t)ns : 0;
}

/* A miss; for a magic no backend compiles, unsupported-magic, counted as such and not as a
 * miss (its stored entries still hit), unless an --upstream may compile it: then a miss, and
 * the client's compile is forwarded. */
static void answer_miss(pcc_core *core, pcc_answer *answer, const pcc_magic *magic, bool stale)
{
  pcc_magic_counters *counters = pcc_counters_for(core->counters, magic);
  if (pcc_core_backend_for(core, magic) < 0 && core->upstream == NULL) {
    atomic_fetch_add(&counters->unsupported, 1);
    pcc_core_answer_unsupported(core, answer);
    return;
  }
  atomic_fetch_add(stale ? &counters->miss_stale : &counters->miss_absent, 1);
  pcc_answer_error(answer, PCC_ERR_MISS, stale ? "the cached entry does not match this source"
                                               : "nothing cached for this path");
  pcc_answer_extra_string(answer, "reason", stale ? "stale" : "absent");
}

/* A hit: counted, timed, its entry's hits recorded. */
static void answer_hit(pcc_core *core, pcc_answer *answer, pcc_blob *blob,
                       const pcc_digest *digest, const pcc_params *params,
                       const struct timespec *start)
{
  bool code = blob->kind == PCC_BLOB_CODE;
  pcc_answer_blob(answer, blob, digest, (params->present & PCC_PARAM_HASH) != 0, "hit");
  if (code) {
    atomic_fetch_add(&pcc_counters_for(core->counters, &params->magic)->hits, 1);
    pcc_counters_record_hit(core->counters, &params->magic, params->opt, params->path,
                            params->path_len);
    pcc_histogram_add(&pcc_counters_totals(core->counters)->hit_latency, nanos_since(start));
  }
}

/* Does a version of a path entry answer the request (its mtime and size, and its hash and
 * digest when the request gives them)? */
static bool version_matches(const pcc_path_record *v, const pcc_params *params)
{
  return v->mtime == params->mtime && v->size == params->size &&
         (!(params->present & PCC_PARAM_HASH) || v->hash == params->hash) &&
         (!(params->present & PCC_PARAM_DIGEST) || pcc_digest_equal(&v->digest, &params->digest));
}

void pcc_core_lookup(pcc_core *core, const char *ns, const pcc_params *params,
                     pcc_answer *answer)
{
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  pcc_path_versions versions;
  pcc_store_status rc = pcc_store_get_versions(core->store, ns, &params->magic, params->opt,
                                               params->path, params->path_len, &versions);
  if (rc == PCC_STORE_CORRUPT || rc == PCC_STORE_DAMAGED) { /* a miss: the client compiles */
    atomic_fetch_add(&pcc_counters_for(core->counters, &params->magic)->corruptions, 1);
    rc = PCC_STORE_NOTFOUND;
  }
  if (rc != PCC_STORE_OK && rc != PCC_STORE_NOTFOUND) {
    pcc_answer_store_error(answer, rc);
    return;
  }
  bool found = rc == PCC_STORE_OK;
  /* Read-only: a lookup never changes what another client is served (docs/DESIGN.md, "Trust").
   * The same source under another path or mtime is a miss; the client's compile (the compile
   * role) then records its version without compiling again ("stored"). */
  for (unsigned i = 0; found && i < versions.n; i++) {
    if (!version_matches(&versions.v[i], params))
      continue;
    pcc_blob *blob = NULL;
    rc = pcc_core_get_blob(core, &params->magic, params->opt, &versions.v[i].digest, &blob);
    if (rc == PCC_STORE_OK && !pcc_core_blob_matches(core, &params->magic, blob,
                                                     &versions.v[i])) {
      free(blob);
      rc = PCC_STORE_NOTFOUND;
    }
    if (rc == PCC_STORE_OK) {
      answer_hit(core, answer, blob, &versions.v[i].digest, params, &start);
      return;
    }
    if (rc != PCC_STORE_NOTFOUND) {
      pcc_answer_store_error(answer, rc);
      return;
    }
  }
  answer_miss(core, answer, &params->magic, found);
}
