/* upstream.c: the upstream tier (upstream.h; docs/OPERATIONS.md, "Tiers: a node-local daemon
 * with an upstream"): the URL list, a bounded pool of libpycached clients with a breaker per
 * upstream, and the verification of what an upstream answers before it becomes a blob here. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "pcc_limits.h"
#include "pcc_log.h"
#include "peer.h"
#include "pycached.h"
#include "upstream.h"

#define URL_MAX 2048 /* what pcc_client_open takes */

_Static_assert(PCC_UPSTREAM_IDLE_MAX <= PCC_PEER_IDLE_SLOTS, "an upstream's idle clients fit");

typedef struct {
  char url[URL_MAX + 1];
  pcc_peer peer; /* its breaker and idle clients (pcc_client) */
} server;

struct pcc_upstream {
  pcc_upstream_config config;
  char *ca_file;                   /* copies of config's */
  char *token;                     /* from config.token_file; NULL: none */
  server servers[PCC_UPSTREAMS_MAX];
  unsigned n;
  atomic_uint_fast64_t hits, misses, unsupported, errors, timeouts, rejected, skipped;
};

const char *pcc_upstream_strerror(pcc_upstream_status rc)
{
  switch (rc) {
  case PCC_UPSTREAM_OK: return "ok";
  case PCC_UPSTREAM_UNSUPPORTED: return "no upstream compiles this magic";
  case PCC_UPSTREAM_DOWN: return "no upstream answered";
  case PCC_UPSTREAM_INVALID: return "a bad --upstream list";
  case PCC_UPSTREAM_NOMEM: return "out of memory";
  }
  return "unknown upstream status";
}

static void client_close(void *client)
{
  pcc_client_close(client);
}

/* ---- the list ------------------------------------------------------------------------------- */

/* Calls each(ctx, url, len) for the URLs of list in order; false (with the problem in err) when
 * one is empty, too long or not http://, https:// or unix:/, or there are too many. */
static bool walk_list(const char *list, char *err, size_t err_len,
                      bool (*each)(void *, const char *, size_t), void *ctx)
{
  static const char *const schemes[] = {"http://", "https://", "unix:/"};
  unsigned n = 0;
  const char *p = list;
  for (;;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    bool scheme = false;
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
      scheme |= len > strlen(schemes[i]) && strncmp(p, schemes[i], strlen(schemes[i])) == 0;
    if (len == 0 || len > URL_MAX || !scheme) {
      snprintf(err, err_len, "--upstream: \"%.*s\" is not a URL of a pycached (http://HOST:PORT, "
               "https://HOST:PORT or unix:/PATH, at most %d bytes)", (int)(len > 200 ? 200 : len),
               p, URL_MAX);
      return false;
    }
    if (++n > PCC_UPSTREAMS_MAX) {
      snprintf(err, err_len, "--upstream: more than %d URLs", PCC_UPSTREAMS_MAX);
      return false;
    }
    if (each != NULL && !each(ctx, p, len)) {
      snprintf(err, err_len, "--upstream: \"%.*s\" is not usable by a client (a bad URL, or a "
               "TLS file for it that cannot be read)", (int)(len > 200 ? 200 : len), p);
      return false;
    }
    if (end == NULL)
      return true;
    p = end + 1;
  }
}

bool pcc_upstream_list_valid(const char *list, char *err, size_t err_len)
{
  return walk_list(list, err, err_len, NULL, NULL);
}

/* A client for server s (one connection, nothing sent yet); NULL when it cannot be made. */
static pcc_client *client_new(const pcc_upstream *up, const char *url)
{
  pcc_client_config config = {
    .base_url = url,
    .token = up->token,
    .connect_timeout_ms = up->config.connect_ms,
    .timeout_ms = up->config.compile_ms,
    .ca_file = strncmp(url, "https://", 8) == 0 ? up->ca_file : NULL,
  };
  pcc_client *client = NULL;
  return pcc_client_open(&config, &client) == PCC_CLIENT_OK ? client : NULL;
}

static bool add_server(void *ctx, const char *url, size_t len)
{
  pcc_upstream *up = ctx;
  server *s = &up->servers[up->n];
  memcpy(s->url, url, len);
  s->url[len] = '\0';
  pcc_client *probe = client_new(up, s->url);
  if (probe == NULL)
    return false;
  pcc_client_close(probe);
  pcc_peer_init(&s->peer, PCC_UPSTREAM_IDLE_MAX, PCC_UPSTREAM_BACKOFF_MIN_MS,
                PCC_UPSTREAM_BACKOFF_MAX_MS, client_close);
  up->n++;
  return true;
}

pcc_upstream_status pcc_upstream_open(const char *list, const pcc_upstream_config *config,
                                      char *err, size_t err_len, pcc_upstream **out)
{
  pcc_upstream *up = calloc(1, sizeof *up);
  if (up == NULL)
    return PCC_UPSTREAM_NOMEM;
  up->config = *config;
  if (config->ca_file != NULL && (up->ca_file = strdup(config->ca_file)) == NULL) {
    pcc_upstream_close(up);
    return PCC_UPSTREAM_NOMEM;
  }
  up->config.ca_file = up->ca_file;
  up->config.token_file = NULL;
  if (config->token_file != NULL) {
    pcc_client_status rc = pcc_token_load(config->token_file, &up->token);
    if (rc != PCC_CLIENT_OK) {
      snprintf(err, err_len, "--upstream-token-file %s: %s%s%s", config->token_file,
               pcc_client_strerror(rc), rc == PCC_CLIENT_IO ? ": " : "",
               rc == PCC_CLIENT_IO ? strerror(errno) : "");
      pcc_upstream_close(up);
      return PCC_UPSTREAM_INVALID;
    }
  }
  if (!walk_list(list, err, err_len, add_server, up)) {
    pcc_upstream_close(up);
    return PCC_UPSTREAM_INVALID;
  }
  *out = up;
  return PCC_UPSTREAM_OK;
}

void pcc_upstream_close(pcc_upstream *upstream)
{
  if (upstream == NULL)
    return;
  for (unsigned i = 0; i < upstream->n; i++)
    pcc_peer_destroy(&upstream->servers[i].peer);
  if (upstream->token != NULL) {
    sodium_memzero(upstream->token, strlen(upstream->token));
    free(upstream->token);
  }
  free(upstream->ca_file);
  free(upstream);
}

/* ---- connections and the breaker ------------------------------------------------------------ */

/* A client for s: an idle one, or a new one. NULL when s is down and not to be probed yet
 * (counted skipped), or no client can be made. */
static pcc_client *server_take(pcc_upstream *up, server *s)
{
  void *client;
  if (!pcc_peer_take(&s->peer, false, &client)) {
    atomic_fetch_add(&up->skipped, 1);
    return NULL;
  }
  return client != NULL ? client : client_new(up, s->url);
}

/* Gives client back after a request s answered as an upstream should (s is up again). */
static void server_give(server *s, pcc_client *client)
{
  pcc_peer_give(&s->peer, client);
}

/* Closes client after s failed (or answered wrong) and marks s down for the next backoff. */
static void server_failed(server *s, pcc_client *client, const char *why)
{
  unsigned backoff;
  if (pcc_peer_failed(&s->peer, client, false, &backoff))
    pcc_logf(PCC_LOG_WARN, "upstream %s: %s; skipped for %u ms, compiles done here meanwhile",
             s->url, why, backoff);
}

/* ---- compiles ------------------------------------------------------------------------------- */

/* A heap blob as pcc_store_get_blob's (PCC_BLOB_HEADROOM bytes before the payload, which is
 * NUL-terminated); NULL without memory. */
static pcc_blob *blob_new(pcc_blob_kind kind, const pcc_path_record *record, const char *compiler,
                          const void *payload, size_t len)
{
  pcc_blob *blob = malloc(sizeof *blob + PCC_BLOB_HEADROOM + len + 1);
  if (blob == NULL)
    return NULL;
  *blob = (pcc_blob){.kind = kind, .hash = record->hash, .size = record->size,
                     .created = time(NULL), .compile_us = 0};
  snprintf(blob->compiler, sizeof blob->compiler, "%s", compiler);
  pcc_utf8_trim(blob->compiler);
  uint8_t *bytes = (uint8_t *)(blob + 1) + PCC_BLOB_HEADROOM;
  memcpy(bytes, payload, len);
  bytes[len] = '\0';
  blob->payload = bytes;
  blob->payload_len = len;
  return blob;
}

/* Whether entry answers the job (magic, opt, record): libpycached checked it against the same
 * question already; checked again here, where a wrong one would be stored for every client. */
static bool entry_answers(const pcc_entry *entry, const pcc_magic *magic, int opt,
                          const pcc_path_record *record)
{
  const pcc_entry_view *v = &entry->view;
  pcc_pyc_header header;
  return pcc_magic_equal(&v->magic, magic) && v->opt == opt && v->size == record->size &&
         v->hash == record->hash && pcc_digest_equal(&v->digest, &record->digest) &&
         v->mtime == record->mtime && v->pyc_len > PCC_PYC_HEADER_LEN &&
         pcc_pyc_header_parse(v->pyc, v->pyc_len, &header) == PCC_PROTO_OK &&
         pcc_magic_equal(&header.magic, magic);
}

/* The compile error of a 422 "compile-error" answer as the blob a compile here makes of one. */
static pcc_blob *error_blob(const pcc_client_error *e, const pcc_path_record *record,
                            const char *url)
{
  cJSON *details = cJSON_CreateObject();
  cJSON_AddStringToObject(details, "type", e->type ? e->type : "Error");
  cJSON_AddStringToObject(details, "message", e->message ? e->message : "");
  cJSON_AddNumberToObject(details, "line", (double)e->line);
  cJSON_AddNumberToObject(details, "offset", (double)e->offset);
  char *json = cJSON_PrintUnformatted(details);
  cJSON_Delete(details);
  if (json == NULL)
    return NULL;
  char compiler[PCC_COMPILER_NAME_MAX + 1];
  snprintf(compiler, sizeof compiler, "upstream %s", url);
  pcc_blob *blob = blob_new(PCC_BLOB_COMPILE_ERROR, record, compiler, json, strlen(json));
  free(json);
  return blob;
}

pcc_upstream_status pcc_upstream_compile(pcc_upstream *upstream, const pcc_magic *magic, int opt,
                                         const char *path, const pcc_path_record *record,
                                         const uint8_t *source, size_t len, pcc_blob **out)
{
  pcc_source src = {.path = (char *)path, .mtime = record->mtime, .size = record->size,
                    .hash = record->hash, .digest = record->digest,
                    .data = (uint8_t *)(source != NULL ? source : (const uint8_t *)""),
                    .len = len, .has_data = true};
  pcc_upstream_status result = PCC_UPSTREAM_DOWN;
  for (unsigned i = 0; i < upstream->n; i++) {
    server *s = &upstream->servers[i];
    pcc_client *client = server_take(upstream, s);
    if (client == NULL)
      continue;
    pcc_entry *entry = NULL;
    pcc_client_status rc = pcc_client_compile(client, magic, opt, &src, &entry);
    pcc_blob *blob = NULL;
    if (rc == PCC_CLIENT_OK) {
      if (!entry_answers(entry, magic, opt, record)) {
        pcc_entry_free(entry);
        atomic_fetch_add(&upstream->rejected, 1);
        server_failed(s, client, "it answered an entry for another source (rejected)");
        continue;
      }
      const char *compiler = entry->view.compiler ? entry->view.compiler : "upstream";
      blob = blob_new(PCC_BLOB_CODE, record, compiler, entry->view.pyc + PCC_PYC_HEADER_LEN,
                      entry->view.pyc_len - PCC_PYC_HEADER_LEN);
      pcc_entry_free(entry);
    } else if (rc == PCC_CLIENT_COMPILE_ERROR) {
      blob = error_blob(pcc_client_last_error(client), record, s->url);
    } else if (rc == PCC_CLIENT_UNSUPPORTED_MAGIC) {
      atomic_fetch_add(&upstream->unsupported, 1);
      server_give(s, client); /* it is up; it just has no compiler for this magic */
      if (result == PCC_UPSTREAM_DOWN)
        result = PCC_UPSTREAM_UNSUPPORTED;
      continue;
    } else if (rc == PCC_CLIENT_HTTP && pcc_client_last_error(client)->http_status == 413) {
      atomic_fetch_add(&upstream->errors, 1);
      server_give(s, client); /* up: this source is over its --max-source, not the others */
      continue;
    } else {
      if (rc == PCC_CLIENT_PROTOCOL)
        atomic_fetch_add(&upstream->rejected, 1);
      else
        atomic_fetch_add(&upstream->errors, 1);
      if (rc == PCC_CLIENT_TIMEOUT)
        atomic_fetch_add(&upstream->timeouts, 1);
      char why[256];
      const pcc_client_error *e = pcc_client_last_error(client);
      snprintf(why, sizeof why, "%s%s%s", pcc_client_strerror(rc), e->message ? ": " : "",
               e->message ? e->message : "");
      server_failed(s, client, why);
      continue;
    }
    server_give(s, client);
    if (blob == NULL)
      return PCC_UPSTREAM_NOMEM;
    atomic_fetch_add(&upstream->hits, 1);
    *out = blob;
    return PCC_UPSTREAM_OK;
  }
  atomic_fetch_add(&upstream->misses, 1);
  return result;
}

/* ---- figures -------------------------------------------------------------------------------- */

void pcc_upstream_figures_get(pcc_upstream *upstream, pcc_upstream_figures *out)
{
  *out = (pcc_upstream_figures){
    .hits = atomic_load(&upstream->hits), .misses = atomic_load(&upstream->misses),
    .unsupported = atomic_load(&upstream->unsupported),
    .errors = atomic_load(&upstream->errors), .timeouts = atomic_load(&upstream->timeouts),
    .rejected = atomic_load(&upstream->rejected), .skipped = atomic_load(&upstream->skipped)};
}

unsigned pcc_upstream_count(const pcc_upstream *upstream)
{
  return upstream->n;
}

const char *pcc_upstream_url(const pcc_upstream *upstream, unsigned i)
{
  return upstream->servers[i].url;
}

bool pcc_upstream_up(pcc_upstream *upstream, unsigned i)
{
  return pcc_peer_up(&upstream->servers[i].peer);
}

cJSON *pcc_upstream_json(pcc_upstream *upstream)
{
  pcc_upstream_figures f;
  pcc_upstream_figures_get(upstream, &f);
  cJSON *json = cJSON_CreateObject();
  const struct {
    const char *name;
    uint64_t value;
  } rows[] = {
    {"hits", f.hits}, {"misses", f.misses}, {"unsupported", f.unsupported}, {"errors", f.errors},
    {"timeouts", f.timeouts}, {"rejected", f.rejected}, {"skipped", f.skipped},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
    cJSON_AddNumberToObject(json, rows[i].name, (double)rows[i].value);
  cJSON *servers = cJSON_AddArrayToObject(json, "servers");
  for (unsigned i = 0; i < upstream->n; i++)
    pcc_peer_json(&upstream->servers[i].peer, servers, "url", upstream->servers[i].url);
  return json;
}
