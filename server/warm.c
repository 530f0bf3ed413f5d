/* warm.c: the warm-start feature of pycached (docs/API.md, "Warm start"): import profiles
 * recorded by clients (POST /v1/profile), bundles that serve a whole profile's pycs in one
 * response (GET /v1/bundle; the binary form built once and kept while the store is unchanged,
 * the JSON form streamed), batched lookups (POST /v1/batch; identical lookups answered once,
 * streamed) and the fallbacks clients report at exit (POST /v1/report). Every answer whose size
 * a client's request decides is capped (--max-bundle, --max-batch-response). A binary bundle is
 * sent compressed with zstd to a client that accepts it (Accept-Encoding: zstd), compressed once
 * at the first such request and kept with the bundle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>
#include <stdatomic.h>
#include <zstd.h>

#include "bodies.h"
#include "route.h"

/* zstd's level for bundles: sympy's 15.8 MB bundle becomes 4.4 MB (docs/BENCHMARKS.md, "The
 * hook's fixed cost and zstd bundles"); it is compressed once a store generation */
#define WARM_ZSTD_LEVEL 3

/* A bundle built once and served to every start of the program while the store is unchanged.
 * refs: 1 while cached, plus 1 per response still sending it. */
typedef struct {
  atomic_uint refs;
  uint8_t *data;
  size_t len;
  unsigned entries;
  pcc_digest *digests; /* of its entries' blobs, whose uses each serving records */
  char *paths;         /* its entries' paths, NUL-terminated one after the other: each serving
                          counts a hit of each entry */
  size_t paths_len;
  pthread_mutex_t zstd_lock; /* guards the three below */
  bool zstd_tried;           /* compressed (or found not worth it) once already */
  uint8_t *zstd;             /* the zstd frame of data (its size in the frame), or NULL */
  size_t zstd_len;           /* at most ZSTD_compressBound(len), smaller than len */
} bundle_bytes;

typedef struct {
  pcc_magic magic;
  int opt;
  char ns[PCC_NAMESPACE_MAX + 1];
  char name[PCC_PROFILE_NAME_MAX + 1];
  uint64_t generation;   /* of the store when it was built */
  uint64_t last_used;
  bundle_bytes *bytes;   /* NULL: free slot */
} bundle_slot;

typedef struct {
  pcc_core *core;
  pthread_mutex_t lock;  /* guards the slots */
  bundle_slot slots[PCC_BUNDLE_SLOTS];
  uint64_t clock;
} warm;

/* Route arguments, in each row's order */
enum { ARG_PROFILE, ARG_FORMAT };

/* A profile name: 1..PCC_PROFILE_NAME_MAX printable characters. */
static bool profile_name_ok(const char *name, pcc_answer *answer)
{
  size_t len = name ? strlen(name) : 0;
  bool ok = len > 0 && len <= PCC_PROFILE_NAME_MAX;
  for (size_t i = 0; ok && i < len; i++)
    ok = (unsigned char)name[i] >= 0x20 && name[i] != 0x7f;
  if (!ok) {
    pcc_answer_bad_parameter(answer, "profile", "1 to %d printable characters",
                             PCC_PROFILE_NAME_MAX);
  }
  return ok;
}

static void handle_profile(void *state, pcc_request *req, pcc_answer *answer)
{
  warm *w = state;
  const pcc_params *params = &req->params;
  const char *name = req->args[ARG_PROFILE];
  const uint8_t *body = req->body;
  size_t len = req->body_len;
  if (!profile_name_ok(name, answer))
    return;
  pcc_body_profile profile;
  if (!pcc_body_profile_parse(body, len, &profile)) {
    pcc_answer_error(answer, PCC_ERR_BAD_PARAMETER, "body: want {\"paths\": [absolute paths]}, "
                     "at most %d", PCC_PROFILE_PATHS_MAX);
    pcc_answer_extra_string(answer, "param", "paths");
    return;
  }
  size_t total = 0;
  pcc_store_status rc = pcc_store_profile_merge(pcc_core_store(w->core), req->ns,
                                                &params->magic, params->opt, name, profile.paths,
                                                profile.count, &total);
  if (rc == PCC_STORE_OK) {
    atomic_fetch_add(&pcc_counters_totals(pcc_core_counters(w->core))->profiles_received, 1);
    cJSON *json = cJSON_CreateObject();
    cJSON_AddNumberToObject(json, "paths", (double)total);
    pcc_answer_json(answer, json);
  } else {
    pcc_answer_store_error(answer, rc);
  }
  pcc_body_profile_free(&profile);
}

/* The paths of a profile, copied out of the store's read transaction: one dynbuf of
 * NUL-terminated paths, read one after the other. */
static void copy_path(const char *path, size_t len, void *ctx)
{
  pcc_dynbuf *paths = ctx;
  if (pcc_dynbuf_reserve(paths, len + 1) == PCC_PROTO_OK) {
    pcc_dynbuf_add(paths, path, len);
    pcc_dynbuf_add(paths, "", 1);
  }
}

/* ---- JSON answers made entry by entry --------------------------------------------------------
 * A batch or a JSON bundle is sent as it is made (a STREAM answer, answer.h): the head, then one
 * item after the other, each made when the client has taken the one before, then the tail. Only
 * the item being sent is held, whatever the size of the whole, and the whole stays within a cap:
 * the maker of an item is told how many bytes are left for it. */

typedef enum { STREAM_HEAD, STREAM_ITEMS, STREAM_TAIL, STREAM_DONE } stream_phase;

/* Makes the next item: its text into *text (malloc'd, taken by the stream) and *len, at most
 * room bytes. Returns 1 for an item, 0 when there are no more, -1 without memory (the answer is
 * then cut short). */
typedef int (*stream_next)(void *ctx, uint64_t room, char **text, size_t *len);

typedef struct {
  stream_phase phase;
  char *head;              /* owned: the document up to its array's '[' */
  const char *tail;        /* static: what closes it */
  uint64_t cap, written;   /* bytes of the whole document, and so far */
  size_t items;            /* made so far */
  const char *piece;       /* being sent: piece_len bytes, piece_at of them sent */
  size_t piece_len, piece_at;
  char *owned;             /* the piece, when it is an item's text */
  char *after;             /* an item made, to be sent after its comma */
  size_t after_len;
  bool failed;
  stream_next next;
  void *ctx;
  void (*ctx_free)(void *ctx);
} json_stream;

static void stream_piece(json_stream *s, const char *piece, size_t len, char *owned)
{
  s->piece = piece;
  s->piece_len = len;
  s->piece_at = 0;
  s->owned = owned;
  s->written += len;
}

/* Moves on to the next piece: 1 when there is one, 0 at the end, -1 on an error. */
static int stream_advance(json_stream *s)
{
  free(s->owned);
  s->owned = NULL;
  if (s->after != NULL) {
    stream_piece(s, s->after, s->after_len, s->after);
    s->after = NULL;
    return 1;
  }
  switch (s->phase) {
  case STREAM_HEAD:
    s->phase = STREAM_ITEMS;
    stream_piece(s, s->head, strlen(s->head), NULL);
    return 1;
  case STREAM_ITEMS: {
    uint64_t reserved = s->written + strlen(s->tail) + (s->items > 0); /* and a comma */
    uint64_t room = s->cap > reserved ? s->cap - reserved : 0;
    char *text = NULL;
    size_t len = 0;
    int rc = s->next(s->ctx, room, &text, &len);
    if (rc > 0 && len > room) { /* never past the cap, whatever the maker does */
      free(text);
      rc = -1;
    }
    if (rc < 0)
      return -1;
    if (rc > 0) {
      if (s->items++ == 0) {
        stream_piece(s, text, len, text);
      } else {
        stream_piece(s, ",", 1, NULL);
        s->after = text; /* counted in written when it becomes the piece */
        s->after_len = len;
      }
      return 1;
    }
    s->phase = STREAM_TAIL;
  } /* fall through */
  case STREAM_TAIL:
    s->phase = STREAM_DONE;
    stream_piece(s, s->tail, strlen(s->tail), NULL);
    return 1;
  case STREAM_DONE:
    break;
  }
  return 0;
}

/* The producer of the STREAM answer. */
static ssize_t stream_produce(void *ctx, uint8_t *buf, size_t max)
{
  json_stream *s = ctx;
  size_t out = 0;
  while (out < max && !s->failed) {
    if (s->piece_at == s->piece_len) {
      int rc = stream_advance(s);
      s->failed = rc < 0;
      if (rc <= 0)
        break;
      continue;
    }
    size_t n = s->piece_len - s->piece_at;
    if (n > max - out)
      n = max - out;
    memcpy(buf + out, s->piece + s->piece_at, n);
    s->piece_at += n;
    out += n;
  }
  return out > 0 ? (ssize_t)out : s->failed ? -1 : 0;
}

static void stream_free(void *ctx)
{
  json_stream *s = ctx;
  free(s->owned);
  free(s->after);
  free(s->head);
  s->ctx_free(s->ctx);
  free(s);
}

/* Answers a JSON document made as it is sent: head (taken), the items of next, then tail
 * (static), at most cap bytes in all. ctx is taken too: ctx_free(ctx) runs once the answer is
 * done with (also here, on failure). */
static void answer_json_stream(pcc_answer *answer, char *head, const char *tail, uint64_t cap,
                               stream_next next, void *ctx, void (*ctx_free)(void *ctx))
{
  json_stream *s = head ? calloc(1, sizeof *s) : NULL;
  if (s == NULL) {
    free(head);
    ctx_free(ctx);
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "out of memory");
    return;
  }
  *s = (json_stream){.head = head, .tail = tail, .cap = cap, .next = next, .ctx = ctx,
                     .ctx_free = ctx_free};
  pcc_answer_stream(answer, "application/json", stream_produce, stream_free, s);
}

/* The head of a streamed document: doc's fields (taken), then "array": [ . NULL without memory. */
static char *json_head(cJSON *doc, const char *array)
{
  char *fields = doc ? cJSON_PrintUnformatted(doc) : NULL;
  cJSON_Delete(doc);
  size_t len = fields ? strlen(fields) : 0;
  char *head = len >= 2 ? malloc(len + strlen(array) + 5) : NULL;
  if (head != NULL) /* fields without its closing '}', then the array's name */
    snprintf(head, len + strlen(array) + 5, "%.*s%s\"%s\":[", (int)(len - 1), fields,
             len > 2 ? "," : "", array);
  free(fields);
  return head;
}

/* The JSON text of an ENTRY answer for params' mtime and size (as /v1/code sends it), or NULL
 * without memory. */
static char *entry_text(const pcc_params *params, pcc_answer *answer)
{
  pcc_entry_view view;
  pcc_answer_entry_view(params, answer, &view);
  size_t len;
  return pcc_entry_to_json_text(&view, &len);
}

/* ---- bundles ----------------------------------------------------------------------------------- */

/* Reads the paths of a profile into *paths (initialised here; the caller frees it). Returns false
 * (answer set) on a store error or when there is no such profile. */
static bool read_profile(warm *w, const char *ns, const pcc_params *params, const char *name,
                         pcc_dynbuf *paths, pcc_answer *answer)
{
  pcc_dynbuf_init(paths, (size_t)PCC_PROFILE_PATHS_MAX * (PCC_PATH_MAX + 1));
  pcc_store_status rc = pcc_store_profile_read(pcc_core_store(w->core), ns, &params->magic,
                                               params->opt, name, copy_path, paths);
  if (rc == PCC_STORE_NOTFOUND)
    pcc_answer_error(answer, PCC_ERR_NOT_FOUND, "no profile of that name for this magic and opt");
  else if (rc != PCC_STORE_OK)
    pcc_answer_store_error(answer, rc);
  return rc == PCC_STORE_OK;
}

/* The stored entry of one path as a bundle serves it (code only, checksum verified): *served
 * gets the ENTRY answer (the caller clears it), *entry_params its parameters (pointing at path).
 * False when the path has none (absent, corrupt and dropped, or a compile error): the client
 * asks for it on its own. */
static bool bundle_entry(warm *w, const char *ns, const pcc_params *params, const char *path,
                         pcc_params *entry_params, pcc_answer *served)
{
  pcc_path_record record;
  pcc_blob *blob = NULL;
  pcc_store *store = pcc_core_store(w->core);
  if (pcc_store_get_path(store, ns, &params->magic, params->opt, path, strlen(path), &record) !=
        PCC_STORE_OK ||
      pcc_store_get_blob(store, &params->magic, params->opt, &record.digest, &blob) !=
        PCC_STORE_OK)
    return false;
  if (!pcc_core_blob_matches(w->core, &params->magic, blob, &record)) {
    free(blob);
    return false;
  }
  if (blob->kind != PCC_BLOB_CODE) {
    free(blob);
    return false;
  }
  *entry_params = *params;
  entry_params->path = path;
  entry_params->path_len = strlen(path);
  entry_params->mtime = record.mtime;
  entry_params->size = record.size;
  entry_params->hash = record.hash;
  pcc_answer_init(served);
  pcc_answer_blob(served, blob, &record.digest, true, "hit");
  return true;
}

/* Counts the entries a bundle served as hits: n of them in all, for the magic, and each entry
 * of paths (len bytes of NUL-terminated paths) for admin ls; bytes to the bundles' bytes. */
static void count_bundle_hits(warm *w, const pcc_params *params, unsigned n, const char *paths,
                              size_t len, uint64_t bytes)
{
  pcc_counters *counters = pcc_core_counters(w->core);
  pcc_totals *totals = pcc_counters_totals(counters);
  pcc_counters_add_bundle_hits(pcc_counters_for(counters, &params->magic), n);
  pcc_counters_record_hits(counters, &params->magic, params->opt, paths, len);
  atomic_fetch_add(&totals->bundle_bytes, bytes);
}

/* Adds the stored entry of one path to a binary bundle, and its path to added_paths; one that
 * does not fit is left out. */
static void bundle_add(warm *w, const char *ns, const pcc_params *params, const char *path,
                       pcc_bundle_writer *writer, pcc_digest *digests, unsigned *added,
                       pcc_dynbuf *added_paths)
{
  pcc_params entry_params;
  pcc_answer served;
  if (!bundle_entry(w, ns, params, path, &entry_params, &served))
    return;
  pcc_entry_view view;
  const uint8_t *pyc = pcc_answer_entry_view(&entry_params, &served, &view);
  pcc_bundle_entry entry = {path, entry_params.path_len, view.mtime, view.size, view.hash,
                            view.digest, pyc, view.pyc_len, 0};
  if (pcc_bundle_writer_add(writer, &entry) == PCC_PROTO_OK) {
    digests[(*added)++] = view.digest;
    copy_path(path, entry_params.path_len, added_paths);
  }
  pcc_answer_clear(&served);
}

/* Builds the binary bundle of a profile into *data (caller frees), the digests of its entries
 * into *digests (caller frees; the store records their uses each time the bundle is served),
 * their paths into added_paths (initialized by the caller, who frees it).
 * Returns false (answer set) on a store error or no profile. */
static bool build_bundle(warm *w, const char *ns, const pcc_params *params, const char *name,
                         uint8_t **data, size_t *len, pcc_digest **digests, unsigned *added,
                         pcc_dynbuf *added_paths, pcc_answer *answer)
{
  pcc_dynbuf paths;
  pcc_bundle_writer *writer = NULL;
  bool ok = read_profile(w, ns, params, name, &paths, answer);
  *added = 0;
  if (ok && pcc_bundle_writer_open(&params->magic, params->opt,
                                   (size_t)pcc_core_config(w->core)->max_bundle,
                                   &writer) != PCC_PROTO_OK) {
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "out of memory");
    ok = false;
  }
  /* a path takes 2 bytes of the list at least: room for a digest for each */
  if (ok && (*digests = calloc(paths.len / 2 + 1, sizeof **digests)) == NULL) {
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "out of memory");
    ok = false;
  }
  for (size_t at = 0; ok && at < paths.len; at += strlen((char *)paths.data + at) + 1)
    bundle_add(w, ns, params, (char *)paths.data + at, writer, *digests, added, added_paths);
  if (ok && pcc_bundle_writer_finish(writer, data, len) != PCC_PROTO_OK) {
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "cannot finish the bundle");
    ok = false;
  }
  pcc_bundle_writer_close(writer);
  pcc_dynbuf_free(&paths);
  if (!ok) {
    free(*digests);
    *digests = NULL;
  }
  return ok;
}

/* The JSON form of a bundle, made entry by entry as it is sent. */
typedef struct {
  warm *w;
  char ns[PCC_NAMESPACE_MAX + 1];
  pcc_params params;   /* magic and opt */
  pcc_dynbuf paths;    /* the profile's, NUL-terminated */
  size_t at;           /* where the next path starts */
} bundle_stream;

/* The next stored entry of the profile that fits in room; an entry that does not is left out,
 * as in the binary form. */
static int bundle_next(void *ctx, uint64_t room, char **text, size_t *len)
{
  bundle_stream *b = ctx;
  while (b->at < b->paths.len) {
    const char *path = (const char *)b->paths.data + b->at;
    b->at += strlen(path) + 1;
    pcc_params entry_params;
    pcc_answer served;
    if (!bundle_entry(b->w, b->ns, &b->params, path, &entry_params, &served))
      continue;
    char *item = entry_text(&entry_params, &served);
    pcc_answer_clear(&served);
    if (item != NULL && strlen(item) <= room) {
      *text = item;
      *len = strlen(item);
      count_bundle_hits(b->w, &b->params, 1, path, strlen(path) + 1, *len);
      return 1;
    }
    free(item);
  }
  return 0;
}

static void bundle_stream_free(void *ctx)
{
  bundle_stream *b = ctx;
  pcc_dynbuf_free(&b->paths);
  free(b);
}

/* GET /v1/bundle?format=json: {"magic", "opt", "profile", "entries": [...]}, at most
 * --max-bundle bytes. */
static void bundle_json(warm *w, const pcc_request *req, const char *name, pcc_answer *answer)
{
  bundle_stream *b = calloc(1, sizeof *b);
  if (b == NULL) {
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "out of memory");
    return;
  }
  b->w = w;
  memcpy(b->ns, req->ns, sizeof b->ns);
  b->params.magic = req->params.magic;
  b->params.opt = req->params.opt;
  if (!read_profile(w, req->ns, &b->params, name, &b->paths, answer)) {
    bundle_stream_free(b);
    return;
  }
  atomic_fetch_add(&pcc_counters_totals(pcc_core_counters(w->core))->bundles, 1);
  cJSON *doc = cJSON_CreateObject();
  char hex[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(&b->params.magic, hex);
  cJSON_AddStringToObject(doc, "magic", hex);
  cJSON_AddNumberToObject(doc, "opt", b->params.opt);
  cJSON_AddStringToObject(doc, "profile", name);
  answer_json_stream(answer, json_head(doc, "entries"), "]}",
                     pcc_core_config(w->core)->max_bundle, bundle_next, b, bundle_stream_free);
}

/* Drops a reference to cached bundle bytes (the release callback of a bundle answer). */
static void bundle_release(void *ctx)
{
  bundle_bytes *bytes = ctx;
  if (bytes != NULL && atomic_fetch_sub(&bytes->refs, 1) == 1) {
    pthread_mutex_destroy(&bytes->zstd_lock);
    free(bytes->zstd);
    free(bytes->data);
    free(bytes->digests);
    free(bytes->paths);
    free(bytes);
  }
}

/* The zstd form of a bundle (made at the first call), or NULL when it cannot be made or is not
 * smaller. Valid while the caller holds a reference to bytes. */
static const uint8_t *bundle_zstd(bundle_bytes *bytes, size_t *len)
{
  pthread_mutex_lock(&bytes->zstd_lock);
  if (!bytes->zstd_tried) {
    bytes->zstd_tried = true;
    size_t bound = ZSTD_compressBound(bytes->len);
    uint8_t *frame = ZSTD_isError(bound) ? NULL : malloc(bound);
    size_t n = frame ? ZSTD_compress(frame, bound, bytes->data, bytes->len, WARM_ZSTD_LEVEL) : 0;
    if (frame != NULL && !ZSTD_isError(n) && n < bytes->len) {
      uint8_t *fit = realloc(frame, n);
      bytes->zstd = fit ? fit : frame;
      bytes->zstd_len = n;
    } else {
      free(frame);
    }
  }
  const uint8_t *frame = bytes->zstd;
  *len = bytes->zstd_len;
  pthread_mutex_unlock(&bytes->zstd_lock);
  return frame;
}

static bool slot_is(const bundle_slot *slot, const char *ns, const pcc_params *params,
                    const char *name)
{
  return slot->bytes != NULL && slot->opt == params->opt &&
         pcc_magic_equal(&slot->magic, &params->magic) && strcmp(slot->name, name) == 0 &&
         strcmp(slot->ns, ns) == 0;
}

/* The cached bundle of (magic, opt, name) at this generation, with a reference taken, or NULL. */
static bundle_bytes *cache_take(warm *w, const char *ns, const pcc_params *params,
                                const char *name, uint64_t generation)
{
  bundle_bytes *found = NULL;
  pthread_mutex_lock(&w->lock);
  for (size_t i = 0; i < PCC_BUNDLE_SLOTS && found == NULL; i++) {
    bundle_slot *slot = &w->slots[i];
    if (slot_is(slot, ns, params, name) && slot->generation == generation) {
      found = slot->bytes;
      atomic_fetch_add(&found->refs, 1);
      slot->last_used = ++w->clock;
    }
  }
  pthread_mutex_unlock(&w->lock);
  return found;
}

/* Caches a fresh bundle (its reference for the cache is already counted in refs), replacing
 * an older one of the same profile, else a free or the least recently used slot; the cache
 * keeps at most --bundle-cache bytes. */
static void cache_put(warm *w, const char *ns, const pcc_params *params, const char *name,
                      uint64_t generation, bundle_bytes *bytes)
{
  const size_t limit = (size_t)pcc_core_config(w->core)->bundle_cache;
  pthread_mutex_lock(&w->lock);
  bundle_slot *victim = &w->slots[0];
  size_t total = bytes->len;
  for (size_t i = 0; i < PCC_BUNDLE_SLOTS; i++) {
    bundle_slot *slot = &w->slots[i];
    if (slot_is(slot, ns, params, name) || slot->bytes == NULL) {
      victim = slot;
      break;
    }
    if (slot->last_used < victim->last_used)
      victim = slot;
  }
  bundle_release(victim->bytes);
  victim->bytes = NULL;
  for (size_t i = 0; i < PCC_BUNDLE_SLOTS; i++) /* then make room */
    total += w->slots[i].bytes ? w->slots[i].bytes->len : 0;
  for (size_t i = 0; i < PCC_BUNDLE_SLOTS && total > limit; i++)
    if (w->slots[i].bytes != NULL) {
      total -= w->slots[i].bytes->len;
      bundle_release(w->slots[i].bytes);
      w->slots[i].bytes = NULL;
    }
  if (total <= limit) {
    victim->magic = params->magic;
    victim->opt = params->opt;
    snprintf(victim->name, sizeof victim->name, "%s", name);
    snprintf(victim->ns, sizeof victim->ns, "%s", ns);
    victim->generation = generation;
    victim->last_used = ++w->clock;
    victim->bytes = bytes;
  } else {
    bundle_release(bytes); /* too big to keep: only this response has it */
  }
  pthread_mutex_unlock(&w->lock);
}


/* GET /v1/bundle: every valid stored pyc of a profile, binary or (format=json) as JSON. */
static void handle_bundle(void *state, pcc_request *req, pcc_answer *answer)
{
  warm *w = state;
  const pcc_params *params = &req->params;
  const char *name = req->args[ARG_PROFILE], *format = req->args[ARG_FORMAT];
  if (!profile_name_ok(name, answer))
    return;
  if (format != NULL && strcmp(format, "json") == 0) {
    bundle_json(w, req, name, answer);
    return;
  }
  unsigned added = 0;
  uint64_t generation = pcc_store_generation(pcc_core_store(w->core));
  bundle_bytes *bytes = cache_take(w, req->ns, params, name, generation);
  bool cached = bytes != NULL;
  if (bytes == NULL) {
    uint8_t *data = NULL;
    size_t len = 0;
    pcc_digest *digests = NULL;
    pcc_dynbuf added_paths;
    pcc_dynbuf_init(&added_paths, (size_t)PCC_PROFILE_PATHS_MAX * (PCC_PATH_MAX + 1));
    if (!build_bundle(w, req->ns, params, name, &data, &len, &digests, &added, &added_paths,
                      answer)) {
      pcc_dynbuf_free(&added_paths);
      return;
    }
    bytes = malloc(sizeof *bytes);
    if (bytes == NULL) {
      free(data);
      free(digests);
      pcc_dynbuf_free(&added_paths);
      pcc_answer_error(answer, PCC_ERR_INTERNAL, "out of memory");
      return;
    }
    atomic_init(&bytes->refs, 2); /* the cache's and this response's */
    bytes->data = data;
    bytes->len = len;
    bytes->entries = added;
    bytes->digests = digests;
    bytes->paths = pcc_dynbuf_take(&added_paths, &bytes->paths_len);
    pthread_mutex_init(&bytes->zstd_lock, NULL);
    bytes->zstd_tried = false;
    bytes->zstd = NULL;
    bytes->zstd_len = 0;
    cache_put(w, req->ns, params, name, generation, bytes);
  } else { /* served from memory: its blobs are used all the same (eviction is by last use) */
    for (unsigned i = 0; i < bytes->entries; i++)
      pcc_store_touch(pcc_core_store(w->core), &params->magic, params->opt, &bytes->digests[i]);
  }
  char entries[16];
  snprintf(entries, sizeof entries, "%u", bytes->entries);
  size_t zstd_len = 0;
  const uint8_t *zstd = req->accept_zstd ? bundle_zstd(bytes, &zstd_len) : NULL;
  atomic_fetch_add(&pcc_counters_totals(pcc_core_counters(w->core))->bundles, 1);
  count_bundle_hits(w, params, bytes->entries, bytes->paths, bytes->paths_len,
                    zstd ? zstd_len : bytes->len);
  pcc_answer_bytes(answer, zstd ? zstd : bytes->data, zstd ? zstd_len : bytes->len,
                   "application/x-pycached-bundle", bundle_release, bytes);
  pcc_answer_header(answer, "X-Pycached-Bundle-Entries", entries);
  pcc_answer_header(answer, "X-Pycached-Bundle-Cache", cached ? "hit" : "built");
  pcc_answer_header(answer, "Vary", "Accept-Encoding");
  if (zstd != NULL)
    pcc_answer_header(answer, "Content-Encoding", "zstd");
}

/* ---- batches ----------------------------------------------------------------------------------
 * A batch is answered lookup by lookup as it is sent (see above). A lookup identical to an
 * earlier one of the batch is not looked up again: its result is {"same_as": INDEX} of the first
 * one. The answer stays within --max-batch-response: PCC_BATCH_SMALL_MAX bytes (and a comma) of
 * it are kept for every lookup not answered yet. When a result would not fit in what is left,
 * that lookup and every later one are answered with a too-large object instead (references and
 * bad-parameter objects stay what they are): none of the three is longer than
 * PCC_BATCH_SMALL_MAX, so the kept bytes always suffice. */

typedef struct {
  warm *w;
  char ns[PCC_NAMESPACE_MAX + 1];
  pcc_body_lookup *lookups; /* parsed and deduplicated (bodies.h) */
  size_t n, at;        /* lookups, and the next one to answer */
  bool cut;            /* a result would have passed the cap: the rest are too-large */
} batch_stream;

static void batch_stream_free(void *ctx)
{
  batch_stream *b = ctx;
  pcc_body_lookups_free(b->lookups, b->n);
  free(b);
}

/* The result of one lookup, as /v1/code would answer it: the entry or the error object. */
static char *batch_result(warm *w, const char *ns, const pcc_params *params)
{
  pcc_answer answer;
  pcc_answer_init(&answer);
  pcc_core_lookup(w->core, ns, params, &answer);
  char *text = NULL;
  if (answer.kind == PCC_ANSWER_ENTRY) {
    text = entry_text(params, &answer);
  } else {
    cJSON *item = pcc_answer_error_json(&answer);
    text = item ? cJSON_PrintUnformatted(item) : NULL;
    cJSON_Delete(item);
  }
  pcc_answer_clear(&answer);
  return text;
}

static int batch_next(void *ctx, uint64_t room, char **text, size_t *len)
{
  static const char too_large[] = "{\"error\":\"too-large\",\"message\":\"the answer reached "
                                  "--max-batch-response; ask for this one again\"}";
  _Static_assert(sizeof too_large - 1 <= PCC_BATCH_SMALL_MAX, "a too-large result is small");
  batch_stream *b = ctx;
  if (b->at == b->n)
    return 0;
  const pcc_body_lookup *lookup = &b->lookups[b->at++];
  uint64_t kept = (uint64_t)(b->n - b->at) * (PCC_BATCH_SMALL_MAX + 1); /* for the rest */
  char *item = NULL;
  if (lookup->same_as != PCC_BODY_NOT_SAME) {
    item = malloc(48);
    if (item != NULL)
      snprintf(item, 48, "{\"same_as\":%zu}", lookup->same_as);
  } else if (lookup->error != NULL) {
    item = strdup(lookup->error);
  } else if (!b->cut) {
    item = batch_result(b->w, b->ns, &lookup->params);
    if (item != NULL && strlen(item) + kept > room) {
      free(item);
      item = NULL;
      b->cut = true;
    }
  }
  if (item == NULL && b->cut)
    item = strdup(too_large);
  if (item == NULL)
    return -1;
  *text = item;
  *len = strlen(item);
  return 1;
}

/* POST /v1/batch: the JSON body {"lookups": [...]}, answered lookup by lookup as /v1/code would:
 * {"results": [...]}, at most --max-batch-response bytes. */
static void handle_batch(void *state, pcc_request *req, pcc_answer *answer)
{
  warm *w = state;
  const pcc_config *config = pcc_core_config(w->core);
  static const char head[] = "{\"results\":[", tail[] = "]}";
  pcc_body_lookup *lookups = NULL;
  size_t n = 0;
  pcc_proto_status rc = pcc_body_batch_parse(req->body, req->body_len, config->max_batch,
                                             sizeof head + sizeof tail,
                                             config->max_batch_response, &lookups, &n);
  if (rc == PCC_PROTO_INVALID) {
    pcc_answer_error(answer, PCC_ERR_BAD_PARAMETER, "body: want {\"lookups\": [...]} with at "
                     "most %llu lookups", (unsigned long long)config->max_batch);
    pcc_answer_extra_string(answer, "param", "lookups");
    return;
  }
  if (rc == PCC_PROTO_RANGE) {
    pcc_answer_error(answer, PCC_ERR_TOO_LARGE, "%zu lookups need more than "
                     "--max-batch-response (%llu bytes; %d a lookup at least)", n,
                     (unsigned long long)config->max_batch_response, PCC_BATCH_SMALL_MAX + 1);
    return;
  }
  batch_stream *b = rc == PCC_PROTO_OK ? calloc(1, sizeof *b) : NULL;
  if (b == NULL) {
    pcc_body_lookups_free(lookups, n);
    pcc_answer_error(answer, PCC_ERR_INTERNAL, "out of memory");
    return;
  }
  *b = (batch_stream){.w = w, .lookups = lookups, .n = n};
  memcpy(b->ns, req->ns, sizeof b->ns);
  answer_json_stream(answer, strdup(head), tail, config->max_batch_response, batch_next, b,
                     batch_stream_free);
}

/* ---- client reports ------------------------------------------------------------------------ */

/* POST /v1/report: the JSON body {"fallbacks": {"reason": count, ...}} a client sends at exit,
 * added to the counters of its magic. */
static void handle_report(void *state, pcc_request *req, pcc_answer *answer)
{
  warm *w = state;
  pcc_body_report report;
  if (!pcc_body_report_parse(req->body, req->body_len, &report)) {
    pcc_answer_error(answer, PCC_ERR_BAD_PARAMETER, "body: want {\"fallbacks\": {reason: "
                     "count}} with at most %d reasons of [a-z0-9-]", PCC_REASONS_MAX);
    pcc_answer_extra_string(answer, "param", "fallbacks");
    return;
  }
  pcc_counters *counters = pcc_core_counters(w->core);
  pcc_magic_counters *magic = pcc_counters_for(counters, &req->params.magic);
  for (size_t i = 0; i < report.n; i++)
    pcc_counters_add_reason(counters, magic, report.items[i].reason, report.items[i].count);
  pcc_body_report_free(&report);
  cJSON *json = cJSON_CreateObject();
  cJSON_AddBoolToObject(json, "recorded", true);
  pcc_answer_json(answer, json);
}

/* ---- the feature --------------------------------------------------------------------------- */

static int warm_open(pcc_core *core, void **state)
{
  warm *w = calloc(1, sizeof *w);
  if (w == NULL)
    return -1;
  w->core = core;
  pthread_mutex_init(&w->lock, NULL);
  *state = w;
  return 0;
}

/* Empties the bundle cache (responses still sending a bundle keep theirs) and frees. */
static void warm_close(void *state)
{
  warm *w = state;
  if (w == NULL)
    return;
  for (size_t i = 0; i < PCC_BUNDLE_SLOTS; i++)
    bundle_release(w->slots[i].bytes);
  pthread_mutex_destroy(&w->lock);
  free(w);
}

static const pcc_route warm_routes[] = {
  {"POST", "/v1/profile", PCC_ROLE_READ, PCC_ROUTE_BODY(max_profile_body), true,
   PCC_PARAM_MAGIC, {"profile", NULL}, handle_profile, "record a program's imports"},
  {"GET", "/v1/bundle", PCC_ROLE_READ, PCC_ROUTE_NO_BODY, true, PCC_PARAM_MAGIC,
   {"profile", "format", NULL}, handle_bundle, "every stored pyc of a profile at once"},
  {"POST", "/v1/batch", PCC_ROLE_READ, PCC_ROUTE_BODY(max_batch_body), false, 0, {NULL},
   handle_batch, "many lookups in one request"},
  {"POST", "/v1/report", PCC_ROLE_READ, PCC_ROUTE_BODY(max_report_body), true, PCC_PARAM_MAGIC,
   {NULL}, handle_report, "the fallbacks a client had"},
};

const pcc_feature pcc_warm_feature = {
  "warm", warm_routes, sizeof warm_routes / sizeof warm_routes[0],
  warm_open, NULL, warm_close,
};
