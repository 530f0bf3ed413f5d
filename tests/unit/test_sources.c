/* test_sources.c: the Check suite of server/sources.c, without HTTP: files beneath a root are
 * read, and every way out (`..`, symlinks absolute and relative, symlinked directories, FIFOs,
 * devices, directories, absent and unreadable files, paths outside) is refused with one and the
 * same answer, by both resolvers (openat2 and the openat walk, forced by PCC_SOURCES_WALK=1);
 * the size and mtime checks; the roots as given and as resolved. The e2e suite
 * tests/e2e/security_sources.py races a directory swapped for a symlink against the server. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "sources.h"
#include "test_helpers.h"

/* docs/API.md: the one message of every refusal about a path */
#define REFUSED "path is not a readable regular file beneath a source root"
#define BIG ((uint64_t)1 << 20)

static char tmp[PATH_MAX]; /* realpath of the test's directory */

/* A path under tmp: printf-style; each call gets one of eight rotating buffers (so the ninth
 * call overwrites the first's). */
static const char *at(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *at(const char *fmt, ...)
{
  static char bufs[8][PATH_MAX + 300];
  static unsigned next;
  char *buf = bufs[next++ % 8];
  int n = snprintf(buf, sizeof bufs[0], "%s/", tmp);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + n, sizeof bufs[0] - (size_t)n, fmt, ap);
  va_end(ap);
  return buf;
}

static void write_file(const char *path, const char *text)
{
  FILE *f = fopen(path, "w");
  ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
  fputs(text, f);
  ck_assert_int_eq(fclose(f), 0);
}

static void make_dir(const char *path)
{
  ck_assert_msg(mkdir(path, 0755) == 0, "%s: %s", path, strerror(errno));
}

static void make_link(const char *target, const char *path)
{
  ck_assert_msg(symlink(target, path) == 0, "%s: %s", path, strerror(errno));
}

/* The tree: root/ is the source root, outside/ and rootsib/ (a name root/ is a prefix of) are
 * not; root/ holds files, and symlinks and special files that must all be refused. */
static void setup(void)
{
  test_make_tmpdir(tmp, sizeof tmp, "sources");
  char real[PATH_MAX];
  ck_assert_ptr_nonnull(realpath(tmp, real));
  memcpy(tmp, real, strlen(real) + 1);
  ck_assert_int_eq(chmod(tmp, 0755), 0); /* the unreadable test runs as nobody */
  make_dir(at("root"));
  make_dir(at("root/pkg"));
  make_dir(at("root/pkg/sub"));
  make_dir(at("outside"));
  make_dir(at("outside/pkg"));
  make_dir(at("rootsib"));
  write_file(at("root/pkg/m.py"), "X = 1\n");
  write_file(at("root/pkg/sub/deep.py"), "DEEP = 2\n");
  write_file(at("root/empty.py"), "");
  write_file(at("outside/secret.py"), "SECRET = 1\n");
  write_file(at("outside/pkg/m.py"), "OUT = 1\n");
  write_file(at("rootsib/m.py"), "SIB = 1\n");
  make_link(at("outside/secret.py"), at("root/abs.py"));
  make_link("../outside/secret.py", at("root/rel.py"));
  make_link("pkg/m.py", at("root/inlink.py"));
  make_link(at("outside/pkg"), at("root/outdir"));
  make_link("../outside/pkg", at("root/reloutdir"));
  make_link("pkg", at("root/indir"));
  make_link(at("outside/none.py"), at("root/dangling.py"));
  make_link("loop.py", at("root/loop.py"));
  make_link("/proc/self/root/etc/passwd", at("root/magic.py"));
  ck_assert_int_eq(mkfifo(at("root/fifo.py"), 0644), 0);
}

static void teardown(void)
{
  test_remove_tree(tmp);
}

/* Opens sources on the roots with resolver 0 (openat2) or 1 (the walk), and checks which. */
static pcc_sources *open_with(unsigned resolver, const char *const *roots, unsigned n)
{
  if (resolver == 1)
    ck_assert_int_eq(setenv("PCC_SOURCES_WALK", "1", 1), 0);
  else
    ck_assert_int_eq(unsetenv("PCC_SOURCES_WALK"), 0);
  pcc_sources *sources = pcc_sources_open(roots, n);
  ck_assert_ptr_nonnull(sources);
  ck_assert_str_eq(pcc_sources_resolver(sources), resolver == 1 ? "walk" : "openat2");
  return sources;
}

static pcc_sources *open_root(unsigned resolver)
{
  const char *roots[] = {at("root")};
  return open_with(resolver, roots, 1);
}

/* The mtime of what path names (following symlinks), or 0: a refusal must not be the mtime's. */
static int64_t mtime_of(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0 ? (int64_t)st.st_mtim.tv_sec : 0;
}

/* Asserts that path is read, with the bytes of text. */
static void check_reads(const pcc_sources *sources, const char *path, const char *text)
{
  pcc_answer answer;
  pcc_answer_init(&answer);
  uint8_t *bytes = (uint8_t *)"unset";
  size_t len = 99;
  ck_assert_msg(pcc_sources_read(sources, path, mtime_of(path), BIG, &bytes, &len, &answer),
                "%s: %s", path, answer.message);
  ck_assert_uint_eq(len, strlen(text));
  if (len == 0)
    ck_assert_ptr_null(bytes);
  else
    ck_assert(memcmp(bytes, text, len) == 0);
  free(bytes);
  ck_assert_int_eq(answer.kind, PCC_ANSWER_NONE);
}

/* Asserts that reading path is refused with the one answer, and returns nothing else. */
static void check_refused(const pcc_sources *sources, const char *path)
{
  pcc_answer answer;
  pcc_answer_init(&answer);
  uint8_t *bytes = NULL;
  size_t len = 0;
  ck_assert_msg(!pcc_sources_read(sources, path, mtime_of(path), BIG, &bytes, &len, &answer),
                "%s was read", path);
  ck_assert_ptr_null(bytes);
  ck_assert_int_eq(answer.kind, PCC_ANSWER_ERROR);
  ck_assert_msg(answer.error == PCC_ERR_FORBIDDEN, "%s: %s", path, pcc_error_name(answer.error));
  ck_assert_msg(strcmp(answer.message, REFUSED) == 0, "%s: %s", path, answer.message);
  ck_assert_ptr_null(answer.extra);
  pcc_answer_clear(&answer);
}

/* ---- beneath a root ---------------------------------------------------------------------- */

START_TEST(test_reads_beneath_a_root)
{
  pcc_sources *sources = open_root((unsigned)_i);
  check_reads(sources, at("root/pkg/m.py"), "X = 1\n");
  check_reads(sources, at("root/pkg/sub/deep.py"), "DEEP = 2\n");
  check_reads(sources, at("root/empty.py"), "");
  pcc_sources_close(sources);
}
END_TEST

START_TEST(test_every_way_out_is_one_answer)
{
  pcc_sources *sources = open_root((unsigned)_i);
  char long_name[NAME_MAX + 5];
  memset(long_name, 'a', NAME_MAX + 1);
  memcpy(long_name + NAME_MAX + 1, ".py", 4);
  const char *beneath_tmp[] = {
    /* spelling: `..`, ".", empty components, the root itself */
    "root/../outside/secret.py", "root/pkg/../pkg/m.py", "root/pkg/..", "root/./pkg/m.py",
    "root//pkg/m.py", "root/pkg/m.py/", "root", "root/",
    /* symlinks: absolute and relative out, inside, directories out and in, dangling, a loop, a
     * link through /proc */
    "root/abs.py", "root/rel.py", "root/inlink.py", "root/outdir/m.py", "root/reloutdir/m.py",
    "root/indir/m.py", "root/dangling.py", "root/loop.py", "root/magic.py",
    /* not regular files: a FIFO (must not block), a directory, a file as a directory */
    "root/fifo.py", "root/pkg", "root/pkg/sub", "root/pkg/m.py/x",
    /* absent */
    "root/none.py", "root/nodir/none.py",
    /* outside: existing and absent, siblings the root is a prefix of (root-pkg/m.py would be
     * root/pkg/m.py if the '/' after the root were not checked) */
    "outside/secret.py", "outside/none.py", "rootsib/m.py", "root.py", "root-pkg/m.py",
  };
  for (size_t i = 0; i < sizeof beneath_tmp / sizeof beneath_tmp[0]; i++)
    check_refused(sources, at("%s", beneath_tmp[i]));
  check_refused(sources, at("root/%s", long_name));
  const char *elsewhere[] = {"/etc/passwd", "/nonexistent/m.py", "/", "", "root/pkg/m.py"};
  for (size_t i = 0; i < sizeof elsewhere / sizeof elsewhere[0]; i++)
    check_refused(sources, elsewhere[i]);
  pcc_sources_close(sources);
}
END_TEST

START_TEST(test_device_is_refused)
{
  if (mknod(at("root/null.py"), S_IFCHR | 0666, makedev(1, 3)) != 0) {
    ck_assert_int_eq(errno, EPERM); /* not root: nothing to test */
    return;
  }
  pcc_sources *sources = open_root((unsigned)_i);
  check_refused(sources, at("root/null.py"));
  pcc_sources_close(sources);
}
END_TEST

/* Runs the unreadable checks as nobody: 0 when all hold, else the number of the first that
 * failed. */
static int unreadable_checks(unsigned resolver)
{
  if (resolver == 1)
    setenv("PCC_SOURCES_WALK", "1", 1);
  else
    unsetenv("PCC_SOURCES_WALK");
  const char *roots[] = {at("root")};
  pcc_sources *sources = pcc_sources_open(roots, 1);
  if (sources == NULL)
    return 1;
  const char *paths[] = {at("root/open.py"), at("root/locked.py"), at("root/closed/m.py")};
  int rc = 0;
  for (unsigned i = 0; i < 3 && rc == 0; i++) {
    pcc_answer answer;
    pcc_answer_init(&answer);
    uint8_t *bytes = NULL;
    size_t len = 0;
    bool read = pcc_sources_read(sources, paths[i], mtime_of(paths[i]), BIG, &bytes, &len,
                                 &answer);
    if (read != (i == 0) ||
        (!read && (answer.error != PCC_ERR_FORBIDDEN || strcmp(answer.message, REFUSED) != 0)))
      rc = 2 + (int)i;
    free(bytes);
    pcc_answer_clear(&answer);
  }
  pcc_sources_close(sources);
  return rc;
}

START_TEST(test_unreadable_is_refused)
{
  write_file(at("root/open.py"), "OPEN = 1\n");
  write_file(at("root/locked.py"), "LOCKED = 1\n");
  make_dir(at("root/closed"));
  write_file(at("root/closed/m.py"), "CLOSED = 1\n");
  ck_assert_int_eq(chmod(at("root/locked.py"), 0600), 0);
  ck_assert_int_eq(chmod(at("root/closed"), 0700), 0);
  if (geteuid() != 0) {
    ck_assert_int_eq(chmod(at("root/locked.py"), 0), 0);
    ck_assert_int_eq(chmod(at("root/closed"), 0), 0);
    int rc = unreadable_checks((unsigned)_i);
    chmod(at("root/closed"), 0700);
    ck_assert_int_eq(rc, 0);
    return;
  }
  pid_t pid = fork(); /* as root, only another user cannot read: nobody, in a child */
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
      _exit(100);
    _exit(unreadable_checks((unsigned)_i));
  }
  int status;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "check %d failed",
                WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}
END_TEST

/* ---- size, mtime, the server's own shortages --------------------------------------------- */

START_TEST(test_size_and_mtime_are_checked_on_the_file)
{
  pcc_sources *sources = open_root((unsigned)_i);
  const char *path = at("root/pkg/m.py");
  int64_t mtime = mtime_of(path);
  uint8_t *bytes = NULL;
  size_t len = 0;
  pcc_answer answer;
  pcc_answer_init(&answer);
  ck_assert(pcc_sources_read(sources, path, mtime, 6, &bytes, &len, &answer)); /* at the limit */
  ck_assert_uint_eq(len, 6);
  free(bytes);
  bytes = NULL;
  ck_assert(!pcc_sources_read(sources, path, mtime, 5, &bytes, &len, &answer));
  ck_assert_int_eq(answer.error, PCC_ERR_TOO_LARGE);
  ck_assert_str_eq(answer.message, "source is 6 bytes; the limit is 5");
  pcc_answer_clear(&answer);
  for (int delta = -1; delta <= 1; delta += 2) {
    ck_assert(!pcc_sources_read(sources, path, mtime + delta, BIG, &bytes, &len, &answer));
    ck_assert_int_eq(answer.error, PCC_ERR_MISMATCH);
    cJSON *param = cJSON_GetObjectItemCaseSensitive(answer.extra, "param");
    ck_assert(cJSON_IsString(param));
    ck_assert_str_eq(param->valuestring, "mtime");
    pcc_answer_clear(&answer);
  }
  ck_assert_ptr_null(bytes);
  pcc_sources_close(sources);
}
END_TEST

START_TEST(test_out_of_descriptors_is_internal)
{
  pcc_sources *sources = open_root((unsigned)_i);
  int lowest = dup(0); /* the next descriptor the read would get */
  ck_assert_int_ge(lowest, 0);
  close(lowest);
  struct rlimit saved, tight;
  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &saved), 0);
  tight = saved;
  tight.rlim_cur = (rlim_t)lowest;
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &tight), 0);
  pcc_answer answer;
  pcc_answer_init(&answer);
  uint8_t *bytes = NULL;
  size_t len = 0;
  const char *path = at("root/pkg/sub/deep.py");
  bool read = pcc_sources_read(sources, path, mtime_of(path), BIG, &bytes, &len, &answer);
  ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &saved), 0);
  ck_assert(!read);
  ck_assert_int_eq(answer.error, PCC_ERR_INTERNAL);
  pcc_answer_clear(&answer);
  check_reads(sources, path, "DEEP = 2\n");
  pcc_sources_close(sources);
}
END_TEST

/* ---- the roots --------------------------------------------------------------------------- */

START_TEST(test_roots_as_given_and_as_resolved)
{
  make_link("root", at("rootlink"));
  const char *roots[] = {at("rootlink/"), at("outside")};
  pcc_sources *sources = open_with((unsigned)_i, roots, 2);
  check_reads(sources, at("rootlink/pkg/m.py"), "X = 1\n"); /* as given */
  check_reads(sources, at("root/pkg/m.py"), "X = 1\n");     /* as resolved */
  check_reads(sources, at("outside/secret.py"), "SECRET = 1\n"); /* the second root */
  check_refused(sources, at("rootlink/../outside/secret.py"));
  check_refused(sources, at("rootsib/m.py"));
  pcc_sources_close(sources);

  /* a symlinked directory beneath a root is refused, unless named as a root of its own */
  const char *nested[] = {at("root"), at("root/outdir")};
  sources = open_with((unsigned)_i, nested, 2);
  check_reads(sources, at("root/outdir/m.py"), "OUT = 1\n");
  check_reads(sources, at("outside/pkg/m.py"), "OUT = 1\n");
  check_refused(sources, at("root/reloutdir/m.py"));
  pcc_sources_close(sources);

  const char *slash[] = {"/"};
  sources = open_with((unsigned)_i, slash, 1);
  check_reads(sources, at("root/pkg/m.py"), "X = 1\n");
  check_refused(sources, "/../etc/passwd");
  check_refused(sources, at("root/abs.py"));
  pcc_sources_close(sources);
}
END_TEST

START_TEST(test_bad_roots_and_no_roots)
{
  const char *missing[] = {at("root"), at("missing")};
  ck_assert_ptr_null(pcc_sources_open(missing, 2));
  const char *file[] = {at("root/pkg/m.py")};
  ck_assert_ptr_null(pcc_sources_open(file, 1));
  const char *many[PCC_MAX_SOURCE_ROOTS + 1];
  for (size_t i = 0; i < sizeof many / sizeof many[0]; i++)
    many[i] = at("root");
  ck_assert_ptr_null(pcc_sources_open(many, PCC_MAX_SOURCE_ROOTS + 1));
  pcc_sources *sources = pcc_sources_open(many, PCC_MAX_SOURCE_ROOTS);
  ck_assert_ptr_nonnull(sources);
  check_reads(sources, at("root/pkg/m.py"), "X = 1\n");
  pcc_sources_close(sources);
  pcc_sources_close(NULL);

  /* without a root the answer is about the server, not the path, and says so */
  sources = pcc_sources_open(NULL, 0);
  ck_assert_ptr_nonnull(sources);
  for (int i = 0; i < 2; i++) {
    pcc_answer answer;
    pcc_answer_init(&answer);
    uint8_t *bytes = NULL;
    size_t len = 0;
    ck_assert(!pcc_sources_read(i == 0 ? sources : NULL, at("root/pkg/m.py"),
                                mtime_of(at("root/pkg/m.py")), BIG, &bytes, &len, &answer));
    ck_assert_int_eq(answer.error, PCC_ERR_FORBIDDEN);
    ck_assert_ptr_nonnull(strstr(answer.message, "no --source-root"));
    pcc_answer_clear(&answer);
  }
  pcc_sources_close(sources);
}
END_TEST

static Suite *sources_suite(void)
{
  Suite *suite = suite_create("sources");
  TCase *tc = tcase_create("confinement"); /* each test with _i = 0 (openat2) and 1 (walk) */
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_loop_test(tc, test_reads_beneath_a_root, 0, 2);
  tcase_add_loop_test(tc, test_every_way_out_is_one_answer, 0, 2);
  tcase_add_loop_test(tc, test_device_is_refused, 0, 2);
  tcase_add_loop_test(tc, test_unreadable_is_refused, 0, 2);
  tcase_add_loop_test(tc, test_size_and_mtime_are_checked_on_the_file, 0, 2);
  tcase_add_loop_test(tc, test_out_of_descriptors_is_internal, 0, 2);
  tcase_add_loop_test(tc, test_roots_as_given_and_as_resolved, 0, 2);
  tcase_add_test(tc, test_bad_roots_and_no_roots);
  suite_add_tcase(suite, tc);
  return suite;
}

int main(void)
{
  return test_run_suite(sources_suite());
}
