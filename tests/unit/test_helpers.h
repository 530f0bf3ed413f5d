/* test_helpers.h: the small helpers every Check suite uses (CHECK_RC and temp directories). */
#ifndef PCC_TEST_HELPERS_H
#define PCC_TEST_HELPERS_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Asserts that a module call returned its OK status (0), naming the status on failure:
 * CHECK_RC(pcc_store_put(...), pcc_store_strerror). */
#define CHECK_RC(expr, strerror_fn)                                                          \
  do {                                                                                       \
    int check_rc_ = (int)(expr);                                                             \
    ck_assert_msg(check_rc_ == 0, "%s:%d: %s -> %d (%s)", __FILE__, __LINE__, #expr,          \
                  check_rc_, strerror_fn(check_rc_));                                        \
  } while (0)

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
