/* pycachectl.c: the command-line client of pycached (health, stats, get, compile, warm, exec,
 * and the admin API's commands under `admin`), built on libpycached (pycached.h). Usage, options
 * and exit codes are documented in docs/CLI.md and in --help, which is generated from the
 * option and command tables below.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ctl.h"

enum {
  OPT_NO_HASH = 256,
  OPT_TOKEN_FILE,
  OPT_PREFIX,
  OPT_LIMIT,
  OPT_CURSOR,
  OPT_ALL,
  OPT_DOWNLOAD,
  OPT_JOBS,
  OPT_STRICT,
};

/* The option table: getopt_long's table and --help are both built from it. */
static const struct {
  const char *name;
  int has_arg;
  int val;
  const char *arg;
  const char *help;
} ctl_options[] = {
    {"server", required_argument, 's', "URL",
     "server base URL (default: $PYCACHED_URL, else " PCC_CLIENT_DEFAULT_URL ")"},
    {"timeout", required_argument, 't', "MS", "total timeout per request in ms (default 60000)"},
    {"opt", required_argument, 'O', "N",
     "optimization level 0, 1 or 2 (get, compile, admin; default 0); warm: a list, e.g. 0,1,2"},
    {"magic", required_argument, 'm', "HEX",
     "bytecode magic, 8 hex digits (get, compile, warm: default the server's; admin)"},
    {"output", required_argument, 'o', "OUT.pyc", "write the pyc to OUT.pyc (atomically)"},
    {"json", no_argument, 'j', NULL, "print the server's JSON as is"},
    {"no-hash", no_argument, OPT_NO_HASH, NULL,
     "get: validate by mtime and size only (CPython's timestamp validation)"},
    {"token-file", required_argument, OPT_TOKEN_FILE, "FILE",
     "read the access token from FILE (default: $PYCACHED_TOKEN, else $PYCACHED_TOKEN_FILE)"},
    {"prefix", required_argument, OPT_PREFIX, "P", "admin ls, invalidate: paths starting with P"},
    {"limit", required_argument, OPT_LIMIT, "N", "admin ls: entries per page, 1..1000 (default 100)"},
    {"cursor", required_argument, OPT_CURSOR, "C", "admin ls: the page to start at (a next_cursor)"},
    {"all", no_argument, OPT_ALL, NULL, "admin ls: follow next_cursor through every page"},
    {"yes", no_argument, 'y', NULL, "admin rm, invalidate, purge, retire: do not ask to confirm"},
    {"download", required_argument, OPT_DOWNLOAD, "FILE",
     "admin backup: download the backup into FILE (atomically)"},
    {"jobs", required_argument, OPT_JOBS, "N",
     "warm: upload threads, 1..64 (default 2 x the server's compiler workers, else 4)"},
    {"strict", no_argument, OPT_STRICT, NULL,
     "warm: exit 4 when a file does not compile or cannot be warmed"},
    {"help", no_argument, 'h', NULL, "show this help and exit"},
    {"version", no_argument, 'V', NULL, "show the version and exit"},
};
#define CTL_NOPTIONS (sizeof ctl_options / sizeof ctl_options[0])

/* The admin subcommands: the options each takes, its words after the subcommand, and whether
 * it removes entries (and so asks for confirmation). */
static const struct {
  const char *name;
  const char *usage;
  const char *help;
  unsigned takes;
  int words;
  bool destructive;
} ctl_admin_commands[] = {
    {"stats", "stats", "totals, per-magic counters, latency percentiles, store usage", 0, 0, false},
    {"magics", "magics", "compiler backends and the magics in the store", 0, 0, false},
    {"ls", "ls [--magic HEX] [--opt N] [--prefix P] [--limit N] [--cursor C] [--all]",
     "list entries", ARG_MAGIC | ARG_OPT | ARG_PREFIX | ARG_LIMIT | ARG_CURSOR | ARG_ALL, 0, false},
    {"show", "show --magic HEX [--opt N] PATH", "one entry's fields", ARG_MAGIC | ARG_OPT, 1,
     false},
    {"rm", "rm --magic HEX [--opt N] [--yes] PATH", "remove one entry",
     ARG_MAGIC | ARG_OPT | ARG_YES, 1, true},
    {"invalidate", "invalidate (--magic HEX | --prefix P | both) [--yes]",
     "remove a magic's entries and/or those under a path prefix", ARG_MAGIC | ARG_PREFIX | ARG_YES,
     0, true},
    {"purge", "purge [--yes]", "remove every entry", ARG_YES, 0, true},
    {"retire", "retire [--yes] MAGIC", "remove the entries of a magic no backend serves", ARG_YES,
     1, true},
    {"backup", "backup [--download FILE]",
     "have the server write a backup (or download one into FILE)", ARG_DOWNLOAD, 0, false},
};
#define CTL_NADMIN (sizeof ctl_admin_commands / sizeof ctl_admin_commands[0])

bool ctl_token_sent;

static void ctl_usage(FILE *out)
{
  fprintf(out,
          "usage: pycachectl [OPTIONS] health | stats | get FILE | compile FILE | warm DIR...\n"
          "       pycachectl [OPTIONS] admin SUBCOMMAND [ARG]\n"
          "       pycachectl [--server URL] [--timeout MS] [--token-file FILE] exec [--] COMMAND [ARG]...\n"
          "\n"
          "Commands:\n"
          "  health        check that the server answers (GET /healthz)\n"
          "  stats         show the server's counters (GET /v1/stats)\n"
          "  get FILE      look up the cached code of FILE (GET /v1/code)\n"
          "  compile FILE  upload FILE and have it compiled and stored (POST /v1/compile)\n"
          "  warm DIR...   have every *.py file under the DIRs compiled and stored, like\n"
          "                compileall for the whole fleet (POST /v1/compile, --jobs threads)\n"
          "  exec COMMAND  run COMMAND with the import hook active in every CPython it starts\n"
          "\n"
          "Admin commands (a token with the admin role; /v1/admin/...):\n");
  for (size_t i = 0; i < CTL_NADMIN; i++)
    fprintf(out, "  admin %s\n      %s%s\n", ctl_admin_commands[i].usage, ctl_admin_commands[i].help,
            ctl_admin_commands[i].destructive ? " (asks first; --yes off a terminal)"
                                              : "");
  fprintf(out, "\nOptions:\n");
  for (size_t i = 0; i < CTL_NOPTIONS; i++) {
    char left[64];
    if (ctl_options[i].val < 256)
      snprintf(left, sizeof left, "-%c, --%s%s%s", ctl_options[i].val, ctl_options[i].name,
               ctl_options[i].arg ? " " : "", ctl_options[i].arg ? ctl_options[i].arg : "");
    else
      snprintf(left, sizeof left, "    --%s%s%s", ctl_options[i].name,
               ctl_options[i].arg ? " " : "", ctl_options[i].arg ? ctl_options[i].arg : "");
    fprintf(out, "  %-26s %s\n", left, ctl_options[i].help);
  }
  fprintf(out,
          "\n"
          "Environment:\n"
          "  PYCACHED_URL         server base URL when --server is not given\n"
          "  PYCACHED_TOKEN       the access token, when --token-file is not given\n"
          "  PYCACHED_TOKEN_FILE  a file holding the token, when neither of the above is set\n"
          "\n"
          "Exit status:\n"
          "  0  success (get: a hit; warm: every file done, compile errors and failures listed)\n"
          "  1  miss (get: nothing valid is cached for FILE; admin show/rm: no such entry;\n"
          "     admin: removal not confirmed)\n"
          "  2  usage error (also: an invalid token, or a removal without --yes off a terminal)\n"
          "  3  cannot reach the server, timeout, or a malformed response\n"
          "  4  FILE does not compile (the error is printed like Python prints it); warm --strict:\n"
          "     a file did not compile or could not be warmed\n"
          "  5  local file error (FILE or the token file unreadable or too big, OUT.pyc or the\n"
          "     download not writable; warm: a DIR missing, or a directory or file in the trees\n"
          "     unreadable, or the trees over the walk's limits)\n"
          "  6  any other error the server reported (its error code and message are printed)\n"
          "  7  refused by access control: no or unknown token (401), or the token lacks the\n"
          "     role needed (403)\n"
          "  exec: COMMAND's own exit status; 127 when COMMAND cannot be run\n");
}

/* Parses --opt: one level, or a comma list of distinct levels ("0,1,2", for warm). Sets bit L
 * of *levels for each level L and *list when there is a comma; false when malformed. */
static bool ctl_parse_levels(const char *text, unsigned *levels, bool *list)
{
  unsigned mask = 0;
  *list = strchr(text, ',') != NULL;
  for (const char *p = text;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    char part[8];
    int64_t value;
    if (len == 0 || len >= sizeof part)
      return false;
    memcpy(part, p, len);
    part[len] = '\0';
    if (pcc_parse_i64(part, 0, PCC_OPT_MAX, &value) != PCC_PROTO_OK || (mask & (1u << value)))
      return false;
    mask |= 1u << value;
    if (comma == NULL)
      break;
    p = comma + 1;
  }
  *levels = mask;
  return true;
}

static int ctl_usage_error(const char *what, const char *arg)
{
  if (arg)
    fprintf(stderr, "pycachectl: %s: %s\n", what, arg);
  else
    fprintf(stderr, "pycachectl: %s\n", what);
  fprintf(stderr, "Try 'pycachectl --help'.\n");
  return EXIT_USAGE;
}

/* Maps a client status to the exit code and prints what went wrong to stderr. */
int ctl_fail(pcc_client *client, pcc_client_status rc, const char *what)
{
  const pcc_client_error *err = client ? pcc_client_last_error(client) : NULL;
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
            ctl_token_sent ? "the server does not accept the token"
                           : "the server wants a token: set PYCACHED_TOKEN or "
                             "PYCACHED_TOKEN_FILE, or pass --token-file");
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

/* ---- output --------------------------------------------------------------------------- */

/* Writes len bytes to path atomically: a temporary file in the same directory, fsync, rename.
 * Returns 0 or an errno value. */
static int ctl_write_atomic(const char *path, const uint8_t *data, size_t len)
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

static void ctl_print_entry(const char *verb, const pcc_entry *entry)
{
  const pcc_entry_view *v = &entry->view;
  char magic_hex[2 * PCC_MAGIC_LEN + 1], digest_hex[PCC_DIGEST_HEX_LEN + 1];
  pcc_magic_to_hex(&v->magic, magic_hex);
  pcc_digest_to_hex(&v->digest, digest_hex);
  printf("%-8s  %s  magic %s opt %d  %zu bytes  digest %s  validation %s  compiler %s\n", verb,
         v->path, magic_hex, v->opt, v->pyc_len, digest_hex, v->hash_checked ? "hash" : "timestamp",
         v->compiler && v->compiler[0] ? v->compiler : "?");
}

/* Prints a compile error the way Python does: where, the offending line, a caret, the error. */
static void ctl_print_compile_error(const pcc_client_error *err, const pcc_source *source)
{
  const char *type = err->type ? err->type : "SyntaxError";
  const char *message = err->message ? err->message : "(no message)";
  if (err->line > 0 && err->offset > 0)
    fprintf(stderr, "%s:%" PRId64 ":%" PRId64 ": %s: %s\n", source->path, err->line, err->offset,
            type, message);
  else if (err->line > 0)
    fprintf(stderr, "%s:%" PRId64 ": %s: %s\n", source->path, err->line, type, message);
  else
    fprintf(stderr, "%s: %s: %s\n", source->path, type, message);
  if (err->line <= 0)
    return;
  fprintf(stderr, "  File \"%s\", line %" PRId64 "\n", source->path, err->line);
  /* find the line in the source we sent */
  const uint8_t *p = source->data, *end = source->data + source->len;
  for (int64_t line = 1; line < err->line && p < end; line++) {
    const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
    p = nl ? nl + 1 : end;
  }
  if (p < end) {
    const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
    size_t len = (size_t)((nl ? nl : end) - p);
    size_t indent = 0;
    while (indent < len && (p[indent] == ' ' || p[indent] == '\t'))
      indent++;
    size_t shown = len - indent;
    if (shown > 0 && p[len - 1] == '\r')
      shown--;
    if (shown > PCC_CTL_SOURCE_LINE_MAX)
      shown = PCC_CTL_SOURCE_LINE_MAX;
    fprintf(stderr, "    %.*s\n", (int)shown, (const char *)p + indent);
    if (err->offset > (int64_t)indent && (uint64_t)(err->offset - (int64_t)indent) <= shown + 1)
      fprintf(stderr, "    %*s^\n", (int)(err->offset - 1 - (int64_t)indent), "");
  }
  fprintf(stderr, "%s: %s\n", type, message);
}

/* Prints a JSON value as "key.sub[0].name  value" lines. */
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
  if (cJSON_IsString(item))
    printf("%-32s %s\n", prefix, item->valuestring);
  else if (cJSON_IsNumber(item) && item->valuedouble == (double)(int64_t)item->valuedouble)
    printf("%-32s %" PRId64 "\n", prefix, (int64_t)item->valuedouble);
  else if (cJSON_IsNumber(item))
    printf("%-32s %g\n", prefix, item->valuedouble);
  else if (cJSON_IsBool(item))
    printf("%-32s %s\n", prefix, cJSON_IsTrue(item) ? "true" : "false");
  else
    printf("%-32s null\n", prefix);
}

/* ---- commands ------------------------------------------------------------------------- */

static int ctl_health(pcc_client *client, const ctl_args *args)
{
  char *body = NULL;
  pcc_client_status rc = pcc_client_get_json(client, "/healthz", &body, NULL);
  if (rc != PCC_CLIENT_OK)
    return ctl_fail(client, rc, "health");
  if (args->json) {
    printf("%s\n", body);
  } else {
    cJSON *obj = cJSON_Parse(body);
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(obj, "status");
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(obj, "version");
    printf("%s  %s  version %s\n", cJSON_IsString(status) ? status->valuestring : "?",
           args->server, cJSON_IsString(version) ? version->valuestring : "?");
    cJSON_Delete(obj);
  }
  free(body);
  return EXIT_HIT;
}

static int ctl_stats(pcc_client *client, const ctl_args *args)
{
  char *body = NULL;
  pcc_client_status rc = pcc_client_get_json(client, "/v1/stats", &body, NULL);
  if (rc != PCC_CLIENT_OK)
    return ctl_fail(client, rc, "stats");
  int code = EXIT_HIT;
  if (args->json) {
    printf("%s\n", body);
  } else {
    cJSON *obj = cJSON_Parse(body);
    if (cJSON_IsObject(obj)) {
      ctl_print_flat("", obj, 0);
    } else {
      fprintf(stderr, "pycachectl: stats: the server's answer is not a JSON object\n");
      code = EXIT_SERVER;
    }
    cJSON_Delete(obj);
  }
  free(body);
  return code;
}

static int ctl_code(pcc_client *client, const ctl_args *args, bool compile, const char *file)
{
  const char *what = compile ? "compile" : "get";
  pcc_source *source = NULL;
  pcc_client_status rc = pcc_source_read(file, PCC_SOURCE_DEFAULT_MAX, &source);
  if (rc != PCC_CLIENT_OK) {
    if (rc == PCC_CLIENT_IO)
      fprintf(stderr, "pycachectl: %s: %s\n", file, strerror(errno));
    else
      fprintf(stderr, "pycachectl: %s: %s\n", file,
              rc == PCC_CLIENT_TOOBIG ? "over the 16 MiB source limit" : pcc_client_strerror(rc));
    return EXIT_LOCAL;
  }
  pcc_magic magic = args->magic;
  if (!args->have_magic) {
    rc = pcc_client_default_magic(client, &magic);
    if (rc != PCC_CLIENT_OK) {
      pcc_source_free(source);
      return ctl_fail(client, rc, "cannot learn the server's default magic");
    }
  }
  pcc_entry *entry = NULL;
  rc = compile ? pcc_client_compile(client, &magic, args->opt, source, &entry)
               : pcc_client_lookup(client, &magic, args->opt, source, !args->no_hash, &entry);
  int code = EXIT_HIT;
  if (rc == PCC_CLIENT_OK) {
    if (args->output) {
      int err = ctl_write_atomic(args->output, entry->view.pyc, entry->view.pyc_len);
      if (err != 0) {
        fprintf(stderr, "pycachectl: %s: %s\n", args->output, strerror(err));
        code = EXIT_LOCAL;
      }
    }
    if (args->json)
      printf("%s\n", pcc_client_last_body(client, NULL));
    else {
      const char *outcome = pcc_client_last_outcome(client); /* hit, stored, compiled, joined */
      ctl_print_entry(*outcome ? outcome : compile ? "stored" : "hit", entry);
    }
  } else if (rc == PCC_CLIENT_MISS) {
    const pcc_client_error *err = pcc_client_last_error(client);
    if (args->json)
      printf("%s\n", pcc_client_last_body(client, NULL));
    else
      printf("miss  %s  (%s)\n", source->path, err->reason ? err->reason : "no reason given");
    code = EXIT_MISS;
  } else if (rc == PCC_CLIENT_COMPILE_ERROR) {
    if (args->json)
      printf("%s\n", pcc_client_last_body(client, NULL));
    ctl_print_compile_error(pcc_client_last_error(client), source);
    code = EXIT_COMPILE;
  } else {
    code = ctl_fail(client, rc, what);
  }
  pcc_entry_free(entry);
  pcc_source_free(source);
  return code;
}

/* ---- main ------------------------------------------------------------------------------ */

/* Where the pycached Python package is: next to this program in the build tree, else where
 * `meson install` put it. Writes the import root (the directory holding pycached/) to out. */
static bool ctl_hook_root(char *out, size_t len)
{
  char self[PATH_MAX], probe[PATH_MAX + 64];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash != NULL) {
      *slash = '\0';
      snprintf(probe, sizeof probe, "%s/hook/pycached/__init__.py", self);
      if (access(probe, R_OK) == 0 && (size_t)snprintf(out, len, "%s/hook", self) < len)
        return true;
    }
  }
  snprintf(probe, sizeof probe, "%s/pycached/__init__.py", PCC_HOOK_INSTALL_ROOT);
  return access(probe, R_OK) == 0 && (size_t)snprintf(out, len, "%s", PCC_HOOK_INSTALL_ROOT) < len;
}

/* The token to send: from --token-file, else from the environment (pcc_token_from_env); *out
 * NULL when there is none. Returns EXIT_HIT, or prints the problem and returns the exit code. */
static int ctl_load_token(const ctl_args *args, char **out)
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

/* pycachectl exec -- COMMAND...: runs COMMAND with the import hook active in every CPython it
 * starts (PYTHONPATH gets the hook's sitecustomize and package; PYCACHED_URL the server).
 * Returns only on failure: 127 when COMMAND cannot be found or run, like env(1). */
static int ctl_exec(const ctl_args *args, char **command)
{
  char root[PATH_MAX], path[3 * PATH_MAX];
  if (!ctl_hook_root(root, sizeof root)) {
    fprintf(stderr, "pycachectl: exec: the pycached Python package is not installed\n");
    return EXIT_LOCAL;
  }
  const char *old = getenv("PYTHONPATH");
  int n = snprintf(path, sizeof path, "%s/pycached/_boot:%s%s%s", root, root,
                   old && *old ? ":" : "", old && *old ? old : "");
  if (n < 0 || (size_t)n >= sizeof path) {
    fprintf(stderr, "pycachectl: exec: PYTHONPATH is too long\n");
    return EXIT_LOCAL;
  }
  char timeout[32], token_file[PATH_MAX];
  snprintf(timeout, sizeof timeout, "%ld", args->timeout_ms);
  if (args->token_file && realpath(args->token_file, token_file) == NULL) {
    fprintf(stderr, "pycachectl: exec: %s: %s\n", args->token_file, strerror(errno));
    return EXIT_LOCAL;
  }
  /* --token-file wins over the environment's token, in the hook as here */
  if (args->token_file &&
      (setenv("PYCACHED_TOKEN_FILE", token_file, 1) != 0 || unsetenv("PYCACHED_TOKEN") != 0)) {
    perror("pycachectl: exec");
    return EXIT_LOCAL;
  }
  if (setenv("PYTHONPATH", path, 1) != 0 ||
      (args->server && setenv("PYCACHED_URL", args->server, 1) != 0) ||
      (!getenv("PYCACHED_URL") && setenv("PYCACHED_URL", PCC_CLIENT_DEFAULT_URL, 1) != 0) ||
      (args->timeout_ms && setenv("PYCACHED_TIMEOUT_MS", timeout, 1) != 0)) {
    perror("pycachectl: exec");
    return EXIT_LOCAL;
  }
  execvp(command[0], command);
  fprintf(stderr, "pycachectl: exec: %s: %s\n", command[0], strerror(errno));
  return 127;
}

int main(int argc, char **argv)
{
  struct option longopts[CTL_NOPTIONS + 1];
  char shortopts[2 * CTL_NOPTIONS + 3];
  size_t s = 0;
  shortopts[s++] = '+'; /* stop at the command */
  shortopts[s++] = ':'; /* report a missing argument as ':' */
  for (size_t i = 0; i < CTL_NOPTIONS; i++) {
    longopts[i] = (struct option){ctl_options[i].name, ctl_options[i].has_arg, NULL,
                                  ctl_options[i].val};
    if (ctl_options[i].val < 256) {
      shortopts[s++] = (char)ctl_options[i].val;
      if (ctl_options[i].has_arg == required_argument)
        shortopts[s++] = ':';
    }
  }
  shortopts[s] = '\0';
  longopts[CTL_NOPTIONS] = (struct option){NULL, 0, NULL, 0};

  ctl_args args = {.timeout_ms = 0, .opt = 0};
  int c;
  opterr = 0;
  /* options may come before or after the command: parse, take the command words, repeat */
  const char *words[3];
  int nwords = 0;
  const char *dirs[PCC_CTL_WARM_DIRS_MAX]; /* warm DIR... */
  int ndirs = 0;
  while (optind < argc) {
    if ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) == -1) {
      if (optind < argc) {
        if (nwords == 1 && strcmp(words[0], "warm") == 0) {
          if (ndirs == PCC_CTL_WARM_DIRS_MAX)
            return ctl_usage_error("warm takes at most 256 DIRs", argv[optind]);
          dirs[ndirs++] = argv[optind++];
          continue;
        }
        if (nwords == 3)
          return ctl_usage_error("too many arguments", argv[optind]);
        words[nwords++] = argv[optind++];
        if (nwords == 1 && strcmp(words[0], "exec") == 0)
          break; /* the rest is the command to run, options and all */
      }
      continue;
    }
    int64_t value = 0;
    switch (c) {
    case 's':
      args.server = optarg;
      break;
    case 't':
      if (pcc_parse_i64(optarg, 1, PCC_CTL_TIMEOUT_MAX_MS, &value) != PCC_PROTO_OK)
        return ctl_usage_error("--timeout wants milliseconds, 1..3600000", optarg);
      args.timeout_ms = (long)value;
      break;
    case 'O':
      if (!ctl_parse_levels(optarg, &args.opt_levels, &args.opt_list))
        return ctl_usage_error("--opt wants 0, 1 or 2 (warm: a list of them, e.g. 0,1,2)",
                               optarg);
      for (args.opt = 0; !(args.opt_levels & (1u << args.opt)); args.opt++) {
      } /* the lowest level given: the only one but for warm */
      args.given |= ARG_OPT;
      break;
    case 'm':
      if (pcc_magic_from_hex(optarg, &args.magic) != PCC_PROTO_OK)
        return ctl_usage_error("--magic wants 8 hex digits ending in 0d0a", optarg);
      args.have_magic = true;
      args.given |= ARG_MAGIC;
      break;
    case 'o':
      if (optarg[0] == '\0')
        return ctl_usage_error("--output wants a file name", NULL);
      args.output = optarg;
      args.given |= ARG_OUTPUT;
      break;
    case 'j':
      args.json = true;
      args.given |= ARG_JSON;
      break;
    case OPT_NO_HASH:
      args.no_hash = true;
      args.given |= ARG_NO_HASH;
      break;
    case OPT_TOKEN_FILE:
      if (optarg[0] == '\0')
        return ctl_usage_error("--token-file wants a file name", NULL);
      args.token_file = optarg;
      break;
    case OPT_PREFIX:
      if (optarg[0] == '\0')
        return ctl_usage_error("--prefix wants a path prefix", NULL);
      args.prefix = optarg;
      args.given |= ARG_PREFIX;
      break;
    case OPT_LIMIT:
      if (pcc_parse_i64(optarg, 1, PCC_LIST_LIMIT_MAX, &value) != PCC_PROTO_OK)
        return ctl_usage_error("--limit wants 1..1000", optarg);
      args.limit = (long)value;
      args.given |= ARG_LIMIT;
      break;
    case OPT_CURSOR:
      if (optarg[0] == '\0')
        return ctl_usage_error("--cursor wants a next_cursor of an earlier page", NULL);
      args.cursor = optarg;
      args.given |= ARG_CURSOR;
      break;
    case OPT_ALL:
      args.all = true;
      args.given |= ARG_ALL;
      break;
    case 'y':
      args.yes = true;
      args.given |= ARG_YES;
      break;
    case OPT_DOWNLOAD:
      if (optarg[0] == '\0')
        return ctl_usage_error("--download wants a file name", NULL);
      args.download = optarg;
      args.given |= ARG_DOWNLOAD;
      break;
    case OPT_JOBS:
      if (pcc_parse_i64(optarg, 1, PCC_CTL_WARM_JOBS_MAX, &value) != PCC_PROTO_OK)
        return ctl_usage_error("--jobs wants 1..64", optarg);
      args.jobs = (long)value;
      args.given |= ARG_JOBS;
      break;
    case OPT_STRICT:
      args.strict = true;
      args.given |= ARG_STRICT;
      break;
    case 'h':
      ctl_usage(stdout);
      return EXIT_HIT;
    case 'V':
      printf("pycachectl %s\n", PCC_VERSION);
      return EXIT_HIT;
    case ':':
      return ctl_usage_error("option needs an argument", argv[optind - 1]);
    default:
      if (optopt > 0 && optopt < 256) {
        char name[3] = {'-', (char)optopt, '\0'};
        return ctl_usage_error("unknown option", name);
      }
      return ctl_usage_error("unknown option", argv[optind - 1]);
    }
  }
  if (nwords == 0)
    return ctl_usage_error("no command given (health, stats, get FILE, compile FILE, admin ...)",
                           NULL);
  const char *command = words[0];
  if (strcmp(command, "exec") == 0) {
    if (optind < argc && strcmp(argv[optind], "--") == 0)
      optind++;
    if (optind >= argc)
      return ctl_usage_error("exec wants a command", NULL);
    if (args.given != 0)
      return ctl_usage_error("exec takes --server, --timeout and --token-file only", NULL);
    if (args.token_file) { /* a bad file is reported now, not by every python started */
      char *token = NULL;
      int code = ctl_load_token(&args, &token);
      if (code != EXIT_HIT)
        return code;
      explicit_bzero(token, strlen(token));
      free(token);
    }
    return ctl_exec(&args, argv + optind);
  }

  /* the command, the options it takes and the words it wants */
  unsigned takes = ARG_JSON;
  int want_words = 0;
  const char *name = command;
  size_t admin = CTL_NADMIN;
  if (strcmp(command, "get") == 0) {
    takes |= ARG_OUTPUT | ARG_NO_HASH | ARG_MAGIC | ARG_OPT;
    want_words = 1;
  } else if (strcmp(command, "compile") == 0) {
    takes |= ARG_OUTPUT | ARG_MAGIC | ARG_OPT;
    want_words = 1;
  } else if (strcmp(command, "warm") == 0) {
    takes |= ARG_MAGIC | ARG_OPT | ARG_JOBS | ARG_STRICT;
    if (ndirs == 0)
      return ctl_usage_error("warm wants at least one DIR", NULL);
  } else if (strcmp(command, "admin") == 0) {
    if (nwords < 2)
      return ctl_usage_error("admin wants a subcommand (stats, magics, ls, show, rm, invalidate, "
                             "purge, retire, backup)", NULL);
    for (admin = 0; admin < CTL_NADMIN; admin++)
      if (strcmp(words[1], ctl_admin_commands[admin].name) == 0)
        break;
    if (admin == CTL_NADMIN)
      return ctl_usage_error("unknown admin subcommand", words[1]);
    takes |= ctl_admin_commands[admin].takes;
    want_words = 1 + ctl_admin_commands[admin].words;
    name = words[1];
  } else if (strcmp(command, "health") != 0 && strcmp(command, "stats") != 0) {
    return ctl_usage_error("unknown command", command);
  }
  if (nwords - 1 < want_words)
    return ctl_usage_error(strcmp(command, "admin") == 0 ? "missing argument" : "missing FILE",
                           name);
  if (nwords - 1 > want_words)
    return ctl_usage_error("too many arguments", words[nwords - 1]);
  static const struct {
    unsigned bit;
    const char *option;
  } names[] = {{ARG_OUTPUT, "--output"}, {ARG_NO_HASH, "--no-hash"}, {ARG_MAGIC, "--magic"},
               {ARG_OPT, "--opt"},       {ARG_PREFIX, "--prefix"},   {ARG_LIMIT, "--limit"},
               {ARG_CURSOR, "--cursor"}, {ARG_ALL, "--all"},         {ARG_YES, "--yes"},
               {ARG_DOWNLOAD, "--download"}, {ARG_JSON, "--json"},
               {ARG_JOBS, "--jobs"},     {ARG_STRICT, "--strict"}};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if ((args.given & names[i].bit) && !(takes & names[i].bit)) {
      char text[96];
      snprintf(text, sizeof text, "%s does not apply to %s%s", names[i].option,
               admin < CTL_NADMIN ? "admin " : "", name);
      return ctl_usage_error(text, NULL);
    }
  }
  if (args.opt_list && strcmp(command, "warm") != 0)
    return ctl_usage_error("--opt wants one level, 0, 1 or 2 (a list is for warm)", NULL);
  const char *admin_arg = nwords == 3 ? words[2] : NULL;
  if (admin < CTL_NADMIN) {
    const char *sub = ctl_admin_commands[admin].name;
    if ((strcmp(sub, "show") == 0 || strcmp(sub, "rm") == 0) && !args.have_magic)
      return ctl_usage_error("--magic is required: an entry is named by magic, opt and path", sub);
    if ((strcmp(sub, "show") == 0 || strcmp(sub, "rm") == 0) && admin_arg[0] != '/')
      return ctl_usage_error("PATH must be absolute, as clients sent it", admin_arg);
    if (strcmp(sub, "invalidate") == 0 && !args.have_magic && args.prefix == NULL)
      return ctl_usage_error("invalidate wants --magic HEX, --prefix P or both", NULL);
    pcc_magic retired;
    if (strcmp(sub, "retire") == 0 && pcc_magic_from_hex(admin_arg, &retired) != PCC_PROTO_OK)
      return ctl_usage_error("retire wants a magic, 8 hex digits ending in 0d0a", admin_arg);
    if (args.all && args.cursor)
      return ctl_usage_error("--all starts at the first page: leave out --cursor", NULL);
    if (args.download && args.json)
      return ctl_usage_error("--json does not apply to backup --download", NULL);
    /* refuse before any request: a script must say --yes, a person gets asked */
    if (ctl_admin_commands[admin].destructive && !args.yes && !isatty(STDIN_FILENO)) {
      char text[160];
      snprintf(text, sizeof text, "admin %s removes entries and stdin is not a terminal to ask "
                                  "on: pass --yes to confirm", sub);
      return ctl_usage_error(text, NULL);
    }
  }

  if (args.server == NULL)
    args.server = getenv("PYCACHED_URL");
  if (args.server == NULL || args.server[0] == '\0')
    args.server = PCC_CLIENT_DEFAULT_URL;
  char *token = NULL;
  int code = ctl_load_token(&args, &token);
  if (code != EXIT_HIT)
    return code;
  pcc_client_config config = {
      .base_url = args.server,
      .token = token,
      .timeout_ms = args.timeout_ms,
      .connect_timeout_ms = args.timeout_ms && args.timeout_ms < PCC_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS
                                ? args.timeout_ms
                                : 0,
  };
  pcc_client *client = NULL;
  pcc_client_status rc = pcc_client_open(&config, &client);
  ctl_token_sent = token != NULL;
  if (rc == PCC_CLIENT_OK && strcmp(command, "warm") == 0) /* opens more clients: keeps token */
    code = ctl_warm_run(client, &config, &args, dirs, ndirs);
  if (token != NULL) {
    explicit_bzero(token, strlen(token));
    free(token);
    config.token = NULL;
  }
  if (rc == PCC_CLIENT_INVALID)
    return ctl_usage_error("invalid server URL (http://HOST:PORT or https://...)", args.server);
  if (rc != PCC_CLIENT_OK) {
    fprintf(stderr, "pycachectl: %s\n", pcc_client_strerror(rc));
    return EXIT_LOCAL;
  }
  if (strcmp(command, "warm") == 0)
    ; /* done above */
  else if (strcmp(command, "health") == 0)
    code = ctl_health(client, &args);
  else if (strcmp(command, "stats") == 0)
    code = ctl_stats(client, &args);
  else if (admin < CTL_NADMIN)
    code = ctl_admin(client, &args, words[1], admin_arg);
  else
    code = ctl_code(client, &args, strcmp(command, "compile") == 0, words[1]);
  pcc_client_close(client);
  if (fflush(stdout) != 0 && code == EXIT_HIT)
    code = EXIT_LOCAL;
  return code;
}
