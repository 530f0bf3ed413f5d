/* test_helpers.h: the small helpers every Check suite uses (CHECK_RC and temp directories). */
#ifndef PCC_TEST_HELPERS_H
#define PCC_TEST_HELPERS_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Asserts that a module call returned the status `expected`, naming both on failure with the
 * module's strerror: CHECK_STATUS(pcc_store_get_path(...), PCC_STORE_NOTFOUND, pcc_store_strerror). */
#define CHECK_STATUS(expr, expected, strerror_fn)                                            \
  do {                                                                                       \
    int check_rc_ = (int)(expr), check_expected_ = (int)(expected);                          \
    ck_assert_msg(check_rc_ == check_expected_, "%s:%d: %s gave %s, expected %s", __FILE__,   \
                  __LINE__, #expr, strerror_fn(check_rc_), strerror_fn(check_expected_));    \
  } while (0)

/* Asserts that a module call returned its OK status (0): CHECK_RC(expr, pcc_store_strerror). */
#define CHECK_RC(expr, strerror_fn) CHECK_STATUS(expr, 0, strerror_fn)

/* Runs a suite (forking each test, Check's default) and returns main()'s exit status. */
static inline int test_run_suite(Suite *suite)
{
  SRunner *runner = srunner_create(suite);
  srunner_run_all(runner, CK_NORMAL);
  int failed = srunner_ntests_failed(runner);
  srunner_free(runner);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* Makes a fresh directory under $TMPDIR (or /tmp) into buf; aborts the test on failure. */
static inline void test_make_tmpdir(char *buf, size_t len, const char *tag)
{
  const char *base = getenv("TMPDIR");
  int n = snprintf(buf, len, "%s/pcc-%s-XXXXXX", base && *base ? base : "/tmp", tag);
  ck_assert(n > 0 && (size_t)n < len);
  ck_assert_ptr_nonnull(mkdtemp(buf));
}

/* Removes a directory tree made by test_make_tmpdir. */
static inline void test_remove_tree(const char *dir)
{
  char cmd[4200];
  int n = snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (n > 0 && (size_t)n < sizeof cmd && system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", dir);
}

#endif
