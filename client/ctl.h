/* ctl.h: what the files of pycachectl share. pycachectl.c holds main, the option table and the
 * command table; the commands' handlers live in ctl_basic.c (health, stats, get, compile, exec),
 * ctl_admin.c (admin ...) and ctl_warm.c (warm); what they all use is in ctl_common.c. Calls go
 * one way only: pycachectl.c -> the command files -> ctl_common.c. Not installed. */
#ifndef PCC_CTL_H
#define PCC_CTL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

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

/* Options that apply to some commands only; each command lists the ones it takes. A usage
 * error names the lowest bit given to a command that does not take it. */
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
  ARG_NAMESPACE = 1 << 13,
  ARG_ZERO = 1 << 14,
};

/* The options as given (pycachectl.c's option table fills them). */
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
  const char *ca_file;     /* --ca-file, else $PYCACHED_CA_FILE (main fills it in) */
  const char *client_cert; /* --client-cert, else $PYCACHED_CLIENT_CERT */
  const char *client_key;  /* --client-key, else $PYCACHED_CLIENT_KEY */
  const char *prefix;
  long limit; /* 0: the server's default */
  const char *cursor;
  const char *ns; /* admin ls, show, rm: --namespace ("" is the default one) */
  bool all;
  bool yes;
  const char *download;
  long jobs; /* warm --jobs; 0: the default */
  bool strict;
  bool zero;      /* stats --zero */
  bool help;      /* --help: the command's help (or all of it) instead of running it */
  unsigned given; /* ARG_* of the options given */
} ctl_args;

/* What a command's handler (and its check) gets from main. Nothing in it is owned by the
 * handler; it is valid while the handler runs. */
typedef struct {
  ctl_args args;
  const char *name;         /* the command's own name: "get", or "show" of `admin show` */
  const char *const *words; /* its argument words (FILE, PATH, MAGIC or the DIRs of warm) */
  int nwords;
  char **rest;              /* exec: the command line to run, NULL-terminated */
  pcc_client *client;       /* open for the handler of a command that makes requests */
  /* What client was opened with. The token in it is kept only for a command that opens more
   * clients from it (warm); NULL for the others. */
  const pcc_client_config *config;
  bool token_sent; /* a token is in the client: shapes the advice printed for a 401 */
} ctl;

/* ---- ctl_common.c: what every command uses --------------------------------------------- */

/* Prints "pycachectl: what[: arg]" and the hint to --help; returns EXIT_USAGE. */
int ctl_usage_error(const char *what, const char *arg);

/* Prints why a request of c->client failed (the server's error, or the local one) and returns
 * the exit status for it. */
int ctl_fail(const ctl *c, pcc_client_status rc, const char *what);

/* What to do about a 401: depends on whether a token was sent. Static text. */
const char *ctl_unauthorized_advice(bool token_sent);

/* Prints a JSON value as "key.sub[0].name  value" lines, at most PCC_CTL_JSON_DEPTH_MAX
 * levels deep. */
void ctl_print_flat(const char *prefix, const cJSON *item, int depth);

/* Writes len bytes to path atomically: a temporary file in the same directory, fsync, rename.
 * Returns 0 or an errno value. */
int ctl_write_atomic(const char *path, const uint8_t *data, size_t len);

/* The token to send: from --token-file, else from the environment (pcc_token_from_env); *out
 * (the caller's, for ctl_token_free) NULL when there is none. Returns EXIT_HIT, or prints the
 * problem and returns the exit code. */
int ctl_load_token(const ctl_args *args, char **out);

/* Wipes and frees a token of ctl_load_token. NULL is fine. */
void ctl_token_free(char *token);

/* ---- the commands: each returns the exit status --------------------------------------------
 * A check runs before the token is read and any request made, and refuses arguments the
 * command cannot use (EXIT_USAGE, printed); EXIT_HIT lets it run. */

/* ctl_basic.c */
int ctl_health(const ctl *c);
int ctl_stats(const ctl *c);
int ctl_get(const ctl *c);
int ctl_compile(const ctl *c);
/* exec: returns only on failure (127 when the command cannot be run, like env(1)). */
int ctl_exec(const ctl *c);

/* ctl_admin.c */
int ctl_admin_stats(const ctl *c);
int ctl_admin_magics(const ctl *c);
int ctl_admin_ls(const ctl *c);
int ctl_admin_profiles(const ctl *c);
int ctl_admin_profile(const ctl *c);
int ctl_admin_rm_profile(const ctl *c);
int ctl_admin_show(const ctl *c);
int ctl_admin_rm(const ctl *c);
int ctl_admin_invalidate(const ctl *c);
int ctl_admin_purge(const ctl *c);
int ctl_admin_retire(const ctl *c);
int ctl_admin_backup(const ctl *c);
int ctl_admin_check_ls(const ctl *c);
int ctl_admin_check_entry(const ctl *c); /* show and rm */
int ctl_admin_check_profile(const ctl *c); /* profile and rm-profile */
int ctl_admin_check_invalidate(const ctl *c);
int ctl_admin_check_retire(const ctl *c);
int ctl_admin_check_backup(const ctl *c);

/* ctl_warm.c: opens a client of its own for every upload thread from c->config. */
int ctl_warm_run(const ctl *c);

#endif
