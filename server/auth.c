/* auth.c: bearer tokens and roles (auth.h). The token file is parsed with cJSON; each token is
 * kept as its SHA-256 digest and compared with sodium_memcmp, so the time a check takes does not
 * depend on how much of a token matched, nor on its length. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "auth.h"
#include "pcc_limits.h"

#define AUTH_FILE_MAX PCC_TOKENS_FILE_MAX
#define AUTH_TOKENS_MAX 1024
#define AUTH_TOKEN_MIN 16
#define AUTH_TOKEN_MAX 512
#define AUTH_NAME_MAX 64

typedef struct {
  char name[AUTH_NAME_MAX + 1];
  char ns[PCC_NAMESPACE_MAX + 1]; /* "" : the default namespace */
  unsigned char digest[crypto_hash_sha256_BYTES];
  unsigned roles;
} auth_token;

typedef struct {
  auth_token *tokens;
  size_t count;
} auth_table;

struct pcc_auth {
  char *file;
  pthread_rwlock_t lock; /* readers: checks; writer: reload */
  auth_table table;
};

const char *pcc_auth_strerror(pcc_auth_status rc)
{
  switch (rc) {
  case PCC_AUTH_OK: return "ok";
  case PCC_AUTH_MISSING: return "no bearer token";
  case PCC_AUTH_UNKNOWN: return "unknown token";
  case PCC_AUTH_NO_ROLE: return "the token lacks the role";
  case PCC_AUTH_BAD_FILE: return "bad token file";
  case PCC_AUTH_NOMEM: return "out of memory";
  }
  return "unknown auth status";
}

const char *pcc_role_name(pcc_role role)
{
  switch (role) {
  case PCC_ROLE_READ: return "read";
  case PCC_ROLE_COMPILE: return "compile";
  case PCC_ROLE_ADMIN: return "admin";
  }
  return "?";
}

static char *read_file(const char *file, char *error, size_t error_len)
{
  FILE *f = fopen(file, "rb");
  if (f == NULL) {
    snprintf(error, error_len, "cannot open %s", file);
    return NULL;
  }
  char *text = malloc(AUTH_FILE_MAX + 1);
  size_t len = text ? fread(text, 1, AUTH_FILE_MAX + 1, f) : 0;
  bool bad = text == NULL || ferror(f) || len > AUTH_FILE_MAX;
  fclose(f);
  if (bad) {
    snprintf(error, error_len, "%s: unreadable or over %u bytes", file, (unsigned)AUTH_FILE_MAX);
    free(text);
    return NULL;
  }
  text[len] = '\0';
  return text;
}

static bool token_text_ok(const char *token)
{
  size_t len = strlen(token);
  if (len < AUTH_TOKEN_MIN || len > AUTH_TOKEN_MAX)
    return false;
  for (size_t i = 0; i < len; i++)
    if (token[i] <= 0x20 || token[i] >= 0x7f)
      return false;
  return true;
}

/* Parses one {"name", "token", "roles"} object into *out. */
static bool parse_token(const cJSON *item, auth_token *out, char *error, size_t error_len)
{
  const cJSON *name = cJSON_GetObjectItemCaseSensitive(item, "name");
  const cJSON *token = cJSON_GetObjectItemCaseSensitive(item, "token");
  const cJSON *roles = cJSON_GetObjectItemCaseSensitive(item, "roles");
  if (!cJSON_IsString(name) || strlen(name->valuestring) == 0 ||
      strlen(name->valuestring) > AUTH_NAME_MAX) {
    snprintf(error, error_len, "each token needs a \"name\" of 1..%d characters", AUTH_NAME_MAX);
    return false;
  }
  if (!cJSON_IsString(token) || !token_text_ok(token->valuestring)) {
    snprintf(error, error_len, "token \"%s\": \"token\" must be %d..%d printable characters "
             "without spaces", name->valuestring, AUTH_TOKEN_MIN, AUTH_TOKEN_MAX);
    return false;
  }
  if (!cJSON_IsArray(roles)) {
    snprintf(error, error_len, "token \"%s\": \"roles\" must be a list", name->valuestring);
    return false;
  }
  out->roles = 0;
  const cJSON *role;
  cJSON_ArrayForEach(role, roles) {
    static const pcc_role all[] = {PCC_ROLE_READ, PCC_ROLE_COMPILE, PCC_ROLE_ADMIN};
    size_t i = 0;
    while (i < 3 &&
           !(cJSON_IsString(role) && strcmp(role->valuestring, pcc_role_name(all[i])) == 0))
      i++;
    if (i == 3) {
      snprintf(error, error_len, "token \"%s\": roles are \"read\", \"compile\" and \"admin\"",
               name->valuestring);
      return false;
    }
    out->roles |= all[i];
  }
  const cJSON *ns = cJSON_GetObjectItemCaseSensitive(item, "namespace");
  if (ns != NULL && !(cJSON_IsString(ns) && pcc_namespace_ok(ns->valuestring))) {
    snprintf(error, error_len, "token \"%s\": \"namespace\" must be 1..%d characters of "
             "[a-z0-9._-]", name->valuestring, PCC_NAMESPACE_MAX);
    return false;
  }
  snprintf(out->ns, sizeof out->ns, "%s", ns ? ns->valuestring : "");
  snprintf(out->name, sizeof out->name, "%s", name->valuestring);
  crypto_hash_sha256(out->digest, (const unsigned char *)token->valuestring,
                     strlen(token->valuestring));
  return true;
}

/* Parses the text of a token file (NUL-terminated; `file` names it in errors) into *out. */
static pcc_auth_status parse_table(const char *text, const char *file, auth_table *out,
                                   char *error, size_t error_len)
{
  cJSON *doc = cJSON_Parse(text);
  const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(doc, "tokens");
  int count = cJSON_GetArraySize(tokens);
  if (!cJSON_IsArray(tokens) || count < 1 || count > AUTH_TOKENS_MAX) {
    snprintf(error, error_len, "%s: want {\"tokens\": [...]} with 1..%d tokens", file,
             AUTH_TOKENS_MAX);
    cJSON_Delete(doc);
    return PCC_AUTH_BAD_FILE;
  }
  auth_table table = {calloc((size_t)count, sizeof(auth_token)), 0};
  pcc_auth_status rc = table.tokens ? PCC_AUTH_OK : PCC_AUTH_NOMEM;
  const cJSON *item;
  cJSON_ArrayForEach(item, tokens) {
    if (rc != PCC_AUTH_OK)
      break;
    if (!parse_token(item, &table.tokens[table.count], error, error_len)) {
      rc = PCC_AUTH_BAD_FILE;
      break;
    }
    for (size_t i = 0; i < table.count && rc == PCC_AUTH_OK; i++)
      if (strcmp(table.tokens[i].name, table.tokens[table.count].name) == 0 ||
          sodium_memcmp(table.tokens[i].digest, table.tokens[table.count].digest,
                        crypto_hash_sha256_BYTES) == 0) {
        snprintf(error, error_len, "token \"%s\": its name or token is used twice",
                 table.tokens[i].name);
        rc = PCC_AUTH_BAD_FILE;
      }
    table.count++;
  }
  cJSON_Delete(doc);
  if (rc != PCC_AUTH_OK) {
    if (table.tokens != NULL) /* NULL when the calloc failed */
      sodium_memzero(table.tokens, (size_t)count * sizeof(auth_token));
    free(table.tokens);
    return rc;
  }
  *out = table;
  return PCC_AUTH_OK;
}

static pcc_auth_status load_table(const char *file, auth_table *out, char *error,
                                  size_t error_len)
{
  char *text = read_file(file, error, error_len);
  if (text == NULL)
    return PCC_AUTH_BAD_FILE;
  pcc_auth_status rc = parse_table(text, file, out, error, error_len);
  free(text);
  return rc;
}

/* An auth for file (NULL: none; it cannot be reloaded) whose table is parsed from text (the
 * file's bytes, NUL-terminated; NULL when they could not be read: error says why), which `what`
 * names in errors. */
static pcc_auth_status auth_new(const char *file, const char *text, const char *what,
                                pcc_auth **out, char *error, size_t error_len)
{
  if (text == NULL)
    return PCC_AUTH_BAD_FILE;
  if (sodium_init() < 0) {
    snprintf(error, error_len, "libsodium cannot initialise");
    return PCC_AUTH_NOMEM;
  }
  pcc_auth *auth = calloc(1, sizeof *auth);
  if (auth == NULL || (file != NULL && (auth->file = strdup(file)) == NULL)) {
    free(auth);
    return PCC_AUTH_NOMEM;
  }
  pthread_rwlock_init(&auth->lock, NULL);
  pcc_auth_status rc = parse_table(text, what, &auth->table, error, error_len);
  if (rc != PCC_AUTH_OK) {
    pcc_auth_close(auth);
    return rc;
  }
  *out = auth;
  return PCC_AUTH_OK;
}

pcc_auth_status pcc_auth_open(const char *file, pcc_auth **out, char *error, size_t error_len)
{
  char *text = read_file(file, error, error_len);
  pcc_auth_status rc = auth_new(file, text, file, out, error, error_len);
  free(text);
  return rc;
}

pcc_auth_status pcc_auth_parse(const char *text, size_t len, pcc_auth **out, char *error,
                               size_t error_len)
{
  if (len > AUTH_FILE_MAX) {
    snprintf(error, error_len, "the token file: over %u bytes", (unsigned)AUTH_FILE_MAX);
    return PCC_AUTH_BAD_FILE;
  }
  char *copy = strndup(text, len); /* NUL-terminated, as read_file makes it */
  if (copy == NULL)
    return PCC_AUTH_NOMEM;
  pcc_auth_status rc = auth_new(NULL, copy, "the token file", out, error, error_len);
  free(copy);
  return rc;
}

pcc_auth_status pcc_auth_reload(pcc_auth *auth, char *error, size_t error_len)
{
  auth_table fresh;
  if (auth->file == NULL) {
    snprintf(error, error_len, "no token file to reload");
    return PCC_AUTH_BAD_FILE;
  }
  pcc_auth_status rc = load_table(auth->file, &fresh, error, error_len);
  if (rc != PCC_AUTH_OK)
    return rc;
  pthread_rwlock_wrlock(&auth->lock);
  auth_table old = auth->table;
  auth->table = fresh;
  pthread_rwlock_unlock(&auth->lock);
  sodium_memzero(old.tokens, old.count * sizeof(auth_token));
  free(old.tokens);
  return PCC_AUTH_OK;
}

size_t pcc_auth_count(pcc_auth *auth)
{
  pthread_rwlock_rdlock(&auth->lock);
  size_t count = auth->table.count;
  pthread_rwlock_unlock(&auth->lock);
  return count;
}

bool pcc_namespace_ok(const char *ns)
{
  size_t len = strlen(ns);
  for (size_t i = 0; i < len; i++)
    if (!((ns[i] >= 'a' && ns[i] <= 'z') || (ns[i] >= '0' && ns[i] <= '9') || ns[i] == '.' ||
          ns[i] == '_' || ns[i] == '-'))
      return false;
  return len > 0 && len <= PCC_NAMESPACE_MAX;
}

pcc_auth_status pcc_auth_check(pcc_auth *auth, const char *authorization, pcc_role role,
                               pcc_auth_identity *who)
{
  static const char scheme[] = "Bearer ";
  if (authorization == NULL || strncasecmp(authorization, scheme, sizeof scheme - 1) != 0)
    return PCC_AUTH_MISSING;
  const char *token = authorization + sizeof scheme - 1;
  while (*token == ' ')
    token++;
  size_t len = strnlen(token, AUTH_TOKEN_MAX + 1);
  if (len == 0)
    return PCC_AUTH_MISSING;
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, (const unsigned char *)token, len);

  pthread_rwlock_rdlock(&auth->lock);
  const auth_token *found = NULL;
  for (size_t i = 0; i < auth->table.count; i++) /* every token, no early exit */
    if (sodium_memcmp(digest, auth->table.tokens[i].digest, sizeof digest) == 0)
      found = &auth->table.tokens[i];
  pcc_auth_status rc = PCC_AUTH_UNKNOWN;
  if (found != NULL) {
    rc = (found->roles & role) ? PCC_AUTH_OK : PCC_AUTH_NO_ROLE;
    if (who != NULL) {
      memcpy(who->name, found->name, sizeof who->name);
      memcpy(who->ns, found->ns, sizeof who->ns);
    }
  }
  pthread_rwlock_unlock(&auth->lock);
  return rc;
}

void pcc_auth_close(pcc_auth *auth)
{
  if (auth == NULL)
    return;
  if (auth->table.tokens != NULL) {
    sodium_memzero(auth->table.tokens, auth->table.count * sizeof(auth_token));
    free(auth->table.tokens);
  }
  pthread_rwlock_destroy(&auth->lock);
  free(auth->file);
  free(auth);
}
