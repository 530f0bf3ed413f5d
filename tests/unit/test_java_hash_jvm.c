/* test_java_hash_jvm.c: Check suite that holds pcc_java_hash (and every implementation of it
 * this CPU runs, proto/java_hash.c) to the hash it imitates: a real JVM's
 * java.util.Arrays.hashCode(byte[]) over files of random bytes. The JVM is $PCC_JAVA, else
 * /usr/bin/java (deploy/install-deps.sh installs a JDK; `java Hash.java FILE...`, the
 * single-file source launch of JDK 11 and later, needs no javac). Meson test `proto-jvm`. */
#include <errno.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"
#include "proto_internal.h"
#include "test_helpers.h"

extern char **environ;

static const char HASH_JAVA[] =
  "import java.nio.file.Files;\n"
  "import java.nio.file.Path;\n"
  "import java.util.Arrays;\n"
  "\n"
  "public class Hash {\n"
  "  public static void main(String[] args) throws Exception {\n"
  "    for (String a : args)\n"
  "      System.out.println(Arrays.hashCode(Files.readAllBytes(Path.of(a))));\n"
  "  }\n"
  "}\n";

enum { FILES = 48, PATH_CAP = 512 };

static void write_file(const char *path, const void *data, size_t len)
{
  FILE *f = fopen(path, "wb");
  ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
  ck_assert_uint_eq(fwrite(data, 1, len, f), len);
  ck_assert_int_eq(fclose(f), 0);
}

/* The lengths: the edges of every block loop (32, 64, 128 bytes) and its tails, a large file,
 * and random ones. */
static size_t file_length(int i, uint64_t *seed)
{
  static const size_t edges[] = {0,   1,   3,   4,   31,   32,   33,   63,   64,      65,
                                 127, 128, 129, 255, 256,  257,  1000, 4095, 4096,    4097,
                                 65535, 65536, 65537, (1u << 20) + 7};
  if ((size_t)i < sizeof edges / sizeof edges[0])
    return edges[i];
  *seed = *seed * 6364136223846793005u + 1442695040888963407u;
  return (size_t)(*seed >> 33) % 20000;
}

START_TEST(test_java_hash_equals_the_jvm)
{
  const char *java = getenv("PCC_JAVA");
  if (java == NULL || *java == '\0')
    java = "/usr/bin/java";
  ck_assert_msg(access(java, X_OK) == 0,
                "%s is missing (deploy/install-deps.sh installs a JDK: openjdk-17-jdk-headless)",
                java);
  char dir[PATH_CAP], source[PATH_CAP + 16];
  static char paths[FILES][PATH_CAP + 16];
  int32_t expected[FILES];
  test_make_tmpdir(dir, sizeof dir, "jvm");
  snprintf(source, sizeof source, "%s/Hash.java", dir);
  write_file(source, HASH_JAVA, sizeof HASH_JAVA - 1);

  uint64_t seed = 0x243f6a8885a308d3u;
  static uint8_t data[(1u << 20) + 64];
  for (int i = 0; i < FILES; i++) {
    size_t len = i >= FILES - 2 ? 5000 : file_length(i, &seed);
    for (size_t j = 0; j < len; j++) {
      seed = seed * 6364136223846793005u + 1442695040888963407u;
      /* two files of the extremes of a signed byte, the rest random (both signs) */
      data[j] = i == FILES - 2 ? 0x80 : i == FILES - 1 ? 0x7f : (uint8_t)(seed >> 56);
    }
    snprintf(paths[i], sizeof paths[i], "%s/f%02d", dir, i);
    write_file(paths[i], data, len);
    expected[i] = pcc_java_hash(data, len);
    for (size_t k = 0; k < proto_java_hash_impl_count; k++)
      if (proto_java_hash_impls[k].usable())
        ck_assert_msg((int32_t)proto_java_hash_impls[k].fn(1, data, len) == expected[i],
                      "%s disagrees with pcc_java_hash on %zu bytes",
                      proto_java_hash_impls[k].name, len);
  }

  char *argv[FILES + 3];
  argv[0] = (char *)java;
  argv[1] = source;
  for (int i = 0; i < FILES; i++)
    argv[i + 2] = paths[i];
  argv[FILES + 2] = NULL;
  int out[2];
  ck_assert_int_eq(pipe(out), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  pid_t pid;
  int rc = posix_spawn(&pid, java, &actions, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  ck_assert_msg(rc == 0, "%s: %s", java, strerror(rc));
  FILE *answers = fdopen(out[0], "r");
  ck_assert_ptr_nonnull(answers);
  char line[64];
  int got = 0;
  while (got < FILES && fgets(line, sizeof line, answers) != NULL) {
    char *end = NULL;
    long value = strtol(line, &end, 10);
    ck_assert_msg(end != line && *end == '\n', "the JVM printed %s", line);
    ck_assert_msg(value == expected[got], "%s (%s): the JVM says %ld, pcc_java_hash %d",
                  paths[got], got < 24 ? "an edge length" : "a random length", value,
                  expected[got]);
    got++;
  }
  fclose(answers);
  int status = 0;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s Hash.java failed (%d)", java,
                status);
  ck_assert_int_eq(got, FILES);

  for (int i = 0; i < FILES; i++)
    unlink(paths[i]);
  unlink(source);
  rmdir(dir);
}
END_TEST

int main(void)
{
  Suite *suite = suite_create("proto-jvm");
  TCase *tc = tcase_create("jvm");
  tcase_set_timeout(tc, 120); /* a JVM start and a source compile on a shared machine */
  tcase_add_test(tc, test_java_hash_equals_the_jvm);
  suite_add_tcase(suite, tc);
  return test_run_suite(suite);
}
