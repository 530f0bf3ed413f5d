/* ctl_admin.c: the handlers of `pycachectl admin ...` (ctl.h; their rows are in pycachectl.c's
 * command table), the admin API of docs/API.md from the command line: readable tables by
 * default, the server's JSON with --json, a confirmation before anything is removed. Entries
 * and import profiles are listed by one pager. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"

/* ---- admin: requests ------------------------------------------------------------------- */

/* An admin request's path and query under construction, escaped, within PCC_CTL_QUERY_MAX. */
typedef struct {
  char text[PCC_CTL_QUERY_MAX];
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
static int ctl_admin_call(const ctl *c, const char *what, const char *method,
                          const ctl_query *q, bool not_found_ok, char **body_out,
                          cJSON **json_out)
{
  pcc_client *client = c->client;
  if (q->overflow) {
    fprintf(stderr, "pycachectl: %s: the request is over %d bytes\n", what, PCC_CTL_QUERY_MAX);
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
    return ctl_fail(c, rc, what);
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
static void ctl_print_counters_row(const char *name, const cJSON *row)
{
  char b[6][32], parts[256];
  double misses = ctl_misses(cJSON_GetObjectItemCaseSensitive(row, "misses"), parts,
                             sizeof parts);
  printf("%-10s %9s %11s %9s %9.0f %9s %9s %9s\n", name, ctl_int(row, "entries", b[0], 32),
         ctl_bytes(ctl_num(row, "bytes", -1), b[1], 32), ctl_int(row, "hits", b[2], 32), misses,
         ctl_int(row, "compiles", b[3], 32), ctl_int(row, "compile_errors", b[4], 32),
         ctl_int(row, "corruptions", b[5], 32));
}

/* ---- admin: commands ------------------------------------------------------------------- */

int ctl_admin_stats(const ctl *c)
{
  ctl_query q;
  ctl_query_init(&q, "/v1/admin/stats");
  char *body = NULL;
  cJSON *obj = NULL;
  int code = ctl_admin_call(c, "admin stats", "GET", &q, false, &body, c->args.json ? NULL : &obj);
  if (code != EXIT_HIT)
    return code;
  if (c->args.json) {
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
  double ratio = ctl_num(total, "hit_ratio", -1);
  if (ratio >= 0)
    printf("hit ratio: %.1f%% (%s of the hits served in bundles)\n", 100 * ratio,
           ctl_int(total, "bundle_hits", b[6], 32));
  else
    printf("hit ratio: - (no lookups yet)\n");
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
    double bytes = ctl_num(store, "bytes", -1), max = ctl_num(store, "max_size", -1);
    double used = ctl_num(store, "used", -1), map = ctl_num(store, "map_size", -1);
    printf("\nstore: %s entries, %s blobs, %s profiles; %s of code (--max-size %s",
           ctl_int(store, "entries", b[0], 32), ctl_int(store, "blobs", b[1], 32),
           ctl_int(store, "profiles", b[2], 32), ctl_bytes(bytes, b[3], 32),
           ctl_bytes(max, b[4], 32));
    if (bytes >= 0 && max > 0)
      printf(", %.1f%%", 100.0 * bytes / max);
    printf("), %s evictions\n", ctl_int(store, "evictions", b[5], 32));
    printf("pages: %s used, %s free, of a map of %s (--map-size", ctl_bytes(used, b[0], 32),
           ctl_bytes(ctl_num(store, "free", -1), b[1], 32), ctl_bytes(map, b[2], 32));
    if (used >= 0 && map > 0)
      printf(", %.1f%% used", 100.0 * used / map);
    printf(")\n");
  }
  cJSON_Delete(obj);
  free(body);
  return EXIT_HIT;
}

int ctl_admin_magics(const ctl *c)
{
  ctl_query q;
  ctl_query_init(&q, "/v1/admin/magics");
  char *body = NULL;
  cJSON *obj = NULL;
  int code = ctl_admin_call(c, "admin magics", "GET", &q, false, &body,
                            c->args.json ? NULL : &obj);
  if (code != EXIT_HIT)
    return code;
  if (c->args.json) {
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

/* What one listing pages through: the endpoint, the name of its list in the answer, how a row
 * is printed (the header before the first). */
typedef struct {
  const char *what;  /* "admin ls" */
  const char *path;  /* "/v1/admin/entries" */
  const char *items; /* "entries" */
  void (*header)(void);
  void (*row)(const cJSON *item);
} ctl_listing;

static void ctl_entry_header(void)
{
  printf("%-10s %3s %-13s %10s %8s  %s\n", "MAGIC", "OPT", "KIND", "BYTES", "HITS", "PATH");
}

static void ctl_entry_row(const cJSON *e)
{
  char b[3][32];
  printf("%-10s %3s %-13s %10s %8s  %s\n", ctl_str(e, "magic", "?"), ctl_int(e, "opt", b[0], 32),
         ctl_str(e, "kind", "?"), ctl_int(e, "bytes", b[1], 32), ctl_int(e, "hits", b[2], 32),
         ctl_str(e, "path", "?"));
}

/* "2026-11-21 06:15:00 UTC" of unix seconds into text. */
/* A time the server sent, as text in text (cap bytes): "?" unless whole and within time_t. */
static const char *ctl_when(double seconds, char *text, size_t cap)
{
  int64_t whole;
  time_t t;
  struct tm tm;
  snprintf(text, cap, "?");
  if (pcc_double_to_i64(seconds, &whole) && (t = (time_t)whole) == whole &&
      gmtime_r(&t, &tm) != NULL)
    strftime(text, cap, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return text;
}

static void ctl_profile_header(void)
{
  printf("%-10s %3s %-12s %7s  %-23s  %s\n", "MAGIC", "OPT", "NAMESPACE", "PATHS", "UPDATED",
         "PROFILE");
}

static void ctl_profile_row(const cJSON *p)
{
  char b[2][32], when[64];
  printf("%-10s %3s %-12s %7s  %-23s  %s\n", ctl_str(p, "magic", "?"), ctl_int(p, "opt", b[0], 32),
         ctl_str(p, "namespace", "?")[0] ? ctl_str(p, "namespace", "?") : "-",
         ctl_int(p, "paths", b[1], 32), ctl_when(ctl_num(p, "updated", 0), when, sizeof when),
         ctl_str(p, "profile", "?"));
}

/* Lists the pages of a listing, filtered by the command's options (magic, opt, prefix,
 * namespace, limit), from --cursor, following next_cursor with --all. */
static int ctl_admin_list(const ctl *c, const ctl_listing *l)
{
  const ctl_args *args = &c->args;
  char magic_hex[2 * PCC_MAGIC_LEN + 1], opt[8], limit[16];
  pcc_magic_to_hex(&args->magic, magic_hex);
  snprintf(opt, sizeof opt, "%d", args->opt);
  snprintf(limit, sizeof limit, "%ld", args->limit);
  char *cursor = args->cursor ? strdup(args->cursor) : NULL;
  if (args->cursor && cursor == NULL) {
    fprintf(stderr, "pycachectl: %s: out of memory\n", l->what);
    return EXIT_LOCAL;
  }
  int code = EXIT_HIT;
  long shown = 0;
  for (long page = 0; page < PCC_CTL_PAGES_MAX; page++) {
    ctl_query q;
    ctl_query_init(&q, l->path);
    ctl_query_add(&q, "magic", args->given & ARG_MAGIC ? magic_hex : NULL);
    ctl_query_add(&q, "opt", args->given & ARG_OPT ? opt : NULL);
    ctl_query_add(&q, "prefix", args->prefix);
    ctl_query_add(&q, "namespace", args->ns);
    ctl_query_add(&q, "limit", args->limit ? limit : NULL);
    ctl_query_add(&q, "cursor", cursor);
    char *body = NULL;
    cJSON *obj = NULL;
    code = ctl_admin_call(c, l->what, "GET", &q, false, &body, &obj);
    if (code != EXIT_HIT)
      break;
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(obj, l->items);
    const cJSON *next = cJSON_GetObjectItemCaseSensitive(obj, "next_cursor");
    if (!cJSON_IsArray(items) || !(cJSON_IsNull(next) || cJSON_IsString(next))) {
      fprintf(stderr, "pycachectl: %s: the answer has no %s array or next_cursor\n", l->what,
              l->items);
      code = EXIT_SERVER;
    } else if (args->json) {
      printf("%s\n", body); /* one JSON document per page */
    } else {
      const cJSON *item = NULL;
      cJSON_ArrayForEach(item, items) {
        if (shown++ == 0)
          l->header();
        l->row(item);
      }
    }
    char *following = NULL;
    if (code == EXIT_HIT && cJSON_IsString(next)) {
      if (cursor != NULL && strcmp(cursor, next->valuestring) == 0) {
        fprintf(stderr, "pycachectl: %s: the server gave the same cursor twice\n", l->what);
        code = EXIT_SERVER;
      } else if ((following = strdup(next->valuestring)) == NULL) {
        fprintf(stderr, "pycachectl: %s: out of memory\n", l->what);
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
      fprintf(stderr, "pycachectl: more %s: add --cursor '%s' for the next page, or --all "
                      "for every page\n", l->items, cursor);
      break;
    }
    if (fflush(stdout) != 0) {
      code = EXIT_LOCAL;
      break;
    }
  }
  free(cursor);
  if (code == EXIT_HIT && !args->json && shown == 0)
    printf("no %s\n", l->items);
  return code;
}

int ctl_admin_ls(const ctl *c)
{
  static const ctl_listing entries = {"admin ls", "/v1/admin/entries", "entries",
                                      ctl_entry_header, ctl_entry_row};
  return ctl_admin_list(c, &entries);
}

int ctl_admin_profiles(const ctl *c)
{
  static const ctl_listing profiles = {"admin profiles", "/v1/admin/profiles", "profiles",
                                       ctl_profile_header, ctl_profile_row};
  return ctl_admin_list(c, &profiles);
}

/* "ENDPOINT?magic=..&opt=..&KEY=NAME[&namespace=..]" of one entry (key "path") or profile
 * (key "profile"). */
static void ctl_named_query(ctl_query *q, const ctl_args *args, const char *endpoint,
                            const char *key, const char *name)
{
  char magic_hex[2 * PCC_MAGIC_LEN + 1], opt[8];
  pcc_magic_to_hex(&args->magic, magic_hex);
  snprintf(opt, sizeof opt, "%d", args->opt);
  ctl_query_init(q, endpoint);
  ctl_query_add(q, "magic", magic_hex);
  ctl_query_add(q, "opt", opt);
  ctl_query_add(q, key, name);
  ctl_query_add(q, "namespace", args->ns);
}

/* One entry (by its path) or one profile (by its name), as show, rm, profile, rm-profile name
 * it. */
typedef struct {
  const char *endpoint; /* "/v1/admin/entry" */
  const char *key;      /* its query argument: "path" */
  const char *noun;     /* "entry" */
  const char *missing;  /* in "no <missing> NAME": "entry for" */
} ctl_named;

static const ctl_named CTL_ENTRY = {"/v1/admin/entry", "path", "entry", "entry for"};
static const ctl_named CTL_PROFILE = {"/v1/admin/profile", "profile", "profile", "profile"};

/* Prints that the command's word names nothing of its magic and opt; returns EXIT_MISS. */
static int ctl_no_such(const ctl *c, const char *what, const ctl_named *named)
{
  char magic_hex[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(&c->args.magic, magic_hex);
  fprintf(stderr, "pycachectl: %s: no %s %s (magic %s, opt %d)\n", what, named->missing,
          c->words[0], magic_hex, c->args.opt);
  return EXIT_MISS;
}

/* GETs the thing the command's word names. EXIT_HIT with *obj and *body (the caller's) to print,
 * or, with --json, *obj NULL and the JSON printed already; the exit code otherwise (printed). */
static int ctl_admin_get_named(const ctl *c, const char *what, const ctl_named *named,
                               char **body, cJSON **obj)
{
  ctl_query q;
  ctl_named_query(&q, &c->args, named->endpoint, named->key, c->words[0]);
  *obj = NULL;
  int code = ctl_admin_call(c, what, "GET", &q, true, body, c->args.json ? NULL : obj);
  if (code == EXIT_MISS)
    return ctl_no_such(c, what, named);
  if (code == EXIT_HIT && c->args.json)
    printf("%s\n", *body);
  return code;
}

int ctl_admin_show(const ctl *c)
{
  char *body = NULL;
  cJSON *obj = NULL;
  int code = ctl_admin_get_named(c, "admin show", &CTL_ENTRY, &body, &obj);
  if (code != EXIT_HIT || obj == NULL) {
    free(body);
    return code;
  }
  const cJSON *item = NULL;
  cJSON_ArrayForEach(item, obj) {
    const char *key = item->string ? item->string : "?";
    bool when = strcmp(key, "created") == 0 || strcmp(key, "last_hit") == 0;
    if (when && cJSON_IsNumber(item)) {
      char text[64];
      printf("%-12s %.0f  (%s)\n", key, item->valuedouble,
             ctl_when(item->valuedouble, text, sizeof text));
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

/* Asks a question on the terminal (stdin is one: main checked) unless --yes. EXIT_HIT to go on,
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
  char answer[PCC_CTL_ANSWER_MAX];
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

/* Prints the {"removed": N} of a removal (or the JSON as is): "removed N <noun>s". */
static int ctl_print_removed(const char *body, const cJSON *obj, const ctl_args *args,
                             const char *noun)
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
  bool entry = strcmp(noun, "entry") == 0, one = removed->valuedouble == 1;
  printf("removed %.0f %s%s\n", removed->valuedouble, entry && !one ? "entrie" : noun,
         one ? "" : "s");
  return EXIT_HIT;
}

/* A destructive request: POST or DELETE, then the removed count (of <noun>s). */
static int ctl_admin_remove(const ctl *c, const char *what, const char *method,
                            const ctl_query *q, bool not_found_ok, const char *noun)
{
  char *body = NULL;
  cJSON *obj = NULL;
  int code = ctl_admin_call(c, what, method, q, not_found_ok, &body, &obj);
  if (code != EXIT_HIT)
    return code;
  code = ctl_print_removed(body, obj, &c->args, noun);
  cJSON_Delete(obj);
  free(body);
  return code;
}

/* Removes the thing the command's word names, after asking. */
static int ctl_admin_rm_named(const ctl *c, const char *what, const ctl_named *named)
{
  const ctl_args *args = &c->args;
  char magic_hex[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(&args->magic, magic_hex);
  int code = ctl_confirm(args, what, "Remove the %s %s (magic %s, opt %d)?", named->missing,
                         c->words[0], magic_hex, args->opt);
  if (code != EXIT_HIT)
    return code;
  ctl_query q;
  ctl_named_query(&q, args, named->endpoint, named->key, c->words[0]);
  code = ctl_admin_remove(c, what, "DELETE", &q, true, named->noun);
  return code == EXIT_MISS ? ctl_no_such(c, what, named) : code;
}

int ctl_admin_rm(const ctl *c)
{
  return ctl_admin_rm_named(c, "admin rm", &CTL_ENTRY);
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

int ctl_admin_invalidate(const ctl *c)
{
  const ctl_args *args = &c->args;
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
    double n = args->yes ? -1 : ctl_magic_entries(c->client, magic_hex);
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
  return ctl_admin_remove(c, "admin invalidate", "POST", &q, false, "entry");
}

int ctl_admin_purge(const ctl *c)
{
  const ctl_args *args = &c->args;
  double n = -1;
  if (!args->yes) { /* the count makes the question concrete; without it, ask anyway */
    char *body = NULL;
    size_t len = 0;
    if (pcc_client_request(c->client, "GET", "/v1/admin/stats", NULL, 0, &body, &len, NULL) ==
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
  return ctl_admin_remove(c, "admin purge", "POST", &q, false, "entry");
}

int ctl_admin_retire(const ctl *c)
{
  const ctl_args *args = &c->args;
  pcc_magic magic;
  pcc_magic_from_hex(c->words[0], &magic); /* checked by ctl_admin_check_retire */
  char magic_hex[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(&magic, magic_hex);
  double n = args->yes ? -1 : ctl_magic_entries(c->client, magic_hex);
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
  return ctl_admin_remove(c, "admin retire", "POST", &q, false, "entry");
}

int ctl_admin_profile(const ctl *c)
{
  char *body = NULL;
  cJSON *obj = NULL;
  int code = ctl_admin_get_named(c, "admin profile", &CTL_PROFILE, &body, &obj);
  if (code != EXIT_HIT || obj == NULL) {
    free(body);
    return code;
  }
  char b[2][32], when[64];
  const char *ns = ctl_str(obj, "namespace", "");
  printf("profile    %s\nmagic      %s\nopt        %s\nnamespace  %s\nupdated    %s\n"
         "paths      %s\n", ctl_str(obj, "profile", "?"), ctl_str(obj, "magic", "?"),
         ctl_int(obj, "opt", b[0], 32), ns[0] ? ns : "(default)",
         ctl_when(ctl_num(obj, "updated", 0), when, sizeof when), ctl_int(obj, "paths", b[1], 32));
  const cJSON *path = NULL;
  cJSON_ArrayForEach(path, cJSON_GetObjectItemCaseSensitive(obj, "list")) {
    if (cJSON_IsString(path))
      printf("  %s\n", path->valuestring);
  }
  cJSON_Delete(obj);
  free(body);
  return EXIT_HIT;
}

int ctl_admin_rm_profile(const ctl *c)
{
  return ctl_admin_rm_named(c, "admin rm-profile", &CTL_PROFILE);
}

/* GET /v1/admin/backup into a temporary file next to args->download, then fsync and rename
 * (mode 0600: the backup holds every stored code object). */
static int ctl_admin_download(const ctl *c)
{
  pcc_client *client = c->client;
  const ctl_args *args = &c->args;
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
    pcc_client_set_timeout(client, PCC_CTL_TIMEOUT_MAX_MS);
  uint64_t bytes = 0;
  pcc_client_status rc = pcc_client_download(client, "/v1/admin/backup", fd, &bytes, NULL);
  int code = EXIT_HIT, err = 0;
  if (rc == PCC_CLIENT_IO)
    err = errno;
  else if (rc != PCC_CLIENT_OK)
    code = ctl_fail(c, rc, "admin backup");
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

int ctl_admin_backup(const ctl *c)
{
  if (c->args.download)
    return ctl_admin_download(c);
  ctl_query q;
  ctl_query_init(&q, "/v1/admin/backup");
  char *body = NULL;
  cJSON *obj = NULL;
  if (c->args.timeout_ms == 0)
    pcc_client_set_timeout(c->client, PCC_CTL_TIMEOUT_MAX_MS);
  int code = ctl_admin_call(c, "admin backup", "POST", &q, false, &body,
                            c->args.json ? NULL : &obj);
  if (code != EXIT_HIT)
    return code;
  if (c->args.json) {
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

/* ---- admin: checks before any request ------------------------------------------------- */

int ctl_admin_check_ls(const ctl *c)
{
  if (c->args.all && c->args.cursor)
    return ctl_usage_error("--all starts at the first page: leave out --cursor", NULL);
  return EXIT_HIT;
}

int ctl_admin_check_entry(const ctl *c)
{
  if (!c->args.have_magic)
    return ctl_usage_error("--magic is required: an entry is named by magic, opt and path",
                           c->name);
  if (c->words[0][0] != '/')
    return ctl_usage_error("PATH must be absolute, as clients sent it", c->words[0]);
  return EXIT_HIT;
}

int ctl_admin_check_profile(const ctl *c)
{
  if (!c->args.have_magic)
    return ctl_usage_error("--magic is required: a profile is named by magic, opt and name",
                           c->name);
  return EXIT_HIT;
}

int ctl_admin_check_invalidate(const ctl *c)
{
  if (!c->args.have_magic && c->args.prefix == NULL)
    return ctl_usage_error("invalidate wants --magic HEX, --prefix P or both", NULL);
  return EXIT_HIT;
}

int ctl_admin_check_retire(const ctl *c)
{
  pcc_magic magic;
  if (pcc_magic_from_hex(c->words[0], &magic) != PCC_PROTO_OK)
    return ctl_usage_error("retire wants a magic, 8 hex digits ending in 0d0a", c->words[0]);
  return EXIT_HIT;
}

int ctl_admin_check_backup(const ctl *c)
{
  if (c->args.download && c->args.json)
    return ctl_usage_error("--json does not apply to backup --download", NULL);
  return EXIT_HIT;
}
