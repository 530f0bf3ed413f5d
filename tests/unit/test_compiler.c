/* test_compiler.c: Check suite for the compiler pool (compiler/compiler.h) and its workers.
 *
 * Runs the real pycached-cpython-worker (PCC_TEST_WORKER) and compiler/worker.py
 * (PCC_TEST_WORKER_PY) and checks their output against the reference interpreter
 * (PCC_TEST_PYTHON, /usr/bin/python3 by default), which executes the pycs we build from the
 * marshal bytes. Faults are injected for real: SIGKILL mid-compile, a timeout, a memory limit,
 * calls the worker's seccomp filter forbids (its hidden --sandbox-probe option).
 */
#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "asan.h"
#include "compiler.h"
#include "test_helpers.h"

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

/* Reads /proc/<pid>/<name> into out (through cat: /proc files have no size to read up to). */
static void read_proc(pid_t pid, const char *name, char *out, size_t size) {
  char path[64];
  const char *cat[] = {"/bin/cat", path, NULL};
  snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
  ck_assert_int_eq(run_capture(cat, out, size), 0);
}

/* What the pool applies to every worker (compiler.h): cwd /, no core dumps, a small fd budget,
 * no new privileges; and the seccomp filter when filtered (the embedded worker's own). */
static void check_confined(pid_t pid, bool filtered) {
  char link[64], cwd[64], text[8192];
  ssize_t n;
  snprintf(link, sizeof link, "/proc/%d/cwd", (int)pid);
  n = readlink(link, cwd, sizeof cwd - 1);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(cwd[0], '/');
  read_proc(pid, "limits", text, sizeof text);
  ck_assert_msg(strstr(text, "Max core file size        0                    0") != NULL, "%s",
                text);
  ck_assert_msg(strstr(text, "Max open files            16                   16") != NULL, "%s",
                text);
  read_proc(pid, "status", text, sizeof text);
  ck_assert_msg(strstr(text, "\nNoNewPrivs:\t1\n") != NULL, "%s", text);
  ck_assert_msg(strstr(text, filtered ? "\nSeccomp:\t2\n" : "\nSeccomp:\t0\n") != NULL, "%s",
                text);
}

/* The reference interpreter's outcome for src: what running it prints or, when compile() raises
 * SyntaxError or ValueError, "Type|message|line|offset\n" as the worker reports it (a line or
 * offset that is unknown, None or negative, is 0). */
static void reference_outcome(const char *src, size_t len, char *out, size_t size) {
  char path[] = "/tmp/pcc_test_XXXXXX.py";
  int fd = mkstemps(path, 3);
  const char *argv[] = {python_path(), "-I", "-c",
                        "import sys\n"
                        "try:\n"
                        "    code = compile(open(sys.argv[1], 'rb').read(), 'm.py', 'exec',"
                        " dont_inherit=True)\n"
                        "except (SyntaxError, ValueError) as e:\n"
                        "    at = [max(getattr(e, a, 0) or 0, 0) for a in ('lineno', 'offset')]\n"
                        "    print(type(e).__name__, getattr(e, 'msg', None) or e, *at,"
                        " sep='|')\n"
                        "else:\n"
                        "    exec(code, {'__name__': '__main__'})\n",
                        path, NULL};
  ck_assert_int_ge(fd, 0);
  close(fd);
  write_file(path, src, len);
  ck_assert_int_eq(run_capture(argv, out, size), 0);
  unlink(path);
}

/* Compiles src in the pool and checks that the outcome is the reference interpreter's: the same
 * output from the served code, or the same source error (never a transient one). */
static void expect_like_reference(pcc_compiler *pool, const char *src, size_t len) {
  char expected[OUTPUT_MAX], got[OUTPUT_MAX];
  pcc_compile_result *result = NULL;
  reference_outcome(src, len, expected, sizeof expected);
  COMPILER_OK(pcc_compiler_compile(pool, 0, "/tmp/pcc_test_mod.py", src, len, &result));
  if (result->ok) {
    run_pyc(pool, result, got, sizeof got);
  } else {
    ck_assert_ptr_null(result->marshal);
    ck_assert_msg(!result->transient, "%s is transient", result->error_type);
    snprintf(got, sizeof got, "%s|%s|%d|%d\n", result->error_type, result->error_message,
             result->error_line, result->error_offset);
  }
  ck_assert_msg(strcmp(got, expected) == 0, "source %.60s: got %s, expected %s", src, got,
                expected);
  pcc_compile_result_free(result);
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
  check_confined(pids[0], true);
  check_confined(pids[1], true);
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
  pcc_compile_result *result;

  expect_like_reference(pool, src, strlen(src));
  expect_like_reference(pool, bad, strlen(bad));
  result = compile_text(pool, 0, bad);
  ck_assert(!result->ok);
  ck_assert(!result->transient);
  ck_assert_str_eq(result->error_type, "SyntaxError");
  ck_assert_str_eq(result->error_message, "invalid syntax");
  ck_assert_int_eq(result->error_line, 2);
  ck_assert_int_eq(result->error_offset, 7);
  pcc_compile_result_free(result);

  result = compile_text(pool, 0, "def f():\nreturn 1\n");
  ck_assert(!result->ok);
  ck_assert(!result->transient);
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
  ck_assert(!result->transient);
  ck_assert_str_eq(result->error_type, "SyntaxError");
  pcc_compile_result_free(result);
  pcc_compiler_close(pool);
}
END_TEST

/* Every codec is loaded before the sandbox closes the file system: declarations of all kinds,
 * and those no codec answers, behave as in the reference interpreter (which reads its codecs
 * from disk when it needs them). Each source prints the character it decodes to. */
START_TEST(test_coding_declarations_in_the_sandbox) {
  static const char *const sources[] = {
    "# -*- coding: cp1252 -*-\nprint(ascii('\x80'))\n",
    "# -*- coding: euc-jp -*-\nprint(ascii('\xa4\xa2'))\n",
    "# -*- coding: shift_jis -*-\nprint(ascii('\x82\xa0'))\n",
    "# -*- coding: gbk -*-\nprint(ascii('\xc4\xe3'))\n",
    "# -*- coding: big5 -*-\nprint(ascii('\xa7" "A'))\n",
    "# -*- coding: iso2022_jp -*-\nprint(ascii('\x1b$B$\"\x1b(B'))\n",
    "# -*- coding: koi8-r -*-\nprint(ascii('\xc1'))\n",
    "# vim: set fileencoding=iso-8859-15 :\nprint(ascii('\xa4'))\n",
    "#!/usr/bin/python\n# coding=mac-roman\nprint(ascii('\x8e'))\n",
    "# coding: cp437\nprint(ascii('\x82'))\n",
    "# coding: idna\nprint(1)\n",
    "print(ascii('\\N{BULLET}'), ascii('\\N{HIRAGANA LETTER A}'))\n", /* unicodedata */
    "# coding: latin-1\nx = '\xe9' +\n",   /* an error's offset counts decoded characters */
    "# coding: latin-1\nprint(1 is 1)\n",  /* a SyntaxWarning, its source line refused */
    "print('\\d')\n",                      /* a DeprecationWarning (ignored by default) */
    "# coding: foo\nx = 1\n",              /* no such codec: its module search is refused */
    "# coding: foo\nx = 1\n",              /* ... and again, once the lookup is cached */
    "# coding: mbcs\nx = 1\n",             /* Windows only */
    "# coding: rot13\nx = 1\n",            /* not a text encoding */
    "# coding: undefined\nx = 1\n",        /* a codec that refuses everything */
    "# coding: utf-16\nx = 1\n",           /* decodes the rest as UTF-16 */
  };
  pcc_compiler *pool = open_default(1, 0, 0);
  for (size_t i = 0; i < sizeof sources / sizeof sources[0]; i++)
    expect_like_reference(pool, sources[i], strlen(sources[i]));
  ck_assert_uint_eq(pcc_compiler_restarts(pool), 0);
  pcc_compiler_close(pool);
}
END_TEST

/* A source near the default --max-source: large buffers (mremap, mmap) are within the filter. */
START_TEST(test_huge_source) {
  size_t n = (size_t)12 << 20;
  const char *head = "s = '", *tail = "'\nprint(len(s))\n";
  size_t len = strlen(head) + n + strlen(tail);
  char *src = malloc(len);
  char expected[32];
  pcc_compiler *pool = open_default(1, 0, 0);
  ck_assert_ptr_nonnull(src);
  memcpy(src, head, strlen(head));
  memset(src + strlen(head), 'a', n);
  memcpy(src + strlen(head) + n, tail, strlen(tail));
  snprintf(expected, sizeof expected, "%zu\n", n);
  expect_output(pool, 0, src, len, expected);
  free(src);
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
  ck_assert(!result->transient);
  pcc_compile_result_free(result);
  pcc_compiler_close(pool);
}
END_TEST

/* prefix, then times copies of part, then suffix (caller frees). */
static char *repeat(const char *prefix, const char *part, size_t times, const char *suffix) {
  size_t a = strlen(prefix), b = strlen(part), c = strlen(suffix);
  char *out = malloc(a + b * times + c + 1);
  ck_assert_ptr_nonnull(out);
  memcpy(out, prefix, a);
  for (size_t i = 0; i < times; i++) memcpy(out + a + b * i, part, b);
  memcpy(out + a + b * times, suffix, c + 1);
  return out;
}

/* Compiles src and checks that it fails with a transient error of one of the two types. */
static void expect_transient(pcc_compiler *pool, const char *src, const char *type,
                             const char *or_type) {
  pcc_compile_result *result = compile_text(pool, 0, src);
  ck_assert(!result->ok);
  ck_assert_msg(strcmp(result->error_type, type) == 0 || strcmp(result->error_type, or_type) == 0,
                "type %s: %s", result->error_type, result->error_message);
  ck_assert_msg(result->transient, "%s is not transient", result->error_type);
  pcc_compile_result_free(result);
}

/* MemoryError and RecursionError from compile() are not the source's fault; SyntaxError,
 * ValueError and their kin are (the tests above check them, each !transient). */
static void check_transient_errors(pcc_compiler *pool) {
  /* 100000 unary minus signs: the parser's stack overflows (3.11: MemoryError) */
  char *deep = repeat("x = ", "-", 100000, "1\n");
  /* a sum of 100000 terms: the compiler's recursion limit (RecursionError) */
  char *long_sum = repeat("x = 1", " + 1", 100000, "\n");
  /* too many nested parentheses is a SyntaxError, the source's fault */
  char *parens = repeat("x = ", "(", 300, "\n");
  pcc_compile_result *result;
  expect_transient(pool, deep, "MemoryError", "RecursionError");
  expect_transient(pool, long_sum, "RecursionError", "MemoryError");
  result = compile_text(pool, 0, parens);
  ck_assert(!result->ok);
  ck_assert_str_eq(result->error_type, "SyntaxError");
  ck_assert(!result->transient);
  pcc_compile_result_free(result);
  free(deep);
  free(long_sum);
  free(parens);
}

START_TEST(test_transient_errors) {
  pcc_compiler *pool = open_default(1, 0, 0);
  check_transient_errors(pool);
  expect_output(pool, 0, "print('alive')\n", 15, "alive\n");
  ck_assert_uint_eq(pcc_compiler_restarts(pool), 0);
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

/* After the pool's one worker, before, failed: it was replaced once, and the new one compiles. */
static void expect_replaced(pcc_compiler *pool, pid_t before) {
  pid_t after[1];
  ck_assert_uint_eq(pcc_compiler_restarts(pool), 1);
  pcc_compiler_repair(pool);
  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, after, 1), 1);
  ck_assert_int_ne(before, after[0]);
  expect_output(pool, 0, "print('alive')\n", 15, "alive\n");
}

START_TEST(test_worker_killed) {
  pcc_compiler *pool = open_default(1, 30000, 0);
  size_t len;
  char *src = slow_source(SLOW_LINES, &len);
  compile_job job = {.pool = pool, .src = src, .len = len};
  pthread_t thread;
  pid_t before[1];

  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, before, 1), 1);
  ck_assert_int_eq(pthread_create(&thread, NULL, compile_thread, &job), 0);
  sleep_ms(400); /* the compile takes seconds */
  ck_assert_int_eq(kill(before[0], SIGKILL), 0);
  ck_assert_int_eq(pthread_join(thread, NULL), 0);
  ck_assert_int_eq(job.rc, PCC_COMPILER_CRASHED);
  ck_assert_ptr_null(job.result);
  expect_replaced(pool, before[0]);
  free(src);
  pcc_compiler_close(pool);
}
END_TEST

static long ms_since(const struct timespec *t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

/* A worker that died while idle is noticed before a request is sent to it (drill_workers.py
 * found every such death cost the next request a 503): the request is compiled by a fresh one. */
START_TEST(test_worker_killed_idle) {
  pcc_compiler *pool = open_default(1, 0, 0);
  pid_t pid[1];
  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, pid, 1), 1);
  ck_assert_int_eq(kill(pid[0], SIGKILL), 0);
  sleep_ms(100);
  expect_output(pool, 0, "print('alive')\n", 15, "alive\n");
  ck_assert_uint_eq(pcc_compiler_restarts(pool), 1);
  ck_assert_int_eq(kill(pid[0], 0), -1); /* gone and reaped */
  pcc_compiler_close(pool);
}
END_TEST

/* A worker stopped (SIGSTOP) while idle is replaced before a request is sent to it: the request
 * does not wait out the compile timeout (before, it did, and got PCC_COMPILER_TIMEOUT). */
START_TEST(test_worker_stopped_idle) {
  pcc_compiler *pool = open_default(2, 20000, 0);
  pid_t pids[2];
  struct timespec t0;
  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, pids, 2), 2);
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(kill(pids[i], SIGSTOP), 0);
  sleep_ms(100);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  expect_output(pool, 0, "print('alive')\n", 15, "alive\n");
  ck_assert_int_lt(ms_since(&t0), 10000);
  ck_assert_uint_eq(pcc_compiler_restarts(pool), 2); /* both seen at once */
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(kill(pids[i], 0), -1);
  pcc_compiler_repair(pool);
  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, NULL, 0), 2); /* the pool is whole again */
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

#ifndef PCC_ASAN
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
  /* The allocation fails inside the filter (mmap's ENOMEM) and compile() raises MemoryError,
   * which is no fault of the source. */
  rc = pcc_compiler_compile(pool, 0, "/tmp/big.py", src, len, &result);
  ck_assert_msg(rc == PCC_COMPILER_OK, "rc %s", pcc_compiler_strerror(rc));
  ck_assert(!result->ok);
  ck_assert_str_eq(result->error_type, "MemoryError");
  ck_assert(result->transient);
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
  pid_t pids[2];
  ck_assert_msg(strncmp(pcc_compiler_name(script), "cpython-3.11", 12) == 0, "name %s",
                pcc_compiler_name(script));
  /* the pool confines it as it does the embedded worker, but it has no seccomp filter */
  ck_assert_uint_eq(pcc_compiler_worker_pids(script, pids, 2), 2);
  check_confined(pids[0], false);
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
  ck_assert(!b->transient);
  ck_assert_str_eq(b->error_type, "SyntaxError");
  ck_assert_int_eq(b->error_line, 2);
  ck_assert_int_eq(b->error_offset, 7);
  pcc_compile_result_free(b);
  check_transient_errors(script);
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

/* A pool of one worker that is the sh script (kept by the caller while the pool lives). */
static pcc_compiler *open_sh(const char *script, unsigned timeout_ms) {
  static const char *argv[4];
  argv[0] = "/bin/sh";
  argv[1] = "-c";
  argv[2] = script;
  argv[3] = NULL;
  return open_pool(argv, 1, timeout_ms, 0);
}

/* Fills marker ("/tmp/pcc_test_XXXXXX") with the name of a file that does not exist. */
static void fresh_marker(char *marker) {
  int fd = mkstemp(marker);
  ck_assert_int_ge(fd, 0);
  close(fd);
  unlink(marker);
}

/* A fake worker (sh) that says hello and answers its first request with a frame of unknown
 * type 'Z'; its replacements (they find `marker`, which the first creates) run `again` first
 * ("exit 1": they cannot start; "sleep 2": a slow hello; "kill -STOP $$": they stop). Opens a
 * pool of one with a 5 s compile timeout. */
static pcc_compiler *open_fake(char *script, size_t size, const char *marker, const char *again) {
  const char *hello = "{\"magic\":\"a70d0d0a\",\"implementation\":\"fake\",\"version\":\"1.0\"}";
  int n = snprintf(script, size,
                   "if [ -e %s ]; then %s; fi; : > %s; "
                   "printf '\\%03o\\000\\000\\000H%%s' '%s'; "
                   "head -c 1 >/dev/null; printf '\\001\\000\\000\\000Z'; sleep 5",
                   marker, again, marker, (unsigned)(strlen(hello) + 1), hello);
  ck_assert(n > 0 && (size_t)n < size);
  return open_sh(script, 5000);
}

START_TEST(test_protocol_and_respawn_failure) {
  char marker[] = "/tmp/pcc_test_XXXXXX";
  char script[512];
  pcc_compiler *pool;
  pcc_compile_result *result = NULL;
  pid_t pid[1];
  fresh_marker(marker);
  pool = open_fake(script, sizeof script, marker, "exit 1");
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

/* A failed compile answers at once; its worker's replacement starts later, in
 * pcc_compiler_repair (before, the failed compile returned only once the replacement had said
 * hello: drill_workers.py saw 12 s answers when a replacement was stopped). Here every
 * replacement takes 2 s to say hello. */
START_TEST(test_failure_does_not_wait_for_the_replacement) {
  char marker[] = "/tmp/pcc_test_XXXXXX";
  char script[1024];
  struct timespec t0;
  pcc_compile_result *result = NULL;
  fresh_marker(marker);
  pcc_compiler *pool = open_fake(script, sizeof script, marker, "sleep 2");
  clock_gettime(CLOCK_MONOTONIC, &t0);
  ck_assert_int_eq(pcc_compiler_compile(pool, 0, "/a.py", "x=1\n", 4, &result),
                   PCC_COMPILER_PROTOCOL);
  ck_assert_int_lt(ms_since(&t0), 1500);
  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, NULL, 0), 0);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pcc_compiler_repair(pool);
  ck_assert_int_ge(ms_since(&t0), 1500); /* the replacement's hello */
  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, NULL, 0), 1);
  pcc_compiler_close(pool);
  unlink(marker);
}
END_TEST

/* A replacement stopped (SIGSTOP) before its hello is given up at once, not after the 10 s hello
 * timeout: before, pcc_compiler_repair blocked that long with its slot busy, and a pool that got
 * no compile after it stayed a worker short (drill_workers.py: one live worker of two for 10 s
 * after the storm; a compile that started the replacement itself took 9.8 s). Here every
 * replacement stops itself; the first worker answers with a protocol error. */
START_TEST(test_replacement_stopped_before_hello) {
  char marker[] = "/tmp/pcc_test_XXXXXX";
  char script[1024];
  struct timespec t0;
  pcc_compile_result *result = NULL;
  fresh_marker(marker);
  pcc_compiler *pool = open_fake(script, sizeof script, marker, "kill -STOP $$");
  ck_assert_int_eq(pcc_compiler_compile(pool, 0, "/a.py", "x=1\n", 4, &result),
                   PCC_COMPILER_PROTOCOL);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pcc_compiler_repair(pool); /* the replacement stops itself */
  ck_assert_int_lt(ms_since(&t0), 3000);
  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, NULL, 0), 0);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  /* a compile that must start one itself fails fast too */
  ck_assert_int_eq(pcc_compiler_compile(pool, 0, "/a.py", "x=1\n", 4, &result),
                   PCC_COMPILER_SPAWN);
  ck_assert_int_lt(ms_since(&t0), 3000);
  /* once replacements start again, the next repair makes the pool whole */
  ck_assert_int_eq(unlink(marker), 0);
  pcc_compiler_repair(pool);
  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, NULL, 0), 1);
  pcc_compiler_close(pool);
  unlink(marker);
}
END_TEST

/* ---- an interpreter the workers' uid cannot reach (expose.h) ---------------------------- */

/* A fake interpreter at DIR/prefix/bin/worker where DIR is 0700 (as pyenv's tree under /root)
 * and the workers run as nobody: the pool exposes the prefix in a private mount namespace. The
 * worker reports in its hello's version what it sees: DIR/secret (hidden or leaked) and whether
 * it can write to the prefix (ro or rw; the prefix is 0777, so only the read-only bind stops
 * it). Nothing is mounted in the test's own namespace. Then the closed directory is moved inside
 * the prefix (its bin/ 0700), which is not ours to open: the pool refuses to start. */
START_TEST(test_unreachable_interpreter_exposed) {
  char dir[] = "/tmp/pcc_test_XXXXXX", path[PATH_MAX], blocked[PATH_MAX], script[1024];
  const char *hello_fmt = "{\"magic\":\"a70d0d0a\",\"implementation\":\"fake\","
                          "\"version\":\"%s.%s\"}";
  const char *argv[2] = {path, NULL};
  pcc_compiler_config config = {.argv = argv, .workers = 1, .drop_privileges = true,
                                .uid = 65534, .gid = 65534};
  pcc_compiler *pool = NULL;
  unsigned mode = 0;
  char mounts[1 << 16];
  if (geteuid() != 0)
    return; /* needs root: the namespace and the uid drop (the suite runs as root in CI) */
  ck_assert_ptr_nonnull(mkdtemp(dir)); /* 0700 */
  snprintf(path, sizeof path, "%s/secret", dir);
  write_file(path, "x", 1);
  snprintf(path, sizeof path, "%s/prefix", dir);
  ck_assert_int_eq(mkdir(path, 0777), 0);
  ck_assert_int_eq(chmod(path, 0777), 0);
  snprintf(path, sizeof path, "%s/prefix/bin", dir);
  ck_assert_int_eq(mkdir(path, 0755), 0);
  int n = snprintf(script, sizeof script,
                   "#!/bin/sh\n"
                   "if [ -e %s/secret ]; then a=leaked; else a=hidden; fi\n"
                   "if touch %s/prefix/probe 2>/dev/null; then b=rw; else b=ro; fi\n"
                   "printf '\\%03o\\000\\000\\000H%s' $a $b\n"
                   "head -c 1 >/dev/null; sleep 5\n",
                   dir, dir, (unsigned)(strlen(hello_fmt) - 4 + 8 + 1), hello_fmt);
  ck_assert(n > 0 && (size_t)n < sizeof script);
  snprintf(path, sizeof path, "%s/prefix/bin/worker", dir);
  write_file(path, script, (size_t)n);
  ck_assert_int_eq(chmod(path, 0755), 0);

  ck_assert(pcc_compiler_unreachable(path, 65534, 65534, blocked, sizeof blocked, &mode));
  ck_assert_str_eq(blocked, dir);
  ck_assert_uint_eq(mode, 0700);
  ck_assert(!pcc_compiler_unreachable(path, 0, 0, blocked, sizeof blocked, NULL));
  COMPILER_OK(pcc_compiler_open(&config, &pool));
  ck_assert_str_eq(pcc_compiler_name(pool), "fake-hidden.ro");
  pcc_compiler_close(pool);
  pool = NULL;
  int fd = open("/proc/self/mountinfo", O_RDONLY);
  ck_assert_int_ge(fd, 0);
  ssize_t got = read(fd, mounts, sizeof mounts - 1);
  close(fd);
  ck_assert_int_gt(got, 0);
  mounts[got] = '\0';
  ck_assert_ptr_null(strstr(mounts, dir));

  /* the closed directory inside the prefix: refused, and said by pcc_compiler_unreachable */
  snprintf(path, sizeof path, "%s", dir);
  ck_assert_int_eq(chmod(path, 0755), 0);
  snprintf(path, sizeof path, "%s/prefix/bin", dir);
  ck_assert_int_eq(chmod(path, 0700), 0);
  snprintf(path, sizeof path, "%s/prefix/bin/worker", dir);
  ck_assert(pcc_compiler_unreachable(path, 65534, 65534, blocked, sizeof blocked, NULL));
  snprintf(script, sizeof script, "%s/prefix/bin", dir);
  ck_assert_str_eq(blocked, script);
  ck_assert_int_eq(pcc_compiler_open(&config, &pool), PCC_COMPILER_SPAWN);
  ck_assert_ptr_null(pool);

  const char *rm[] = {"/bin/rm", "-rf", dir, NULL};
  char ignored[16];
  ck_assert_int_eq(run_capture(rm, ignored, sizeof ignored), 0);
}
END_TEST

/* ---- the sandbox and recycling ----------------------------------------------------------- */

static const char *const probe_kinds[] = {"open", "socket", "exec", "fork"};

/* A pool of one embedded worker started through sh: the first with --sandbox-probe kind, its
 * replacements without (they find marker, which the first creates). */
static pcc_compiler *open_probe(const char *kind, char *script, size_t size, const char *marker) {
  int n = snprintf(script, size,
                   "if [ -e '%s' ]; then exec '%s'; fi; : > '%s'; exec '%s' --sandbox-probe %s",
                   marker, worker_path(), marker, worker_path(), kind);
  ck_assert(n > 0 && (size_t)n < size);
  return open_sh(script, 0);
}

/* The worker attempts a call its filter forbids at its first compile: the kernel kills it, the
 * compile fails as for any crash, and a fresh worker serves the next one. Without the filter the
 * call fails harmlessly (it names a path that does not exist) and the compile succeeds. */
START_TEST(test_sandbox_probe) {
  const char *kind = probe_kinds[_i];
  char marker[] = "/tmp/pcc_test_XXXXXX";
  char script[2 * PATH_MAX + 256];
  pcc_compiler *pool;
  pcc_compile_result *result = NULL;
  pid_t before[1];
  fresh_marker(marker);
  pool = open_probe(kind, script, sizeof script, marker);
  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, before, 1), 1);
  ck_assert_msg(pcc_compiler_compile(pool, 0, "/a.py", "x = 1\n", 6, &result) ==
                    PCC_COMPILER_CRASHED,
                "probe %s: the worker was not killed", kind);
  ck_assert_ptr_null(result);
  ck_assert_int_eq(kill(before[0], 0), -1); /* gone and reaped */
  expect_replaced(pool, before[0]);
  pcc_compiler_close(pool);
  unlink(marker);
}
END_TEST

/* Opens a pool of one embedded worker that is recycled after max_compiles (0: the default). */
static pcc_compiler *open_recycling(unsigned max_compiles) {
  const char *argv[] = {worker_path(), NULL};
  pcc_compiler_config config = {.argv = argv, .workers = 1, .max_compiles = max_compiles};
  pcc_compiler *pool = NULL;
  COMPILER_OK(pcc_compiler_open(&config, &pool));
  return pool;
}

static pid_t only_pid(const pcc_compiler *pool) {
  pid_t pid[1];
  ck_assert_uint_eq(pcc_compiler_worker_pids(pool, pid, 1), 1);
  return pid[0];
}

/* With max_compiles 3 the worker that answered 3 compiles is replaced: the 4th runs in a new
 * process. A recycle is no restart (no failure). */
START_TEST(test_recycle) {
  pcc_compiler *pool = open_recycling(3);
  pid_t first = only_pid(pool), second;
  for (int i = 1; i <= 2; i++) {
    expect_output(pool, 0, "print('hi')\n", 12, "hi\n");
    ck_assert_int_eq(only_pid(pool), first);
  }
  expect_output(pool, 0, "print('hi')\n", 12, "hi\n"); /* the 3rd */
  pcc_compiler_repair(pool);
  second = only_pid(pool);
  ck_assert_int_ne(second, first);
  ck_assert_int_eq(kill(first, 0), -1);
  ck_assert_uint_eq(pcc_compiler_recycles(pool), 1);
  ck_assert_uint_eq(pcc_compiler_restarts(pool), 0);
  expect_output(pool, 0, "print('new')\n", 13, "new\n"); /* the 4th, in the new worker */
  ck_assert_int_eq(only_pid(pool), second);
  pcc_compiler_close(pool);
}
END_TEST

/* max_compiles 0 is PCC_WORKER_COMPILES_DEFAULT: both sides of it. */
START_TEST(test_recycle_default) {
  pcc_compiler *pool = open_recycling(0);
  pid_t first = only_pid(pool);
  for (unsigned i = 0; i < PCC_WORKER_COMPILES_DEFAULT - 1; i++)
    pcc_compile_result_free(compile_text(pool, 0, "x = 1\n"));
  ck_assert_int_eq(only_pid(pool), first);
  ck_assert_uint_eq(pcc_compiler_recycles(pool), 0);
  pcc_compile_result_free(compile_text(pool, 0, "x = 1\n"));
  pcc_compiler_repair(pool);
  ck_assert_int_ne(only_pid(pool), first);
  ck_assert_uint_eq(pcc_compiler_recycles(pool), 1);
  pcc_compiler_close(pool);
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
  tcase_add_test(basic, test_coding_declarations_in_the_sandbox);
  tcase_add_test(basic, test_huge_source);
  tcase_add_test(basic, test_transient_errors);
  tcase_add_test(basic, test_python_script_worker);
  tcase_add_test(basic, test_concurrent);
  tcase_add_test(basic, test_open_limits);
  tcase_add_test(basic, test_compile_frame_limit);
  tcase_add_test(basic, test_py_constant_parser);
  tcase_add_test(basic, test_worker_py_limits);
  tcase_add_test(faults, test_worker_killed);
  tcase_add_test(faults, test_worker_killed_idle);
  tcase_add_test(faults, test_worker_stopped_idle);
  tcase_add_test(faults, test_failure_does_not_wait_for_the_replacement);
  tcase_add_test(faults, test_replacement_stopped_before_hello);
  tcase_add_test(faults, test_unreachable_interpreter_exposed);
  tcase_add_test(faults, test_timeout);
  tcase_add_test(faults, test_close_while_busy);
  tcase_add_test(faults, test_protocol_and_respawn_failure);
  tcase_add_loop_test(faults, test_sandbox_probe, 0,
                      (int)(sizeof probe_kinds / sizeof probe_kinds[0]));
  tcase_add_test(faults, test_recycle);
  tcase_add_test(faults, test_recycle_default);
  suite_add_tcase(s, basic);
  suite_add_tcase(s, faults);
#ifndef PCC_ASAN
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
