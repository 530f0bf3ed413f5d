/* config.c: the option table of pycached (name, default, bounds, help) and its parser: the
 * command line, the --config file and the PYCACHED_* environment variables, all from the one
 * table (config.h; docs/OPERATIONS.md, "Configuration"). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "config.h"
#include "proto.h"
#include "shared.h"
#include "upstream.h"

/* OPT_CHOICE: a string that is one of the '|'-separated words of the row's arg. */
typedef enum { OPT_STRING, OPT_CHOICE, OPT_NUMBER, OPT_BYTES, OPT_LIST, OPT_FLAG } option_kind;

/* Where an option may not be set (every option may be set on the command line). --config is
 * not in the file (no includes); --verify-store is an action, not a setting: a variable left
 * in a shell's environment would turn every start of the server into a check and an exit. */
enum { NOT_IN_FILE = 1, NOT_IN_ENV = 2 };

typedef struct {
  const char *name;    /* the long option; the file's key; PYCACHED_NAME in the environment */
  option_kind kind;
  const char *arg;     /* the argument's name in --help; OPT_CHOICE: the choices */
  const char *def;     /* default of a string option, as text; NULL: none */
  uint64_t number;     /* default of a number or byte size (from pcc_limits.h where it is one) */
  uint64_t min, max;   /* for numbers and byte sizes; for lists, max is the capacity */
  size_t offset;       /* field in pcc_config */
  const char *help;
  size_t count_offset; /* lists: the unsigned count field */
  unsigned not_in;     /* NOT_IN_FILE, NOT_IN_ENV */
} option_spec;

#define FIELD(f) offsetof(pcc_config, f)
#define KIB 1024ull
#define MIB (1024ull * KIB)
#define GIB (1024ull * MIB)
#define TIB (1024ull * GIB)
#define MAP_SIZE_MAX TIB
#define MAP_SIZE_FLOOR (4 * GIB) /* the least default --map-size */
#define MAP_MARGIN (64 * MIB)    /* ... else 1.5 x --max-size and this */

static const option_spec options[] = {
  {"config", OPT_STRING, "FILE", NULL, 0, 0, 0, FIELD(config_file),
   "read options from FILE (KEY = VALUE lines; see below)", 0, NOT_IN_FILE},
  {"listen", OPT_STRING, "ADDRESS[,ADDRESS]", "127.0.0.1", 0, 0, 0, FIELD(listen_arg),
   "address to listen on: IPv4, host name (its first IPv4 address, else its first IPv6 one) "
   "or [IPv6], each with an optional :PORT; or unix:PATH, a unix socket at the absolute PATH; "
   "or one of each, e.g. unix:/run/pycached/pycached.sock,127.0.0.1:8700",
   0, 0},
  {"socket-mode", OPT_STRING, "MODE", "0660", 0, 0, 0, FIELD(socket_mode_arg),
   "permissions of the --listen unix:PATH socket, octal (connecting takes write permission)",
   0, 0},
  {"socket-group", OPT_STRING, "GROUP", NULL, 0, 0, 0, FIELD(socket_group),
   "group (name or number) of the --listen unix:PATH socket; its owner is the server's user",
   0, 0},
  {"port", OPT_NUMBER, "N", NULL, 8700, 0, 65535, FIELD(port),
   "TCP port (0: any free port, printed at start), unless --listen names one", 0, 0},
  {"store", OPT_STRING, "DIR", "./var/pycached", 0, 0, 0, FIELD(store_dir),
   "LMDB store directory (created when missing)", 0, 0},
  {"map-size", OPT_BYTES, "BYTES", NULL, 0, 1 * MIB, MAP_SIZE_MAX, FIELD(map_size),
   "LMDB map: the most the store's file may grow to (sparse) [the larger of 4G and 1.5 x "
   "--max-size + 64M]", 0, 0},
  {"max-size", OPT_BYTES, "BYTES", NULL, PCC_STORE_MAX_SIZE_DEFAULT, 64 * KIB, MAP_SIZE_MAX,
   FIELD(max_size),
   "payload bytes kept before the least recently used code is evicted (with --map-size "
   "alone: 2/3 of it, at most 3G)", 0, 0},
  {"store-compression", OPT_CHOICE, "none|zstd", "none", 0, 0, 0, FIELD(store_compression),
   "code blobs stored from now on: as they are, or compressed with zstd where that saves 10 % "
   "(both kinds are read whatever this says)", 0, 0},
  {"max-profiles", OPT_NUMBER, "N", NULL, PCC_PROFILES_MAX_DEFAULT, 1, 10000000,
   FIELD(max_profiles), "import profiles kept (a new one replaces the least recently updated)",
   0, 0},
  {"profile-days", OPT_NUMBER, "DAYS", NULL, PCC_PROFILE_DAYS_DEFAULT, 0, 36500,
   FIELD(profile_days), "a profile not updated for this long is dropped (0: never)", 0, 0},
  {"workers", OPT_NUMBER, "N", NULL, 0, 0, PCC_WORKERS_MAX, FIELD(workers),
   "compiler worker processes (0: one per core)", 0, 0},
  {"compile-timeout", OPT_NUMBER, "SECONDS", NULL, 10, 1, 3600, FIELD(compile_timeout),
   "a compile running longer is killed (504)", 0, 0},
  {"timeout-memory", OPT_NUMBER, "SECONDS", NULL, PCC_TIMEOUT_MEMORY_DEFAULT, 0, 86400,
   FIELD(timeout_memory),
   "a source whose compile timed out is answered 504 at once for this long (0: off)", 0, 0},
  {"worker-memory", OPT_BYTES, "BYTES", NULL, 1 * GIB, 64 * MIB, 1ull << 40,
   FIELD(worker_memory),
   "address-space limit of each compiler worker", 0, 0},
  {"max-source", OPT_BYTES, "BYTES", NULL, PCC_SOURCE_MAX_DEFAULT, 1, PCC_SOURCE_MAX_CEILING,
   FIELD(max_source),
   "largest source accepted (413 beyond)", 0, 0},
  {"threads", OPT_NUMBER, "N", NULL, 4, 1, 256, FIELD(threads), "HTTP threads (poll thread pool)",
   0, 0},
  {"max-connections", OPT_NUMBER, "N", NULL, PCC_CONNECTIONS_DEFAULT, 1, 65536,
   FIELD(max_connections),
   "concurrent HTTP connections (past it the longest idle goes, else 503 busy)", 0, 0},
  {"max-connections-per-ip", OPT_NUMBER, "N", NULL, PCC_CONNECTIONS_PER_IP_DEFAULT, 0, 65536,
   FIELD(max_connections_per_ip),
   "concurrent HTTP connections from one client address (0: no limit)", 0, 0},
  {"header-timeout", OPT_NUMBER, "SECONDS", NULL, PCC_HEADER_TIMEOUT_DEFAULT, 1, 3600,
   FIELD(header_timeout),
   "a request whose request line and headers take longer in all is cut off", 0, 0},
  {"body-timeout", OPT_NUMBER, "SECONDS", NULL, PCC_BODY_TIMEOUT_DEFAULT, 1, 86400,
   FIELD(body_timeout), "a request whose body takes longer in all is cut off", 0, 0},
  {"idle-timeout", OPT_NUMBER, "SECONDS", NULL, PCC_IDLE_TIMEOUT_DEFAULT, 1, 86400,
   FIELD(idle_timeout), "a kept-alive connection without a new request for this long is closed",
   0, 0},
  {"worker", OPT_STRING, "PATH", NULL, 0, 0, 0, FIELD(worker),
   "compiler worker executable (default: pycached-cpython-worker next to pycached)", 0, 0},
  {"worker-user", OPT_STRING, "USER", NULL, 0, 0, 0, FIELD(worker_user),
   "user the compiler workers run as (default when started as root: a uid of their own)", 0, 0},
  {"worker-recycle", OPT_NUMBER, "N", NULL, PCC_WORKER_COMPILES_DEFAULT, 1, 1000000000,
   FIELD(worker_recycle), "compiles after which a compiler worker is replaced by a fresh one", 0,
   0},
  {"worker-rss", OPT_BYTES, "BYTES", NULL, PCC_WORKER_RSS_DEFAULT, 0, 1ull << 40,
   FIELD(worker_rss),
   "a compiler worker whose anonymous resident memory passes this after a compile is replaced "
   "by a fresh one (0: never)", 0, 0},
  {"source-root", OPT_LIST, "DIR", NULL, 0, 0, PCC_MAX_SOURCE_ROOTS, FIELD(source_roots),
   "directory whose files the server may read itself (repeatable)", FIELD(n_source_roots), 0},
  {"compiler", OPT_LIST, "PATH", NULL, 0, 0, PCC_MAX_COMPILERS, FIELD(compilers),
   "another interpreter to compile for (e.g. /usr/bin/pypy3; repeatable)", FIELD(n_compilers), 0},
  {"no-embedded", OPT_FLAG, "", NULL, 0, 0, 0, FIELD(no_embedded),
   "no backend for the embedded CPython: only the --compiler interpreters (at least one), the "
   "first being the default (retires the embedded one's magic, e.g. 3.11 after a move to 3.12)",
   0, 0},
  {"tokens", OPT_STRING, "FILE", NULL, 0, 0, 0, FIELD(tokens),
   "JSON token file: require bearer tokens with roles (reloaded on SIGHUP)", 0, 0},
  {"insecure", OPT_FLAG, "", NULL, 0, 0, 0, FIELD(insecure),
   "allow a non-loopback --listen without --tokens", 0, 0},
  {"tls-cert", OPT_STRING, "FILE", NULL, 0, 0, 0, FIELD(tls_cert),
   "serve HTTPS with this PEM certificate (chain, the server's first); needs --tls-key "
   "(both reloaded on SIGHUP)", 0, 0},
  {"tls-key", OPT_STRING, "FILE", NULL, 0, 0, 0, FIELD(tls_key),
   "the PEM private key (unencrypted) of --tls-cert", 0, 0},
  {"tls-client-ca", OPT_STRING, "FILE", NULL, 0, 0, 0, FIELD(tls_client_ca),
   "mutual TLS: every connection must present a client certificate that verifies against "
   "these PEM CAs (403 otherwise); needs --tls-cert", 0, 0},
  {"backup-dir", OPT_STRING, "DIR", NULL, 0, 0, 0, FIELD(backup_dir),
   "directory for POST /v1/admin/backup copies and for downloads' temporary copies (default "
   "for those: the store's directory)", 0, 0},
  {"server-name", OPT_LIST, "NAME", NULL, 0, 0, PCC_MAX_SERVER_NAMES, FIELD(server_names),
   "a host name clients reach the server by (Host checks; repeatable)", FIELD(n_server_names), 0},
  {"max-profile-body", OPT_BYTES, "BYTES", NULL, PCC_PROFILE_BODY_MAX_DEFAULT, 1 * KIB,
   PCC_SOURCE_MAX_CEILING, FIELD(max_profile_body), "largest POST /v1/profile body (413 beyond)",
   0, 0},
  {"max-batch-body", OPT_BYTES, "BYTES", NULL, PCC_BATCH_BODY_MAX_DEFAULT, 1 * KIB,
   PCC_SOURCE_MAX_CEILING, FIELD(max_batch_body), "largest POST /v1/batch body (413 beyond)", 0, 0},
  {"max-batch", OPT_NUMBER, "N", NULL, PCC_BATCH_LOOKUPS_DEFAULT, 1, 100000, FIELD(max_batch),
   "lookups in one POST /v1/batch (400 beyond)", 0, 0},
  {"max-batch-response", OPT_BYTES, "BYTES", NULL, PCC_BATCH_RESPONSE_MAX_DEFAULT, 1 * MIB,
   4 * GIB, FIELD(max_batch_response),
   "largest POST /v1/batch answer; lookups past it are answered too-large", 0, 0},
  {"max-queued-compiles", OPT_NUMBER, "N", NULL, PCC_QUEUED_COMPILES_DEFAULT, 1, 65536,
   FIELD(max_queued_compiles),
   "compiles waiting for a worker, per backend (503 busy beyond)", 0, 0},
  {"max-bundle", OPT_BYTES, "BYTES", NULL, PCC_BUNDLE_MAX_DEFAULT, 1 * MIB, 4 * GIB,
   FIELD(max_bundle), "largest bundle, binary or JSON; a profile's entries past it are left out",
   0, 0},
  {"bundle-cache", OPT_BYTES, "BYTES", NULL, PCC_BUNDLE_CACHE_DEFAULT, 0, 64 * GIB,
   FIELD(bundle_cache), "memory for bundles kept built between requests", 0, 0},
  {"retire-unserved-magics", OPT_FLAG, "", NULL, 0, 0, 0, FIELD(retire_unserved),
   "at start, delete entries of magics no compiler serves", 0, 0},
  {"on-damaged-store", OPT_CHOICE, "refuse|quarantine", "refuse", 0, 0, 0,
   FIELD(on_damaged_store),
   "a store found damaged at start: refuse to start, or move its files aside (*.damaged-TIME) "
   "and start empty", 0, 0},
  {"log-level", OPT_CHOICE, "error|warn|info|debug", "info", 0, 0, 0, FIELD(log_level),
   "write the log lines (stderr) of this level and the more severe ones", 0, 0},
  {"log-format", OPT_CHOICE, "text|json", "text", 0, 0, 0, FIELD(log_format),
   "log and access-log lines: TIME LEVEL MESSAGE key=value..., or one JSON object a line", 0, 0},
  {"access-log", OPT_STRING, "FILE", NULL, 0, 0, 0, FIELD(access_log),
   "write one line per request to FILE (- : stderr), appended, reopened on SIGHUP [off]", 0, 0},
  {"shared", OPT_STRING, "redis://HOST:PORT[,...]", NULL, 0, 0, 0, FIELD(shared),
   "a shared blob tier on these Redis servers (keys spread by rendezvous hashing), for a fleet "
   "of replicas to compile each source once", 0, 0},
  {"shared-timeout", OPT_NUMBER, "MS", NULL, PCC_SHARED_TIMEOUT_DEFAULT, 1, 10000,
   FIELD(shared_timeout),
   "a --shared Redis command unanswered for this long fails (the server is skipped a while)", 0,
   0},
  {"shared-connect-timeout", OPT_NUMBER, "MS", NULL, PCC_SHARED_CONNECT_TIMEOUT_DEFAULT, 1,
   10000, FIELD(shared_connect_timeout), "a connect to a --shared Redis server taking longer "
   "fails", 0, 0},
  {"shared-ttl", OPT_NUMBER, "SECONDS", NULL, PCC_SHARED_TTL_DEFAULT, 0, 1ull << 31,
   FIELD(shared_ttl), "seconds a value stored in --shared lives (0: no expiry; rely on "
   "maxmemory-policy allkeys-lru)", 0, 0},
  {"shared-key", OPT_STRING, "FILE", NULL, 0, 0, 0, FIELD(shared_key),
   "a secret file of the fleet (32+ bytes, mode 0600): --shared values are signed with "
   "HMAC-SHA256 under it, and one not signed with it is never used", 0, 0},
  {"shared-password-file", OPT_STRING, "FILE", NULL, 0, 0, 0, FIELD(shared_password_file),
   "a file holding the password of the --shared Redis servers (mode 0600 or 0400; one "
   "trailing newline is not part of it), sent with AUTH on every new connection", 0, 0},
  {"shared-user", OPT_STRING, "NAME", NULL, 0, 0, 0, FIELD(shared_user),
   "the Redis ACL user of --shared-password-file's password (AUTH NAME PASSWORD) [none: AUTH "
   "PASSWORD, Redis' requirepass]", 0, 0},
  {"upstream", OPT_STRING, "URL[,URL...]", NULL, 0, 0, 0, FIELD(upstream),
   "other pycached servers (http://, https:// or unix:/PATH), asked in this order to compile a "
   "source not stored here before it is compiled here, and to compile every source of a magic "
   "no backend here compiles; their answers are verified, and one down is skipped a while", 0,
   0},
  {"upstream-timeout", OPT_NUMBER, "MS", NULL, PCC_UPSTREAM_TIMEOUT_DEFAULT, 1, 600000,
   FIELD(upstream_timeout),
   "a compile asked of an --upstream unanswered for this long fails (compiled here instead)", 0,
   0},
  {"upstream-connect-timeout", OPT_NUMBER, "MS", NULL, PCC_UPSTREAM_CONNECT_TIMEOUT_DEFAULT, 1,
   10000, FIELD(upstream_connect_timeout), "a connect to an --upstream taking longer fails", 0,
   0},
  {"upstream-ca-file", OPT_STRING, "FILE", NULL, 0, 0, 0, FIELD(upstream_ca_file),
   "CAs (PEM) that sign the certificates of the https:// --upstream servers [the system's]", 0,
   0},
  {"upstream-token-file", OPT_STRING, "FILE", NULL, 0, 0, 0, FIELD(upstream_token_file),
   "a file holding the token sent to the --upstream servers (a compile role there)", 0, 0},
  {"verify-store", OPT_FLAG, "", NULL, 0, 0, 0, FIELD(verify_store),
   "check every record of the store (read-only), print the problems and exit (0: sound, 3: "
   "damaged, 4: cannot be opened)", 0, NOT_IN_FILE | NOT_IN_ENV},
};
#define N_OPTIONS (sizeof options / sizeof options[0])

/* ---- where a value came from ---------------------------------------------------------------- */

/* The layers, in their order of precedence: each one's values replace the ones below. */
typedef enum { FROM_DEFAULT, FROM_FILE, FROM_ENV, FROM_FLAG } layer;

typedef struct {
  layer layer;
  unsigned line; /* FROM_FILE: the line */
} origin;

/* One pcc_config_parse. */
typedef struct {
  pcc_config *config;
  const char *file;        /* the --config file, for messages */
  origin given[N_OPTIONS]; /* where each option's value came from */
} parse_state;

/* The text values point into besides argv and the environment: the --config file, its values
 * cut out in place, and copies of the PYCACHED_* lists, cut at their commas. Reused by each
 * pcc_config_parse. */
static struct {
  char file[PCC_CONFIG_FILE_MAX + 1];
  char lists[PCC_CONFIG_FILE_MAX];
  size_t lists_used;
} text;

/* An option's environment variable: PYCACHED_ and its name in upper case, '-' as '_'. */
static const char *env_name(const option_spec *spec, char *out, size_t len)
{
  int n = snprintf(out, len, "PYCACHED_%s", spec->name);
  for (char *p = out; n > 0 && *p; p++)
    *p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
  return out;
}

/* Where option i's value came from, for a message: "--max-size", "PYCACHED_MAX_SIZE" or
 * "/etc/pycached.conf:3: max-size". */
static const char *where(const parse_state *st, size_t i, origin from, char *out, size_t len)
{
  if (from.layer == FROM_FILE)
    snprintf(out, len, "%s:%u: %s", st->file, from.line, options[i].name);
  else if (from.layer == FROM_ENV)
    env_name(&options[i], out, len);
  else
    snprintf(out, len, "--%s", options[i].name);
  return out;
}

#define WHERE_MAX (PCC_PATH_MAX + 96)

/* ---- help and limits ------------------------------------------------------------------------ */

/* A default as --help shows it: byte sizes with the largest K, M or G suffix that divides them. */
static const char *format_number(const option_spec *spec, uint64_t value, char *out, size_t len)
{
  static const struct {
    uint64_t unit;
    char suffix;
  } units[] = {{GIB, 'G'}, {MIB, 'M'}, {KIB, 'K'}};
  for (size_t i = 0; spec->kind == OPT_BYTES && value > 0 && i < 3; i++)
    if (value % units[i].unit == 0) {
      snprintf(out, len, "%llu%c", (unsigned long long)(value / units[i].unit), units[i].suffix);
      return out;
    }
  snprintf(out, len, "%llu", (unsigned long long)value);
  return out;
}

static void print_help(const char *argv0)
{
  printf("Usage: %s [OPTION]...\n"
         "pycached: a shared compile cache for Python. Compiles each source once and serves\n"
         "the code objects over HTTP/JSON (docs/API.md).\n\nOptions:\n",
         argv0);
  for (size_t i = 0; i < N_OPTIONS; i++) {
    char left[48];
    snprintf(left, sizeof left, "--%s%s%s", options[i].name, options[i].arg[0] ? " " : "",
             options[i].arg);
    printf("  %-28s %s", left, options[i].help);
    char def[32];
    if (options[i].def)
      printf(" [%s]", options[i].def);
    else if (options[i].kind == OPT_NUMBER ||
             (options[i].kind == OPT_BYTES && options[i].number > 0)) /* 0: derived */
      printf(" [%s]", format_number(&options[i], options[i].number, def, sizeof def));
    if (options[i].not_in == (NOT_IN_FILE | NOT_IN_ENV))
      printf(" (command line only)");
    else if (options[i].not_in == NOT_IN_FILE)
      printf(" (or %s; not in a file)", env_name(&options[i], def, sizeof def));
    printf("\n");
  }
  printf("  %-28s %s\n  %-28s %s\n  %-28s %s\n", "-h, --help", "print this help and exit",
         "--version", "print the version and exit", "--limits",
         "print every hard limit (docs/DESIGN.md, \"Limits\") and exit");
  printf("\nEvery option but the command-line-only ones may also be set in the --config file, a\n"
         "line KEY = VALUE each (KEY: the option without its --; '#' starts a comment line; a\n"
         "repeatable option on a line for each value; a flag: true or false), or in the\n"
         "environment as PYCACHED_KEY (upper case, '-' as '_': PYCACHED_MAX_SIZE=3G; a\n"
         "repeatable option's values separated by commas; a flag: 1 or 0). Precedence:\n"
         "command line > environment > file > default; a repeatable option given in a higher\n"
         "one replaces the lower one's values. Sizes: K, M, G, T or KB, MB, GB, TB, powers of\n"
         "1024 either way (docs/OPERATIONS.md, \"Configuration\").\n");
}

/* Prints the table of limits (pcc_limits.h). */
static void print_limits(void)
{
  size_t n;
  const pcc_limit *limits = pcc_limits(&n);
  printf("%-30s %15s  %-20s %s\n", "limit", "value", "option", "what");
  for (size_t i = 0; i < n; i++)
    printf("%-30s %15llu  %-20s %s\n", limits[i].name, (unsigned long long)limits[i].value,
           limits[i].option ? limits[i].option : "-", limits[i].what);
}

/* ---- values --------------------------------------------------------------------------------- */

/* Parses a byte size: a whole number with an optional K, M, G or T suffix, or KB, MB, GB or TB
 * (powers of 1024 either way; any case). False when it is none, or past UINT64's range. */
static bool parse_bytes(const char *text, uint64_t *out)
{
  static const struct {
    char letter;
    uint64_t unit;
  } units[] = {{'K', KIB}, {'M', MIB}, {'G', GIB}, {'T', TIB}};
  char digits[32];
  size_t len = strlen(text);
  uint64_t unit = 1;
  if (len == 0 || len >= sizeof digits)
    return false;
  memcpy(digits, text, len + 1);
  if (len > 1 && (digits[len - 1] == 'B' || digits[len - 1] == 'b') &&
      !(digits[len - 2] >= '0' && digits[len - 2] <= '9'))
    digits[--len] = '\0'; /* "512MB": the B goes, the M stays */
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (digits[len - 1] == units[i].letter || digits[len - 1] == units[i].letter + ('a' - 'A'))
      unit = units[i].unit;
  if (unit != 1)
    digits[len - 1] = '\0';
  int64_t value;
  if (pcc_parse_i64(digits, 0, INT64_MAX / (int64_t)unit, &value) != PCC_PROTO_OK)
    return false;
  *out = (uint64_t)value * unit;
  return true;
}

/* A flag's value in the file or the environment. */
static bool parse_flag(const char *text, bool *out)
{
  static const char *const words[][2] = {{"true", "false"}, {"yes", "no"}, {"on", "off"},
                                         {"1", "0"}};
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
    for (size_t on = 0; on < 2; on++)
      if (strcasecmp(text, words[i][on]) == 0) {
        *out = on == 0;
        return true;
      }
  return false;
}

/* Is text one of the '|'-separated words of choices? */
static bool is_choice(const char *text, const char *choices)
{
  size_t len = strlen(text);
  for (const char *p = choices; len > 0 && *p;) {
    const char *bar = strchr(p, '|');
    size_t n = bar ? (size_t)(bar - p) : strlen(p);
    if (n == len && strncmp(p, text, n) == 0)
      return true;
    p += n + (bar != NULL);
  }
  return false;
}

/* Sets option i to value (NULL: a flag given on the command line), from. False (printed, naming
 * the option and where it came from) when the value is not one the option takes. */
static bool apply(parse_state *st, size_t i, const char *value, origin from)
{
  const option_spec *spec = &options[i];
  char *field = (char *)st->config + spec->offset;
  char place[WHERE_MAX];
  uint64_t number = 0;
  switch (spec->kind) {
  case OPT_CHOICE:
    if (!is_choice(value, spec->arg)) {
      fprintf(stderr, "pycached: %s: '%s' is not one of %s\n", where(st, i, from, place,
              sizeof place), value, spec->arg);
      return false;
    }
    /* fall through */
  case OPT_STRING:
    memcpy(field, &value, sizeof value);
    break;
  case OPT_FLAG: {
    bool on = true;
    if (value != NULL && !parse_flag(value, &on)) {
      fprintf(stderr, "pycached: %s: '%s' is not true or false (nor yes/no, on/off, 1/0)\n",
              where(st, i, from, place, sizeof place), value);
      return false;
    }
    *(bool *)field = on;
    break;
  }
  case OPT_LIST: {
    unsigned *count = (unsigned *)((char *)st->config + spec->count_offset);
    if (st->given[i].layer < from.layer)
      *count = 0; /* a higher layer's values replace a lower one's */
    if (*count >= spec->max) {
      fprintf(stderr, "pycached: %s: at most %llu values\n", where(st, i, from, place,
              sizeof place), (unsigned long long)spec->max);
      return false;
    }
    ((const char **)field)[(*count)++] = value;
    break;
  }
  case OPT_NUMBER:
  case OPT_BYTES: {
    int64_t parsed;
    bool valid = spec->kind == OPT_BYTES
                   ? parse_bytes(value, &number)
                   : pcc_parse_i64(value, 0, INT64_MAX, &parsed) == PCC_PROTO_OK;
    number = spec->kind == OPT_BYTES ? number : (uint64_t)parsed;
    if (!valid) {
      fprintf(stderr, "pycached: %s: '%s' is not a valid %s\n",
              where(st, i, from, place, sizeof place), value,
              spec->kind == OPT_BYTES ? "size (e.g. 512M, 3G, 3GB)" : "number");
      return false;
    }
    if (number < spec->min || number > spec->max) {
      fprintf(stderr, "pycached: %s: %s is out of range [%llu, %llu]\n",
              where(st, i, from, place, sizeof place), value, (unsigned long long)spec->min,
              (unsigned long long)spec->max);
      return false;
    }
    memcpy(field, &number, sizeof number);
    break;
  }
  }
  st->given[i] = from;
  return true;
}

static size_t option_at(size_t offset)
{
  size_t i = 0;
  while (i < N_OPTIONS && options[i].offset != offset)
    i++;
  return i; /* the table has every field asked for (a unit test walks them) */
}

/* ---- the file and the environment ----------------------------------------------------------- */

/* Strips white space from both ends of s, in place. */
static char *trim(char *s)
{
  while (isspace((unsigned char)*s))
    s++;
  size_t len = strlen(s);
  while (len > 0 && isspace((unsigned char)s[len - 1]))
    s[--len] = '\0';
  return s;
}

/* Applies one line (its number: line) of the file. */
static bool file_line(parse_state *st, char *line_text, unsigned line, unsigned *seen)
{
  char *s = trim(line_text);
  if (*s == '\0' || *s == '#')
    return true;
  char *eq = strchr(s, '=');
  if (eq == NULL) {
    fprintf(stderr, "pycached: %s:%u: not a KEY = VALUE line\n", st->file, line);
    return false;
  }
  *eq = '\0';
  char *key = trim(s), *value = trim(eq + 1);
  size_t i = 0;
  while (i < N_OPTIONS && strcmp(options[i].name, key) != 0)
    i++;
  if (i == N_OPTIONS) {
    fprintf(stderr, "pycached: %s:%u: unknown key '%s' (the keys are the options of pycached "
            "--help, without their --)\n", st->file, line, key);
    return false;
  }
  if (options[i].not_in & NOT_IN_FILE) {
    fprintf(stderr, "pycached: %s:%u: %s is not set in a config file (%s)\n", st->file, line,
            key, options[i].not_in & NOT_IN_ENV ? "command line only" : "no includes");
    return false;
  }
  if (*value == '\0') {
    fprintf(stderr, "pycached: %s:%u: %s: no value\n", st->file, line, key);
    return false;
  }
  if (seen[i] != 0 && options[i].kind != OPT_LIST) {
    fprintf(stderr, "pycached: %s:%u: %s given twice (first on line %u)\n", st->file, line, key,
            seen[i]);
    return false;
  }
  seen[i] = line;
  return apply(st, i, value, (origin){FROM_FILE, line});
}

/* Reads the --config file (of from: its option, config, in the environment or on the command
 * line) into text.file and applies its lines. Refuses a file that is not root's or ours, or
 * that others may write: it may name the --tokens (as ssh does with its config). */
static bool read_file(parse_state *st, const char *path, origin from)
{
  char place[WHERE_MAX];
  where(st, option_at(FIELD(config_file)), from, place, sizeof place);
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  struct stat sb;
  if (fd < 0 || fstat(fd, &sb) != 0) {
    fprintf(stderr, "pycached: %s %s: %s\n", place, path, strerror(errno));
    if (fd >= 0)
      close(fd);
    return false;
  }
  const char *why = !S_ISREG(sb.st_mode)                      ? "not a regular file"
                    : sb.st_uid != 0 && sb.st_uid != geteuid() ? "owned by another user"
                    : (sb.st_mode & (S_IWGRP | S_IWOTH)) != 0 ? "writable by its group or others"
                    : sb.st_size > (off_t)PCC_CONFIG_FILE_MAX ? "larger than the limit"
                                                               : NULL;
  size_t len = 0;
  int read_errno = why == NULL ? pcc_read_upto(fd, text.file, sizeof text.file, &len) : 0;
  if (read_errno != 0)
    why = strerror(read_errno);
  else if (why == NULL && len > PCC_CONFIG_FILE_MAX)
    why = "larger than the limit"; /* it grew since fstat */
  close(fd);
  if (why != NULL) {
    fprintf(stderr, "pycached: %s %s: %s (owner uid %u, mode %04o; it must be a regular file of "
            "root or uid %u, not writable by group or others, of at most %llu bytes: it may name "
            "the --tokens)\n", place, path, why, (unsigned)sb.st_uid,
            (unsigned)(sb.st_mode & 07777), (unsigned)geteuid(),
            (unsigned long long)PCC_CONFIG_FILE_MAX);
    return false;
  }
  text.file[len] = '\0';
  st->file = path;
  unsigned seen[N_OPTIONS] = {0}; /* the line each key was on */
  unsigned line = 0;
  for (char *p = text.file, *end = text.file + len; p < end;) {
    char *eol = memchr(p, '\n', (size_t)(end - p));
    eol = eol ? eol : end;
    line++;
    *eol = '\0';
    if (strlen(p) != (size_t)(eol - p) || (size_t)(eol - p) > PCC_CONFIG_LINE_MAX) {
      fprintf(stderr, "pycached: %s:%u: %s\n", path, line,
              strlen(p) != (size_t)(eol - p) ? "a NUL byte" : "longer than the line limit");
      return false;
    }
    if (!file_line(st, p, line, seen))
      return false;
    p = eol + 1;
  }
  return true;
}

/* Applies option i's PYCACHED_* variable, when it is set and not empty. A list's values are
 * separated by commas. */
static bool env_option(parse_state *st, size_t i)
{
  char name[64];
  const char *value = getenv(env_name(&options[i], name, sizeof name));
  if (value == NULL || *value == '\0')
    return true;
  size_t len = strlen(value);
  const origin from = {FROM_ENV, 0};
  if (len > PCC_CONFIG_LINE_MAX) {
    fprintf(stderr, "pycached: %s: longer than %d bytes\n", name, PCC_CONFIG_LINE_MAX);
    return false;
  }
  if (options[i].kind != OPT_LIST)
    return apply(st, i, value, from);
  if (len + 1 > sizeof text.lists - text.lists_used) {
    fprintf(stderr, "pycached: %s: the PYCACHED_* lists are too long together\n", name);
    return false;
  }
  char *copy = text.lists + text.lists_used;
  memcpy(copy, value, len + 1);
  text.lists_used += len + 1;
  for (char *p = copy;;) {
    char *comma = strchr(p, ',');
    if (comma)
      *comma = '\0';
    if (*p == '\0') {
      fprintf(stderr, "pycached: %s: an empty value (values are separated by commas)\n", name);
      return false;
    }
    if (!apply(st, i, p, from))
      return false;
    if (comma == NULL)
      return true;
    p = comma + 1;
  }
}

/* ---- --listen ------------------------------------------------------------------------------- */

/* What --listen names: the numeric address, the host as given when it is not that text (a
 * name), and the port when it names one. */
typedef struct {
  char address[INET6_ADDRSTRLEN];
  char name[PCC_HOST_NAME_MAX + 1];
  char path[PCC_UNIX_PATH_MAX + 1]; /* unix:PATH; "" for an address */
  bool has_port;
  uint64_t port;
} listen_spec;

/* Takes ":PORT" (or nothing) after the host. */
static bool listen_port(const char *text, listen_spec *out, char *why, size_t why_len)
{
  int64_t port;
  if (*text == '\0')
    return true;
  if (text[0] != ':' || pcc_parse_i64(text + 1, 0, 65535, &port) != PCC_PROTO_OK) {
    snprintf(why, why_len, "the port is not a number from 0 to 65535");
    return false;
  }
  out->has_port = true;
  out->port = (uint64_t)port;
  return true;
}

/* The canonical text of a numeric address of family into out->address, and the host as given
 * into out->name when it differs. */
static void listen_address(int family, const void *addr, const char *host, listen_spec *out)
{
  inet_ntop(family, addr, out->address, sizeof out->address);
  if (strcmp(out->address, host) != 0)
    snprintf(out->name, sizeof out->name, "%s", host);
}

/* "[IPV6]" or "[IPV6]:PORT". */
static bool listen_bracketed(const char *text, listen_spec *out, char *why, size_t why_len)
{
  const char *close = strchr(text, ']');
  char host[INET6_ADDRSTRLEN];
  struct in6_addr v6;
  size_t len = close ? (size_t)(close - text - 1) : 0;
  if (close == NULL || len == 0 || len >= sizeof host) {
    snprintf(why, why_len, "not an IPv6 address in brackets");
    return false;
  }
  memcpy(host, text + 1, len);
  host[len] = '\0';
  if (inet_pton(AF_INET6, host, &v6) != 1) {
    snprintf(why, why_len, "not an IPv6 address in brackets");
    return false;
  }
  listen_address(AF_INET6, &v6, host, out);
  return listen_port(close + 1, out, why, why_len);
}

/* An IPv6 address alone, or IPV4, or NAME, each with an optional ":PORT". A name binds its
 * first IPv4 address, else its first IPv6 one (getaddrinfo's order). */
static bool listen_host(const char *text, listen_spec *out, char *why, size_t why_len)
{
  struct in6_addr v6;
  struct in_addr v4;
  if (inet_pton(AF_INET6, text, &v6) == 1) { /* "::1": no port; "[::1]:8700" has one */
    listen_address(AF_INET6, &v6, text, out);
    return true;
  }
  const char *colon = strchr(text, ':');
  size_t len = colon ? (size_t)(colon - text) : strlen(text);
  char host[PCC_HOST_NAME_MAX + 1];
  if (colon != NULL && strchr(colon + 1, ':') != NULL) {
    snprintf(why, why_len, "an IPv6 address with a port goes in brackets ([::1]:8700)");
    return false;
  }
  static const char name_chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789.-";
  if (len == 0 || len > PCC_HOST_NAME_MAX || strspn(text, name_chars) != len || text[0] == '-' ||
      text[0] == '.') {
    snprintf(why, why_len, "not an address or a host name");
    return false;
  }
  memcpy(host, text, len);
  host[len] = '\0';
  if (!listen_port(text + len, out, why, why_len))
    return false;
  if (inet_pton(AF_INET, host, &v4) == 1) {
    listen_address(AF_INET, &v4, host, out);
    return true;
  }
  if (strspn(host, "0123456789.") == len) {
    snprintf(why, why_len, "not an IPv4 address");
    return false;
  }
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *found = NULL;
  int rc = getaddrinfo(host, NULL, &hints, &found);
  if (rc != 0) {
    snprintf(why, why_len, "cannot resolve the name: %s", gai_strerror(rc));
    return false;
  }
  const struct addrinfo *pick = NULL;
  for (const struct addrinfo *a = found; a != NULL && (pick == NULL || pick->ai_family != AF_INET);
       a = a->ai_next)
    if (a->ai_family == AF_INET || (a->ai_family == AF_INET6 && pick == NULL))
      pick = a; /* the first IPv4 one ends the walk */
  if (pick != NULL && pick->ai_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)pick->ai_addr)->sin_addr, out->address,
              sizeof out->address);
  else if (pick != NULL)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)pick->ai_addr)->sin6_addr,
              out->address, sizeof out->address);
  freeaddrinfo(found);
  if (pick == NULL) {
    snprintf(why, why_len, "the name has no IPv4 or IPv6 address");
    return false;
  }
  snprintf(out->name, sizeof out->name, "%s", host);
  return true;
}

/* "unix:PATH": a unix socket at the absolute PATH, which fits sun_path. */
static bool listen_unix(const char *text, listen_spec *out, char *why, size_t why_len)
{
  const char *path = text + strlen("unix:");
  size_t len = strlen(path);
  if (path[0] != '/' || len > PCC_UNIX_PATH_MAX) {
    snprintf(why, why_len, "a unix socket's path is absolute and at most %d bytes",
             PCC_UNIX_PATH_MAX);
    return false;
  }
  memcpy(out->path, path, len + 1);
  return true;
}

/* The forms of --listen, tried in order: the first whose prefix the text starts with parses
 * it. */
static const struct {
  const char *prefix;
  bool (*parse)(const char *text, listen_spec *out, char *why, size_t why_len);
} listen_forms[] = {
  {"unix:", listen_unix},
  {"[", listen_bracketed},
  {"", listen_host},
};

/* One address of --listen (NUL-terminated text) into *spec; false with why otherwise. */
static bool listen_item(const char *text, listen_spec *spec, char *why, size_t why_len)
{
  size_t form = 0;
  while (strncmp(text, listen_forms[form].prefix, strlen(listen_forms[form].prefix)) != 0)
    form++; /* the last row's prefix, "", matches */
  memset(spec, 0, sizeof *spec);
  return listen_forms[form].parse(text, spec, why, why_len);
}

/* Resolves --listen, a TCP address or a unix socket or one of each ("unix:PATH,HOST:PORT"),
 * into config->listen and listen_name (the TCP one; "" without), listen_path (the unix one; ""
 * without), and the TCP address's port, if it names one, into config->port unless --port came
 * from a layer above --listen's. */
static bool resolve_listen(parse_state *st)
{
  pcc_config *config = st->config;
  size_t at = option_at(FIELD(listen_arg)), port_at = option_at(FIELD(port));
  listen_spec tcp, unix_socket;
  memset(&tcp, 0, sizeof tcp);
  memset(&unix_socket, 0, sizeof unix_socket);
  bool have_tcp = false, have_unix = false;
  char why[160], place[WHERE_MAX];
  const char *p = config->listen_arg;
  for (unsigned n = 0;; n++) {
    why[0] = '\0';
    size_t len = strcspn(p, ",");
    char item[PCC_UNIX_PATH_MAX + 16];
    listen_spec spec;
    if (n == 2)
      snprintf(why, sizeof why, "at most two addresses, a TCP one and a unix socket");
    else if (len == 0)
      snprintf(why, sizeof why, "an empty address in the list");
    else if (len >= sizeof item)
      snprintf(why, sizeof why, "an address longer than %zu bytes", sizeof item - 1);
    if (why[0] == '\0') {
      memcpy(item, p, len);
      item[len] = '\0';
      if (listen_item(item, &spec, why, sizeof why)) {
        bool is_unix = spec.path[0] != '\0';
        if (is_unix ? have_unix : have_tcp)
          snprintf(why, sizeof why, "two %s: one of each at most",
                   is_unix ? "unix sockets" : "TCP addresses");
        else if (is_unix)
          unix_socket = spec, have_unix = true;
        else
          tcp = spec, have_tcp = true;
      }
    }
    if (why[0] != '\0') {
      fprintf(stderr, "pycached: %s %s: %s (give HOST, HOST:PORT, [IPV6] or [IPV6]:PORT, HOST "
              "being an IPv4 address or a host name, or unix:/PATH, or one of each separated "
              "by a comma; or the port alone with --port)\n",
              where(st, at, st->given[at], place, sizeof place), config->listen_arg, why);
      return false;
    }
    p += len;
    if (*p == '\0')
      break;
    p++; /* the comma: an address follows (an empty one is refused above) */
  }
  memcpy(config->listen, tcp.address, sizeof config->listen);
  memcpy(config->listen_name, tcp.name, sizeof config->listen_name);
  memcpy(config->listen_path, unix_socket.path, sizeof config->listen_path);
  if (!tcp.has_port || st->given[port_at].layer > st->given[at].layer)
    return true;
  if (st->given[port_at].layer == st->given[at].layer && config->port != tcp.port) {
    char other[WHERE_MAX];
    fprintf(stderr, "pycached: %s %s and %s %llu name two ports: give one\n",
            where(st, at, st->given[at], place, sizeof place), config->listen_arg,
            where(st, port_at, st->given[port_at], other, sizeof other),
            (unsigned long long)config->port);
    return false;
  }
  config->port = tcp.port;
  return true;
}

/* --socket-mode (octal, at most 0777) and --socket-group (a group's name or number) into
 * config->socket_mode and socket_gid (-1: not given). */
static bool resolve_socket(parse_state *st)
{
  pcc_config *config = st->config;
  char place[WHERE_MAX];
  const char *mode = config->socket_mode_arg;
  size_t at = option_at(FIELD(socket_mode_arg));
  unsigned value = 0;
  size_t len = strlen(mode);
  if (len == 0 || len > 4 || strspn(mode, "01234567") != len) {
    fprintf(stderr, "pycached: %s %s: not an octal mode from 0 to 0777 (e.g. 0660)\n",
            where(st, at, st->given[at], place, sizeof place), mode);
    return false;
  }
  for (size_t i = 0; i < len; i++)
    value = value * 8 + (unsigned)(mode[i] - '0');
  if (value > 0777) {
    fprintf(stderr, "pycached: %s %s: not an octal mode from 0 to 0777 (e.g. 0660)\n",
            where(st, at, st->given[at], place, sizeof place), mode);
    return false;
  }
  config->socket_mode = value;
  config->socket_gid = -1;
  size_t group_at = option_at(FIELD(socket_group));
  if (config->listen_path[0] == '\0') { /* a TCP --listen: a mode or group set is a mistake */
    size_t set = st->given[at].layer != FROM_DEFAULT ? at
                 : st->given[group_at].layer != FROM_DEFAULT ? group_at
                                                             : N_OPTIONS;
    if (set == N_OPTIONS)
      return true;
    fprintf(stderr, "pycached: %s: only for a unix socket (--listen unix:PATH), not --listen "
            "%s\n", where(st, set, st->given[set], place, sizeof place), config->listen_arg);
    return false;
  }
  const char *group = config->socket_group;
  if (group == NULL || *group == '\0')
    return true;
  at = option_at(FIELD(socket_group));
  int64_t gid;
  if (strspn(group, "0123456789") == strlen(group) &&
      pcc_parse_i64(group, 0, INT32_MAX, &gid) == PCC_PROTO_OK) {
    config->socket_gid = (long)gid;
    return true;
  }
  struct group *found = getgrnam(group);
  if (found == NULL) {
    fprintf(stderr, "pycached: %s %s: no such group\n",
            where(st, at, st->given[at], place, sizeof place), group);
    return false;
  }
  config->socket_gid = (long)found->gr_gid;
  return true;
}

/* --map-size and --max-size, each from the other when it is not given (docs/OPERATIONS.md,
 * "Sizing"). False (printed) when --max-size is over --map-size. */
static bool derive_sizes(pcc_config *config, bool map_given, bool max_given)
{
  if (!map_given) {
    uint64_t map = config->max_size + config->max_size / 2 + MAP_MARGIN;
    map = map < MAP_SIZE_FLOOR ? MAP_SIZE_FLOOR : map;
    config->map_size = map > MAP_SIZE_MAX ? MAP_SIZE_MAX : map;
  }
  if (!max_given && map_given) {
    uint64_t max = config->map_size / 3 * 2;
    config->max_size = max < PCC_STORE_MAX_SIZE_DEFAULT ? max : PCC_STORE_MAX_SIZE_DEFAULT;
  }
  if (config->max_size > config->map_size) {
    fprintf(stderr, "pycached: --max-size %llu is over --map-size %llu: leave the map room (the "
            "default map is 1.5 x --max-size + 64M)\n", (unsigned long long)config->max_size,
            (unsigned long long)config->map_size);
    return false;
  }
  return true;
}

/* --tls-cert and --tls-key come together, and --tls-client-ca only with them (the files are read
 * and checked by server/tls.c). False (printed) otherwise. */
static bool check_tls(parse_state *st)
{
  const pcc_config *config = st->config;
  char place[WHERE_MAX];
  size_t cert = option_at(FIELD(tls_cert)), key = option_at(FIELD(tls_key)),
         ca = option_at(FIELD(tls_client_ca));
  if ((config->tls_cert == NULL) != (config->tls_key == NULL)) {
    size_t given = config->tls_cert != NULL ? cert : key;
    fprintf(stderr, "pycached: %s given without --%s: TLS needs both the certificate and its "
            "key\n", where(st, given, st->given[given], place, sizeof place),
            options[given == cert ? key : cert].name);
    return false;
  }
  if (config->tls_client_ca != NULL && config->tls_cert == NULL) {
    fprintf(stderr, "pycached: %s needs --tls-cert and --tls-key: mutual TLS is TLS\n",
            where(st, ca, st->given[ca], place, sizeof place));
    return false;
  }
  if (config->tls_cert != NULL && config->listen_path[0] != '\0') {
    /* libmicrohttpd's TLS is the whole daemon's, and unix: clients speak plain HTTP */
    fprintf(stderr, "pycached: %s: TLS is served on a TCP address only, and --listen %s has a "
            "unix socket (its mode and group are its access control): serve the unix socket "
            "from a server without TLS\n", where(st, cert, st->given[cert], place, sizeof place),
            config->listen_arg);
    return false;
  }
  return true;
}

/* --shared is a list pcc_shared_open takes; --shared-user is a Redis user name and comes with
 * --shared-password-file (whose file pcc_shared_open reads and checks). False (printed, naming
 * where it was set) otherwise. */
static bool check_shared(parse_state *st)
{
  const pcc_config *config = st->config;
  char err[400], place[WHERE_MAX];
  size_t i = option_at(FIELD(shared));
  if (config->shared != NULL && !pcc_shared_list_valid(config->shared, err, sizeof err)) {
    fprintf(stderr, "pycached: %s: %s\n", where(st, i, st->given[i], place, sizeof place), err);
    return false;
  }
  const char *user = config->shared_user;
  if (user == NULL)
    return true;
  i = option_at(FIELD(shared_user));
  size_t len = strlen(user), printable = 0;
  while (printable < len && user[printable] > ' ' && user[printable] < 0x7f)
    printable++;
  if (len == 0 || len > PCC_SHARED_USER_MAX || printable != len) {
    fprintf(stderr, "pycached: %s: not a Redis user name (1 to %d printable characters, no "
            "space)\n", where(st, i, st->given[i], place, sizeof place), PCC_SHARED_USER_MAX);
    return false;
  }
  if (config->shared_password_file == NULL) {
    fprintf(stderr, "pycached: %s given without --shared-password-file: a Redis ACL user "
            "needs its password\n", where(st, i, st->given[i], place, sizeof place));
    return false;
  }
  return true;
}

/* --upstream is a list pcc_upstream_open takes. False (printed, naming where it was set)
 * otherwise. */
static bool check_upstream(parse_state *st)
{
  const char *list = st->config->upstream;
  char err[400], place[WHERE_MAX];
  if (list == NULL || list[0] == '\0' || pcc_upstream_list_valid(list, err, sizeof err))
    return true;
  size_t i = option_at(FIELD(upstream));
  fprintf(stderr, "pycached: %s: %s\n", where(st, i, st->given[i], place, sizeof place), err);
  return false;
}

/* ---- the whole ------------------------------------------------------------------------------ */

/* getopt_long's value of options[i] is VAL_BASE + i: past every character, so that none is
 * '?' (an unknown option) or 'h' however long the table grows (at 61 rows --limits was '?', and
 * an unknown option printed the limits and exited 0). */
enum { VAL_BASE = 256, HELP = VAL_BASE + N_OPTIONS, VERSION, LIMITS };

/* The row of getopt_long's value c, or N_OPTIONS when c is no row's. */
static size_t option_of_val(int c)
{
  return c >= VAL_BASE && (size_t)(c - VAL_BASE) < N_OPTIONS ? (size_t)(c - VAL_BASE)
                                                              : N_OPTIONS;
}

/* The command line's first pass: --help, --version and --limits answered, unknown options and
 * stray arguments refused, and --config noted into *config_file. PCC_CONFIG_OK: go on. */
static pcc_config_status scan_argv(int argc, char **argv, const struct option *long_options,
                                   const char **config_file)
{
  optind = 1;
  opterr = 1;
  int c;
  while ((c = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
    if (c == 'h' || c == HELP) {
      print_help(argv[0]);
      return PCC_CONFIG_HELP;
    }
    if (c == VERSION) {
      printf("pycached %s\n", PCC_VERSION);
      return PCC_CONFIG_VERSION;
    }
    if (c == LIMITS) {
      print_limits();
      return PCC_CONFIG_LIMITS;
    }
    size_t i = option_of_val(c);
    if (i == N_OPTIONS) {
      fprintf(stderr, "Try '%s --help'.\n", argv[0]);
      return PCC_CONFIG_USAGE;
    }
    if (options[i].offset == FIELD(config_file))
      *config_file = optarg;
  }
  if (optind < argc) {
    fprintf(stderr, "pycached: unexpected argument '%s'\nTry '%s --help'.\n", argv[optind],
            argv[0]);
    return PCC_CONFIG_USAGE;
  }
  return PCC_CONFIG_OK;
}

pcc_config_status pcc_config_parse(int argc, char **argv, pcc_config *out)
{
  memset(out, 0, sizeof *out);
  parse_state st = {.config = out, .file = NULL};
  memset(st.given, 0, sizeof st.given); /* FROM_DEFAULT */
  text.lists_used = 0;
  for (size_t i = 0; i < N_OPTIONS; i++) {
    if (options[i].kind == OPT_NUMBER || options[i].kind == OPT_BYTES)
      memcpy((char *)out + options[i].offset, &options[i].number, sizeof options[i].number);
    else if (options[i].def != NULL && !apply(&st, i, options[i].def, st.given[i]))
      return PCC_CONFIG_USAGE; /* a bad default is a bug; fail loudly */
  }
  out->max_report_body = PCC_REPORT_BODY_MAX;

  struct option long_options[N_OPTIONS + 4];
  for (size_t i = 0; i < N_OPTIONS; i++)
    long_options[i] = (struct option){options[i].name,
                                      options[i].kind == OPT_FLAG ? no_argument : required_argument,
                                      NULL, VAL_BASE + (int)i};
  long_options[N_OPTIONS] = (struct option){"help", no_argument, NULL, HELP};
  long_options[N_OPTIONS + 1] = (struct option){"version", no_argument, NULL, VERSION};
  long_options[N_OPTIONS + 2] = (struct option){"limits", no_argument, NULL, LIMITS};
  long_options[N_OPTIONS + 3] = (struct option){NULL, 0, NULL, 0};

  /* the layers, lowest first: the file, the environment, the command line */
  const char *file = NULL;
  pcc_config_status rc = scan_argv(argc, argv, long_options, &file);
  if (rc != PCC_CONFIG_OK)
    return rc;
  origin file_from = {FROM_FLAG, 0};
  if (file == NULL) {
    char name[64];
    file = getenv(env_name(&options[option_at(FIELD(config_file))], name, sizeof name));
    file = file != NULL && *file != '\0' ? file : NULL;
    file_from.layer = FROM_ENV;
  }
  if (file != NULL && !read_file(&st, file, file_from))
    return PCC_CONFIG_USAGE;
  for (size_t i = 0; i < N_OPTIONS; i++)
    if (!(options[i].not_in & NOT_IN_ENV) && !env_option(&st, i))
      return PCC_CONFIG_USAGE;
  optind = 1;
  opterr = 0; /* the first pass has printed what there was to print */
  int c;
  while ((c = getopt_long(argc, argv, "h", long_options, NULL)) != -1)
    if (option_of_val(c) < N_OPTIONS &&
        !apply(&st, option_of_val(c), optarg, (origin){FROM_FLAG, 0}))
      return PCC_CONFIG_USAGE;

  if (!resolve_listen(&st) || !resolve_socket(&st) || !check_tls(&st) || !check_shared(&st) ||
      !check_upstream(&st))
    return PCC_CONFIG_USAGE;
  return derive_sizes(out, st.given[option_at(FIELD(map_size))].layer != FROM_DEFAULT,
                      st.given[option_at(FIELD(max_size))].layer != FROM_DEFAULT)
           ? PCC_CONFIG_OK
           : PCC_CONFIG_USAGE;
}

const char *pcc_config_option_for(size_t offset)
{
  size_t i = option_at(offset);
  return i < N_OPTIONS ? options[i].name : NULL;
}
