/* pcc_log.h: pycached's log lines: levels, an RFC 3339 UTC timestamp with milliseconds, text or
 * JSON lines (docs/OPERATIONS.md, "Logs"). It lives in proto/ so that the store and the compiler
 * pool log without calling back into server/. A pcc_log is a destination (stderr or a file
 * opened O_APPEND, reopened on demand for logrotate); one of them is the main log, which
 * pcc_logf and pcc_log_event write to (stderr, text, info until pcc_log_set_main).
 *
 * Each line is formatted in memory and written with one write(2), so lines from several threads
 * never interleave; a line longer than PCC_LOG_LINE_MAX is cut and marked (text: "...[cut]";
 * JSON: its strings shortened, "truncated": true). Thread-safe. */
#ifndef PCC_LOG_H
#define PCC_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pcc_limits.h"

typedef struct pcc_log pcc_log;

typedef enum { PCC_LOG_ERROR, PCC_LOG_WARN, PCC_LOG_INFO, PCC_LOG_DEBUG } pcc_log_level;
typedef enum { PCC_LOG_TEXT, PCC_LOG_JSON } pcc_log_format;

typedef enum {
  PCC_LOG_OK = 0,
  PCC_LOG_BAD_LEVEL,  /* not error, warn, info or debug */
  PCC_LOG_BAD_FORMAT, /* not text or json */
  PCC_LOG_OPEN,       /* the file cannot be opened (errno says why) */
  PCC_LOG_NOMEM,
} pcc_log_status;

const char *pcc_log_strerror(pcc_log_status rc);

/* The names of levels and formats, both ways. The parsers return PCC_LOG_BAD_LEVEL or
 * PCC_LOG_BAD_FORMAT for any other text. */
const char *pcc_log_level_name(pcc_log_level level);
pcc_log_status pcc_log_level_parse(const char *text, pcc_log_level *out);
pcc_log_status pcc_log_format_parse(const char *text, pcc_log_format *out);

/* One field of a line: a key and a string (str non-NULL) or an integer, or a boolean (is_bool).
 * Build them with the macros. The strings are only read during the call. */
typedef struct {
  const char *key;
  const char *str;
  int64_t num;
  bool is_bool;
} pcc_log_field;
static inline pcc_log_field pcc_log_str(const char *key, const char *value)
{
  return (pcc_log_field){.key = key, .str = value != NULL ? value : ""};
}
#define PCC_LOG_STR(k, v) pcc_log_str((k), (v)) /* NULL: "" */
#define PCC_LOG_INT(k, v) ((pcc_log_field){.key = (k), .num = (int64_t)(v)})
#define PCC_LOG_BOOL(k, v) ((pcc_log_field){.key = (k), .num = (v) ? 1 : 0, .is_bool = true})

/* Opens a destination: path "-" is stderr (written as it is, never closed), anything else a
 * file created 0640 when missing and opened O_APPEND | O_NONBLOCK (a FIFO whose reader stops
 * reading loses lines, counted by pcc_log_dropped, instead of stalling the writers; a regular
 * file is written in full). Lines above level are left out. *out is the caller's
 * (pcc_log_close). On PCC_LOG_OPEN errno says why. */
pcc_log_status pcc_log_open(const char *path, pcc_log_format format, pcc_log_level level,
                            pcc_log **out);

/* Opens the path again (after logrotate renamed the file) and switches to it; the old file is
 * closed once no line is being written to it. On failure the old file stays in use. A no-op for
 * stderr. */
pcc_log_status pcc_log_reopen(pcc_log *log);

/* Lines that could not be written (a full pipe, a full disk) since open. */
uint64_t pcc_log_dropped(const pcc_log *log);

/* Would a line of level be written? */
bool pcc_log_enabled(const pcc_log *log, pcc_log_level level);

/* Writes one line: msg (any bytes: controls are escaped in text lines) and n fields. */
void pcc_log_write(pcc_log *log, pcc_log_level level, const char *msg,
                   const pcc_log_field *fields, size_t n);

/* Closes a destination that is not the main log any more (NULL is fine). */
void pcc_log_close(pcc_log *log);

/* The main log: log (NULL: back to the default, stderr, text, info). The caller keeps owning log
 * and must not close it while it is the main log. Call it before the threads that log start. */
void pcc_log_set_main(pcc_log *log);

/* To the main log: a line of level with the printf-formatted message, and a line with fields. */
void pcc_logf(pcc_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pcc_log_event(pcc_log_level level, const char *msg, const pcc_log_field *fields, size_t n);

/* An audit line (docs/OPERATIONS.md, "Audit lines"): to the main log at level info whatever its level,
 * with the field audit=action first, then the n fields (the first 16 of them). */
void pcc_log_audit(const char *action, const char *msg, const pcc_log_field *fields, size_t n);
#define PCC_LOG_AUDIT(action, msg, ...)                                                        \
  pcc_log_audit((action), (msg), (const pcc_log_field[]){__VA_ARGS__},                         \
                sizeof((const pcc_log_field[]){__VA_ARGS__}) / sizeof(pcc_log_field))

/* pcc_log_event with its fields listed in place: PCC_LOG_EVENT(PCC_LOG_INFO, "purge",
 * PCC_LOG_STR("audit", "purge"), PCC_LOG_INT("removed", n)). */
#define PCC_LOG_EVENT(level, msg, ...)                                                         \
  pcc_log_event((level), (msg), (const pcc_log_field[]){__VA_ARGS__},                          \
                sizeof((const pcc_log_field[]){__VA_ARGS__}) / sizeof(pcc_log_field))

#endif
