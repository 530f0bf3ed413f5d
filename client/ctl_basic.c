/* ctl_basic.c: the basic commands of pycachectl (ctl.h): health, stats, get and compile, which
 * make one request each through libpycached (pycached.h), and exec, which runs a program with
 * the import hook active in its interpreters. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ctl.h"

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

int ctl_health(const ctl *c)
{
  char *body = NULL;
  pcc_client_status rc = pcc_client_get_json(c->client, "/healthz", &body, NULL);
  if (rc != PCC_CLIENT_OK)
    return ctl_fail(c, rc, "health");
  if (c->args.json) {
    printf("%s\n", body);
  } else {
    cJSON *obj = cJSON_Parse(body);
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(obj, "status");
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(obj, "version");
    printf("%s  %s  version %s\n", cJSON_IsString(status) ? status->valuestring : "?",
           c->args.server, cJSON_IsString(version) ? version->valuestring : "?");
    cJSON_Delete(obj);
  }
  free(body);
  return EXIT_HIT;
}

int ctl_stats(const ctl *c)
{
  char *body = NULL;
  pcc_client_status rc;
  if (c->args.zero) { /* zeroed, then answered with the counters as they are then */
    size_t len = 0;
    long status = 0;
    rc = pcc_client_request(c->client, "POST", "/v1/admin/stats/zero", NULL, 0, &body, &len,
                            &status);
    if (rc != PCC_CLIENT_OK)
      return ctl_fail(c, rc, "stats --zero");
    if (!c->args.json)
      printf("counters zeroed\n");
  } else {
    rc = pcc_client_get_json(c->client, "/v1/stats", &body, NULL);
    if (rc != PCC_CLIENT_OK)
      return ctl_fail(c, rc, "stats");
  }
  int code = EXIT_HIT;
  if (c->args.json) {
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

/* get FILE and compile FILE: a lookup or an upload of the source, the entry printed and with
 * --output written. */
static int ctl_code(const ctl *c, bool compile)
{
  pcc_client *client = c->client;
  const ctl_args *args = &c->args;
  const char *what = compile ? "compile" : "get", *file = c->words[0];
  pcc_source *source = NULL;
  pcc_client_status rc = pcc_source_read(file, PCC_SOURCE_DEFAULT_MAX, &source);
  if (rc != PCC_CLIENT_OK) {
    if (rc == PCC_CLIENT_IO)
      fprintf(stderr, "pycachectl: %s: %s\n", file, strerror(errno));
    else if (rc == PCC_CLIENT_TOOBIG)
      fprintf(stderr, "pycachectl: %s: over the %zu MiB source limit\n", file,
              PCC_SOURCE_DEFAULT_MAX >> 20);
    else
      fprintf(stderr, "pycachectl: %s: %s\n", file, pcc_client_strerror(rc));
    return EXIT_LOCAL;
  }
  pcc_magic magic = args->magic;
  if (!args->have_magic) {
    rc = pcc_client_default_magic(client, &magic);
    if (rc != PCC_CLIENT_OK) {
      pcc_source_free(source);
      return ctl_fail(c, rc, "cannot learn the server's default magic");
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
    code = ctl_fail(c, rc, what);
  }
  pcc_entry_free(entry);
  pcc_source_free(source);
  return code;
}

int ctl_get(const ctl *c)
{
  return ctl_code(c, false);
}

int ctl_compile(const ctl *c)
{
  return ctl_code(c, true);
}

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

/* pycachectl exec -- COMMAND...: runs COMMAND with the import hook active in every CPython it
 * starts (PYTHONPATH gets the hook's sitecustomize and package; PYCACHED_URL the server).
 * Returns only on failure: 127 when COMMAND cannot be found or run, like env(1). */
int ctl_exec(const ctl *c)
{
  const ctl_args *args = &c->args;
  char **command = c->rest;
  if (args->token_file) { /* a bad file is reported now, not by every python started */
    char *token = NULL;
    int code = ctl_load_token(args, &token);
    if (code != EXIT_HIT)
      return code;
    ctl_token_free(token);
  }
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
  /* --ca-file, --client-cert and --client-key as the hook's variables, absolute */
  const struct {
    const char *given, *variable;
  } tls_files[] = {{args->ca_file, "PYCACHED_CA_FILE"},
                   {args->client_cert, "PYCACHED_CLIENT_CERT"},
                   {args->client_key, "PYCACHED_CLIENT_KEY"}};
  for (size_t i = 0; i < sizeof tls_files / sizeof tls_files[0]; i++) {
    char file[PATH_MAX];
    if (tls_files[i].given == NULL)
      continue;
    if (realpath(tls_files[i].given, file) == NULL) {
      fprintf(stderr, "pycachectl: exec: %s: %s\n", tls_files[i].given, strerror(errno));
      return EXIT_LOCAL;
    }
    if (setenv(tls_files[i].variable, file, 1) != 0) {
      perror("pycachectl: exec");
      return EXIT_LOCAL;
    }
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

