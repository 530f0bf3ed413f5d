/* config.c: the option table of pycached (name, default, bounds, help) and its parser. */
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "proto.h"

typedef enum { OPT_STRING, OPT_NUMBER, OPT_BYTES, OPT_LIST, OPT_FLAG } option_kind;

typedef struct {
  const char *name;
  option_kind kind;
  const char *arg;     /* the argument's name in --help */
  const char *def;     /* default of a string option, as text; NULL: none */
  uint64_t number;     /* default of a number or byte size (from pcc_limits.h where it is one) */
  uint64_t min, max;   /* for numbers and byte sizes; for lists, max is the capacity */
  size_t offset;       /* field in pcc_config */
  const char *help;
  size_t count_offset; /* lists: the unsigned count field */
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
  {"listen", OPT_STRING, "ADDR", "127.0.0.1", 0, 0, 0, FIELD(listen),
   "IPv4 or IPv6 address to listen on", 0},
  {"port", OPT_NUMBER, "N", NULL, 8700, 0, 65535, FIELD(port),
   "TCP port (0: any free port, printed at start)", 0},
  {"store", OPT_STRING, "DIR", "./var/pycached", 0, 0, 0, FIELD(store_dir),
   "LMDB store directory (created when missing)", 0},
  {"map-size", OPT_BYTES, "BYTES", NULL, 0, 1 * MIB, MAP_SIZE_MAX, FIELD(map_size),
   "LMDB map: the most the store's file may grow to (sparse) [the larger of 4G and 1.5 x "
   "--max-size + 64M]", 0},
  {"max-size", OPT_BYTES, "BYTES", NULL, PCC_STORE_MAX_SIZE_DEFAULT, 64 * KIB, MAP_SIZE_MAX,
   FIELD(max_size),
   "payload bytes kept before the least recently used code is evicted (with --map-size "
   "alone: 2/3 of it, at most 3G)", 0},
  {"max-profiles", OPT_NUMBER, "N", NULL, PCC_PROFILES_MAX_DEFAULT, 1, 10000000,
   FIELD(max_profiles), "import profiles kept (a new one replaces the least recently updated)",
   0},
  {"profile-days", OPT_NUMBER, "DAYS", NULL, PCC_PROFILE_DAYS_DEFAULT, 0, 36500,
   FIELD(profile_days), "a profile not updated for this long is dropped (0: never)", 0},
  {"workers", OPT_NUMBER, "N", NULL, 0, 0, PCC_WORKERS_MAX, FIELD(workers),
   "compiler worker processes (0: one per core)", 0},
  {"compile-timeout", OPT_NUMBER, "SECONDS", NULL, 10, 1, 3600, FIELD(compile_timeout),
   "a compile running longer is killed (504)", 0},
  {"timeout-memory", OPT_NUMBER, "SECONDS", NULL, PCC_TIMEOUT_MEMORY_DEFAULT, 0, 86400,
   FIELD(timeout_memory),
   "a source whose compile timed out is answered 504 at once for this long (0: off)", 0},
  {"worker-memory", OPT_BYTES, "BYTES", NULL, 1 * GIB, 64 * MIB, 1ull << 40,
   FIELD(worker_memory),
   "address-space limit of each compiler worker", 0},
  {"max-source", OPT_BYTES, "BYTES", NULL, PCC_SOURCE_MAX_DEFAULT, 1, PCC_SOURCE_MAX_CEILING,
   FIELD(max_source),
   "largest source accepted (413 beyond)", 0},
  {"threads", OPT_NUMBER, "N", NULL, 4, 1, 256, FIELD(threads), "HTTP threads (poll thread pool)",
   0},
  {"max-connections", OPT_NUMBER, "N", NULL, PCC_CONNECTIONS_DEFAULT, 1, 65536,
   FIELD(max_connections),
   "concurrent HTTP connections (past it the longest idle goes, else 503 busy)", 0},
  {"max-connections-per-ip", OPT_NUMBER, "N", NULL, PCC_CONNECTIONS_PER_IP_DEFAULT, 0, 65536,
   FIELD(max_connections_per_ip),
   "concurrent HTTP connections from one client address (0: no limit)", 0},
  {"header-timeout", OPT_NUMBER, "SECONDS", NULL, PCC_HEADER_TIMEOUT_DEFAULT, 1, 3600,
   FIELD(header_timeout),
   "a request whose request line and headers take longer in all is cut off", 0},
  {"body-timeout", OPT_NUMBER, "SECONDS", NULL, PCC_BODY_TIMEOUT_DEFAULT, 1, 86400,
   FIELD(body_timeout), "a request whose body takes longer in all is cut off", 0},
  {"idle-timeout", OPT_NUMBER, "SECONDS", NULL, PCC_IDLE_TIMEOUT_DEFAULT, 1, 86400,
   FIELD(idle_timeout), "a kept-alive connection without a new request for this long is closed",
   0},
  {"worker", OPT_STRING, "PATH", NULL, 0, 0, 0, FIELD(worker),
   "compiler worker executable (default: pycached-cpython-worker next to pycached)", 0},
  {"worker-user", OPT_STRING, "USER", NULL, 0, 0, 0, FIELD(worker_user),
   "user the compiler workers run as (default when started as root: a uid of their own)", 0},
  {"worker-recycle", OPT_NUMBER, "N", NULL, PCC_WORKER_COMPILES_DEFAULT, 1, 1000000000,
   FIELD(worker_recycle), "compiles after which a compiler worker is replaced by a fresh one", 0},
  {"worker-rss", OPT_BYTES, "BYTES", NULL, PCC_WORKER_RSS_DEFAULT, 0, 1ull << 40,
   FIELD(worker_rss),
   "a compiler worker whose anonymous resident memory passes this after a compile is replaced "
   "by a fresh one (0: never)", 0},
  {"source-root", OPT_LIST, "DIR", NULL, 0, 0, PCC_MAX_SOURCE_ROOTS, FIELD(source_roots),
   "directory whose files the server may read itself (repeatable)", FIELD(n_source_roots)},
  {"compiler", OPT_LIST, "PATH", NULL, 0, 0, PCC_MAX_COMPILERS, FIELD(compilers),
   "another interpreter to compile for (e.g. /usr/bin/pypy3; repeatable)", FIELD(n_compilers)},
  {"no-embedded", OPT_FLAG, "", NULL, 0, 0, 0, FIELD(no_embedded),
   "no backend for the embedded CPython: only the --compiler interpreters (at least one), the "
   "first being the default (retires the embedded one's magic, e.g. 3.11 after a move to 3.12)",
   0},
  {"tokens", OPT_STRING, "FILE", NULL, 0, 0, 0, FIELD(tokens),
   "JSON token file: require bearer tokens with roles (reloaded on SIGHUP)", 0},
  {"insecure", OPT_FLAG, "", NULL, 0, 0, 0, FIELD(insecure),
   "allow a non-loopback --listen without --tokens", 0},
  {"backup-dir", OPT_STRING, "DIR", NULL, 0, 0, 0, FIELD(backup_dir),
   "directory for POST /v1/admin/backup copies and for downloads' temporary copies (default "
   "for those: the store's directory)", 0},
  {"server-name", OPT_LIST, "NAME", NULL, 0, 0, PCC_MAX_SERVER_NAMES, FIELD(server_names),
   "a host name clients reach the server by (Host checks; repeatable)", FIELD(n_server_names)},
  {"max-profile-body", OPT_BYTES, "BYTES", NULL, PCC_PROFILE_BODY_MAX_DEFAULT, 1 * KIB,
   PCC_SOURCE_MAX_CEILING, FIELD(max_profile_body), "largest POST /v1/profile body (413 beyond)",
   0},
  {"max-batch-body", OPT_BYTES, "BYTES", NULL, PCC_BATCH_BODY_MAX_DEFAULT, 1 * KIB,
   PCC_SOURCE_MAX_CEILING, FIELD(max_batch_body), "largest POST /v1/batch body (413 beyond)", 0},
  {"max-batch", OPT_NUMBER, "N", NULL, PCC_BATCH_LOOKUPS_DEFAULT, 1, 100000, FIELD(max_batch),
   "lookups in one POST /v1/batch (400 beyond)", 0},
  {"max-batch-response", OPT_BYTES, "BYTES", NULL, PCC_BATCH_RESPONSE_MAX_DEFAULT, 1 * MIB,
   4 * GIB, FIELD(max_batch_response),
   "largest POST /v1/batch answer; lookups past it are answered too-large", 0},
  {"max-queued-compiles", OPT_NUMBER, "N", NULL, PCC_QUEUED_COMPILES_DEFAULT, 1, 65536,
   FIELD(max_queued_compiles),
   "compiles waiting for a worker, per backend (503 busy beyond)", 0},
  {"max-bundle", OPT_BYTES, "BYTES", NULL, PCC_BUNDLE_MAX_DEFAULT, 1 * MIB, 4 * GIB,
   FIELD(max_bundle), "largest bundle, binary or JSON; a profile's entries past it are left out",
   0},
  {"bundle-cache", OPT_BYTES, "BYTES", NULL, PCC_BUNDLE_CACHE_DEFAULT, 0, 64 * GIB,
   FIELD(bundle_cache), "memory for bundles kept built between requests", 0},
  {"retire-unserved-magics", OPT_FLAG, "", NULL, 0, 0, 0, FIELD(retire_unserved),
   "at start, delete entries of magics no compiler serves", 0},
  {"on-damaged-store", OPT_STRING, "refuse|quarantine", "refuse", 0, 0, 0,
   FIELD(on_damaged_store),
   "a store found damaged at start: refuse to start, or move its files aside (*.damaged-TIME) "
   "and start empty", 0},
  {"verify-store", OPT_FLAG, "", NULL, 0, 0, 0, FIELD(verify_store),
   "check every record of the store (read-only), print the problems and exit (0: sound, 3: "
   "damaged, 4: cannot be opened)", 0},
};
#define N_OPTIONS (sizeof options / sizeof options[0])

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
    printf("\n");
  }
  printf("  %-28s %s\n  %-28s %s\n  %-28s %s\n", "-h, --help", "print this help and exit",
         "--version", "print the version and exit", "--limits",
         "print every hard limit (docs/DESIGN.md, \"Limits\") and exit");
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

/* Parses a byte size: a whole number with an optional K, M, G or T suffix, or KB, MB, GB or TB
 * (powers of 1024 either way; any case). */
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

static bool apply(const option_spec *spec, const char *value, pcc_config *config)
{
  char *field = (char *)config + spec->offset;
  uint64_t number = 0;
  switch (spec->kind) {
  case OPT_STRING:
    memcpy(field, &value, sizeof value);
    return true;
  case OPT_FLAG:
    *(bool *)field = true;
    return true;
  case OPT_LIST: {
    unsigned *count = (unsigned *)((char *)config + spec->count_offset);
    if (*count >= spec->max) {
      fprintf(stderr, "pycached: at most %llu --%s options\n", (unsigned long long)spec->max,
              spec->name);
      return false;
    }
    ((const char **)field)[(*count)++] = value;
    return true;
  }
  case OPT_NUMBER: {
    int64_t parsed;
    if (pcc_parse_i64(value, 0, INT64_MAX, &parsed) != PCC_PROTO_OK)
      break;
    number = (uint64_t)parsed;
    goto check;
  }
  case OPT_BYTES:
    if (!parse_bytes(value, &number))
      break;
  check:
    if (number < spec->min || number > spec->max) {
      fprintf(stderr, "pycached: --%s %s: out of range [%llu, %llu]\n", spec->name, value,
              (unsigned long long)spec->min, (unsigned long long)spec->max);
      return false;
    }
    memcpy(field, &number, sizeof number);
    return true;
  }
  fprintf(stderr, "pycached: --%s: '%s' is not a valid %s\n", spec->name, value,
          spec->kind == OPT_BYTES ? "size (e.g. 512M, 3G, 3GB)" : "number");
  return false;
}

pcc_config_status pcc_config_parse(int argc, char **argv, pcc_config *out)
{
  memset(out, 0, sizeof *out);
  for (size_t i = 0; i < N_OPTIONS; i++) {
    if (options[i].kind == OPT_NUMBER || options[i].kind == OPT_BYTES)
      memcpy((char *)out + options[i].offset, &options[i].number, sizeof options[i].number);
    else if (options[i].def != NULL && !apply(&options[i], options[i].def, out))
      return PCC_CONFIG_USAGE; /* a bad default is a bug; fail loudly */
  }
  out->max_report_body = PCC_REPORT_BODY_MAX;

  enum { HELP = N_OPTIONS, VERSION, LIMITS };
  struct option long_options[N_OPTIONS + 4];
  for (size_t i = 0; i < N_OPTIONS; i++)
    long_options[i] = (struct option){options[i].name,
                                      options[i].kind == OPT_FLAG ? no_argument : required_argument,
                                      NULL, (int)i};
  long_options[N_OPTIONS] = (struct option){"help", no_argument, NULL, HELP};
  long_options[N_OPTIONS + 1] = (struct option){"version", no_argument, NULL, VERSION};
  long_options[N_OPTIONS + 2] = (struct option){"limits", no_argument, NULL, LIMITS};
  long_options[N_OPTIONS + 3] = (struct option){NULL, 0, NULL, 0};

  optind = 1;
  int c;
  bool given[N_OPTIONS] = {false};
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
    if (c < 0 || (size_t)c >= N_OPTIONS) {
      fprintf(stderr, "Try '%s --help'.\n", argv[0]);
      return PCC_CONFIG_USAGE;
    }
    if (!apply(&options[c], optarg, out))
      return PCC_CONFIG_USAGE;
    given[c] = true;
  }
  if (optind < argc) {
    fprintf(stderr, "pycached: unexpected argument '%s'\nTry '%s --help'.\n", argv[optind],
            argv[0]);
    return PCC_CONFIG_USAGE;
  }
  bool map_given = false, max_given = false;
  for (size_t i = 0; i < N_OPTIONS; i++) {
    map_given |= given[i] && options[i].offset == FIELD(map_size);
    max_given |= given[i] && options[i].offset == FIELD(max_size);
  }
  if (strcmp(out->on_damaged_store, "refuse") != 0 &&
      strcmp(out->on_damaged_store, "quarantine") != 0) {
    fprintf(stderr, "pycached: --on-damaged-store %s: refuse or quarantine\n",
            out->on_damaged_store);
    return PCC_CONFIG_USAGE;
  }
  return derive_sizes(out, map_given, max_given) ? PCC_CONFIG_OK : PCC_CONFIG_USAGE;
}

const char *pcc_config_option_for(size_t offset)
{
  for (size_t i = 0; i < N_OPTIONS; i++)
    if (options[i].offset == offset)
      return options[i].name;
  return NULL;
}
