/* ctl.h: what the files of pycachectl share (pycachectl.c: options, main and the basic
 * commands; ctl_admin.c: `admin`; ctl_warm.c: `warm`). Not installed. */
#ifndef PCC_CTL_H
#define PCC_CTL_H

#include <stdbool.h>
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

/* Set once a token is in the client: shapes the advice printed for a 401. */
extern bool ctl_token_sent;

/* Prints why a request failed (the server's error, or the local one) and returns the exit
 * status for it. */
int ctl_fail(pcc_client *client, pcc_client_status rc, const char *what);

/* Prints a JSON value as "key.sub[0].name  value" lines. */
void ctl_print_flat(const char *prefix, const cJSON *item, int depth);

/* `pycachectl admin SUB [ARG]` (ctl_admin.c); returns the exit status. */
int ctl_admin(pcc_client *client, const ctl_args *args, const char *sub, const char *arg);

/* `pycachectl warm DIR...` (ctl_warm.c); returns the exit status. */
int ctl_warm_run(pcc_client *client, const pcc_client_config *config, const ctl_args *args,
                 const char *const *dirs, int ndirs);

#endif
