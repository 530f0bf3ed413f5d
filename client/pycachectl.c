/* pycachectl.c: the command-line client of pycached (health, stats, get, compile, warm, exec,
 * and the admin API's commands under `admin`), built on libpycached (pycached.h). Usage, options
 * and exit codes are documented in docs/CLI.md and in --help, which is generated from the
 * option and command tables below.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "pycached.h"

enum {
  EXIT_HIT = 0,
  EXIT_MISS = 1,
  EXIT_USAGE = 2,
  EXIT_SERVER = 3,  /* cannot reach the server, timeout, bad response */
  EXIT_COMPILE = 4, /* the source does not compile */
  EXIT_LOCAL = 5,   /* local file error */
  EXIT_OTHER = 6,   /* any other error the server reported */
  EXIT_AUTH = 7,    /* refused by access control: 401, or 403 naming a role */
};

#define CTL_TIMEOUT_MAX_MS 3600000 /* one hour; also the download's default timeout */
#define CTL_JSON_DEPTH_MAX 8
#define CTL_SOURCE_LINE_MAX 240
#define CTL_QUERY_MAX 16384  /* an admin request's path and query, escaped */
#define CTL_LIMIT_MAX 1000   /* admin ls --limit, the server's bound */
#define CTL_PAGES_MAX 1000000 /* admin ls --all: a server that never ends its listing */
#define CTL_ANSWER_MAX 64    /* a confirmation answer */

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

/* Options that apply to some commands only; each command lists the ones it takes. */
enum {
  ARG_OUTPUT = 1 << 0,
  ARG_NO_HASH = 1 << 1,
  ARG_MAGIC = 1 << 2,
  ARG_OPT = 1 << 3,
  ARG_PREFIX = 1 << 4,
  ARG_LIMIT = 1 << 5,
  ARG_CURSOR = 1 << 6,
  ARG_ALL = 1 << 7,
  ARG_YES = 1 << 8,
  ARG_DOWNLOAD = 1 << 9,
  ARG_JSON = 1 << 10,
  ARG_JOBS = 1 << 11,
  ARG_STRICT = 1 << 12,
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

typedef struct {
  const char *server;
  long timeout_ms;
  int opt;
  unsigned opt_levels; /* bit L: level L given to --opt (warm takes a list) */
  bool opt_list;       /* --opt was a comma list */
  bool have_magic;
  pcc_magic magic;
  const char *output;
  bool json;
  bool no_hash;
  const char *token_file;
  bool token_set; /* a token is sent (from --token-file or the environment) */
  const char *prefix;
  long limit; /* 0: the server's default */
  const char *cursor;
  bool all;
  bool yes;
  const char *download;
  long jobs; /* warm --jobs; 0: the default */
  bool strict;
  unsigned given; /* ARG_* of the options given */
} ctl_args;

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

/* Set once a token is in the client: shapes the advice printed for a 401. */
static bool ctl_token_sent;

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
static int ctl_fail(pcc_client *client, pcc_client_status rc, const char *what)
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
    if (shown > CTL_SOURCE_LINE_MAX)
      shown = CTL_SOURCE_LINE_MAX;
    fprintf(stderr, "    %.*s\n", (int)shown, (const char *)p + indent);
    if (err->offset > (int64_t)indent && (uint64_t)(err->offset - (int64_t)indent) <= shown + 1)
      fprintf(stderr, "    %*s^\n", (int)(err->offset - 1 - (int64_t)indent), "");
  }
  fprintf(stderr, "%s: %s\n", type, message);
}

/* Prints a JSON value as "key.sub[0].name  value" lines. */
static void ctl_print_flat(const char *prefix, const cJSON *item, int depth)
{
  char key[512];
  if (cJSON_IsObject(item) || cJSON_IsArray(item)) {
    if (depth >= CTL_JSON_DEPTH_MAX) {
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

/* ---- admin: requests ------------------------------------------------------------------- */

/* An admin request's path and query under construction, escaped, within CTL_QUERY_MAX. */
typedef struct {
  char text[CTL_QUERY_MAX];
  size_t len;
  bool has_query;
  bool overflow;
} ctl_query;

static void ctl_query_raw(ctl_query *q, const char *s, bool escape)
{
  static const char hex[] = "0123456789ABCDEF";
  for (; *s && !q->overflow; s++) {
    unsigned char c = (unsigned char)*s;
    bool plain = !escape || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
    size_t need = plain ? 1 : 3;
    if (q->len + need >= sizeof q->text) {
      q->overflow = true;
      break;
    }
    if (plain) {
      q->text[q->len++] = (char)c;
    } else {
      q->text[q->len++] = '%';
      q->text[q->len++] = hex[c >> 4];
      q->text[q->len++] = hex[c & 15];
    }
  }
  q->text[q->len] = '\0';
}

static void ctl_query_init(ctl_query *q, const char *path)
{
  q->len = 0;
  q->has_query = q->overflow = false;
  q->text[0] = '\0';
  ctl_query_raw(q, path, false);
}

/* Appends key=value (value escaped); value NULL appends nothing. */
static void ctl_query_add(ctl_query *q, const char *key, const char *value)
{
  if (value == NULL)
    return;
  ctl_query_raw(q, q->has_query ? "&" : "?", false);
  q->has_query = true;
  ctl_query_raw(q, key, false);
  ctl_query_raw(q, "=", false);
  ctl_query_raw(q, value, true);
}

/* Makes one admin request. On EXIT_HIT *body_out is the body (free()) and *json_out, when not
 * NULL, the parsed object (cJSON_Delete); otherwise the error is printed and the exit code
 * returned (a 404 too, unless not_found_ok: then EXIT_MISS, silently). */
static int ctl_admin_call(pcc_client *client, const char *what, const char *method,
                          const ctl_query *q, bool not_found_ok, char **body_out,
                          cJSON **json_out)
{
  if (q->overflow) {
    fprintf(stderr, "pycachectl: %s: the request is over %d bytes\n", what, CTL_QUERY_MAX);
    return EXIT_USAGE;
  }
  char *body = NULL;
  size_t len = 0;
  long status = 0;
  pcc_client_status rc = pcc_client_request(client, method, q->text, NULL, 0, &body, &len,
                                            &status);
  if (rc != PCC_CLIENT_OK) {
    if (not_found_ok && pcc_client_last_error(client)->http_status == 404)
      return EXIT_MISS;
    return ctl_fail(client, rc, what);
  }
  if (json_out != NULL) {
    cJSON *obj = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(obj)) {
      cJSON_Delete(obj);
      free(body);
      fprintf(stderr, "pycachectl: %s: the server's answer is not a JSON object\n", what);
      return EXIT_SERVER;
    }
    *json_out = obj;
  }
  *body_out = body;
  return EXIT_HIT;
}

/* ---- admin: formatting ----------------------------------------------------------------- */

static double ctl_num(const cJSON *obj, const char *name, double fallback)
{
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
  return cJSON_IsNumber(item) ? item->valuedouble : fallback;
}

static const char *ctl_str(const cJSON *obj, const char *name, const char *fallback)
{
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
  return cJSON_IsString(item) ? item->valuestring : fallback;
}

/* A whole number of obj's field into buf, or "?" when absent. */
static const char *ctl_int(const cJSON *obj, const char *name, char *buf, size_t cap)
{
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
  if (!cJSON_IsNumber(item))
    return "?";
  snprintf(buf, cap, "%.0f", item->valuedouble);
  return buf;
}

static const char *ctl_bytes(double bytes, char *buf, size_t cap)
{
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  size_t u = 0;
  if (bytes < 0) {
    snprintf(buf, cap, "?");
    return buf;
  }
  while (bytes >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
    bytes /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, cap, "%.0f B", bytes);
  else
    snprintf(buf, cap, "%.1f %s", bytes, units[u]);
  return buf;
}

static const char *ctl_seconds(double s, char *buf, size_t cap)
{
  if (s < 0)
    snprintf(buf, cap, "?");
  else if (s < 0.001)
    snprintf(buf, cap, "%.0f us", s * 1e6);
  else if (s < 1)
    snprintf(buf, cap, "%.1f ms", s * 1e3);
  else
    snprintf(buf, cap, "%.2f s", s);
  return buf;
}

/* The sum of a misses object ({"absent": 5, "stale": 2}) and its parts as "absent 5, stale 2". */
static double ctl_misses(const cJSON *misses, char *parts, size_t cap)
{
  double total = 0;
  size_t len = 0;
  parts[0] = '\0';
  const cJSON *item = NULL;
  cJSON_ArrayForEach(item, misses) {
    if (!cJSON_IsNumber(item) || item->string == NULL)
      continue;
    total += item->valuedouble;
    int n = snprintf(parts + len, cap - len, "%s%s %.0f", len ? ", " : "", item->string,
                     item->valuedouble);
    if (n < 0 || (size_t)n >= cap - len)
      break; /* shown as far as it fits */
    len += (size_t)n;
  }
  return total;
}

/* Estimates the q-quantile of a latency histogram from its cumulative buckets ([upper bound,
 * count] pairs, the last bound "+Inf") by linear interpolation within the bucket holding it, as
 * Prometheus' histogram_quantile does. Writes "-" when there are no observations. */
static const char *ctl_quantile(const cJSON *histogram, double q, char *buf, size_t cap)
{
  double count = ctl_num(histogram, "count", 0);
  const cJSON *buckets = cJSON_GetObjectItemCaseSensitive(histogram, "buckets");
  if (count <= 0 || !cJSON_IsArray(buckets)) {
    snprintf(buf, cap, "-");
    return buf;
  }
  double rank = q * count, prev_bound = 0, prev_cum = 0;
  const cJSON *pair = NULL;
  cJSON_ArrayForEach(pair, buckets) {
    const cJSON *bound = cJSON_GetArrayItem(pair, 0), *cum = cJSON_GetArrayItem(pair, 1);
    if (!cJSON_IsNumber(cum))
      break;
    bool inf = !cJSON_IsNumber(bound); /* "+Inf" */
    if (cum->valuedouble >= rank && cum->valuedouble > prev_cum) {
      if (inf) {
        char bound_text[24];
        int n = snprintf(buf, cap, "> %s", ctl_seconds(prev_bound, bound_text, sizeof bound_text));
        return n > 0 && (size_t)n < cap ? buf : "> ?";
      }
      double est = prev_bound + (bound->valuedouble - prev_bound) * (rank - prev_cum) /
                                    (cum->valuedouble - prev_cum);
      return ctl_seconds(est, buf, cap);
    }
    if (inf)
      break;
    prev_bound = bound->valuedouble;
    prev_cum = cum->valuedouble;
  }
  snprintf(buf, cap, "?");
  return buf;
}

static void ctl_print_uptime(double seconds)
{
  long long s = (long long)seconds;
  if (s >= 86400)
    printf("%lld d %lld h", s / 86400, s % 86400 / 3600);
  else if (s >= 3600)
    printf("%lld h %lld min", s / 3600, s % 3600 / 60);
  else if (s >= 60)
    printf("%lld min %lld s", s / 60, s % 60);
  else
    printf("%lld s", s);
}

/* One row of the per-magic table of admin stats. */
static void ctl_print_counters_row(const char *name, const cJSON *c)
{
  char b[6][32], parts[256];
  double misses = ctl_misses(cJSON_GetObjectItemCaseSensitive(c, "misses"), parts, sizeof parts);
  printf("%-10s %9s %11s %9s %9.0f %9s %9s %9s\n", name, ctl_int(c, "entries", b[0], 32),
         ctl_bytes(ctl_num(c, "bytes", -1), b[1], 32), ctl_int(c, "hits", b[2], 32), misses,
         ctl_int(c, "compiles", b[3], 32), ctl_int(c, "compile_errors", b[4], 32),
         ctl_int(c, "corruptions", b[5], 32));
}

/* ---- admin: commands ------------------------------------------------------------------- */

static int ctl_admin_stats(pcc_client *client, const ctl_args *args)
{
  ctl_query q;
  ctl_query_init(&q, "/v1/admin/stats");
  char *body = NULL;
  cJSON *obj = NULL;
  int code = ctl_admin_call(client, "admin stats", "GET", &q, false, &body,
                            args->json ? NULL : &obj);
  if (code != EXIT_HIT)
    return code;
  if (args->json) {
    printf("%s\n", body);
    free(body);
    return EXIT_HIT;
  }
  char b[8][32], parts[256];
  printf("pycached %s, up ", ctl_str(obj, "version", "?"));
  ctl_print_uptime(ctl_num(obj, "uptime", 0));
  printf(", %s requests\n", ctl_int(obj, "requests", b[0], 32));
  const cJSON *build = cJSON_GetObjectItemCaseSensitive(obj, "build");
  if (cJSON_IsObject(build)) {
    printf("build:");
    const cJSON *item = NULL;
    int i = 0;
    cJSON_ArrayForEach(item, build) {
      if (cJSON_IsString(item) && item->string)
        printf("%s %s %s", i++ ? "," : "", item->string, item->valuestring);
    }
    printf("\n");
  }

  const cJSON *total = cJSON_GetObjectItemCaseSensitive(obj, "total");
  double misses = ctl_misses(cJSON_GetObjectItemCaseSensitive(total, "misses"), parts,
                             sizeof parts);
  printf("\ntotal: %s entries (%s), %s hits, %.0f misses%s%s%s, %s compiles, %s compile errors, "
         "%s corruptions\n",
         ctl_int(total, "entries", b[0], 32), ctl_bytes(ctl_num(total, "bytes", -1), b[1], 32),
         ctl_int(total, "hits", b[2], 32), misses, parts[0] ? " (" : "", parts,
         parts[0] ? ")" : "", ctl_int(total, "compiles", b[3], 32),
         ctl_int(total, "compile_errors", b[4], 32), ctl_int(total, "corruptions", b[5], 32));
  const cJSON *fallbacks = cJSON_GetObjectItemCaseSensitive(total, "fallbacks");
  if (cJSON_GetArraySize(fallbacks) > 0) {
    printf("fallbacks clients reported:");
    const cJSON *reason = NULL;
    cJSON_ArrayForEach(reason, fallbacks) {
      printf(" %s %.0f", reason->string ? reason->string : "?", cJSON_GetNumberValue(reason));
    }
    printf("\n");
  }

  const cJSON *magics = cJSON_GetObjectItemCaseSensitive(obj, "magics");
  if (cJSON_IsObject(magics) && cJSON_GetArraySize(magics) > 0) {
    printf("\n%-10s %9s %11s %9s %9s %9s %9s %9s\n", "MAGIC", "ENTRIES", "BYTES", "HITS",
           "MISSES", "COMPILES", "ERRORS", "CORRUPT");
    const cJSON *m = NULL;
    cJSON_ArrayForEach(m, magics) {
      ctl_print_counters_row(m->string ? m->string : "?", m);
    }
  }

  const cJSON *latency = cJSON_GetObjectItemCaseSensitive(obj, "latency");
  if (cJSON_IsObject(latency)) {
    printf("\n%-10s %9s %11s %11s %11s %11s\n", "LATENCY", "COUNT", "MEAN", "P50", "P90", "P99");
    const cJSON *h = NULL;
    cJSON_ArrayForEach(h, latency) {
      double count = ctl_num(h, "count", 0), sum = ctl_num(h, "sum", -1);
      printf("%-10s %9.0f %11s %11s %11s %11s\n", h->string ? h->string : "?", count,
             count > 0 && sum >= 0 ? ctl_seconds(sum / count, b[0], 32) : "-",
             ctl_quantile(h, 0.50, b[1], 32), ctl_quantile(h, 0.90, b[2], 32),
             ctl_quantile(h, 0.99, b[3], 32));
    }
    printf("(percentiles estimated from the server's histogram buckets)\n");
  }

  const cJSON *store = cJSON_GetObjectItemCaseSensitive(obj, "store");
  if (cJSON_IsObject(store)) {
    double used = ctl_num(store, "used", -1), map = ctl_num(store, "map_size", -1);
    printf("\nstore: %s entries, %s blobs, %s in entries; map %s used of %s", 
           ctl_int(store, "entries", b[0], 32), ctl_int(store, "blobs", b[1], 32),
           ctl_bytes(ctl_num(store, "bytes", -1), b[2], 32), ctl_bytes(used, b[3], 32),
           ctl_bytes(map, b[4], 32));
    if (used >= 0 && map > 0)
      printf(" (%.1f%%)", 100.0 * used / map);
    printf("\n");
  }
  cJSON_Delete(obj);
  free(body);
  return EXIT_HIT;
}

static int ctl_admin_magics(pcc_client *client, const ctl_args *args)
{
  ctl_query q;
  ctl_query_init(&q, "/v1/admin/magics");
  char *body = NULL;
  cJSON *obj = NULL;
  int code = ctl_admin_call(client, "admin magics", "GET", &q, false, &body,
                            args->json ? NULL : &obj);
  if (code != EXIT_HIT)
    return code;
  if (args->json) {
    printf("%s\n", body);
    free(body);
    return EXIT_HIT;
  }
  char b[4][32];
  const cJSON *item = NULL;
  printf("%-20s %-14s %-10s %-10s %7s %-8s %s\n", "BACKEND", "IMPLEMENTATION", "VERSION", "MAGIC",
         "WORKERS", "DEFAULT", "INTERPRETER");
  cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(obj, "backends")) {
    printf("%-20s %-14s %-10s %-10s %7s %-8s %s\n", ctl_str(item, "name", "?"),
           ctl_str(item, "implementation", "?"), ctl_str(item, "version", "?"),
           ctl_str(item, "magic", "?"), ctl_int(item, "workers", b[0], 32),
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(item, "default")) ? "yes" : "no",
           ctl_str(item, "interpreter", "?"));
  }
  printf("\n%-10s %9s %11s %s\n", "MAGIC", "ENTRIES", "BYTES", "SERVED");
  bool unserved = false;
  cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(obj, "store")) {
    bool served = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(item, "served"));
    unserved |= !served;
    printf("%-10s %9s %11s %s\n", ctl_str(item, "magic", "?"), ctl_int(item, "entries", b[0], 32),
           ctl_bytes(ctl_num(item, "bytes", -1), b[1], 32), served ? "yes" : "no");
  }
  if (unserved)
    printf("\nNo backend compiles the magics marked 'no'; their entries are still served until "
           "'pycachectl admin retire MAGIC'.\n");
  cJSON_Delete(obj);
  free(body);
  return EXIT_HIT;
}

static int ctl_admin_ls(pcc_client *client, const ctl_args *args)
{
  char magic_hex[2 * PCC_MAGIC_LEN + 1], opt[8], limit[16];
  pcc_magic_to_hex(&args->magic, magic_hex);
  snprintf(opt, sizeof opt, "%d", args->opt);
  snprintf(limit, sizeof limit, "%ld", args->limit);
  char *cursor = args->cursor ? strdup(args->cursor) : NULL;
  if (args->cursor && cursor == NULL) {
    fprintf(stderr, "pycachectl: admin ls: out of memory\n");
    return EXIT_LOCAL;
  }
  int code = EXIT_HIT;
  long shown = 0;
  for (long page = 0; page < CTL_PAGES_MAX; page++) {
    ctl_query q;
    ctl_query_init(&q, "/v1/admin/entries");
    ctl_query_add(&q, "magic", args->given & ARG_MAGIC ? magic_hex : NULL);
    ctl_query_add(&q, "opt", args->given & ARG_OPT ? opt : NULL);
    ctl_query_add(&q, "prefix", args->prefix);
    ctl_query_add(&q, "limit", args->limit ? limit : NULL);
    ctl_query_add(&q, "cursor", cursor);
    char *body = NULL;
    cJSON *obj = NULL;
    code = ctl_admin_call(client, "admin ls", "GET", &q, false, &body, &obj);
    if (code != EXIT_HIT)
      break;
    const cJSON *entries = cJSON_GetObjectItemCaseSensitive(obj, "entries");
    const cJSON *next = cJSON_GetObjectItemCaseSensitive(obj, "next_cursor");
    if (!cJSON_IsArray(entries) || !(cJSON_IsNull(next) || cJSON_IsString(next))) {
      fprintf(stderr, "pycachectl: admin ls: the answer has no entries array or next_cursor\n");
      code = EXIT_SERVER;
    } else if (args->json) {
      printf("%s\n", body); /* one JSON document per page */
    } else {
      const cJSON *e = NULL;
      cJSON_ArrayForEach(e, entries) {
        char b[3][32];
        if (shown++ == 0)
          printf("%-10s %3s %-13s %10s %8s  %s\n", "MAGIC", "OPT", "KIND", "BYTES", "HITS", "PATH");
        printf("%-10s %3s %-13s %10s %8s  %s\n", ctl_str(e, "magic", "?"),
               ctl_int(e, "opt", b[0], 32), ctl_str(e, "kind", "?"),
               ctl_int(e, "bytes", b[1], 32), ctl_int(e, "hits", b[2], 32),
               ctl_str(e, "path", "?"));
      }
    }
    char *following = NULL;
    if (code == EXIT_HIT && cJSON_IsString(next)) {
      if (cursor != NULL && strcmp(cursor, next->valuestring) == 0) {
        fprintf(stderr, "pycachectl: admin ls: the server gave the same cursor twice\n");
        code = EXIT_SERVER;
      } else if ((following = strdup(next->valuestring)) == NULL) {
        fprintf(stderr, "pycachectl: admin ls: out of memory\n");
        code = EXIT_LOCAL;
      }
    }
    cJSON_Delete(obj);
    free(body);
    free(cursor);
    cursor = following;
    if (code != EXIT_HIT || cursor == NULL)
      break;
    if (!args->all) {
      fprintf(stderr, "pycachectl: more entries: add --cursor '%s' for the next page, or --all "
                      "for every page\n", cursor);
      break;
    }
    if (fflush(stdout) != 0) {
      code = EXIT_LOCAL;
      break;
    }
  }
  free(cursor);
  if (code == EXIT_HIT && !args->json && shown == 0)
    printf("no entries\n");
  return code;
}

/* "magic=..&opt=..&path=.." of one entry. */
static void ctl_entry_query(ctl_query *q, const ctl_args *args, const char *path)
{
  char magic_hex[2 * PCC_MAGIC_LEN + 1], opt[8];
  pcc_magic_to_hex(&args->magic, magic_hex);
  snprintf(opt, sizeof opt, "%d", args->opt);
  ctl_query_init(q, "/v1/admin/entry");
  ctl_query_add(q, "magic", magic_hex);
  ctl_query_add(q, "opt", opt);
  ctl_query_add(q, "path", path);
}

static int ctl_admin_show(pcc_client *client, const ctl_args *args, const char *path)
{
  ctl_query q;
  ctl_entry_query(&q, args, path);
  char *body = NULL;
  cJSON *obj = NULL;
  int code = ctl_admin_call(client, "admin show", "GET", &q, true, &body, args->json ? NULL : &obj);
  if (code == EXIT_MISS) {
    char magic_hex[2 * PCC_MAGIC_LEN + 1];
    pcc_magic_to_hex(&args->magic, magic_hex);
    fprintf(stderr, "pycachectl: admin show: no entry for %s (magic %s, opt %d)\n", path,
            magic_hex, args->opt);
    return code;
  }
  if (code != EXIT_HIT)
    return code;
  if (args->json) {
    printf("%s\n", body);
    free(body);
    return EXIT_HIT;
  }
  const cJSON *item = NULL;
  cJSON_ArrayForEach(item, obj) {
    const char *key = item->string ? item->string : "?";
    bool when = strcmp(key, "created") == 0 || strcmp(key, "last_hit") == 0;
    if (when && cJSON_IsNumber(item)) {
      time_t t = (time_t)item->valuedouble;
      struct tm tm;
      char text[64] = "?";
      if (gmtime_r(&t, &tm) != NULL)
        strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &tm);
      printf("%-12s %.0f  (%s)\n", key, item->valuedouble, text);
    } else if (when && cJSON_IsNull(item)) {
      printf("%-12s never\n", key);
    } else if (cJSON_IsObject(item) || cJSON_IsArray(item)) {
      ctl_print_flat(key, item, 1);
    } else {
      char prefix[64];
      snprintf(prefix, sizeof prefix, "%s", key);
      /* scalars: the same rendering as the flat printer, in a narrower column */
      if (cJSON_IsString(item))
        printf("%-12s %s\n", prefix, item->valuestring);
      else if (cJSON_IsNumber(item))
        printf("%-12s %.0f\n", prefix, item->valuedouble);
      else if (cJSON_IsBool(item))
        printf("%-12s %s\n", prefix, cJSON_IsTrue(item) ? "true" : "false");
      else
        printf("%-12s -\n", prefix);
    }
  }
  cJSON_Delete(obj);
  free(body);
  return EXIT_HIT;
}

/* Asks question on the terminal (stdin is one: main checked) unless --yes. EXIT_HIT to go on,
 * EXIT_MISS when not confirmed. */
static int ctl_confirm(const ctl_args *args, const char *what, const char *fmt, ...)
{
  if (args->yes)
    return EXIT_HIT;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " [y/N] ");
  fflush(stderr);
  char answer[CTL_ANSWER_MAX];
  bool yes = false;
  if (fgets(answer, sizeof answer, stdin) != NULL) {
    answer[strcspn(answer, " \t\r\n")] = '\0';
    yes = strcasecmp(answer, "y") == 0 || strcasecmp(answer, "yes") == 0;
  } else {
    fputc('\n', stderr);
  }
  if (!yes)
    fprintf(stderr, "pycachectl: %s: not confirmed, nothing removed\n", what);
  return yes ? EXIT_HIT : EXIT_MISS;
}

/* Prints the {"removed": N} of a removal (or the JSON as is). */
static int ctl_print_removed(const char *body, const cJSON *obj, const ctl_args *args)
{
  if (args->json) {
    printf("%s\n", body);
    return EXIT_HIT;
  }
  const cJSON *removed = cJSON_GetObjectItemCaseSensitive(obj, "removed");
  if (!cJSON_IsNumber(removed)) {
    fprintf(stderr, "pycachectl: the server's answer has no \"removed\" count\n");
    return EXIT_SERVER;
  }
  printf("removed %.0f %s\n", removed->valuedouble, removed->valuedouble == 1 ? "entry" : "entries");
  return EXIT_HIT;
}

/* A destructive request: POST or DELETE, then the removed count. */
static int ctl_admin_remove(pcc_client *client, const ctl_args *args, const char *what,
                            const char *method, const ctl_query *q, bool not_found_ok)
{
  char *body = NULL;
  cJSON *obj = NULL;
  int code = ctl_admin_call(client, what, method, q, not_found_ok, &body, &obj);
  if (code != EXIT_HIT)
    return code;
  code = ctl_print_removed(body, obj, args);
  cJSON_Delete(obj);
  free(body);
  return code;
}

static int ctl_admin_rm(pcc_client *client, const ctl_args *args, const char *path)
{
  char magic_hex[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(&args->magic, magic_hex);
  int code = ctl_confirm(args, "admin rm", "Remove the entry of %s (magic %s, opt %d)?", path,
                         magic_hex, args->opt);
  if (code != EXIT_HIT)
    return code;
  ctl_query q;
  ctl_entry_query(&q, args, path);
  code = ctl_admin_remove(client, args, "admin rm", "DELETE", &q, true);
  if (code == EXIT_MISS)
    fprintf(stderr, "pycachectl: admin rm: no entry for %s (magic %s, opt %d)\n", path, magic_hex,
            args->opt);
  return code;
}

/* The number of entries of a magic in the store (from /v1/admin/magics), or -1. */
static double ctl_magic_entries(pcc_client *client, const char *magic_hex)
{
  char *body = NULL;
  size_t len = 0;
  if (pcc_client_request(client, "GET", "/v1/admin/magics", NULL, 0, &body, &len, NULL) !=
      PCC_CLIENT_OK)
    return -1;
  cJSON *obj = cJSON_ParseWithLength(body, len);
  free(body);
  double entries = -1;
  const cJSON *item = NULL;
  cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(obj, "store")) {
    if (strcmp(ctl_str(item, "magic", ""), magic_hex) == 0)
      entries = ctl_num(item, "entries", -1);
  }
  cJSON_Delete(obj);
  return entries;
}

static int ctl_admin_invalidate(pcc_client *client, const ctl_args *args)
{
  char magic_hex[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(&args->magic, magic_hex);
  bool by_magic = args->given & ARG_MAGIC;
  int code;
  if (by_magic && args->prefix)
    code = ctl_confirm(args, "admin invalidate",
                       "Remove every entry of magic %s whose path starts with %s?", magic_hex,
                       args->prefix);
  else if (args->prefix)
    code = ctl_confirm(args, "admin invalidate", "Remove every entry whose path starts with %s?",
                       args->prefix);
  else {
    double n = args->yes ? -1 : ctl_magic_entries(client, magic_hex);
    if (n >= 0)
      code = ctl_confirm(args, "admin invalidate", "Remove the %.0f entries of magic %s?", n,
                         magic_hex);
    else
      code = ctl_confirm(args, "admin invalidate", "Remove every entry of magic %s?", magic_hex);
  }
  if (code != EXIT_HIT)
    return code;
  ctl_query q;
  ctl_query_init(&q, "/v1/admin/invalidate");
  ctl_query_add(&q, "magic", by_magic ? magic_hex : NULL);
  ctl_query_add(&q, "prefix", args->prefix);
  return ctl_admin_remove(client, args, "admin invalidate", "POST", &q, false);
}

static int ctl_admin_purge(pcc_client *client, const ctl_args *args)
{
  double n = -1;
  if (!args->yes) { /* the count makes the question concrete; without it, ask anyway */
    char *body = NULL;
    size_t len = 0;
    if (pcc_client_request(client, "GET", "/v1/admin/stats", NULL, 0, &body, &len, NULL) ==
        PCC_CLIENT_OK) {
      cJSON *obj = cJSON_ParseWithLength(body, len);
      n = ctl_num(cJSON_GetObjectItemCaseSensitive(obj, "total"), "entries", -1);
      cJSON_Delete(obj);
      free(body);
    }
  }
  int code = n >= 0 ? ctl_confirm(args, "admin purge", "Remove all %.0f entries from the store?", n)
                    : ctl_confirm(args, "admin purge", "Remove every entry from the store?");
  if (code != EXIT_HIT)
    return code;
  ctl_query q;
  ctl_query_init(&q, "/v1/admin/purge");
  return ctl_admin_remove(client, args, "admin purge", "POST", &q, false);
}

static int ctl_admin_retire(pcc_client *client, const ctl_args *args, const pcc_magic *magic)
{
  char magic_hex[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(magic, magic_hex);
  double n = args->yes ? -1 : ctl_magic_entries(client, magic_hex);
  int code = n >= 0 ? ctl_confirm(args, "admin retire", "Remove the %.0f entries of magic %s?", n,
                                  magic_hex)
                    : ctl_confirm(args, "admin retire", "Remove every entry of magic %s?",
                                  magic_hex);
  if (code != EXIT_HIT)
    return code;
  char path[64];
  snprintf(path, sizeof path, "/v1/admin/magics/%s/retire", magic_hex);
  ctl_query q;
  ctl_query_init(&q, path);
  return ctl_admin_remove(client, args, "admin retire", "POST", &q, false);
}

/* GET /v1/admin/backup into a temporary file next to args->download, then fsync and rename
 * (mode 0600: the backup holds every stored code object). */
static int ctl_admin_download(pcc_client *client, const ctl_args *args)
{
  char tmp[PATH_MAX];
  int n = snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", args->download);
  if (n < 0 || (size_t)n >= sizeof tmp) {
    fprintf(stderr, "pycachectl: %s: %s\n", args->download, strerror(ENAMETOOLONG));
    return EXIT_LOCAL;
  }
  int fd = mkstemp(tmp);
  if (fd < 0) {
    fprintf(stderr, "pycachectl: %s: %s\n", args->download, strerror(errno));
    return EXIT_LOCAL;
  }
  if (args->timeout_ms == 0) /* a big store takes longer than a minute */
    pcc_client_set_timeout(client, CTL_TIMEOUT_MAX_MS);
  uint64_t bytes = 0;
  pcc_client_status rc = pcc_client_download(client, "/v1/admin/backup", fd, &bytes, NULL);
  int code = EXIT_HIT, err = 0;
  if (rc == PCC_CLIENT_IO)
    err = errno;
  else if (rc != PCC_CLIENT_OK)
    code = ctl_fail(client, rc, "admin backup");
  if (code == EXIT_HIT && err == 0 && fsync(fd) != 0)
    err = errno;
  if (close(fd) != 0 && code == EXIT_HIT && err == 0)
    err = errno;
  if (code == EXIT_HIT && err == 0 && rename(tmp, args->download) != 0)
    err = errno;
  if (err != 0) {
    fprintf(stderr, "pycachectl: %s: %s\n", args->download, strerror(err));
    code = EXIT_LOCAL;
  }
  if (code != EXIT_HIT) {
    unlink(tmp);
    return code;
  }
  char b[32];
  printf("downloaded  %s  %" PRIu64 " bytes (%s)\n", args->download, bytes,
         ctl_bytes((double)bytes, b, sizeof b));
  return EXIT_HIT;
}

static int ctl_admin_backup(pcc_client *client, const ctl_args *args)
{
  if (args->download)
    return ctl_admin_download(client, args);
  ctl_query q;
  ctl_query_init(&q, "/v1/admin/backup");
  char *body = NULL;
  cJSON *obj = NULL;
  if (args->timeout_ms == 0)
    pcc_client_set_timeout(client, CTL_TIMEOUT_MAX_MS);
  int code = ctl_admin_call(client, "admin backup", "POST", &q, false, &body,
                            args->json ? NULL : &obj);
  if (code != EXIT_HIT)
    return code;
  if (args->json) {
    printf("%s\n", body);
  } else {
    char b[32];
    printf("backup  %s  %s\n", ctl_str(obj, "path", "?"),
           ctl_bytes(ctl_num(obj, "bytes", -1), b, sizeof b));
  }
  cJSON_Delete(obj);
  free(body);
  return EXIT_HIT;
}

/* Runs `admin SUB [ARG]`; main has checked the subcommand's options and words. */
static int ctl_admin(pcc_client *client, const ctl_args *args, const char *sub, const char *arg)
{
  if (strcmp(sub, "stats") == 0)
    return ctl_admin_stats(client, args);
  if (strcmp(sub, "magics") == 0)
    return ctl_admin_magics(client, args);
  if (strcmp(sub, "ls") == 0)
    return ctl_admin_ls(client, args);
  if (strcmp(sub, "show") == 0)
    return ctl_admin_show(client, args, arg);
  if (strcmp(sub, "rm") == 0)
    return ctl_admin_rm(client, args, arg);
  if (strcmp(sub, "invalidate") == 0)
    return ctl_admin_invalidate(client, args);
  if (strcmp(sub, "purge") == 0)
    return ctl_admin_purge(client, args);
  if (strcmp(sub, "retire") == 0) {
    pcc_magic magic;
    pcc_magic_from_hex(arg, &magic); /* checked by main */
    return ctl_admin_retire(client, args, &magic);
  }
  return ctl_admin_backup(client, args);
}

/* ---- warm ------------------------------------------------------------------------------ */

/* `warm DIR...` walks the trees the way compileall does (every file named *.py, every
 * directory but __pycache__, hidden ones included; symlinked files are warmed under their own
 * path, symlinked directories are not entered), then N threads, each with its own client,
 * upload every file at every level of --opt. The walk is bounded: */
#define CTL_WARM_DIRS_MAX 256                 /* DIR arguments */
#define CTL_WARM_FILES_MAX 1000000            /* *.py files of one run, all DIRs together */
#define CTL_WARM_TEXT_MAX ((size_t)256 << 20) /* bytes of their paths */
#define CTL_WARM_DEPTH_MAX 64                 /* directory levels below a DIR */
#define CTL_WARM_JOBS_MAX 64
#define CTL_WARM_JOBS_DEFAULT 4               /* when /v1/stats does not say */
#define CTL_WARM_REASON_MAX 512               /* bytes of one reported message */
#define CTL_WARM_REDRAW_NS 100000000L         /* the progress line: at most 10 redraws a second */

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
  char *text;         /* the paths, NUL-terminated, back to back */
  size_t text_len, text_cap;
  size_t *offsets;    /* during the walk: where each path starts in text */
  size_t offsets_cap;
  int levels[PCC_OPT_MAX + 1];
  int nlevels;
  pcc_magic magic;
  atomic_size_t next, done;
  atomic_size_t compiled, joined, cached;
  atomic_bool stop;
  pthread_mutex_t lock;
  pthread_cond_t changed; /* a worker ended */
  int running;
  ctl_warm_problem *problems;
  size_t nproblems, problems_cap;
  size_t compile_errors, failures; /* counted even when recording the problem failed */
  bool unreadable; /* something in the trees could not be read: exit 5 */
  bool lost;       /* out of memory while recording a problem */
  int fatal;       /* the exit code of the error that stopped the run; 0: none */
  char fatal_message[CTL_WARM_REASON_MAX];
} ctl_warm;

typedef struct {
  ctl_warm *warm;
  pcc_client *client;
  pthread_t thread;
} ctl_warm_job;

static char *ctl_strndup_bounded(const char *s)
{
  return s ? strndup(s, CTL_WARM_REASON_MAX) : NULL;
}

/* Records a problem; compile_error selects the kind, type/line/offset apply to compile errors
 * only. Thread-safe. The strings are copied (each at most CTL_WARM_REASON_MAX bytes). */
static void ctl_warm_problem_add(ctl_warm *w, const char *path, int opt, bool compile_error,
                                 const char *type, const char *message, int64_t line,
                                 int64_t offset)
{
  pthread_mutex_lock(&w->lock);
  if (compile_error)
    w->compile_errors++;
  else
    w->failures++;
  if (w->nproblems == w->problems_cap) {
    size_t cap = w->problems_cap ? 2 * w->problems_cap : 64;
    ctl_warm_problem *grown = realloc(w->problems, cap * sizeof *grown);
    if (grown == NULL) {
      w->lost = true;
      pthread_mutex_unlock(&w->lock);
      return;
    }
    w->problems = grown;
    w->problems_cap = cap;
  }
  ctl_warm_problem *p = &w->problems[w->nproblems];
  *p = (ctl_warm_problem){strdup(path), opt, compile_error, ctl_strndup_bounded(type),
                          ctl_strndup_bounded(message), line, offset};
  if (p->path == NULL || (type && p->type == NULL) || (message && p->message == NULL)) {
    free(p->path);
    free(p->type);
    free(p->message);
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

/* Appends a path found by the walk. Returns false past CTL_WARM_FILES_MAX or
 * CTL_WARM_TEXT_MAX, or without memory (the walk then stops; the caller says why). */
static bool ctl_warm_add_path(ctl_warm *w, const char *path, size_t len)
{
  if (w->nfiles >= CTL_WARM_FILES_MAX || w->text_len + len + 1 > CTL_WARM_TEXT_MAX)
    return false;
  if (w->text_len + len + 1 > w->text_cap) {
    size_t cap = w->text_cap ? 2 * w->text_cap : (size_t)1 << 16;
    while (cap < w->text_len + len + 1)
      cap *= 2;
    if (cap > CTL_WARM_TEXT_MAX)
      cap = CTL_WARM_TEXT_MAX;
    char *grown = realloc(w->text, cap);
    if (grown == NULL)
      return false;
    w->text = grown;
    w->text_cap = cap;
  }
  if (w->nfiles == w->offsets_cap) {
    size_t cap = w->offsets_cap ? 2 * w->offsets_cap : 1024;
    size_t *grown = realloc(w->offsets, cap * sizeof *grown);
    if (grown == NULL)
      return false;
    w->offsets = grown;
    w->offsets_cap = cap;
  }
  memcpy(w->text + w->text_len, path, len + 1);
  w->offsets[w->nfiles++] = w->text_len;
  w->text_len += len + 1;
  return true;
}

/* Walks the directory in path (plen bytes, in a buffer of PCC_PATH_MAX + 1 bytes, restored on
 * return), depth levels below its DIR, adding every *.py file. Directories that cannot be
 * listed or are too deep, and names too long for a path, are recorded as unreadable and
 * skipped. Returns false when the walk must stop: over its limits or out of memory. */
static bool ctl_warm_walk(ctl_warm *w, char *path, size_t plen, int depth)
{
  char reason[CTL_WARM_REASON_MAX];
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
    } else if (depth >= CTL_WARM_DEPTH_MAX) {
      snprintf(reason, sizeof reason, "not entered: over %d directory levels below DIR",
               CTL_WARM_DEPTH_MAX);
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
  for (size_t i = 0; i < w->nfiles; i++)
    w->files[i] = w->text + w->offsets[i];
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
      atomic_fetch_add(&w->cached, 1); /* "stored", or a server that does not say */
    return;
  }
  const pcc_client_error *err = pcc_client_last_error(client);
  const char *message = err->message ? err->message : pcc_client_strerror(rc);
  char reason[CTL_WARM_REASON_MAX];
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
                   ctl_token_sent ? "the server does not accept the token"
                                  : "the server wants a token: set PYCACHED_TOKEN or "
                                    "PYCACHED_TOKEN_FILE, or pass --token-file");
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
  if (rc != PCC_CLIENT_OK) {
    if (rc == PCC_CLIENT_TOOBIG) /* the user's source, like a compile error: not exit 5 */
      ctl_warm_problem_add(w, path, -1, false, NULL, "over the 16 MiB source limit", -1, -1);
    else
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
  if (w->nproblems > 0) /* qsort wants a real array even for none */
    qsort(w->problems, w->nproblems, sizeof *w->problems, ctl_warm_problem_cmp);
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
      const ctl_warm_problem *p = &w->problems[i];
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
    const ctl_warm_problem *p = &w->problems[i];
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
static int ctl_warm_jobs(pcc_client *client, const ctl_args *args, const pcc_magic *magic,
                         int *jobs)
{
  *jobs = CTL_WARM_JOBS_DEFAULT;
  if (args->jobs > 0) {
    *jobs = (int)args->jobs;
    return 0;
  }
  char *body = NULL;
  pcc_client_status rc = pcc_client_get_json(client, "/v1/stats", &body, NULL);
  if (rc == PCC_CLIENT_CONNECT || rc == PCC_CLIENT_TIMEOUT || rc == PCC_CLIENT_UNAUTHORIZED)
    return ctl_fail(client, rc, "warm");
  if (rc != PCC_CLIENT_OK)
    return 0; /* e.g. a token without the read role: the default */
  char magic_hex[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(magic, magic_hex);
  cJSON *stats = cJSON_Parse(body);
  const cJSON *compiler = NULL;
  cJSON_ArrayForEach(compiler, cJSON_GetObjectItemCaseSensitive(stats, "compilers")) {
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(compiler, "magic");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(compiler, "workers");
    if (cJSON_IsString(m) && strcasecmp(m->valuestring, magic_hex) == 0 && cJSON_IsNumber(n) &&
        n->valuedouble >= 1) {
      *jobs = n->valuedouble >= CTL_WARM_JOBS_MAX / 2 ? CTL_WARM_JOBS_MAX
                                                      : 2 * (int)n->valuedouble;
      break;
    }
  }
  cJSON_Delete(stats);
  free(body);
  return 0;
}

static void ctl_warm_free(ctl_warm *w)
{
  for (size_t i = 0; i < w->nproblems; i++) {
    free(w->problems[i].path);
    free(w->problems[i].type);
    free(w->problems[i].message);
  }
  free(w->problems);
  free(w->files);
  free(w->offsets);
  free(w->text);
  pthread_cond_destroy(&w->changed);
  pthread_mutex_destroy(&w->lock);
}

/* pycachectl warm DIR...: walks the trees, then uploads every file at every level with
 * args->jobs threads, each with its own client opened from config (the caller's client makes
 * the preliminary requests). Returns the exit code: 0 when every file was handled (compile
 * errors and failures are reported, not fatal), 4 with --strict when a file did not compile or
 * failed, 5 when something in the trees could not be read, 3/6/7 when an error concerning every
 * file stopped the run. */
static int ctl_warm_run(pcc_client *client, const pcc_client_config *config,
                        const ctl_args *args, const char *const *dirs, int ndirs)
{
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
  pcc_client_status rc = PCC_CLIENT_OK;
  if (!args->have_magic && (rc = pcc_client_default_magic(client, &w.magic)) != PCC_CLIENT_OK)
    code = ctl_fail(client, rc, "warm: cannot learn the server's default magic");
  if (code == 0)
    code = ctl_warm_jobs(client, args, &w.magic, &jobs);

  char path[PCC_PATH_MAX + 1];
  for (int i = 0; code == 0 && i < ndirs; i++) {
    size_t len = strlen(roots[i]);
    memcpy(path, roots[i], len + 1);
    if (!ctl_warm_walk(&w, path, len, 0)) {
      if (w.nfiles >= CTL_WARM_FILES_MAX || w.text_len > CTL_WARM_TEXT_MAX / 2)
        fprintf(stderr, "pycachectl: warm: the trees hold over %d *.py files (or %zu MiB of "
                        "paths): warm fewer at a time\n", CTL_WARM_FILES_MAX,
                CTL_WARM_TEXT_MAX >> 20);
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
  pcc_client_config worker_config = *config;
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
  const char *dirs[CTL_WARM_DIRS_MAX]; /* warm DIR... */
  int ndirs = 0;
  while (optind < argc) {
    if ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) == -1) {
      if (optind < argc) {
        if (nwords == 1 && strcmp(words[0], "warm") == 0) {
          if (ndirs == CTL_WARM_DIRS_MAX)
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
      if (pcc_parse_i64(optarg, 1, CTL_TIMEOUT_MAX_MS, &value) != PCC_PROTO_OK)
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
      if (pcc_parse_i64(optarg, 1, CTL_LIMIT_MAX, &value) != PCC_PROTO_OK)
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
      if (pcc_parse_i64(optarg, 1, CTL_WARM_JOBS_MAX, &value) != PCC_PROTO_OK)
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
