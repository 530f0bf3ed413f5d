/* pycachectl.c: the command-line client of pycached (health, stats, get, compile, warm, exec,
 * and the admin API's commands under `admin`), built on libpycached (pycached.h). This file
 * holds main, the option table and the command table: parsing, --help, the checks every
 * command shares, and the call of the command's handler (ctl.h says where each lives). Usage,
 * options and exit codes are documented in docs/CLI.md and in --help.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"

#define CTL_NELEMS(a) (sizeof (a) / sizeof (a)[0])

/* ---- the option table ------------------------------------------------------------------ */

typedef struct ctl_option ctl_option;

/* Returned by an option's apply to go on parsing; anything else is the exit status of main. */
enum { CTL_NEXT = -1 };

/* One option: how --help shows it, how its value is applied to ctl_args and which ARG_* bit it
 * sets (0: an option every command takes). The generic apply functions work on the member at
 * `field`: ctl_set_text (a const char *; an empty value is refused with `bad` when it is set),
 * ctl_set_flag (a bool), ctl_set_number (a long within min..max). */
struct ctl_option {
  const char *name;
  char letter;     /* the short option, 0: none */
  const char *arg; /* the value's name in --help; NULL: the option takes none */
  const char *help;
  int (*apply)(const ctl_option *o, const char *value, ctl_args *args);
  size_t field;
  int64_t min, max;
  const char *bad; /* the usage error for a bad value (numbers: followed by the bounds) */
  unsigned bit;
};

static int ctl_set_text(const ctl_option *o, const char *value, ctl_args *args);
static int ctl_set_flag(const ctl_option *o, const char *value, ctl_args *args);
static int ctl_set_number(const ctl_option *o, const char *value, ctl_args *args);
static int ctl_set_levels(const ctl_option *o, const char *value, ctl_args *args);
static int ctl_set_magic(const ctl_option *o, const char *value, ctl_args *args);
static int ctl_show_version(const ctl_option *o, const char *value, ctl_args *args);

#define FIELD(member) offsetof(ctl_args, member)

static const ctl_option ctl_options[] = {
  {.name = "server", .letter = 's', .arg = "URL",
   .help = "server base URL: http://HOST:PORT, https://..., or unix:/PATH for a unix socket "
           "(default: $PYCACHED_URL, else " PCC_CLIENT_DEFAULT_URL ")",
   .apply = ctl_set_text, .field = FIELD(server)},
  {.name = "timeout", .letter = 't', .arg = "MS",
   .help = "total timeout per request in ms (default 60000)",
   .apply = ctl_set_number, .field = FIELD(timeout_ms), .min = 1, .max = PCC_CTL_TIMEOUT_MAX_MS,
   .bad = "--timeout wants milliseconds,"},
  {.name = "opt", .letter = 'O', .arg = "N",
   .help = "optimization level 0, 1 or 2 (get, compile, admin; default 0); warm: a list, e.g. "
           "0,1,2",
   .apply = ctl_set_levels, .bad = "--opt wants 0, 1 or 2 (warm: a list of them, e.g. 0,1,2)",
   .bit = ARG_OPT},
  {.name = "magic", .letter = 'm', .arg = "HEX",
   .help = "bytecode magic, 8 hex digits (get, compile, warm: default the server's; admin)",
   .apply = ctl_set_magic, .bad = "--magic wants 8 hex digits ending in 0d0a", .bit = ARG_MAGIC},
  {.name = "output", .letter = 'o', .arg = "OUT.pyc",
   .help = "write the pyc to OUT.pyc (atomically)",
   .apply = ctl_set_text, .field = FIELD(output), .bad = "--output wants a file name",
   .bit = ARG_OUTPUT},
  {.name = "json", .letter = 'j', .help = "print the server's JSON as is",
   .apply = ctl_set_flag, .field = FIELD(json), .bit = ARG_JSON},
  {.name = "no-hash",
   .help = "get: validate by mtime and size only (CPython's timestamp validation)",
   .apply = ctl_set_flag, .field = FIELD(no_hash), .bit = ARG_NO_HASH},
  {.name = "token-file", .arg = "FILE",
   .help = "read the access token from FILE (default: $PYCACHED_TOKEN, else "
           "$PYCACHED_TOKEN_FILE)",
   .apply = ctl_set_text, .field = FIELD(token_file), .bad = "--token-file wants a file name"},
  {.name = "ca-file", .arg = "FILE",
   .help = "https: verify the server against the PEM CAs in FILE (default: $PYCACHED_CA_FILE, "
           "else the system's CAs)",
   .apply = ctl_set_text, .field = FIELD(ca_file), .bad = "--ca-file wants a file name"},
  {.name = "client-cert", .arg = "FILE",
   .help = "https, mutual TLS: present the PEM client certificate in FILE (default: "
           "$PYCACHED_CLIENT_CERT)",
   .apply = ctl_set_text, .field = FIELD(client_cert), .bad = "--client-cert wants a file name"},
  {.name = "client-key", .arg = "FILE",
   .help = "the PEM private key of --client-cert (default: $PYCACHED_CLIENT_KEY; none: in the "
           "certificate's file)",
   .apply = ctl_set_text, .field = FIELD(client_key), .bad = "--client-key wants a file name"},
  {.name = "prefix", .arg = "P", .help = "admin ls, invalidate: paths starting with P",
   .apply = ctl_set_text, .field = FIELD(prefix), .bad = "--prefix wants a path prefix",
   .bit = ARG_PREFIX},
  {.name = "namespace", .arg = "NS",
   .help = "admin ls, show, rm, profiles, profile, rm-profile: of namespace NS (show, rm, "
           "profile, rm-profile: default \"\", the default)",
   .apply = ctl_set_text, .field = FIELD(ns), .bit = ARG_NAMESPACE},
  {.name = "limit", .arg = "N",
   .help = "admin ls, profiles: entries per page, 1..1000 (default 100)",
   .apply = ctl_set_number, .field = FIELD(limit), .min = 1, .max = PCC_LIST_LIMIT_MAX,
   .bad = "--limit wants", .bit = ARG_LIMIT},
  {.name = "cursor", .arg = "C",
   .help = "admin ls, profiles: the page to start at (a next_cursor)",
   .apply = ctl_set_text, .field = FIELD(cursor),
   .bad = "--cursor wants a next_cursor of an earlier page", .bit = ARG_CURSOR},
  {.name = "all", .help = "admin ls, profiles: follow next_cursor through every page",
   .apply = ctl_set_flag, .field = FIELD(all), .bit = ARG_ALL},
  {.name = "yes", .letter = 'y',
   .help = "admin rm, rm-profile, invalidate, purge, retire: do not ask to confirm",
   .apply = ctl_set_flag, .field = FIELD(yes), .bit = ARG_YES},
  {.name = "download", .arg = "FILE",
   .help = "admin backup: download the backup into FILE (atomically)",
   .apply = ctl_set_text, .field = FIELD(download), .bad = "--download wants a file name",
   .bit = ARG_DOWNLOAD},
  {.name = "jobs", .arg = "N",
   .help = "warm: upload threads, 1..64 (default 2 x the server's compiler workers, else 4)",
   .apply = ctl_set_number, .field = FIELD(jobs), .min = 1, .max = PCC_CTL_WARM_JOBS_MAX,
   .bad = "--jobs wants", .bit = ARG_JOBS},
  {.name = "strict", .help = "warm: exit 4 when a file does not compile or cannot be warmed",
   .apply = ctl_set_flag, .field = FIELD(strict), .bit = ARG_STRICT},
  {.name = "zero", .help = "stats: zero the server's counters first, like ccache -z (a token "
                           "with the admin role)",
   .apply = ctl_set_flag, .field = FIELD(zero), .bit = ARG_ZERO},
  {.name = "help", .letter = 'h',
   .help = "show the help (after a command: that command's) and exit",
   .apply = ctl_set_flag, .field = FIELD(help)},
  {.name = "version", .letter = 'V', .help = "show the version and exit",
   .apply = ctl_show_version},
};

/* ---- the command table ----------------------------------------------------------------- */

enum {
  CTL_LIST = -1, /* words: one or more (warm's DIRs), at most PCC_CTL_WARM_DIRS_MAX */
  CTL_REST = -2, /* words: the rest of the command line, options and all (exec's command) */
};

enum {
  CTL_DESTRUCTIVE = 1 << 0,  /* removes entries or profiles: asks first, and wants --yes off a
                                terminal */
  CTL_OPT_LIST = 1 << 1,     /* takes a list of levels in --opt */
  CTL_OFFLINE = 1 << 2,      /* makes no request: no client, no token read by main */
  CTL_MORE_CLIENTS = 1 << 3, /* opens clients of its own: the token stays in ctl.config */
  CTL_NO_WORDS_OK = 1 << 4,  /* a CTL_LIST command that may also be given no word */
};

/* A family of commands named by two words, such as `admin stats`. */
typedef struct {
  const char *name;
  const char *synopsis; /* its line of the usage summary */
  const char *heading;  /* the title of its commands in --help */
} ctl_group;

static const ctl_group ctl_groups[] = {
  {"admin", "[OPTIONS] admin SUBCOMMAND [ARG]",
   "Admin commands (a token with the admin role; /v1/admin/...):"},
};

/* One command. Its handler runs once main has checked the words and options against the row
 * (and check, when there is one, has accepted them), with the client open unless CTL_OFFLINE. */
typedef struct {
  const char *group; /* the ctl_groups name it is under, NULL for a command of its own */
  const char *name;
  const char *usage;    /* its name and words in --help */
  const char *synopsis; /* a line of its own in the usage summary, or NULL */
  const char *help;     /* a '\n' continues it on the next line */
  unsigned takes;       /* the ARG_* options that apply to it */
  int words;            /* the argument words it wants: a count, CTL_LIST or CTL_REST */
  const char *word;     /* what they are called in usage errors */
  unsigned flags;       /* CTL_* */
  const char *misuse;   /* the usage error for an option it does not take; NULL: name it */
  int (*check)(const ctl *c);
  int (*run)(const ctl *c);
} ctl_command;

static int ctl_help(const ctl *c);

static const ctl_command ctl_commands[] = {
  {.name = "health", .usage = "health", .help = "check that the server answers (GET /healthz)",
   .takes = ARG_JSON, .run = ctl_health},
  {.name = "stats", .usage = "stats [--zero]",
   .help = "show the server's counters (GET /v1/stats; --zero: POST\n"
           "/v1/admin/stats/zero first)",
   .takes = ARG_JSON | ARG_ZERO, .run = ctl_stats},
  {.name = "get", .usage = "get FILE", .help = "look up the cached code of FILE (GET /v1/code)",
   .takes = ARG_JSON | ARG_OUTPUT | ARG_NO_HASH | ARG_MAGIC | ARG_OPT, .words = 1,
   .word = "FILE", .run = ctl_get},
  {.name = "compile", .usage = "compile FILE",
   .help = "upload FILE and have it compiled and stored (POST /v1/compile)",
   .takes = ARG_JSON | ARG_OUTPUT | ARG_MAGIC | ARG_OPT, .words = 1, .word = "FILE",
   .run = ctl_compile},
  {.name = "warm", .usage = "warm DIR...",
   .help = "have every *.py file under the DIRs compiled and stored, like\n"
           "compileall for the whole fleet (POST /v1/compile, --jobs threads)",
   .takes = ARG_JSON | ARG_MAGIC | ARG_OPT | ARG_JOBS | ARG_STRICT, .words = CTL_LIST,
   .word = "DIR", .flags = CTL_OPT_LIST | CTL_MORE_CLIENTS, .run = ctl_warm_run},
  {.name = "exec", .usage = "exec COMMAND",
   .synopsis = "[--server URL] [--timeout MS] [--token-file FILE] [--ca-file FILE]\n"
               "                  [--client-cert FILE] [--client-key FILE] exec [--] COMMAND "
               "[ARG]...",
   .help = "run COMMAND with the import hook active in every CPython it starts",
   .words = CTL_REST, .word = "command", .flags = CTL_OFFLINE,
   .misuse = "exec takes --server, --timeout, --token-file, --ca-file, --client-cert and "
             "--client-key only", .run = ctl_exec},
  {.name = "help", .usage = "help [COMMAND]",
   .help = "show a command's usage and options (as COMMAND --help), or all",
   .words = CTL_LIST, .word = "COMMAND", .flags = CTL_OFFLINE | CTL_NO_WORDS_OK,
   .run = ctl_help},
  {.group = "admin", .name = "stats", .usage = "stats",
   .help = "totals, per-magic counters, latency percentiles, store usage", .takes = ARG_JSON,
   .run = ctl_admin_stats},
  {.group = "admin", .name = "magics", .usage = "magics",
   .help = "compiler backends and the magics in the store", .takes = ARG_JSON,
   .run = ctl_admin_magics},
  {.group = "admin", .name = "ls",
   .usage = "ls [--magic HEX] [--opt N] [--prefix P] [--namespace NS] [--limit N] [--cursor C] "
            "[--all]",
   .help = "list entries",
   .takes = ARG_JSON | ARG_MAGIC | ARG_OPT | ARG_PREFIX | ARG_NAMESPACE | ARG_LIMIT |
            ARG_CURSOR | ARG_ALL,
   .check = ctl_admin_check_ls, .run = ctl_admin_ls},
  {.group = "admin", .name = "show", .usage = "show --magic HEX [--opt N] [--namespace NS] PATH",
   .help = "one entry's fields", .takes = ARG_JSON | ARG_MAGIC | ARG_OPT | ARG_NAMESPACE,
   .words = 1,
   .word = "argument", .check = ctl_admin_check_entry, .run = ctl_admin_show},
  {.group = "admin", .name = "rm",
   .usage = "rm --magic HEX [--opt N] [--namespace NS] [--yes] PATH",
   .help = "remove one entry", .takes = ARG_JSON | ARG_MAGIC | ARG_OPT | ARG_NAMESPACE | ARG_YES,
   .words = 1,
   .word = "argument", .flags = CTL_DESTRUCTIVE, .check = ctl_admin_check_entry,
   .run = ctl_admin_rm},
  {.group = "admin", .name = "invalidate",
   .usage = "invalidate (--magic HEX | --prefix P | both) [--yes]",
   .help = "remove a magic's entries and/or those under a path prefix",
   .takes = ARG_JSON | ARG_MAGIC | ARG_PREFIX | ARG_YES, .flags = CTL_DESTRUCTIVE,
   .check = ctl_admin_check_invalidate, .run = ctl_admin_invalidate},
  {.group = "admin", .name = "purge", .usage = "purge [--yes]", .help = "remove every entry",
   .takes = ARG_JSON | ARG_YES, .flags = CTL_DESTRUCTIVE, .run = ctl_admin_purge},
  {.group = "admin", .name = "retire", .usage = "retire [--yes] MAGIC",
   .help = "remove the entries of a magic no backend serves", .takes = ARG_JSON | ARG_YES,
   .words = 1, .word = "argument", .flags = CTL_DESTRUCTIVE, .check = ctl_admin_check_retire,
   .run = ctl_admin_retire},
  {.group = "admin", .name = "profiles",
   .usage = "profiles [--magic HEX] [--opt N] [--namespace NS] [--limit N] [--cursor C] [--all]",
   .help = "list import profiles",
   .takes = ARG_JSON | ARG_MAGIC | ARG_OPT | ARG_NAMESPACE | ARG_LIMIT | ARG_CURSOR | ARG_ALL,
   .check = ctl_admin_check_ls, .run = ctl_admin_profiles},
  {.group = "admin", .name = "profile",
   .usage = "profile --magic HEX [--opt N] [--namespace NS] NAME",
   .help = "one import profile and its paths",
   .takes = ARG_JSON | ARG_MAGIC | ARG_OPT | ARG_NAMESPACE, .words = 1, .word = "NAME",
   .check = ctl_admin_check_profile, .run = ctl_admin_profile},
  {.group = "admin", .name = "rm-profile",
   .usage = "rm-profile --magic HEX [--opt N] [--namespace NS] [--yes] NAME",
   .help = "remove one import profile",
   .takes = ARG_JSON | ARG_MAGIC | ARG_OPT | ARG_NAMESPACE | ARG_YES, .words = 1, .word = "NAME",
   .flags = CTL_DESTRUCTIVE, .check = ctl_admin_check_profile, .run = ctl_admin_rm_profile},
  {.group = "admin", .name = "backup", .usage = "backup [--download FILE]",
   .help = "have the server write a backup (or download one into FILE)",
   .takes = ARG_JSON | ARG_DOWNLOAD, .check = ctl_admin_check_backup, .run = ctl_admin_backup},
};

/* The words that name a command and its fixed words: a group, a name and one word at most. */
#define CTL_WORDS_MAX 3

/* ---- --help ---------------------------------------------------------------------------- */

/* Prints text, going on after each '\n' at column indent. */
static void ctl_print_indented(FILE *out, const char *text, int indent)
{
  for (;;) {
    const char *nl = strchr(text, '\n');
    if (nl == NULL) {
      fprintf(out, "%s\n", text);
      return;
    }
    fprintf(out, "%.*s\n%*s", (int)(nl - text), text, indent, "");
    text = nl + 1;
  }
}

/* One option's line of --help. */
static void ctl_print_option(FILE *out, const ctl_option *o)
{
  char left[64];
  if (o->letter)
    snprintf(left, sizeof left, "-%c, --%s%s%s", o->letter, o->name, o->arg ? " " : "",
             o->arg ? o->arg : "");
  else
    snprintf(left, sizeof left, "    --%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
  fprintf(out, "  %-26s %s\n", left, o->help);
}

/* The commands of a group, as --help lists them. */
static void ctl_print_group(FILE *out, const ctl_group *group)
{
  fprintf(out, "%s\n", group->heading);
  for (size_t i = 0; i < CTL_NELEMS(ctl_commands); i++) {
    const ctl_command *cmd = &ctl_commands[i];
    if (cmd->group != NULL && strcmp(cmd->group, group->name) == 0)
      fprintf(out, "  %s %s\n      %s%s\n", cmd->group, cmd->usage, cmd->help,
              cmd->flags & CTL_DESTRUCTIVE ? " (asks first; --yes off a terminal)" : "");
  }
}

/* One command's help, from its row and the option table: its usage, what it does, the options
 * it takes (the rows whose bit it lists) and those every command takes. */
static void ctl_command_usage(FILE *out, const ctl_command *cmd)
{
  fprintf(out, "usage: pycachectl [OPTIONS] %s%s%s\n", cmd->group ? cmd->group : "",
          cmd->group ? " " : "", cmd->usage);
  if (cmd->synopsis != NULL)
    fprintf(out, "       pycachectl %s\n", cmd->synopsis);
  fprintf(out, "\n");
  ctl_print_indented(out, cmd->help, 0);
  if (cmd->flags & CTL_DESTRUCTIVE)
    fprintf(out, "It asks to confirm first; off a terminal it wants --yes.\n");
  if (cmd->takes != 0) {
    fprintf(out, "\nOptions:\n");
    for (size_t i = 0; i < CTL_NELEMS(ctl_options); i++)
      if (ctl_options[i].bit & cmd->takes)
        ctl_print_option(out, &ctl_options[i]);
  }
  fprintf(out, "\nOptions of every command:\n");
  for (size_t i = 0; i < CTL_NELEMS(ctl_options); i++)
    if (ctl_options[i].bit == 0)
      ctl_print_option(out, &ctl_options[i]);
  fprintf(out, "\nExit status and the environment: pycachectl --help; docs/CLI.md.\n");
}

static void ctl_usage(FILE *out)
{
  const char *sep = "";
  fprintf(out, "usage: pycachectl [OPTIONS] ");
  for (size_t i = 0; i < CTL_NELEMS(ctl_commands); i++) {
    if (ctl_commands[i].group == NULL && ctl_commands[i].synopsis == NULL) {
      fprintf(out, "%s%s", sep, ctl_commands[i].usage);
      sep = " | ";
    }
  }
  fprintf(out, "\n");
  for (size_t g = 0; g < CTL_NELEMS(ctl_groups); g++)
    fprintf(out, "       pycachectl %s\n", ctl_groups[g].synopsis);
  for (size_t i = 0; i < CTL_NELEMS(ctl_commands); i++)
    if (ctl_commands[i].synopsis != NULL)
      fprintf(out, "       pycachectl %s\n", ctl_commands[i].synopsis);

  fprintf(out, "\nCommands:\n");
  for (size_t i = 0; i < CTL_NELEMS(ctl_commands); i++) {
    if (ctl_commands[i].group == NULL) {
      fprintf(out, "  %-15s ", ctl_commands[i].usage);
      ctl_print_indented(out, ctl_commands[i].help, 18);
    }
  }
  for (size_t g = 0; g < CTL_NELEMS(ctl_groups); g++) {
    fprintf(out, "\n");
    ctl_print_group(out, &ctl_groups[g]);
  }

  fprintf(out, "\nOptions (COMMAND --help: those of COMMAND):\n");
  for (size_t i = 0; i < CTL_NELEMS(ctl_options); i++)
    ctl_print_option(out, &ctl_options[i]);
  fprintf(out,
          "\n"
          "Environment:\n"
          "  PYCACHED_URL         server base URL when --server is not given\n"
          "  PYCACHED_TOKEN       the access token, when --token-file is not given\n"
          "  PYCACHED_TOKEN_FILE  a file holding the token, when neither of the above is set\n"
          "  PYCACHED_CA_FILE, PYCACHED_CLIENT_CERT, PYCACHED_CLIENT_KEY\n"
          "                       the TLS files when --ca-file, --client-cert, --client-key are\n"
          "                       not given (https only)\n"
          "\n"
          "Exit status:\n"
          "  0  success (get: a hit; warm: every file done, compile errors and failures listed)\n"
          "  1  miss (get: nothing valid is cached for FILE; admin show/rm: no such entry;\n"
          "     admin: removal not confirmed)\n"
          "  2  usage error (also: an invalid token, or a removal without --yes off a terminal)\n"
          "  3  cannot reach the server, timeout, or a malformed response\n"
          "  4  FILE does not compile (the error is printed like Python prints it); "
          "warm --strict:\n"
          "     a file did not compile or could not be warmed\n"
          "  5  local file error (FILE or the token file unreadable or too big, OUT.pyc or the\n"
          "     download not writable; warm: a DIR missing, or a directory or file in the trees\n"
          "     unreadable, or the trees over the walk's limits)\n"
          "  6  any other error the server reported (its error code and message are printed)\n"
          "  7  refused by access control: no or unknown token (401), or the token lacks the\n"
          "     role needed (403)\n"
          "  exec: COMMAND's own exit status; 127 when COMMAND cannot be run\n");
}

/* ---- applying options ------------------------------------------------------------------ */

static int ctl_set_text(const ctl_option *o, const char *value, ctl_args *args)
{
  if (o->bad && value[0] == '\0')
    return ctl_usage_error(o->bad, NULL);
  *(const char **)((char *)args + o->field) = value;
  return CTL_NEXT;
}

static int ctl_set_flag(const ctl_option *o, const char *value, ctl_args *args)
{
  (void)value;
  *(bool *)((char *)args + o->field) = true;
  return CTL_NEXT;
}

static int ctl_set_number(const ctl_option *o, const char *value, ctl_args *args)
{
  int64_t n = 0;
  if (pcc_parse_i64(value, o->min, o->max, &n) != PCC_PROTO_OK) {
    char what[96];
    snprintf(what, sizeof what, "%s %" PRId64 "..%" PRId64, o->bad, o->min, o->max);
    return ctl_usage_error(what, value);
  }
  *(long *)((char *)args + o->field) = (long)n;
  return CTL_NEXT;
}

/* --opt: one level, or a comma list of distinct levels ("0,1,2", for warm). Sets bit L of
 * opt_levels for each level L, opt_list when there is a comma, and opt to the lowest level
 * (the only one but for warm). */
static int ctl_set_levels(const ctl_option *o, const char *value, ctl_args *args)
{
  unsigned mask = 0;
  for (const char *p = value;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    char part[8];
    int64_t level;
    if (len == 0 || len >= sizeof part)
      return ctl_usage_error(o->bad, value);
    memcpy(part, p, len);
    part[len] = '\0';
    if (pcc_parse_i64(part, 0, PCC_OPT_MAX, &level) != PCC_PROTO_OK || (mask & (1u << level)))
      return ctl_usage_error(o->bad, value);
    mask |= 1u << level;
    if (comma == NULL)
      break;
    p = comma + 1;
  }
  args->opt_levels = mask;
  args->opt_list = strchr(value, ',') != NULL;
  for (args->opt = 0; !(mask & (1u << args->opt)); args->opt++) {
  }
  return CTL_NEXT;
}

static int ctl_set_magic(const ctl_option *o, const char *value, ctl_args *args)
{
  if (pcc_magic_from_hex(value, &args->magic) != PCC_PROTO_OK)
    return ctl_usage_error(o->bad, value);
  args->have_magic = true;
  return CTL_NEXT;
}


static int ctl_show_version(const ctl_option *o, const char *value, ctl_args *args)
{
  (void)o, (void)value, (void)args;
  printf("pycachectl %s\n", PCC_VERSION);
  return EXIT_HIT;
}

/* ---- finding and checking the command -------------------------------------------------- */

/* The command the words name exactly (its name, after its group's), or NULL. */
static const ctl_command *ctl_command_named(const char *const *words, int nwords)
{
  for (size_t i = 0; i < CTL_NELEMS(ctl_commands); i++) {
    const ctl_command *cmd = &ctl_commands[i];
    if (cmd->group == NULL ? nwords == 1 && strcmp(cmd->name, words[0]) == 0
                           : nwords == 2 && strcmp(cmd->group, words[0]) == 0 &&
                                 strcmp(cmd->name, words[1]) == 0)
      return cmd;
  }
  return NULL;
}

static const ctl_group *ctl_group_named(const char *name)
{
  for (size_t g = 0; g < CTL_NELEMS(ctl_groups); g++)
    if (strcmp(ctl_groups[g].name, name) == 0)
      return &ctl_groups[g];
  return NULL;
}

/* A usage error for the first word(s) when they name no command. */
static int ctl_unknown_command(const char *const *words, int nwords)
{
  const ctl_group *group = ctl_group_named(words[0]);
  if (group == NULL)
    return ctl_usage_error("unknown command", words[0]);
  if (nwords >= 2) {
    char what[64];
    snprintf(what, sizeof what, "unknown %s subcommand", group->name);
    return ctl_usage_error(what, words[1]);
  }
  char what[256];
  int len = snprintf(what, sizeof what, "%s wants a subcommand (", group->name);
  const char *sep = "";
  for (size_t i = 0; i < CTL_NELEMS(ctl_commands) && len > 0 && (size_t)len < sizeof what; i++) {
    if (ctl_commands[i].group != NULL && strcmp(ctl_commands[i].group, group->name) == 0) {
      len += snprintf(what + len, sizeof what - (size_t)len, "%s%s", sep, ctl_commands[i].name);
      sep = ", ";
    }
  }
  if (len > 0 && (size_t)len < sizeof what)
    snprintf(what + len, sizeof what - (size_t)len, ")");
  return ctl_usage_error(what, NULL);
}

/* Refuses what the row says cmd does not take: the wrong number of words, an option that does
 * not apply, a list of levels; then its own check and, for a destructive command off a
 * terminal, the missing --yes. EXIT_HIT when it may run. */
static int ctl_check(const ctl_command *cmd, const ctl *c, const char *last_word)
{
  char full[64], text[192]; /* full: "get", "admin show" */
  snprintf(full, sizeof full, "%s%s%s", cmd->group ? cmd->group : "", cmd->group ? " " : "",
           cmd->name);
  if (cmd->words == CTL_LIST && c->nwords == 0 && !(cmd->flags & CTL_NO_WORDS_OK)) {
    snprintf(text, sizeof text, "%s wants at least one %s", cmd->name, cmd->word);
    return ctl_usage_error(text, NULL);
  }
  if (cmd->words == CTL_REST && c->rest[0] == NULL) {
    snprintf(text, sizeof text, "%s wants a %s", cmd->name, cmd->word);
    return ctl_usage_error(text, NULL);
  }
  if (cmd->words >= 0 && c->nwords < cmd->words) {
    snprintf(text, sizeof text, "missing %s", cmd->word);
    return ctl_usage_error(text, cmd->name);
  }
  if (cmd->words >= 0 && c->nwords > cmd->words)
    return ctl_usage_error("too many arguments", last_word);
  unsigned wrong = c->args.given & ~cmd->takes;
  if (wrong != 0 && cmd->misuse != NULL)
    return ctl_usage_error(cmd->misuse, NULL);
  for (size_t i = 0; wrong != 0 && i < CTL_NELEMS(ctl_options); i++) {
    if (ctl_options[i].bit == (wrong & -wrong)) { /* the lowest bit */
      snprintf(text, sizeof text, "--%s does not apply to %s", ctl_options[i].name, full);
      return ctl_usage_error(text, NULL);
    }
  }
  if (c->args.opt_list && !(cmd->flags & CTL_OPT_LIST))
    return ctl_usage_error("--opt wants one level, 0, 1 or 2 (a list is for warm)", NULL);
  int code = cmd->check ? cmd->check(c) : EXIT_HIT;
  if (code != EXIT_HIT)
    return code;
  /* refuse before any request: a script must say --yes, a person gets asked */
  if ((cmd->flags & CTL_DESTRUCTIVE) && !c->args.yes && !isatty(STDIN_FILENO)) {
    snprintf(text, sizeof text, "%s removes from the store and stdin is not a terminal to ask "
                                "on: pass --yes to confirm", full);
    return ctl_usage_error(text, NULL);
  }
  return EXIT_HIT;
}

/* ---- help ------------------------------------------------------------------------------ */

/* The help the words ask for: a command's, a group's, or (no word) all of it. EXIT_HIT, or the
 * usage error of words that name nothing. */
static int ctl_help_for(const char *const *words, int nwords)
{
  if (nwords == 0) {
    ctl_usage(stdout);
    return EXIT_HIT;
  }
  const ctl_command *cmd = ctl_command_named(words, nwords);
  if (cmd != NULL) {
    ctl_command_usage(stdout, cmd);
    return EXIT_HIT;
  }
  const ctl_group *group = ctl_group_named(words[0]);
  if (group != NULL && nwords == 1) {
    printf("usage: pycachectl %s\n\n", group->synopsis);
    ctl_print_group(stdout, group);
    printf("\npycachectl %s SUBCOMMAND --help: that subcommand's options.\n", group->name);
    return EXIT_HIT;
  }
  return ctl_unknown_command(words, nwords);
}

/* help [COMMAND...]: as COMMAND --help. */
static int ctl_help(const ctl *c)
{
  return ctl_help_for(c->words, c->nwords);
}

/* ---- main ------------------------------------------------------------------------------ */

/* Is a TLS file set (by option or environment)? */
static bool ctl_tls_given(const ctl_args *args)
{
  return args->ca_file != NULL || args->client_cert != NULL || args->client_key != NULL;
}

/* An option's value, else its environment variable's when that is set and not empty. */
static const char *ctl_or_env(const char *given, const char *variable)
{
  const char *value = given != NULL ? given : getenv(variable);
  return value != NULL && value[0] != '\0' ? value : NULL;
}

/* Opens the client, runs the command's handler and closes the client; returns the exit status. */
static int ctl_run(const ctl_command *cmd, ctl *c)
{
  if (c->args.server == NULL)
    c->args.server = getenv("PYCACHED_URL");
  if (c->args.server == NULL || c->args.server[0] == '\0')
    c->args.server = PCC_CLIENT_DEFAULT_URL;
  c->args.ca_file = ctl_or_env(c->args.ca_file, "PYCACHED_CA_FILE");
  c->args.client_cert = ctl_or_env(c->args.client_cert, "PYCACHED_CLIENT_CERT");
  c->args.client_key = ctl_or_env(c->args.client_key, "PYCACHED_CLIENT_KEY");
  char *token = NULL;
  int code = ctl_load_token(&c->args, &token);
  if (code != EXIT_HIT)
    return code;
  long timeout = c->args.timeout_ms;
  bool https = strncmp(c->args.server, "https://", 8) == 0;
  pcc_client_config config = {
    .base_url = c->args.server,
    .token = token,
    .timeout_ms = timeout,
    .connect_timeout_ms = timeout && timeout < PCC_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS ? timeout : 0,
    .ca_file = c->args.ca_file,
    .client_cert = c->args.client_cert,
    .client_key = c->args.client_key,
  };
  pcc_client_status rc = pcc_client_open(&config, &c->client);
  c->token_sent = token != NULL;
  c->config = &config;
  if (rc != PCC_CLIENT_OK || !(cmd->flags & CTL_MORE_CLIENTS)) { /* the client has a copy */
    ctl_token_free(token);
    token = NULL;
    config.token = NULL;
  }
  if (rc == PCC_CLIENT_INVALID && ctl_tls_given(&c->args) && !https)
    return ctl_usage_error("--ca-file, --client-cert and --client-key (or their PYCACHED_* "
                           "variables) are for an https:// server, not", c->args.server);
  if (rc == PCC_CLIENT_INVALID && c->args.client_key && !c->args.client_cert)
    return ctl_usage_error("--client-key (or PYCACHED_CLIENT_KEY) needs --client-cert", NULL);
  if (rc == PCC_CLIENT_INVALID)
    return ctl_usage_error("invalid server URL (http://HOST:PORT, https://... or unix:/PATH)", c->args.server);
  if (rc == PCC_CLIENT_IO) {
    int why = errno;
    const char *files[] = {c->args.ca_file, c->args.client_cert, c->args.client_key};
    for (size_t i = 0; i < CTL_NELEMS(files); i++)
      if (files[i] != NULL && access(files[i], R_OK) != 0) {
        fprintf(stderr, "pycachectl: TLS file %s: %s\n", files[i], strerror(errno));
        return EXIT_LOCAL;
      }
    fprintf(stderr, "pycachectl: a TLS file: %s\n", strerror(why));
    return EXIT_LOCAL;
  }
  if (rc != PCC_CLIENT_OK) {
    fprintf(stderr, "pycachectl: %s\n", pcc_client_strerror(rc));
    return EXIT_LOCAL;
  }
  code = cmd->run(c);
  ctl_token_free(token);
  pcc_client_close(c->client);
  if (fflush(stdout) != 0 && code == EXIT_HIT)
    code = EXIT_LOCAL;
  return code;
}

int main(int argc, char **argv)
{
  struct option longopts[CTL_NELEMS(ctl_options) + 1];
  char shortopts[2 * CTL_NELEMS(ctl_options) + 3];
  size_t s = 0;
  shortopts[s++] = '+'; /* stop at the command */
  shortopts[s++] = ':'; /* report a missing argument as ':' */
  for (size_t i = 0; i < CTL_NELEMS(ctl_options); i++) {
    const ctl_option *o = &ctl_options[i];
    longopts[i] = (struct option){o->name, o->arg ? required_argument : no_argument, NULL,
                                  o->letter ? o->letter : 256 + (int)i};
    if (o->letter) {
      shortopts[s++] = o->letter;
      if (o->arg)
        shortopts[s++] = ':';
    }
  }
  shortopts[s] = '\0';
  longopts[CTL_NELEMS(ctl_options)] = (struct option){NULL, 0, NULL, 0};

  ctl c = {.args = {.timeout_ms = 0}};
  opterr = 0;
  /* options may come before or after the command: parse, take the command words, repeat */
  const char *words[CTL_WORDS_MAX];
  int nwords = 0;
  const char *list[PCC_CTL_WARM_DIRS_MAX]; /* the words of a CTL_LIST command */
  int nlist = 0;
  const ctl_command *cmd = NULL; /* once the words name one */
  while (optind < argc) {
    int opt = getopt_long(argc, argv, shortopts, longopts, NULL);
    if (opt == -1) {
      if (optind >= argc)
        continue;
      if (cmd != NULL && cmd->words == CTL_LIST) {
        if (nlist == (int)CTL_NELEMS(list)) {
          char what[64];
          snprintf(what, sizeof what, "%s takes at most %d %ss", cmd->name, nlist, cmd->word);
          return ctl_usage_error(what, argv[optind]);
        }
        list[nlist++] = argv[optind++];
        continue;
      }
      if (nwords == CTL_WORDS_MAX)
        return ctl_usage_error("too many arguments", argv[optind]);
      words[nwords++] = argv[optind++];
      if (cmd == NULL)
        cmd = ctl_command_named(words, nwords);
      if (cmd != NULL && cmd->words == CTL_REST)
        break; /* the rest is the command to run, options and all */
      continue;
    }
    const ctl_option *o = NULL;
    for (size_t i = 0; o == NULL && i < CTL_NELEMS(ctl_options); i++)
      if (opt == (ctl_options[i].letter ? ctl_options[i].letter : 256 + (int)i))
        o = &ctl_options[i];
    if (o != NULL) {
      int code = o->apply(o, optarg, &c.args);
      if (code != CTL_NEXT)
        return code;
      c.args.given |= o->bit;
    } else if (opt == ':') {
      return ctl_usage_error("option needs an argument", argv[optind - 1]);
    } else if (optopt > 0 && optopt < 256) {
      char name[3] = {'-', (char)optopt, '\0'};
      return ctl_usage_error("unknown option", name);
    } else {
      return ctl_usage_error("unknown option", argv[optind - 1]);
    }
  }
  if (cmd != NULL && cmd->words == CTL_REST && optind < argc &&
      (strcmp(argv[optind], "--help") == 0 || strcmp(argv[optind], "-h") == 0))
    c.args.help = true; /* exec --help; exec -- --help runs a command named --help */
  if (c.args.help) /* the help of what the words name, whatever else is given */
    return ctl_help_for(words, cmd != NULL ? (cmd->group ? 2 : 1) : nwords);
  if (nwords == 0)
    return ctl_usage_error("no command given (health, stats, get FILE, compile FILE, admin ...)",
                           NULL);
  if (cmd == NULL)
    return ctl_unknown_command(words, nwords);

  int named = cmd->group ? 2 : 1; /* the words that name the command */
  c.name = cmd->name;
  c.words = cmd->words == CTL_LIST ? list : words + named;
  c.nwords = cmd->words == CTL_LIST ? nlist : nwords - named;
  if (cmd->words == CTL_REST) {
    if (optind < argc && strcmp(argv[optind], "--") == 0)
      optind++;
    c.rest = argv + optind;
  }
  int code = ctl_check(cmd, &c, words[nwords - 1]);
  if (code != EXIT_HIT)
    return code;
  if (cmd->flags & CTL_OFFLINE)
    return cmd->run(&c);
  return ctl_run(cmd, &c);
}
