/* ctl_warm.c: the handler of `pycachectl warm DIR...` (ctl.h; its row is in pycachectl.c's
 * command table), compileall for the whole fleet: walks the trees, uploads every source with N
 * threads, shows progress on a terminal and a summary at the end. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl.h"

/* ---- warm ------------------------------------------------------------------------------ */

/* `warm DIR...` walks the trees the way compileall does (every file named *.py, every
 * directory but __pycache__, hidden ones included; symlinked files are warmed under their own
 * path, symlinked directories are not entered), then N threads, each with its own client,
 * upload every file at every level of --opt. The walk is bounded by the PCC_CTL_WARM_* limits
 * (proto/pcc_limits.h): files, bytes of their paths, directory levels below a DIR. */
#define CTL_WARM_JOBS_DEFAULT 4       /* when /v1/stats does not say */
#define CTL_WARM_REDRAW_NS 100000000L /* the progress line: at most 10 redraws a second */

/* A file, a level or a directory that was not warmed. */
typedef struct {
  char *path;
  int opt;            /* -1: not about one level (reading the file, walking) */
  bool compile_error; /* else a failure with the reason in message */
  char *type;         /* compile errors: the exception type */
  char *message;
  int64_t line, offset; /* compile errors: 1-based, or -1 */
} ctl_warm_problem;

/* The state of one warm run. Workers take files through `next` and count with atomics; the
 * problems, the fatal error and `running` are guarded by lock. */
typedef struct {
  const char **files; /* sorted, distinct; point into text */
  size_t nfiles;
  pcc_dynbuf text;    /* the paths, NUL-terminated, back to back (PCC_CTL_WARM_TEXT_MAX) */
  int levels[PCC_OPT_MAX + 1];
  int nlevels;
  pcc_magic magic;
  bool token_sent; /* the advice for a 401 depends on it */
  atomic_size_t next, done;
  atomic_size_t compiled, joined, cached;
  atomic_bool stop;
  pthread_mutex_t lock;
  pthread_cond_t changed; /* a worker ended */
  int running;
  pcc_dynbuf problems; /* of ctl_warm_problem */
  size_t nproblems;
  size_t compile_errors, failures; /* counted even when recording the problem failed */
  bool unreadable; /* something in the trees could not be read: exit 5 */
  bool lost;       /* out of memory while recording a problem */
  int fatal;       /* the exit code of the error that stopped the run; 0: none */
  char fatal_message[PCC_CTL_WARM_REASON_MAX];
} ctl_warm;

typedef struct {
  ctl_warm *warm;
  pcc_client *client;
  pthread_t thread;
} ctl_warm_job;

static char *ctl_strndup_bounded(const char *s)
{
  return s ? strndup(s, PCC_CTL_WARM_REASON_MAX) : NULL;
}

/* Records a problem; compile_error selects the kind, type/line/offset apply to compile errors
 * only. Thread-safe. The strings are copied (each at most PCC_CTL_WARM_REASON_MAX bytes). */
static void ctl_warm_problem_add(ctl_warm *w, const char *path, int opt, bool compile_error,
                                 const char *type, const char *message, int64_t line,
                                 int64_t offset)
{
  pthread_mutex_lock(&w->lock);
  if (compile_error)
    w->compile_errors++;
  else
    w->failures++;
  ctl_warm_problem p = {strdup(path), opt, compile_error, ctl_strndup_bounded(type),
                        ctl_strndup_bounded(message), line, offset};
  if (p.path == NULL || (type && p.type == NULL) || (message && p.message == NULL) ||
      pcc_dynbuf_add(&w->problems, &p, sizeof p) != PCC_PROTO_OK) {
    free(p.path);
    free(p.type);
    free(p.message);
    w->lost = true;
  } else {
    w->nproblems++;
  }
  pthread_mutex_unlock(&w->lock);
}

/* A failure about a file or directory of the trees (not the server's doing): exit 5. */
static void ctl_warm_unreadable(ctl_warm *w, const char *path, const char *reason)
{
  ctl_warm_problem_add(w, path, -1, false, NULL, reason, -1, -1);
  pthread_mutex_lock(&w->lock);
  w->unreadable = true;
  pthread_mutex_unlock(&w->lock);
}

/* Stops the run: the first caller's code and message win. Thread-safe. */
static void ctl_warm_fatal(ctl_warm *w, int code, const char *format, ...)
{
  pthread_mutex_lock(&w->lock);
  if (w->fatal == 0) {
    w->fatal = code;
    va_list ap;
    va_start(ap, format);
    vsnprintf(w->fatal_message, sizeof w->fatal_message, format, ap);
    va_end(ap);
  }
  pthread_mutex_unlock(&w->lock);
  atomic_store(&w->stop, true);
}

/* Appends a path (len bytes and its NUL) found by the walk. Returns false past
 * PCC_CTL_WARM_FILES_MAX or PCC_CTL_WARM_TEXT_MAX, or without memory (the walk then stops; the
 * caller says why). */
static bool ctl_warm_add_path(ctl_warm *w, const char *path, size_t len)
{
  if (w->nfiles >= PCC_CTL_WARM_FILES_MAX ||
      pcc_dynbuf_add(&w->text, path, len + 1) != PCC_PROTO_OK)
    return false;
  w->nfiles++;
  return true;
}

/* Walks the directory in path (plen bytes, in a buffer of PCC_PATH_MAX + 1 bytes, restored on
 * return), depth levels below its DIR, adding every *.py file. Directories that cannot be
 * listed or are too deep, and names too long for a path, are recorded as unreadable and
 * skipped. Returns false when the walk must stop: over its limits or out of memory. */
static bool ctl_warm_walk(ctl_warm *w, char *path, size_t plen, int depth)
{
  char reason[PCC_CTL_WARM_REASON_MAX];
  DIR *dir = opendir(path);
  if (dir == NULL) {
    snprintf(reason, sizeof reason, "cannot list the directory: %s", strerror(errno));
    ctl_warm_unreadable(w, path, reason);
    return true;
  }
  size_t base = plen == 1 ? 0 : plen; /* the root directory is "/", not "" */
  bool ok = true;
  struct dirent *ent;
  errno = 0;
  while (ok && (ent = readdir(dir)) != NULL) {
    const char *name = ent->d_name;
    unsigned char type = ent->d_type;
    bool link = type == DT_LNK;
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
      goto next;
    if (type == DT_UNKNOWN || type == DT_LNK) {
      struct stat st;
      if (fstatat(dirfd(dir), name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        goto next; /* gone since readdir */
      link = S_ISLNK(st.st_mode);
      if (link && fstatat(dirfd(dir), name, &st, 0) != 0)
        goto next; /* a dangling link, or a loop: nothing to compile, as for compileall */
      type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
    }
    size_t nlen = strlen(name);
    bool is_py = type == DT_REG && nlen >= 3 && strcmp(name + nlen - 3, ".py") == 0;
    bool is_dir = type == DT_DIR && !link && strcmp(name, "__pycache__") != 0;
    if (!is_py && !is_dir)
      goto next;
    if (base + 1 + nlen > PCC_PATH_MAX) {
      snprintf(reason, sizeof reason, "%.200s: the path would be over %d bytes", name,
               PCC_PATH_MAX);
      ctl_warm_unreadable(w, path, reason);
      goto next;
    }
    path[base] = '/';
    memcpy(path + base + 1, name, nlen + 1);
    if (is_py) {
      ok = ctl_warm_add_path(w, path, base + 1 + nlen);
    } else if (depth >= PCC_CTL_WARM_DEPTH_MAX) {
      snprintf(reason, sizeof reason, "not entered: over %d directory levels below DIR",
               PCC_CTL_WARM_DEPTH_MAX);
      ctl_warm_unreadable(w, path, reason);
    } else {
      ok = ctl_warm_walk(w, path, base + 1 + nlen, depth + 1);
    }
    path[plen] = '\0';
  next:
    errno = 0;
  }
  if (ok && errno != 0) {
    snprintf(reason, sizeof reason, "cannot list the directory: %s", strerror(errno));
    ctl_warm_unreadable(w, path, reason);
  }
  closedir(dir);
  return ok;
}

static int ctl_warm_path_cmp(const void *a, const void *b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* After the walk: files points into text, sorted, each path once (DIRs may overlap). Returns
 * false without memory. */
static bool ctl_warm_index(ctl_warm *w)
{
  if (w->nfiles == 0)
    return true;
  w->files = malloc(w->nfiles * sizeof *w->files);
  if (w->files == NULL)
    return false;
  const char *path = w->text.data;
  for (size_t i = 0; i < w->nfiles; path += strlen(path) + 1)
    w->files[i++] = path;
  qsort(w->files, w->nfiles, sizeof *w->files, ctl_warm_path_cmp);
  size_t kept = 1;
  for (size_t i = 1; i < w->nfiles; i++)
    if (strcmp(w->files[i], w->files[kept - 1]) != 0)
      w->files[kept++] = w->files[i];
  w->nfiles = kept;
  return true;
}

/* What to do after pcc_client_compile of source at level opt returned rc: count it, record a
 * compile error or a failure, or stop the run when the error concerns every file (the server
 * is gone, the token is refused, no backend for the magic, the store is full). */
static void ctl_warm_result(ctl_warm *w, pcc_client *client, pcc_client_status rc,
                            const pcc_source *source, int opt)
{
  if (rc == PCC_CLIENT_OK) {
    const char *outcome = pcc_client_last_outcome(client);
    if (strcmp(outcome, "compiled") == 0)
      atomic_fetch_add(&w->compiled, 1);
    else if (strcmp(outcome, "joined") == 0)
      atomic_fetch_add(&w->joined, 1);
    else
      atomic_fetch_add(&w->cached, 1); /* "stored", "shared", "upstream", or a server that
                                            does not say */
    return;
  }
  const pcc_client_error *err = pcc_client_last_error(client);
  const char *message = err->message ? err->message : pcc_client_strerror(rc);
  char reason[PCC_CTL_WARM_REASON_MAX];
  switch (rc) {
  case PCC_CLIENT_COMPILE_ERROR:
    ctl_warm_problem_add(w, source->path, opt, true, err->type ? err->type : "SyntaxError",
                         err->message ? err->message : "(no message)", err->line, err->offset);
    return;
  case PCC_CLIENT_CONNECT:
    ctl_warm_fatal(w, EXIT_SERVER, "%s: %s", pcc_client_strerror(rc), message);
    return;
  case PCC_CLIENT_UNAUTHORIZED:
    ctl_warm_fatal(w, EXIT_AUTH, "unauthorized (401): %s",
                   ctl_unauthorized_advice(w->token_sent));
    return;
  case PCC_CLIENT_FORBIDDEN:
    if (err->role) {
      ctl_warm_fatal(w, EXIT_AUTH, "forbidden (403): the token lacks the role '%s'", err->role);
      return;
    }
    break;
  case PCC_CLIENT_UNSUPPORTED_MAGIC:
    ctl_warm_fatal(w, EXIT_OTHER, "server error %ld unsupported-magic: %s", err->http_status,
                   message);
    return;
  case PCC_CLIENT_HTTP:
    if (err->error && strcmp(err->error, "store-full") == 0) {
      ctl_warm_fatal(w, EXIT_OTHER, "server error %ld store-full: %s", err->http_status,
                     message);
      return;
    }
    break;
  default:
    snprintf(reason, sizeof reason, "%s: %s", pcc_client_strerror(rc), message);
    ctl_warm_problem_add(w, source->path, opt, false, NULL, reason, -1, -1);
    return;
  }
  snprintf(reason, sizeof reason, "server error %ld %s: %s%s%s%s", err->http_status,
           err->error ? err->error : "(no error code)", message, err->param ? " (param " : "",
           err->param ? err->param : "", err->param ? ")" : "");
  ctl_warm_problem_add(w, source->path, opt, false, NULL, reason, -1, -1);
}

/* Reads one file and uploads it at every level (the source is read once). */
static void ctl_warm_file(ctl_warm *w, pcc_client *client, const char *path)
{
  pcc_source *source = NULL;
  pcc_client_status rc = pcc_source_load(path, PCC_SOURCE_DEFAULT_MAX, true, &source);
  if (rc == PCC_CLIENT_TOOBIG) { /* the user's source, like a compile error: not exit 5 */
    char reason[64];
    snprintf(reason, sizeof reason, "over the %zu MiB source limit", PCC_SOURCE_DEFAULT_MAX >> 20);
    ctl_warm_problem_add(w, path, -1, false, NULL, reason, -1, -1);
    return;
  }
  if (rc != PCC_CLIENT_OK) {
    ctl_warm_unreadable(w, path, rc == PCC_CLIENT_IO ? strerror(errno)
                                 : rc == PCC_CLIENT_INVALID ? "a negative modification time"
                                                            : pcc_client_strerror(rc));
    return;
  }
  for (int i = 0; i < w->nlevels && !atomic_load(&w->stop); i++) {
    pcc_entry *entry = NULL;
    rc = pcc_client_compile(client, &w->magic, w->levels[i], source, &entry);
    pcc_entry_free(entry);
    ctl_warm_result(w, client, rc, source, w->levels[i]);
  }
  pcc_source_free(source);
}

static void *ctl_warm_worker(void *arg)
{
  ctl_warm_job *job = arg;
  ctl_warm *w = job->warm;
  while (!atomic_load(&w->stop)) {
    size_t i = atomic_fetch_add(&w->next, 1);
    if (i >= w->nfiles)
      break;
    ctl_warm_file(w, job->client, w->files[i]);
    atomic_fetch_add(&w->done, 1);
  }
  pthread_mutex_lock(&w->lock);
  w->running--;
  pthread_cond_signal(&w->changed);
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

static double ctl_seconds_since(const struct timespec *start)
{
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Redraws the progress line on stderr (a terminal): done/total, rate, time left. */
static void ctl_warm_progress(ctl_warm *w, const struct timespec *start)
{
  size_t done = atomic_load(&w->done);
  double elapsed = ctl_seconds_since(start);
  double rate = elapsed > 0 ? (double)done / elapsed : 0;
  char left[32] = "--:--";
  if (done > 0 && rate > 0) {
    long secs = (long)((double)(w->nfiles - done) / rate + 0.5);
    if (secs >= 3600)
      snprintf(left, sizeof left, "%ld:%02ld:%02ld", secs / 3600, secs / 60 % 60, secs % 60);
    else
      snprintf(left, sizeof left, "%ld:%02ld", secs / 60, secs % 60);
  }
  fprintf(stderr, "\rwarm: %zu/%zu files  %.0f files/s  %s left\033[K", done, w->nfiles, rate,
          left);
  fflush(stderr);
}

static int ctl_warm_problem_cmp(const void *a, const void *b)
{
  const ctl_warm_problem *x = a, *y = b;
  int c = strcmp(x->path, y->path);
  return c != 0 ? c : (x->opt > y->opt) - (x->opt < y->opt);
}

/* The levels as "0,1,2". */
static void ctl_warm_levels_text(const ctl_warm *w, char out[16])
{
  size_t n = 0;
  for (int i = 0; i < w->nlevels; i++)
    n += (size_t)snprintf(out + n, 16 - n, "%s%d", i ? "," : "", w->levels[i]);
}

/* Prints the summary: the problems on stderr and the counts on stdout, or one JSON object on
 * stdout. Returns false when the JSON could not be built (no memory). */
static bool ctl_warm_report(ctl_warm *w, const ctl_args *args, int jobs, double elapsed)
{
  ctl_warm_problem *problems = w->problems.data;
  if (w->nproblems > 0) /* qsort wants a real array even for none */
    qsort(problems, w->nproblems, sizeof *problems, ctl_warm_problem_cmp);
  char magic_hex[2 * PCC_MAGIC_LEN + 1], levels[16];
  pcc_magic_to_hex(&w->magic, magic_hex);
  ctl_warm_levels_text(w, levels);
  size_t done = atomic_load(&w->done);
  double rate = elapsed > 0 ? (double)done / elapsed : 0;
  size_t compiled = atomic_load(&w->compiled), joined = atomic_load(&w->joined);
  size_t cached = atomic_load(&w->cached);
  if (args->json) {
    cJSON *obj = cJSON_CreateObject(), *errors = cJSON_CreateArray();
    cJSON *failed = cJSON_CreateArray(), *opts = cJSON_CreateArray();
    bool ok = obj && errors && failed && opts;
    for (int i = 0; ok && i < w->nlevels; i++)
      ok = cJSON_AddItemToArray(opts, cJSON_CreateNumber(w->levels[i]));
    for (size_t i = 0; ok && i < w->nproblems; i++) {
      const ctl_warm_problem *p = &problems[i];
      cJSON *item = cJSON_CreateObject();
      ok = item && cJSON_AddStringToObject(item, "path", p->path) &&
           (p->opt >= 0 ? cJSON_AddNumberToObject(item, "opt", p->opt)
                        : cJSON_AddNullToObject(item, "opt")) != NULL;
      if (ok && p->compile_error)
        ok = cJSON_AddStringToObject(item, "type", p->type) &&
             cJSON_AddStringToObject(item, "message", p->message) &&
             (p->line > 0 ? cJSON_AddNumberToObject(item, "line", (double)p->line)
                          : cJSON_AddNullToObject(item, "line")) &&
             (p->offset > 0 ? cJSON_AddNumberToObject(item, "offset", (double)p->offset)
                            : cJSON_AddNullToObject(item, "offset"));
      else if (ok)
        ok = cJSON_AddStringToObject(item, "reason", p->message) != NULL;
      if (item && !cJSON_AddItemToArray(p->compile_error ? errors : failed, item)) {
        cJSON_Delete(item);
        ok = false;
      }
    }
    if (ok) {
      ok = cJSON_AddNumberToObject(obj, "files", (double)w->nfiles) &&
           cJSON_AddNumberToObject(obj, "files_done", (double)done) &&
           cJSON_AddItemToObject(obj, "opt", opts) && (opts = NULL, true) &&
           cJSON_AddStringToObject(obj, "magic", magic_hex) &&
           cJSON_AddNumberToObject(obj, "jobs", jobs) &&
           cJSON_AddNumberToObject(obj, "compiled", (double)(compiled + joined)) &&
           cJSON_AddNumberToObject(obj, "joined", (double)joined) &&
           cJSON_AddNumberToObject(obj, "cached", (double)cached) &&
           cJSON_AddNumberToObject(obj, "compile_errors", (double)w->compile_errors) &&
           cJSON_AddNumberToObject(obj, "failures", (double)w->failures) &&
           cJSON_AddItemToObject(obj, "errors", errors) && (errors = NULL, true) &&
           cJSON_AddItemToObject(obj, "failed", failed) && (failed = NULL, true) &&
           cJSON_AddNumberToObject(obj, "elapsed", elapsed) &&
           cJSON_AddNumberToObject(obj, "rate", rate) &&
           (w->fatal ? cJSON_AddStringToObject(obj, "stopped", w->fatal_message)
                     : cJSON_AddNullToObject(obj, "stopped")) != NULL;
    }
    char *text = ok ? cJSON_PrintUnformatted(obj) : NULL;
    if (text)
      printf("%s\n", text);
    free(text);
    cJSON_Delete(obj);
    cJSON_Delete(errors);
    cJSON_Delete(failed);
    cJSON_Delete(opts);
    return text != NULL;
  }
  for (size_t i = 0; i < w->nproblems; i++) {
    const ctl_warm_problem *p = &problems[i];
    char level[32] = "";
    if (p->opt >= 0 && w->nlevels > 1)
      snprintf(level, sizeof level, " (opt %d)", p->opt);
    if (p->compile_error && p->line > 0 && p->offset > 0)
      fprintf(stderr, "%s:%" PRId64 ":%" PRId64 ": %s: %s%s\n", p->path, p->line, p->offset,
              p->type, p->message, level);
    else if (p->compile_error && p->line > 0)
      fprintf(stderr, "%s:%" PRId64 ": %s: %s%s\n", p->path, p->line, p->type, p->message, level);
    else if (p->compile_error)
      fprintf(stderr, "%s: %s: %s%s\n", p->path, p->type, p->message, level);
    else
      fprintf(stderr, "%s: failed: %s%s\n", p->path, p->message, level);
  }
  if (w->lost)
    fprintf(stderr, "pycachectl: warm: out of memory: some problems are counted, not listed\n");
  printf("warm: %zu files%s, opt %s, magic %s, %d jobs: %.2f s, %.1f files/s\n", w->nfiles,
         done < w->nfiles ? " (stopped early)" : "", levels, magic_hex, jobs, elapsed, rate);
  if (done < w->nfiles)
    printf("  files done       %zu\n", done);
  printf("  compiled         %zu\n", compiled + joined);
  printf("  already cached   %zu\n", cached);
  printf("  compile errors   %zu\n", w->compile_errors);
  printf("  failures         %zu\n", w->failures);
  return true;
}

/* How many threads: --jobs, else 2 x the workers of the compiler for magic in /v1/stats, else
 * CTL_WARM_JOBS_DEFAULT. Returns 0 (*jobs set) or the exit code of an error that stops the run
 * (the server unreachable, the token refused). */
static int ctl_warm_jobs(const ctl *c, const pcc_magic *magic, int *jobs)
{
  *jobs = CTL_WARM_JOBS_DEFAULT;
  if (c->args.jobs > 0) {
    *jobs = (int)c->args.jobs;
    return 0;
  }
  char *body = NULL;
  pcc_client_status rc = pcc_client_get_json(c->client, "/v1/stats", &body, NULL);
  if (rc == PCC_CLIENT_CONNECT || rc == PCC_CLIENT_TIMEOUT || rc == PCC_CLIENT_UNAUTHORIZED)
    return ctl_fail(c, rc, "warm");
  if (rc != PCC_CLIENT_OK)
    return 0; /* e.g. a token without the read role: the default */
  char magic_hex[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(magic, magic_hex);
  cJSON *stats = cJSON_Parse(body);
  const cJSON *compiler = NULL;
  cJSON_ArrayForEach(compiler, cJSON_GetObjectItemCaseSensitive(stats, "compilers")) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(compiler, "magic");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(compiler, "workers");
    int64_t workers;
    if (cJSON_IsString(m) && strcasecmp(m->valuestring, magic_hex) == 0 && cJSON_IsNumber(n) &&
        pcc_double_to_i64(n->valuedouble, &workers) && workers >= 1) {
      *jobs = workers >= PCC_CTL_WARM_JOBS_MAX / 2 ? PCC_CTL_WARM_JOBS_MAX : 2 * (int)workers;
      break;
    }
  }
  cJSON_Delete(stats);
  free(body);
  return 0;
}

static void ctl_warm_free(ctl_warm *w)
{
  ctl_warm_problem *problems = w->problems.data;
  for (size_t i = 0; i < w->nproblems; i++) {
    free(problems[i].path);
    free(problems[i].type);
    free(problems[i].message);
  }
  pcc_dynbuf_free(&w->problems);
  free(w->files);
  pcc_dynbuf_free(&w->text);
  pthread_cond_destroy(&w->changed);
  pthread_mutex_destroy(&w->lock);
}

/* pycachectl warm DIR...: walks the trees (c->words), then uploads every file at every level
 * with --jobs threads, each with its own client opened from c->config (c->client makes the
 * preliminary requests). Returns the exit code: 0 when every file was handled (compile errors
 * and failures are reported, not fatal), 4 with --strict when a file did not compile or failed,
 * 5 when something in the trees could not be read, 3/6/7 when an error concerning every file
 * stopped the run. */
int ctl_warm_run(const ctl *c)
{
  const ctl_args *args = &c->args;
  const char *const *dirs = c->words;
  int ndirs = c->nwords;
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  /* every DIR must be a directory: resolved now, before anything is sent */
  char (*roots)[PATH_MAX] = calloc((size_t)ndirs, sizeof *roots);
  if (roots == NULL) {
    fprintf(stderr, "pycachectl: warm: out of memory\n");
    return EXIT_LOCAL;
  }
  for (int i = 0; i < ndirs; i++) {
    struct stat st;
    if (realpath(dirs[i], roots[i]) == NULL || stat(roots[i], &st) != 0) {
      fprintf(stderr, "pycachectl: warm: %s: %s\n", dirs[i], strerror(errno));
      free(roots);
      return EXIT_LOCAL;
    }
    if (!S_ISDIR(st.st_mode)) {
      fprintf(stderr, "pycachectl: warm: %s: not a directory\n", dirs[i]);
      free(roots);
      return EXIT_LOCAL;
    }
    if (strlen(roots[i]) > PCC_PATH_MAX) {
      fprintf(stderr, "pycachectl: warm: %s: the path is over %d bytes\n", dirs[i], PCC_PATH_MAX);
      free(roots);
      return EXIT_LOCAL;
    }
  }
  ctl_warm w = {.nlevels = 0};
  pcc_dynbuf_init(&w.text, PCC_CTL_WARM_TEXT_MAX);
  /* no limit of its own: at most a problem a file and level or a place of the walk */
  pcc_dynbuf_init(&w.problems, SIZE_MAX);
  pthread_mutex_init(&w.lock, NULL);
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&w.changed, &attr);
  pthread_condattr_destroy(&attr);
  for (int level = 0; level <= PCC_OPT_MAX; level++)
    if (args->opt_levels & (1u << level))
      w.levels[w.nlevels++] = level;
  if (w.nlevels == 0)
    w.levels[w.nlevels++] = 0;

  int code = 0, jobs = 0;
  w.magic = args->magic;
  w.token_sent = c->token_sent;
  pcc_client_status rc = PCC_CLIENT_OK;
  if (!args->have_magic && (rc = pcc_client_default_magic(c->client, &w.magic)) != PCC_CLIENT_OK)
    code = ctl_fail(c, rc, "warm: cannot learn the server's default magic");
  if (code == 0)
    code = ctl_warm_jobs(c, &w.magic, &jobs);

  char path[PCC_PATH_MAX + 1];
  for (int i = 0; code == 0 && i < ndirs; i++) {
    size_t len = strlen(roots[i]);
    memcpy(path, roots[i], len + 1);
    if (!ctl_warm_walk(&w, path, len, 0)) {
      if (w.nfiles >= PCC_CTL_WARM_FILES_MAX || w.text.len > PCC_CTL_WARM_TEXT_MAX / 2)
        fprintf(stderr, "pycachectl: warm: the trees hold over %d *.py files (or %zu MiB of "
                        "paths): warm fewer at a time\n", PCC_CTL_WARM_FILES_MAX,
                (size_t)(PCC_CTL_WARM_TEXT_MAX >> 20));
      else
        fprintf(stderr, "pycachectl: warm: out of memory while walking %s\n", dirs[i]);
      code = EXIT_LOCAL;
    }
  }
  free(roots);
  if (code == 0 && !ctl_warm_index(&w)) {
    fprintf(stderr, "pycachectl: warm: out of memory\n");
    code = EXIT_LOCAL;
  }
  if (code != 0) {
    ctl_warm_free(&w);
    return code;
  }

  /* the workers: one client each (a client is single-threaded); raw pycs, nothing to decode */
  if ((size_t)jobs > w.nfiles)
    jobs = w.nfiles > 0 ? (int)w.nfiles : 1;
  ctl_warm_job *pool = calloc((size_t)jobs, sizeof *pool);
  pcc_client_config worker_config = *c->config;
  worker_config.raw_pyc = true;
  int started = 0;
  bool tty = isatty(STDERR_FILENO);
  for (int i = 0; pool && w.nfiles > 0 && i < jobs; i++) {
    pool[i].warm = &w;
    if (pcc_client_open(&worker_config, &pool[i].client) != PCC_CLIENT_OK)
      break;
    pthread_mutex_lock(&w.lock);
    w.running++;
    pthread_mutex_unlock(&w.lock);
    if (pthread_create(&pool[i].thread, NULL, ctl_warm_worker, &pool[i]) != 0) {
      pthread_mutex_lock(&w.lock);
      w.running--;
      pthread_mutex_unlock(&w.lock);
      pcc_client_close(pool[i].client);
      pool[i].client = NULL;
      break;
    }
    started++;
  }
  if (w.nfiles > 0 && started == 0) {
    fprintf(stderr, "pycachectl: warm: cannot start the upload threads\n");
    free(pool);
    ctl_warm_free(&w);
    return EXIT_LOCAL;
  }
  /* wait for the workers; on a terminal, redraw the progress line meanwhile */
  bool drawn = false;
  pthread_mutex_lock(&w.lock);
  while (w.running > 0) {
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += CTL_WARM_REDRAW_NS;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
    while (w.running > 0 && pthread_cond_timedwait(&w.changed, &w.lock, &until) == 0) {
    }
    if (tty && w.running > 0) {
      pthread_mutex_unlock(&w.lock);
      ctl_warm_progress(&w, &start);
      drawn = true;
      pthread_mutex_lock(&w.lock);
    }
  }
  pthread_mutex_unlock(&w.lock);
  for (int i = 0; i < started; i++) {
    pthread_join(pool[i].thread, NULL);
    pcc_client_close(pool[i].client);
  }
  free(pool);
  if (drawn) {
    fputs("\r\033[K", stderr);
    fflush(stderr);
  }

  double elapsed = ctl_seconds_since(&start);
  if (!ctl_warm_report(&w, args, started ? started : jobs, elapsed)) {
    fprintf(stderr, "pycachectl: warm: out of memory\n");
    code = EXIT_LOCAL;
  }
  if (w.fatal) {
    fprintf(stderr, "pycachectl: warm: %s\n", w.fatal_message);
    code = w.fatal;
  } else if (code == 0 && w.unreadable) {
    code = EXIT_LOCAL;
  } else if (code == 0 && args->strict && (w.compile_errors || w.failures)) {
    code = EXIT_COMPILE;
  }
  ctl_warm_free(&w);
  return code;
}

