/* log.c: pycached's log lines (pcc_log.h): formatting (text or JSON, through cJSON), one write(2)
 * a line, the main log and file destinations reopened for logrotate. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "pcc_log.h"
#include "proto.h"

#define LOG_CUT_MARK " ...[cut]\n"
#define PCC_LOG_AUDIT_FIELDS_MAX 16 /* fields of an audit line besides audit= */
#define LOG_MSG_MAX 4096 /* bytes of a pcc_logf message before it is cut (inside the line max) */

struct pcc_log {
  pthread_rwlock_t lock; /* writers share it; reopen takes it alone to swap the descriptor */
  int fd;
  bool own_fd;           /* a file of ours, not stderr */
  char *path;            /* NULL: stderr */
  pcc_log_format format;
  pcc_log_level level;
  atomic_uint_fast64_t dropped;
};

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* The default main log; main points at it or at the one pcc_log_set_main was given. */
static pcc_log default_log = {PTHREAD_RWLOCK_INITIALIZER, 2, false, NULL, PCC_LOG_TEXT,
                              PCC_LOG_INFO, 0};
static pcc_log *_Atomic main_log = &default_log;

const char *pcc_log_strerror(pcc_log_status rc)
{
  switch (rc) {
  case PCC_LOG_OK: return "ok";
  case PCC_LOG_BAD_LEVEL: return "not a log level (error, warn, info, debug)";
  case PCC_LOG_BAD_FORMAT: return "not a log format (text, json)";
  case PCC_LOG_OPEN: return "cannot open the log file";
  case PCC_LOG_NOMEM: return "out of memory";
  }
  return "unknown log status";
}

const char *pcc_log_level_name(pcc_log_level level)
{
  return (unsigned)level < sizeof level_names / sizeof level_names[0] ? level_names[level] : "?";
}

pcc_log_status pcc_log_level_parse(const char *text, pcc_log_level *out)
{
  for (size_t i = 0; text != NULL && i < sizeof level_names / sizeof level_names[0]; i++)
    if (strcmp(text, level_names[i]) == 0) {
      *out = (pcc_log_level)i;
      return PCC_LOG_OK;
    }
  return PCC_LOG_BAD_LEVEL;
}

pcc_log_status pcc_log_format_parse(const char *text, pcc_log_format *out)
{
  if (text != NULL && strcmp(text, "text") == 0)
    *out = PCC_LOG_TEXT;
  else if (text != NULL && strcmp(text, "json") == 0)
    *out = PCC_LOG_JSON;
  else
    return PCC_LOG_BAD_FORMAT;
  return PCC_LOG_OK;
}

/* ---- formatting --------------------------------------------------------------------------- */

/* The time now, RFC 3339 in UTC with milliseconds: 2026-12-02T01:02:03.456Z. */
static void timestamp(char out[32])
{
  struct timespec now;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, 32 - n, ".%03ldZ", now.tv_nsec / 1000000);
}

/* A bounded text line being built; once full, further appends are dropped and cut is set. */
typedef struct {
  char data[PCC_LOG_LINE_MAX];
  size_t len;
  bool cut;
} line;

static void put(line *l, const char *s, size_t n)
{
  size_t room = sizeof l->data - l->len;
  if (n > room) {
    n = room;
    l->cut = true;
  }
  memcpy(l->data + l->len, s, n);
  l->len += n;
}

static void put_str(line *l, const char *s)
{
  put(l, s, strlen(s));
}

/* Appends s with its control characters (and DEL) as \xHH: a text line stays one line. */
static void put_plain(line *l, const char *s)
{
  for (const char *p = s; *p != '\0' && !l->cut; p++) {
    unsigned char c = (unsigned char)*p;
    if (c >= 0x20 && c != 0x7f) {
      put(l, p, 1);
    } else {
      char esc[5];
      snprintf(esc, sizeof esc, "\\x%02x", c);
      put_str(l, esc);
    }
  }
}

/* Does a text field's value need quotes: empty, or with a space, quote, '=', backslash or a
 * control character? */
static bool needs_quotes(const char *s)
{
  if (*s == '\0')
    return true;
  for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
    if (*p <= 0x20 || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f)
      return true;
  return false;
}

/* Appends a field value: as it is, or quoted and escaped as a JSON string (by cJSON). */
static void put_value(line *l, const char *s)
{
  if (!needs_quotes(s)) {
    put_str(l, s);
    return;
  }
  cJSON *str = cJSON_CreateString(s);
  char *quoted = str ? cJSON_PrintUnformatted(str) : NULL;
  cJSON_Delete(str);
  if (quoted != NULL)
    put_str(l, quoted);
  else
    put_str(l, "\"?\""); /* out of memory */
  free(quoted);
}

/* TIMESTAMP LEVEL MESSAGE key=value ...: the level padded to 5 columns. */
static void format_text(line *l, const char *ts, pcc_log_level level, const char *msg,
                        const pcc_log_field *fields, size_t n)
{
  char head[48];
  snprintf(head, sizeof head, "%s %-5s ", ts, pcc_log_level_name(level));
  put_str(l, head);
  put_plain(l, msg);
  for (size_t i = 0; i < n; i++) {
    put_str(l, " ");
    put_plain(l, fields[i].key);
    put_str(l, "=");
    if (fields[i].str != NULL) {
      put_value(l, fields[i].str);
    } else if (fields[i].is_bool) {
      put_str(l, fields[i].num ? "true" : "false");
    } else {
      char number[24];
      snprintf(number, sizeof number, "%lld", (long long)fields[i].num);
      put_str(l, number);
    }
  }
  put_str(l, "\n");
  if (l->cut) { /* the end of the line is the mark */
    size_t mark = strlen(LOG_CUT_MARK);
    memcpy(l->data + sizeof l->data - mark, LOG_CUT_MARK, mark);
    l->len = sizeof l->data;
  }
}

/* s, at most max bytes of it (cut at a UTF-8 character boundary), in a cJSON string; sets *cut
 * when it cut. */
static cJSON *json_text(const char *s, size_t max, bool *cut)
{
  size_t n = strlen(s);
  if (n <= max)
    return cJSON_CreateString(s);
  *cut = true;
  char *copy = strndup(s, max);
  if (copy == NULL)
    return cJSON_CreateString("");
  pcc_utf8_trim(copy);
  cJSON *str = cJSON_CreateString(copy);
  free(copy);
  return str;
}

/* Prints the JSON object of a line, every string at most max bytes, into out (room bytes, its
 * NUL included). False when it does not fit, or, *nomem set, without memory. */
static bool json_line(const char *ts, pcc_log_level level, const char *msg,
                      const pcc_log_field *fields, size_t n, size_t max, char *out, size_t room,
                      bool *nomem)
{
  bool cut = false;
  cJSON *obj = cJSON_CreateObject();
  if (obj == NULL) {
    *nomem = true;
    return false;
  }
  bool built = cJSON_AddStringToObject(obj, "ts", ts) &&
               cJSON_AddStringToObject(obj, "level", pcc_log_level_name(level)) &&
               cJSON_AddItemToObject(obj, "msg", json_text(msg, max, &cut));
  for (size_t i = 0; built && i < n; i++) {
    if (fields[i].str != NULL)
      built = cJSON_AddItemToObject(obj, fields[i].key, json_text(fields[i].str, max, &cut));
    else if (fields[i].is_bool)
      built = cJSON_AddBoolToObject(obj, fields[i].key, fields[i].num != 0) != NULL;
    else
      built = cJSON_AddNumberToObject(obj, fields[i].key, (double)fields[i].num) != NULL;
  }
  if (built && cut)
    built = cJSON_AddTrueToObject(obj, "truncated") != NULL;
  /* printed straight into the line: no copy; false when it would not fit */
  bool printed = built && cJSON_PrintPreallocated(obj, out, (int)room, false);
  cJSON_Delete(obj);
  *nomem = !built;
  return printed;
}

/* One JSON object a line; a line over the limit is built again with shorter strings (escaping
 * may make a string up to six times longer: a few rounds, each cutting harder, always end). */
static void format_json(line *l, const char *ts, pcc_log_level level, const char *msg,
                        const pcc_log_field *fields, size_t n)
{
  for (size_t max = PCC_LOG_LINE_MAX;; max /= 4) {
    bool nomem = false;
    if (json_line(ts, level, msg, fields, n, max, l->data, sizeof l->data - 1, &nomem)) {
      l->len = strlen(l->data);
      put_str(l, "\n");
      return;
    }
    if (nomem || max == 0) { /* out of memory, or keys alone too long: say so */
      l->len = 0;
      put_str(l, "{\"ts\":\"");
      put_str(l, ts);
      put_str(l, "\",\"level\":\"error\",\"msg\":\"a log line could not be written\"}\n");
      return;
    }
  }
}

/* ---- writing ------------------------------------------------------------------------------ */

/* Writes the line with one write(2) (the rest, if a regular file took part of it, in more);
 * counts it dropped when it cannot. */
static void emit(pcc_log *log, const line *l)
{
  pthread_rwlock_rdlock(&log->lock);
  size_t done = 0;
  while (done < l->len) {
    ssize_t n = write(log->fd, l->data + done, l->len - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      atomic_fetch_add(&log->dropped, 1);
      break;
    }
    done += (size_t)n;
  }
  pthread_rwlock_unlock(&log->lock);
}

bool pcc_log_enabled(const pcc_log *log, pcc_log_level level)
{
  return level <= log->level;
}

/* Formats and writes one line, whatever the destination's level. */
static void write_line(pcc_log *log, pcc_log_level level, const char *msg,
                       const pcc_log_field *fields, size_t n)
{
  /* one line a thread (8 KiB, not on the stacks of the HTTP threads); a line is written before
   * the next one is made, and nothing called here logs */
  static _Thread_local line buffer;
  line *l = &buffer;
  char ts[32];
  timestamp(ts);
  l->len = 0;
  l->cut = false;
  if (log->format == PCC_LOG_JSON)
    format_json(l, ts, level, msg ? msg : "", fields, n);
  else
    format_text(l, ts, level, msg ? msg : "", fields, n);
  emit(log, l);
}

void pcc_log_write(pcc_log *log, pcc_log_level level, const char *msg,
                   const pcc_log_field *fields, size_t n)
{
  if (log != NULL && pcc_log_enabled(log, level))
    write_line(log, level, msg, fields, n);
}

static int open_file(const char *path)
{
  return open(path, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC, 0640);
}

pcc_log_status pcc_log_open(const char *path, pcc_log_format format, pcc_log_level level,
                            pcc_log **out)
{
  pcc_log *log = calloc(1, sizeof *log);
  if (log == NULL)
    return PCC_LOG_NOMEM;
  log->format = format;
  log->level = level;
  log->fd = STDERR_FILENO;
  if (strcmp(path, "-") != 0) {
    log->path = strdup(path);
    if (log->path == NULL) {
      free(log);
      return PCC_LOG_NOMEM;
    }
    log->fd = open_file(path);
    if (log->fd < 0) {
      int err = errno;
      free(log->path);
      free(log);
      errno = err;
      return PCC_LOG_OPEN;
    }
    log->own_fd = true;
  }
  pthread_rwlock_init(&log->lock, NULL);
  *out = log;
  return PCC_LOG_OK;
}

pcc_log_status pcc_log_reopen(pcc_log *log)
{
  if (log == NULL || log->path == NULL)
    return PCC_LOG_OK;
  int fd = open_file(log->path);
  if (fd < 0)
    return PCC_LOG_OPEN;
  pthread_rwlock_wrlock(&log->lock); /* no line is being written to the old one */
  int old = log->fd;
  log->fd = fd;
  pthread_rwlock_unlock(&log->lock);
  close(old);
  return PCC_LOG_OK;
}

uint64_t pcc_log_dropped(const pcc_log *log)
{
  return log ? atomic_load(&((pcc_log *)log)->dropped) : 0;
}

void pcc_log_close(pcc_log *log)
{
  if (log == NULL || log == &default_log)
    return;
  if (log->own_fd)
    close(log->fd);
  pthread_rwlock_destroy(&log->lock);
  free(log->path);
  free(log);
}

/* ---- the main log ------------------------------------------------------------------------- */

void pcc_log_set_main(pcc_log *log)
{
  atomic_store(&main_log, log ? log : &default_log);
}

void pcc_logf(pcc_log_level level, const char *fmt, ...)
{
  pcc_log *log = atomic_load(&main_log);
  if (!pcc_log_enabled(log, level))
    return;
  char msg[LOG_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0)
    msg[0] = '\0';
  else if ((size_t)n >= sizeof msg) /* cut: the marker where the message ends */
    memcpy(msg + sizeof msg - 10, "...[cut]", 9);
  size_t len = strlen(msg);
  while (len > 0 && msg[len - 1] == '\n') /* the line ends there */
    msg[--len] = '\0';
  pcc_log_write(log, level, msg, NULL, 0);
}

void pcc_log_event(pcc_log_level level, const char *msg, const pcc_log_field *fields, size_t n)
{
  pcc_log_write(atomic_load(&main_log), level, msg, fields, n);
}

void pcc_log_audit(const char *action, const char *msg, const pcc_log_field *fields, size_t n)
{
  pcc_log_field all[PCC_LOG_AUDIT_FIELDS_MAX + 1];
  all[0] = PCC_LOG_STR("audit", action);
  if (n > PCC_LOG_AUDIT_FIELDS_MAX)
    n = PCC_LOG_AUDIT_FIELDS_MAX;
  memcpy(all + 1, fields, n * sizeof *fields);
  write_line(atomic_load(&main_log), PCC_LOG_INFO, msg, all, n + 1);
}
