/* ctl_common.c: what every command of pycachectl uses (ctl.h): usage errors, the exit status
 * and message of a failed request, the flat printing of JSON, atomic writes and the token.
 * It calls no command: the command files and pycachectl.c call it. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl.h"

int ctl_usage_error(const char *what, const char *arg)
{
  if (arg)
    fprintf(stderr, "pycachectl: %s: %s\n", what, arg);
  else
    fprintf(stderr, "pycachectl: %s\n", what);
  fprintf(stderr, "Try 'pycachectl --help'.\n");
  return EXIT_USAGE;
}

const char *ctl_unauthorized_advice(bool token_sent)
{
  return token_sent ? "the server does not accept the token"
                    : "the server wants a token: set PYCACHED_TOKEN or PYCACHED_TOKEN_FILE, or "
                      "pass --token-file";
}

int ctl_fail(const ctl *c, pcc_client_status rc, const char *what)
{
  const pcc_client_error *err = c->client ? pcc_client_last_error(c->client) : NULL;
  const char *message = err && err->message ? err->message : pcc_client_strerror(rc);
  switch (rc) {
  case PCC_CLIENT_OK:
    return EXIT_HIT;
  case PCC_CLIENT_MISS:
    return EXIT_MISS;
  case PCC_CLIENT_CONNECT:
  case PCC_CLIENT_TIMEOUT:
  case PCC_CLIENT_PROTOCOL:
  case PCC_CLIENT_TOOBIG:
    fprintf(stderr, "pycachectl: %s: %s: %s\n", what, pcc_client_strerror(rc), message);
    return EXIT_SERVER;
  case PCC_CLIENT_IO:
  case PCC_CLIENT_NOMEM:
    fprintf(stderr, "pycachectl: %s: %s\n", what, message);
    return EXIT_LOCAL;
  case PCC_CLIENT_INVALID:
    fprintf(stderr, "pycachectl: %s: %s\n", what, message);
    return EXIT_USAGE;
  case PCC_CLIENT_COMPILE_ERROR: /* printed by the caller, who has the source */
    return EXIT_COMPILE;
  case PCC_CLIENT_UNAUTHORIZED:
    fprintf(stderr, "pycachectl: %s: unauthorized (401): %s\n", what,
            ctl_unauthorized_advice(c->token_sent));
    return EXIT_AUTH;
  case PCC_CLIENT_FORBIDDEN:
    if (err && err->role) {
      fprintf(stderr, "pycachectl: %s: forbidden (403): the token lacks the role '%s'\n", what,
              err->role);
      return EXIT_AUTH;
    }
    break; /* a refusal that is not about the token, e.g. no --backup-dir */
  case PCC_CLIENT_UNSUPPORTED_MAGIC:
  case PCC_CLIENT_HTTP:
    break;
  }
  fprintf(stderr, "pycachectl: %s: server error %ld %s: %s", what, err ? err->http_status : 0L,
          err && err->error ? err->error : "(no error code)", message);
  if (err && err->param)
    fprintf(stderr, " (param %s)", err->param);
  fputc('\n', stderr);
  return EXIT_OTHER;
}

void ctl_print_flat(const char *prefix, const cJSON *item, int depth)
{
  char key[512];
  if (cJSON_IsObject(item) || cJSON_IsArray(item)) {
    if (depth >= PCC_CTL_JSON_DEPTH_MAX) {
      printf("%-32s ...\n", prefix);
      return;
    }
    const cJSON *child = NULL;
    int index = 0;
    cJSON_ArrayForEach(child, item) {
      int n;
      if (cJSON_IsArray(item))
        n = snprintf(key, sizeof key, "%s[%d]", prefix, index++);
      else
        n = snprintf(key, sizeof key, "%s%s%s", prefix, prefix[0] ? "." : "",
                     child->string ? child->string : "?");
      if (n < 0 || (size_t)n >= sizeof key)
        continue; /* a key this long is no use on a terminal */
      ctl_print_flat(key, child, depth + 1);
    }
    return;
  }
  int64_t whole;
  if (cJSON_IsString(item))
    printf("%-32s %s\n", prefix, item->valuestring);
  else if (cJSON_IsNumber(item) && pcc_double_to_i64(item->valuedouble, &whole))
    printf("%-32s %" PRId64 "\n", prefix, whole);
  else if (cJSON_IsNumber(item))
    printf("%-32s %g\n", prefix, item->valuedouble);
  else if (cJSON_IsBool(item))
    printf("%-32s %s\n", prefix, cJSON_IsTrue(item) ? "true" : "false");
  else
    printf("%-32s null\n", prefix);
}

int ctl_write_atomic(const char *path, const uint8_t *data, size_t len)
{
  char tmp[PATH_MAX];
  int n = snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path);
  if (n < 0 || (size_t)n >= sizeof tmp)
    return ENAMETOOLONG;
  int fd = mkstemp(tmp);
  if (fd < 0)
    return errno;
  int err = 0;
  for (size_t done = 0; done < len && err == 0;) {
    ssize_t w = write(fd, data + done, len - done);
    if (w < 0 && errno != EINTR)
      err = errno;
    else if (w > 0)
      done += (size_t)w;
  }
  mode_t mask = umask(0);
  umask(mask);
  if (err == 0 && fchmod(fd, 0666 & ~mask) != 0)
    err = errno;
  if (err == 0 && fsync(fd) != 0)
    err = errno;
  if (close(fd) != 0 && err == 0)
    err = errno;
  if (err == 0 && rename(tmp, path) != 0)
    err = errno;
  if (err != 0)
    unlink(tmp);
  return err;
}

int ctl_load_token(const ctl_args *args, char **out)
{
  pcc_client_status rc = args->token_file ? pcc_token_load(args->token_file, out)
                                          : pcc_token_from_env(out);
  if (rc == PCC_CLIENT_OK)
    return EXIT_HIT;
  int saved = errno;
  const char *env_token = getenv("PYCACHED_TOKEN");
  bool from_var = !args->token_file && env_token && env_token[0];
  const char *file = args->token_file ? args->token_file : getenv("PYCACHED_TOKEN_FILE");
  char where[PATH_MAX + 64];
  snprintf(where, sizeof where, "%s%s", from_var ? "PYCACHED_TOKEN" : "token file ",
           from_var ? "" : file ? file : "?");
  switch (rc) {
  case PCC_CLIENT_IO:
    fprintf(stderr, "pycachectl: %s: %s\n", where, strerror(saved));
    return EXIT_LOCAL;
  case PCC_CLIENT_TOOBIG:
    fprintf(stderr, "pycachectl: %s: over %d bytes\n", where, PCC_TOKEN_FILE_MAX);
    return EXIT_LOCAL;
  case PCC_CLIENT_INVALID:
    fprintf(stderr, "pycachectl: %s: not a token (1..%d printable ASCII characters without "
                    "spaces)\n", where, PCC_TOKEN_MAX);
    return EXIT_USAGE;
  default:
    fprintf(stderr, "pycachectl: %s: %s\n", where, pcc_client_strerror(rc));
    return EXIT_LOCAL;
  }
}

void ctl_token_free(char *token)
{
  if (token == NULL)
    return;
  explicit_bzero(token, strlen(token));
  free(token);
}
