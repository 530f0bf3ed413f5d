/* test_compiler.c: Check suite for the compiler pool (compiler/compiler.h) and its workers.
 *
 * Runs the real pycached-cpython-worker (PCC_TEST_WORKER) and compiler/worker.py
 * (PCC_TEST_WORKER_PY) and checks their output against the reference interpreter
 * (PCC_TEST_PYTHON, /usr/bin/python3 by default), which executes the pycs we build from the
 * marshal bytes. Faults are injected for real: SIGKILL mid-compile, a timeout, a memory limit.
 */
#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "compiler.h"
#include "test_helpers.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif

#define COMPILER_OK(expr) CHECK_RC(expr, pcc_compiler_strerror)

#define OUTPUT_MAX 4096
#define SLOW_LINES 200000 /* about 3 s of compile: long enough to kill or time out */

static const char *env_or(const char *name, const char *fallback) {
  const char *value = getenv(name);
  return value && *value ? value : fallback;
}

static const char *worker_path(void) {
  return env_or("PCC_TEST_WORKER", "./compiler/pycached-cpython-worker");
}

static const char *python_path(void) { return env_or("PCC_TEST_PYTHON", "/usr/bin/python3"); }

static pcc_compiler *open_pool(const char *const *argv, unsigned workers, unsigned timeout_ms,
                               uint64_t memory_limit) {
  pcc_compiler_config config = {.argv = argv,
                                .workers = workers,
                                .timeout_ms = timeout_ms,
                                .memory_limit = memory_limit,
                                .max_frame = 0};
  pcc_compiler *pool = NULL;
  COMPILER_OK(pcc_compiler_open(&config, &pool));
  ck_assert_ptr_nonnull(pool);
  return pool;
}

static pcc_compiler *open_default(unsigned workers, unsigned timeout_ms, uint64_t memory_limit) {
  static const char *argv[2];
  argv[0] = worker_path();
  argv[1] = NULL;
  return open_pool(argv, workers, timeout_ms, memory_limit);
}

static pcc_compile_result *compile_text(pcc_compiler *pool, int opt, const char *src) {
  pcc_compile_result *result = NULL;
  COMPILER_OK(pcc_compiler_compile(pool, opt, "/tmp/pcc_test_mod.py", src, strlen(src), &result));
  ck_assert_ptr_nonnull(result);
  return result;
}

/* Runs argv with stdout captured into out (NUL-terminated, truncated to size - 1); returns the
 * exit status, or -1 when it did not exit normally. */
static int run_capture(const char *const *argv, char *out, size_t size) {
  int pipefd[2];
  pid_t pid;
  size_t used = 0;
  int status = 0;
  ck_assert_int_eq(pipe(pipefd), 0);
  pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    dup2(pipefd[1], 1);
    close(pipefd[0]);
    close(pipefd[1]);
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  close(pipefd[1]);
  for (;;) {
    char buf[512];
    ssize_t n = read(pipefd[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n && used + 1 < size; i++) out[used++] = buf[i];
  }
  out[used] = '\0';
  close(pipefd[0]);
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(data, 1, len, f), len);
  ck_assert_int_eq(fclose(f), 0);
}

/* Writes result's marshal bytes behind a pyc header into a temp file, has the reference
 * interpreter execute it and returns its stdout in out. */
static void run_pyc(pcc_compiler *pool, const pcc_compile_result *result, char *out,
                    size_t size) {
  char path[] = "/tmp/pcc_test_XXXXXX.pyc";
  pcc_pyc_header header;
  uint8_t raw[PCC_PYC_HEADER_LEN];
  int fd = mkstemps(path, 4);
  const char *argv[] = {python_path(), "-I", path, NULL};
  ck_assert_int_ge(fd, 0);
  close(fd);
  ck_assert(result->ok);
  pcc_pyc_header_init(&header, pcc_compiler_magic(pool), 0, 0);
  pcc_pyc_header_write(&header, raw);
  {
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(raw, 1, sizeof raw, f), sizeof raw);
    ck_assert_uint_eq(fwrite(result->marshal, 1, result->marshal_len, f), result->marshal_len);
    ck_assert_int_eq(fclose(f), 0);
  }
  ck_assert_int_eq(run_capture(argv, out, size), 0);
  unlink(path);
}

/* Compiles src, executes it under the reference interpreter and compares its stdout. */
static void expect_output(pcc_compiler *pool, int opt, const char *src, size_t len,
                          const char *expected) {
  pcc_compile_result *result = NULL;
  char out[OUTPUT_MAX];
  COMPILER_OK(pcc_compiler_compile(pool, opt, "/tmp/pcc_test_mod.py", src, len, &result));
  ck_assert_msg(result->ok, "compile failed: %s: %s", result->error_type,
                result->error_message);
  run_pyc(pool, result, out, sizeof out);
  ck_assert_str_eq(out, expected);
  pcc_compile_result_free(result);
}

/* A source of n assignment lines: about 1.5 s of compile per 100000 lines here. */
static char *slow_source(size_t lines, size_t *len) {
  size_t cap = lines * 48 + 1, used = 0;
  char *src = malloc(cap);
  ck_assert_ptr_nonnull(src);
  for (size_t i = 0; i < lines; i++) {
    int n = snprintf(src + used, cap - used, "x%zu = (%zu + %zu) * y%zu\n", i, i, i + 1, i);
    ck_assert(n > 0 && (size_t)n < cap - used);
    used += (size_t)n;
  }
  *len = used;
  return src;
}

static int count_fds(void) {
  DIR *dir = opendir("/proc/self/fd");
  int n = 0;
  ck_assert_ptr_nonnull(dir);
  while (readdir(dir)) n++;
  closedir(dir);
  return n;
}

/* ---- tests ------------------------------------------------------------------------------- */

START_TEST(test_open_hello) {
  int fds = count_fds();
  pcc_compiler *pool = open_default(2, 0, 0);
  char hex[2 * PCC_MAGIC_LEN + 1];
  pid_t pids[4];
  pcc_magic_to_hex(pcc_compiler_magic(pool), hex);
  ck_assert_str_eq(hex, "a70d0d0a");
  ck_assert_msg(strncmp(pcc_compiler_name(pool), "cpython-3.11", 12) == 0, "name %s",
                pcc_compiler_name(pool));
  ck_assert_uint_eq(pcc_compiler_workers(pool), 2);
  ck_assert_uint_eq(pcc_compiler_restarts(pool), 0);
  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, pids, 4), 2);
  ck_assert(pids[0] > 0 && pids[1] > 0 && pids[0] != pids[1]);
  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, NULL, 0), 2);
  { /* least privilege: cwd is /, core dumps off, a small fd budget */
    char link[64], cwd[64], limits[8192];
    const char *cat[] = {"/bin/cat", link, NULL};
    ssize_t n;
    snprintf(link, sizeof link, "/proc/%d/cwd", (int)pids[0]);
    n = readlink(link, cwd, sizeof cwd - 1);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(cwd[0], '/');
    snprintf(link, sizeof link, "/proc/%d/limits", (int)pids[0]);
    ck_assert_int_eq(run_capture(cat, limits, sizeof limits), 0);
    ck_assert_msg(strstr(limits, "Max core file size        0                    0") != NULL,
                  "%s", limits);
    ck_assert_msg(strstr(limits, "Max open files            16                   16") != NULL,
                  "%s", limits);
  }
  pcc_compiler_close(pool);
  pcc_compiler_close(NULL);
  ck_assert_int_eq(count_fds(), fds); /* every socket closed */
  for (int i = 0; i < 2; i++) ck_assert_int_eq(kill(pids[i], 0), -1); /* killed and reaped */
}
END_TEST

START_TEST(test_open_bad_argv) {
  const char *missing[] = {"/nonexistent/pycached-worker", NULL};
  const char *not_a_worker[] = {"/bin/true", NULL};
  pcc_compiler_config config = {.argv = missing, .workers = 1};
  pcc_compiler *pool = NULL;
  ck_assert_int_eq(pcc_compiler_open(&config, &pool), PCC_COMPILER_SPAWN);
  config.argv = not_a_worker;
  ck_assert_int_eq(pcc_compiler_open(&config, &pool), PCC_COMPILER_SPAWN);
  config.argv = NULL;
  ck_assert_int_eq(pcc_compiler_open(&config, &pool), PCC_COMPILER_INVALID);
  ck_assert_ptr_null(pool);
}
END_TEST

START_TEST(test_compile_and_run) {
  pcc_compiler *pool = open_default(2, 0, 0);
  const char *src = "def f(n):\n    return sum(range(n))\nprint('hello', f(10))\n";
  /* 'is' with a literal: a SyntaxWarning goes to the worker's stderr, never into the frames */
  const char *warns = "x = 1\nprint(x is 1)\n";
  pcc_compile_result *result = compile_text(pool, 0, src);
  ck_assert(result->ok);
  ck_assert_uint_gt(result->marshal_len, 0);
  /* TYPE_CODE, with or without FLAG_REF */
  ck_assert(result->marshal[0] == 0xe3 || result->marshal[0] == 0x63);
  ck_assert_ptr_null(result->error_type);
  pcc_compile_result_free(result);
  expect_output(pool, 0, src, strlen(src), "hello 45\n");
  expect_output(pool, 0, warns, strlen(warns), "True\n");
  pcc_compiler_close(pool);
}
END_TEST

START_TEST(test_bad_arguments) {
  pcc_compiler *pool = open_default(1, 0, 0);
  pcc_compile_result *result = NULL;
  ck_assert_int_eq(pcc_compiler_compile(pool, 3, "/a.py", "x", 1, &result),
                   PCC_COMPILER_INVALID);
  ck_assert_int_eq(pcc_compiler_compile(pool, -1, "/a.py", "x", 1, &result),
                   PCC_COMPILER_INVALID);
  ck_assert_int_eq(pcc_compiler_compile(pool, 0, NULL, "x", 1, &result), PCC_COMPILER_INVALID);
  ck_assert_int_eq(pcc_compiler_compile(pool, 0, "/a.py", NULL, 1, &result),
                   PCC_COMPILER_INVALID);
  ck_assert_int_eq(pcc_compiler_compile(pool, 0, "/a.py", "x", (size_t)65 << 20, &result),
                   PCC_COMPILER_TOOBIG);
  ck_assert_ptr_null(result);
  /* The empty module is fine. */
  COMPILER_OK(pcc_compiler_compile(pool, 0, "/a.py", NULL, 0, &result));
  ck_assert(result->ok);
  pcc_compile_result_free(result);
  pcc_compile_result_free(NULL);
  pcc_compiler_close(pool);
}
END_TEST

START_TEST(test_syntax_error) {
  pcc_compiler *pool = open_default(1, 0, 0);
  const char *src = "x = 1\nif x:\n    y = (1 +\n";
  const char *bad = "x = 1\ndef f(:\n    pass\n";
  char path[] = "/tmp/pcc_test_XXXXXX.py";
  char expected[OUTPUT_MAX], got[OUTPUT_MAX];
  int fd = mkstemps(path, 3);
  const char *argv[] = {python_path(), "-I", "-c",
                        "import sys\n"
                        "try:\n"
                        "    compile(open(sys.argv[1], 'rb').read(), 'm.py', 'exec',"
                        " dont_inherit=True)\n"
                        "except SyntaxError as e:\n"
                        "    print(type(e).__name__, e.msg, e.lineno, e.offset, sep='|')\n",
                        path, NULL};
  pcc_compile_result *result;

  ck_assert_int_ge(fd, 0);
  close(fd);
  for (int i = 0; i < 2; i++) {
    const char *text = i == 0 ? bad : src;
    write_file(path, text, strlen(text));
    ck_assert_int_eq(run_capture(argv, expected, sizeof expected), 0);
    result = compile_text(pool, 0, text);
    ck_assert(!result->ok);
    ck_assert_ptr_null(result->marshal);
    snprintf(got, sizeof got, "%s|%s|%d|%d\n", result->error_type, result->error_message,
             result->error_line, result->error_offset);
    ck_assert_str_eq(got, expected);
    if (i == 0) {
      ck_assert_str_eq(result->error_type, "SyntaxError");
      ck_assert_str_eq(result->error_message, "invalid syntax");
      ck_assert_int_eq(result->error_line, 2);
      ck_assert_int_eq(result->error_offset, 7);
    }
    pcc_compile_result_free(result);
  }
  unlink(path);

  result = compile_text(pool, 0, "def f():\nreturn 1\n");
  ck_assert(!result->ok);
  ck_assert_str_eq(result->error_type, "IndentationError");
  ck_assert_int_eq(result->error_line, 2);
  pcc_compile_result_free(result);
  /* The worker is still fine after errors. */
  expect_output(pool, 0, "print(1)\n", 9, "1\n");
  ck_assert_uint_eq(pcc_compiler_restarts(pool), 0);
  pcc_compiler_close(pool);
}
END_TEST

START_TEST(test_coding_declaration) {
  pcc_compiler *pool = open_default(1, 0, 0);
  /* 0xe9 is é in latin-1 and invalid UTF-8 on its own. */
  const char latin1[] = "# -*- coding: latin-1 -*-\ns = '\xe9'\nprint(hex(ord(s)), len(s))\n";
  const char nocookie[] = "s = '\xe9'\n";
  pcc_compile_result *result;
  expect_output(pool, 0, latin1, sizeof latin1 - 1, "0xe9 1\n");
  /* Without the declaration the same byte is a decoding error, as in CPython's import. */
  result = compile_text(pool, 0, nocookie);
  ck_assert(!result->ok);
  ck_assert_str_eq(result->error_type, "SyntaxError");
  pcc_compile_result_free(result);
  pcc_compiler_close(pool);
}
END_TEST

START_TEST(test_utf8_bom) {
  pcc_compiler *pool = open_default(1, 0, 0);
  const char bom[] = "\xef\xbb\xbfs = '\xc3\xa9'\nprint(hex(ord(s)), len(s))\n";
  expect_output(pool, 0, bom, sizeof bom - 1, "0xe9 1\n");
  pcc_compiler_close(pool);
}
END_TEST

START_TEST(test_optimize) {
  pcc_compiler *pool = open_default(1, 0, 0);
  const char *src = "'''module doc'''\n"
                    "def f():\n    'func doc'\n    assert False, 'boom'\n    return 1\n"
                    "print(__doc__, f.__doc__, f(), __debug__)\n";
  pcc_compile_result *result;
  expect_output(pool, 2, src, strlen(src), "None None 1 False\n");
  expect_output(pool, 1, src, strlen(src), "module doc func doc 1 False\n");
  result = compile_text(pool, 0, "import sys\nassert False\n");
  ck_assert(result->ok);
  pcc_compile_result_free(result);
  pcc_compiler_close(pool);
}
END_TEST

START_TEST(test_null_byte) {
  pcc_compiler *pool = open_default(1, 0, 0);
  const char src[] = "x = 1\n\0y = 2\n";
  pcc_compile_result *result = NULL;
  COMPILER_OK(pcc_compiler_compile(pool, 0, "/tmp/n.py", src, sizeof src - 1, &result));
  ck_assert(!result->ok);
  /* 3.11 raises ValueError here; 3.12 a SyntaxError. */
  ck_assert_msg(strcmp(result->error_type, "ValueError") == 0 ||
                    strcmp(result->error_type, "SyntaxError") == 0,
                "type %s", result->error_type);
  ck_assert(strstr(result->error_message, "null bytes") != NULL);
  pcc_compile_result_free(result);
  pcc_compiler_close(pool);
}
END_TEST

typedef struct {
  pcc_compiler *pool;
  const char *src;
  size_t len;
  pcc_compiler_status rc;
  pcc_compile_result *result;
} compile_job;

static void *compile_thread(void *arg) {
  compile_job *job = arg;
  job->rc = pcc_compiler_compile(job->pool, 0, "/tmp/slow.py", job->src, job->len, &job->result);
  return NULL;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

START_TEST(test_worker_killed) {
  pcc_compiler *pool = open_default(1, 30000, 0);
  size_t len;
  char *src = slow_source(SLOW_LINES, &len);
  compile_job job = {.pool = pool, .src = src, .len = len};
  pthread_t thread;
  pid_t before[1], after[1];

  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, before, 1), 1);
  ck_assert_int_eq(pthread_create(&thread, NULL, compile_thread, &job), 0);
  sleep_ms(400); /* the compile takes seconds */
  ck_assert_int_eq(kill(before[0], SIGKILL), 0);
  ck_assert_int_eq(pthread_join(thread, NULL), 0);
  ck_assert_int_eq(job.rc, PCC_COMPILER_CRASHED);
  ck_assert_ptr_null(job.result);
  ck_assert_uint_eq(pcc_compiler_restarts(pool), 1);
  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, after, 1), 1);
  ck_assert_int_ne(before[0], after[0]);
  expect_output(pool, 0, "print('alive')\n", 15, "alive\n");
  free(src);
  pcc_compiler_close(pool);
}
END_TEST

START_TEST(test_worker_killed_idle) {
  pcc_compiler *pool = open_default(1, 0, 0);
  pid_t pid[1];
  pcc_compile_result *result = NULL;
  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, pid, 1), 1);
  ck_assert_int_eq(kill(pid[0], SIGKILL), 0);
  sleep_ms(100);
  /* The dead idle worker fails the next request, which replaces it. */
  ck_assert_int_eq(pcc_compiler_compile(pool, 0, "/a.py", "x=1\n", 4, &result),
                   PCC_COMPILER_CRASHED);
  ck_assert_uint_eq(pcc_compiler_restarts(pool), 1);
  expect_output(pool, 0, "print('alive')\n", 15, "alive\n");
  pcc_compiler_close(pool);
}
END_TEST

START_TEST(test_timeout) {
  pcc_compiler *pool = open_default(1, 50, 0);
  size_t len;
  char *src = slow_source(SLOW_LINES, &len);
  pcc_compile_result *result = NULL;
  struct timespec t0, t1;
  long elapsed_ms;

  clock_gettime(CLOCK_MONOTONIC, &t0);
  ck_assert_int_eq(pcc_compiler_compile(pool, 0, "/tmp/slow.py", src, len, &result),
                   PCC_COMPILER_TIMEOUT);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  elapsed_ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
  ck_assert_ptr_null(result);
  /* 50 ms plus killing and restarting a worker, well below the compile's 3 s */
  ck_assert_int_lt(elapsed_ms, 2000);
  ck_assert_uint_eq(pcc_compiler_restarts(pool), 1);
  expect_output(pool, 0, "print('alive')\n", 15, "alive\n");
  free(src);
  pcc_compiler_close(pool);
}
END_TEST

#ifndef TEST_ASAN
START_TEST(test_memory_limit) {
  pcc_compiler *pool = open_default(1, 20000, (uint64_t)200 << 20);
  /* a list display of a million elements needs about 1 GiB to compile */
  size_t n = 1000000, len = 5 + 2 * n + 2;
  char *src = malloc(len + 1);
  pcc_compile_result *result = NULL;
  pcc_compiler_status rc;
  ck_assert_ptr_nonnull(src);
  memcpy(src, "x = [", 5);
  for (size_t i = 0; i < n; i++) memcpy(src + 5 + 2 * i, "1,", 2);
  memcpy(src + 5 + 2 * n, "]\n", 2);
  rc = pcc_compiler_compile(pool, 0, "/tmp/big.py", src, len, &result);
  ck_assert_msg(rc == PCC_COMPILER_CRASHED || (rc == PCC_COMPILER_OK && !result->ok &&
                                               strcmp(result->error_type, "MemoryError") == 0),
                "rc %s", pcc_compiler_strerror(rc));
  pcc_compile_result_free(result);
  expect_output(pool, 0, "print('alive')\n", 15, "alive\n");
  free(src);
  pcc_compiler_close(pool);
}
END_TEST
#endif

START_TEST(test_python_script_worker) {
  const char *argv[] = {python_path(), env_or("PCC_TEST_WORKER_PY", "compiler/worker.py"),
                        NULL};
  pcc_compiler *embedded = open_default(1, 0, 0);
  pcc_compiler *script = open_pool(argv, 2, 0, 0);
  pcc_compile_result *a, *b;
  const char *src = "def f(n):\n    return n * 2\nprint(f(21))\n";
  ck_assert(pcc_magic_equal(pcc_compiler_magic(embedded), pcc_compiler_magic(script)));
  ck_assert_msg(strncmp(pcc_compiler_name(script), "cpython-3.11", 12) == 0, "name %s",
                pcc_compiler_name(script));
  expect_output(script, 0, src, strlen(src), "42\n");
  expect_output(script, 2, "'doc'\nprint(__doc__)\n", 20, "None\n");
  /* Same compiler underneath: the same bytes. */
  a = compile_text(embedded, 0, src);
  b = compile_text(script, 0, src);
  ck_assert_uint_eq(a->marshal_len, b->marshal_len);
  ck_assert_mem_eq(a->marshal, b->marshal, a->marshal_len);
  pcc_compile_result_free(a);
  pcc_compile_result_free(b);
  b = compile_text(script, 0, "x = 1\ndef f(:\n    pass\n");
  ck_assert(!b->ok);
  ck_assert_str_eq(b->error_type, "SyntaxError");
  ck_assert_int_eq(b->error_line, 2);
  ck_assert_int_eq(b->error_offset, 7);
  pcc_compile_result_free(b);
  pcc_compiler_close(script);
  pcc_compiler_close(embedded);
}
END_TEST

#define THREADS 8
#define ROUNDS 5

typedef struct {
  pcc_compiler *pool;
  int index;
  int failures; /* Check's asserts are not thread-safe: threads count, main asserts */
  pcc_compile_result *results[ROUNDS];
} thread_job;

static void *concurrent_thread(void *arg) {
  thread_job *job = arg;
  for (int round = 0; round < ROUNDS; round++) {
    char src[64];
    int n = snprintf(src, sizeof src, "print(%d)\n", job->index * 1000 + round);
    if (pcc_compiler_compile(job->pool, 0, "/tmp/t.py", src, (size_t)n,
                             &job->results[round]) != PCC_COMPILER_OK ||
        !job->results[round]->ok)
      job->failures++;
  }
  return NULL;
}

START_TEST(test_concurrent) {
  pcc_compiler *pool = open_default(2, 0, 0);
  pthread_t threads[THREADS];
  thread_job jobs[THREADS];
  memset(jobs, 0, sizeof jobs);
  for (int i = 0; i < THREADS; i++) {
    jobs[i].pool = pool;
    jobs[i].index = i;
    ck_assert_int_eq(pthread_create(&threads[i], NULL, concurrent_thread, &jobs[i]), 0);
  }
  for (int i = 0; i < THREADS; i++) {
    ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
    ck_assert_int_eq(jobs[i].failures, 0);
  }
  /* Each answer belongs to its own request: run the first and last of every thread. */
  for (int i = 0; i < THREADS; i++) {
    for (int round = 0; round < ROUNDS; round += ROUNDS - 1) {
      char out[OUTPUT_MAX], expected[32];
      snprintf(expected, sizeof expected, "%d\n", i * 1000 + round);
      run_pyc(pool, jobs[i].results[round], out, sizeof out);
      ck_assert_str_eq(out, expected);
    }
    for (int round = 0; round < ROUNDS; round++) pcc_compile_result_free(jobs[i].results[round]);
  }
  ck_assert_uint_eq(pcc_compiler_restarts(pool), 0);
  pcc_compiler_close(pool);
}
END_TEST

/* A fake worker (sh) that says hello, answers its first request with a frame of unknown type
 * 'Z', and refuses to start again while `marker` exists. */
static pcc_compiler *open_fake(char *script, size_t size, const char *marker) {
  static const char *argv[4];
  const char *hello = "{\"magic\":\"a70d0d0a\",\"implementation\":\"fake\",\"version\":\"1.0\"}";
  int n = snprintf(script, size,
                   "if [ -e %s ]; then exit 1; fi; : > %s; "
                   "printf '\\%03o\\000\\000\\000H%%s' '%s'; "
                   "head -c 1 >/dev/null; printf '\\001\\000\\000\\000Z'; sleep 5",
                   marker, marker, (unsigned)(strlen(hello) + 1), hello);
  ck_assert(n > 0 && (size_t)n < size);
  argv[0] = "/bin/sh";
  argv[1] = "-c";
  argv[2] = script;
  argv[3] = NULL;
  return open_pool(argv, 1, 5000, 0);
}

START_TEST(test_protocol_and_respawn_failure) {
  char marker[] = "/tmp/pcc_test_XXXXXX";
  char script[512];
  int fd = mkstemp(marker);
  pcc_compiler *pool;
  pcc_compile_result *result = NULL;
  pid_t pid[1];
  ck_assert_int_ge(fd, 0);
  close(fd);
  unlink(marker);
  pool = open_fake(script, sizeof script, marker);
  ck_assert_str_eq(pcc_compiler_name(pool), "fake-1.0");
  /* 'Z' is a protocol error; the replacement cannot start (the marker exists). */
  ck_assert_int_eq(pcc_compiler_compile(pool, 0, "/a.py", "x=1\n", 4, &result),
                   PCC_COMPILER_PROTOCOL);
  ck_assert_ptr_null(result);
  ck_assert_uint_eq(pcc_compiler_restarts(pool), 1);
  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, pid, 1), 0);
  /* No worker can run: fail fast, do not wait forever. */
  ck_assert_int_eq(pcc_compiler_compile(pool, 0, "/a.py", "x=1\n", 4, &result),
                   PCC_COMPILER_SPAWN);
  ck_assert_int_eq(pcc_compiler_compile(pool, 0, "/a.py", "x=1\n", 4, &result),
                   PCC_COMPILER_SPAWN);
  /* Once it can start again, the dead slot is retried by the next compile. */
  ck_assert_int_eq(unlink(marker), 0);
  ck_assert_int_eq(pcc_compiler_compile(pool, 0, "/a.py", "x=1\n", 4, &result),
                   PCC_COMPILER_PROTOCOL);
  ck_assert_uint_eq(pcc_compiler_restarts(pool), 2);
  pcc_compiler_close(pool);
  unlink(marker);
}
END_TEST

START_TEST(test_close_while_busy) {
  pcc_compiler *pool = open_default(1, 30000, 0);
  size_t len;
  char *src = slow_source(SLOW_LINES, &len);
  compile_job jobs[2] = {{.pool = pool, .src = src, .len = len},
                         {.pool = pool, .src = src, .len = len}};
  pthread_t threads[2];
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(pthread_create(&threads[i], NULL, compile_thread, &jobs[i]), 0);
  sleep_ms(300);
  pcc_compiler_close(pool); /* one compile is running, one waits for the only worker */
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
    ck_assert_int_eq(jobs[i].rc, PCC_COMPILER_CLOSED);
  }
  free(src);
}
END_TEST

/* ---- limits ------------------------------------------------------------------------------ */

/* The pool's bounds, both sides of each: /bin/true never says hello, so PCC_COMPILER_SPAWN means
 * the configuration passed the checks and PCC_COMPILER_INVALID that it did not. */
START_TEST(test_open_limits)
{
  const char *argv[PCC_WORKER_ARGS_MAX + 2];
  for (size_t i = 0; i < PCC_WORKER_ARGS_MAX + 1; i++)
    argv[i] = "/bin/true";
  argv[PCC_WORKER_ARGS_MAX + 1] = NULL;
  pcc_compiler_config config = {.argv = argv, .workers = 1};
  pcc_compiler *pool = NULL;
  ck_assert_int_eq(pcc_compiler_open(&config, &pool), PCC_COMPILER_INVALID);
  argv[PCC_WORKER_ARGS_MAX] = NULL;
  ck_assert_int_eq(pcc_compiler_open(&config, &pool), PCC_COMPILER_SPAWN);
  config.workers = PCC_WORKERS_MAX + 1;
  ck_assert_int_eq(pcc_compiler_open(&config, &pool), PCC_COMPILER_INVALID);
  config.workers = PCC_WORKERS_MAX;
  ck_assert_int_eq(pcc_compiler_open(&config, &pool), PCC_COMPILER_SPAWN);
  ck_assert_ptr_null(pool);
}
END_TEST

/* A request one byte over PCC_FRAME_MAX is refused before any byte goes to the worker. */
START_TEST(test_compile_frame_limit)
{
  pcc_compiler *pool = open_default(1, 0, 0);
  const char *path = "/a.py";
  /* type + opt + path length + path + source */
  size_t len = PCC_FRAME_MAX - (1 + 1 + 4 + strlen(path)) + 1;
  pcc_compile_result *result = NULL;
  ck_assert_int_eq(pcc_compiler_compile(pool, 0, path, "x", len, &result), PCC_COMPILER_TOOBIG);
  ck_assert_ptr_null(result);
  expect_output(pool, 0, "print(1)\n", 9, "1\n");
  ck_assert_uint_eq(pcc_compiler_restarts(pool), 0);
  pcc_compiler_close(pool);
}
END_TEST

/* Reads a whole text file into a NUL-terminated string (caller frees). */
static char *read_text(const char *path)
{
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
  ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
  long size = ftell(f);
  ck_assert_int_ge(size, 0);
  rewind(f);
  char *text = malloc((size_t)size + 1);
  ck_assert_ptr_nonnull(text);
  ck_assert_uint_eq(fread(text, 1, (size_t)size, f), (size_t)size);
  text[size] = '\0';
  fclose(f);
  return text;
}

/* Parses a decimal integer after blanks into *value; returns the end, or NULL when none. */
static const char *py_integer(const char *p, uint64_t *value)
{
  char *end;
  p += strspn(p, " \t");
  if (!isdigit((unsigned char)*p))
    return NULL;
  errno = 0;
  unsigned long long n = strtoull(p, &end, 10);
  if (errno != 0)
    return NULL;
  *value = n;
  return end;
}

/* The line after the one at line, or NULL after the last. */
static const char *next_line(const char *line)
{
  const char *newline = strchr(line, '\n');
  return newline != NULL ? newline + 1 : NULL;
}

/* Finds the one module-level line `name = N` or `name = N << S` (decimal integers, a comment
 * may follow) in a Python source and stores its value in *value. False when the line is missing,
 * appears twice or has any other form: the caller's check then fails instead of guessing. */
static bool py_constant(const char *text, const char *name, uint64_t *value)
{
  size_t name_len = strlen(name);
  bool found = false;
  for (const char *line = text; line != NULL; line = next_line(line)) {
    const char *p = line + name_len;
    if (strncmp(line, name, name_len) != 0 || (*p != ' ' && *p != '\t' && *p != '='))
      continue;
    uint64_t base = 0, shift = 0;
    p += strspn(p, " \t");
    if (found || *p != '=' || (p = py_integer(p + 1, &base)) == NULL)
      return false;
    p += strspn(p, " \t");
    if (strncmp(p, "<<", 2) == 0) {
      p = py_integer(p + 2, &shift);
      if (p == NULL || shift >= 64 || base > (UINT64_MAX >> shift))
        return false;
      p += strspn(p, " \t");
    }
    if (*p != '\0' && *p != '\n' && *p != '\r' && *p != '#')
      return false;
    *value = base << shift;
    found = true;
  }
  return found;
}

START_TEST(test_py_constant_parser)
{
  uint64_t value = 0;
  ck_assert(py_constant("import os\nMAX_FRAME = 64 << 20  # note\nX = 1\n", "MAX_FRAME", &value));
  ck_assert_uint_eq(value, (uint64_t)64 << 20);
  ck_assert(py_constant("MAX_MESSAGE=4096", "MAX_MESSAGE", &value));
  ck_assert_uint_eq(value, 4096);
  ck_assert(py_constant("MAX_FRAMES = 1\nMAX_FRAME = 2\n", "MAX_FRAME", &value));
  ck_assert_uint_eq(value, 2);
  /* anything else is refused, never misread */
  ck_assert(!py_constant("X = 1\n", "MAX_FRAME", &value));
  ck_assert(!py_constant("    MAX_FRAME = 1\n", "MAX_FRAME", &value));
  ck_assert(!py_constant("MAX_FRAME = 64 * 2\n", "MAX_FRAME", &value));
  ck_assert(!py_constant("MAX_FRAME = 0x40\n", "MAX_FRAME", &value));
  ck_assert(!py_constant("MAX_FRAME = 1 << 64\n", "MAX_FRAME", &value));
  ck_assert(!py_constant("MAX_FRAME = 1\nMAX_FRAME = 1\n", "MAX_FRAME", &value));
}
END_TEST

/* worker.py cannot include pcc_limits.h: its copies of the limits must equal the C constants. */
START_TEST(test_worker_py_limits)
{
  const char *path = env_or("PCC_TEST_WORKER_PY", "compiler/worker.py");
  char *text = read_text(path);
  static const struct {
    const char *name;
    uint64_t c_value;
    const char *c_name;
  } limits[] = {
    {"MAX_FRAME", PCC_FRAME_MAX, "PCC_FRAME_MAX"},
    {"MAX_MESSAGE", PCC_WORKER_ERROR_MESSAGE_MAX, "PCC_WORKER_ERROR_MESSAGE_MAX"},
  };
  for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
    uint64_t value = 0;
    ck_assert_msg(py_constant(text, limits[i].name, &value),
                  "%s: no single line `%s = N` or `%s = N << S`", path, limits[i].name,
                  limits[i].name);
    ck_assert_msg(value == limits[i].c_value, "%s: %s is %llu but %s (proto/pcc_limits.h) is %llu",
                  path, limits[i].name, (unsigned long long)value, limits[i].c_name,
                  (unsigned long long)limits[i].c_value);
  }
  free(text);
}
END_TEST

static Suite *compiler_suite(void) {
  Suite *s = suite_create("compiler");
  TCase *basic = tcase_create("basic");
  TCase *faults = tcase_create("faults");
  tcase_set_timeout(basic, 60);
  tcase_set_timeout(faults, 60);
  tcase_add_test(basic, test_open_hello);
  tcase_add_test(basic, test_open_bad_argv);
  tcase_add_test(basic, test_compile_and_run);
  tcase_add_test(basic, test_bad_arguments);
  tcase_add_test(basic, test_syntax_error);
  tcase_add_test(basic, test_coding_declaration);
  tcase_add_test(basic, test_utf8_bom);
  tcase_add_test(basic, test_optimize);
  tcase_add_test(basic, test_null_byte);
  tcase_add_test(basic, test_python_script_worker);
  tcase_add_test(basic, test_concurrent);
  tcase_add_test(basic, test_open_limits);
  tcase_add_test(basic, test_compile_frame_limit);
  tcase_add_test(basic, test_py_constant_parser);
  tcase_add_test(basic, test_worker_py_limits);
  tcase_add_test(faults, test_worker_killed);
  tcase_add_test(faults, test_worker_killed_idle);
  tcase_add_test(faults, test_timeout);
  tcase_add_test(faults, test_close_while_busy);
  tcase_add_test(faults, test_protocol_and_respawn_failure);
  suite_add_tcase(s, basic);
  suite_add_tcase(s, faults);
#ifndef TEST_ASAN
  TCase *limits = tcase_create("memory_limit");
  tcase_set_timeout(limits, 60);
  tcase_add_test(limits, test_memory_limit);
  suite_add_tcase(s, limits);
#else
  printf("test_compiler: built with AddressSanitizer: memory_limit test skipped (RLIMIT_AS "
         "cannot coexist with ASan's shadow memory)\n");
#endif
  return s;
}

int main(void) {
  /* SIGPIPE keeps its default action: the pool must never raise it (MSG_NOSIGNAL). */
  return test_run_suite(compiler_suite());
}
