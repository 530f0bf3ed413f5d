/* config.h: pycached's options, held in one table (config.c) so that --help, the command line,
 * the --config file, the PYCACHED_* environment variables, validation and docs/DESIGN.md's
 * limits cannot drift apart. docs/OPERATIONS.md, "Configuration", is the user's side. */
#ifndef PCC_CONFIG_H
#define PCC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <netinet/in.h>

#include "pcc_limits.h"

#define PCC_MAX_SOURCE_ROOTS 16 /* --source-root options */
#define PCC_MAX_COMPILERS 8     /* --compiler options */
#define PCC_MAX_SERVER_NAMES 8  /* --server-name options */

typedef struct {
  const char *listen_arg;    /* --listen as given: HOST, HOST:PORT, [IPV6], [IPV6]:PORT,
                              * unix:PATH, or a unix: one and a TCP one separated by a comma */
  char listen[INET6_ADDRSTRLEN]; /* the TCP address to bind, numeric and canonical ("::1");
                                  * "" when --listen has none (a unix socket only) */
  char listen_name[PCC_HOST_NAME_MAX + 1]; /* the host of --listen when it is not that text (a
                                            * name: "localhost"; "[::0001]"); "" when it is */
  char listen_path[PCC_UNIX_PATH_MAX + 1]; /* --listen unix:PATH's PATH; "" without one (with
                                            * no TCP address, listen is "" and port unused) */
  const char *socket_mode_arg; /* --socket-mode as given (octal) */
  unsigned socket_mode;        /* ... as a number */
  const char *socket_group;    /* --socket-group as given; NULL: none */
  long socket_gid;             /* ... resolved; -1: none (the socket keeps the server's group) */
  uint64_t port;             /* --port, or the port of --listen (docs/OPERATIONS.md) */
  const char *config_file;   /* --config or PYCACHED_CONFIG; NULL: none */
  const char *store_dir;
  uint64_t map_size;         /* LMDB map: the most the file may grow to */
  uint64_t max_size;         /* payload bytes kept before the least recently used are evicted */
  uint64_t max_profiles;     /* import profiles kept */
  uint64_t profile_days;     /* days a profile not updated is kept; 0: forever */
  uint64_t workers;          /* 0: one per core */
  uint64_t compile_timeout;  /* seconds */
  uint64_t timeout_memory;   /* seconds a timed-out source is answered 504 at once; 0: never */
  uint64_t worker_memory;    /* bytes; RLIMIT_AS of each worker */
  uint64_t max_source;       /* bytes: POST /v1/compile body, and a source the server reads */
  uint64_t max_profile_body; /* bytes: POST /v1/profile body */
  uint64_t max_batch_body;   /* bytes: POST /v1/batch body */
  uint64_t max_report_body;  /* bytes: POST /v1/report body (fixed: PCC_REPORT_BODY_MAX) */
  uint64_t max_batch;        /* lookups of one batch */
  uint64_t max_batch_response; /* bytes of one batch answer */
  uint64_t max_queued_compiles; /* compiles waiting for a worker, per backend */
  uint64_t max_bundle;       /* bytes of one bundle */
  uint64_t bundle_cache;     /* bytes of bundles kept built */
  uint64_t threads;          /* HTTP threads */
  uint64_t max_connections;
  uint64_t max_connections_per_ip; /* 0: no limit */
  uint64_t header_timeout;   /* seconds for a request's request line and headers, in all */
  uint64_t body_timeout;     /* seconds for a request's body, in all */
  uint64_t idle_timeout;     /* seconds a kept-alive connection waits for its next request */
  const char *worker;        /* compiler worker executable; NULL: found next to pycached */
  const char *worker_user;   /* user the workers run as; NULL: their own uid when root */
  uint64_t worker_recycle;   /* compiles of one worker before a fresh one replaces it */
  uint64_t worker_rss;       /* bytes of RssAnon of a worker after a compile before a fresh one
                              * replaces it; 0: no limit */
  const char *source_roots[PCC_MAX_SOURCE_ROOTS];
  unsigned n_source_roots;
  const char *compilers[PCC_MAX_COMPILERS]; /* other interpreters, each a backend */
  unsigned n_compilers;
  const char *tokens;         /* token file; NULL: no access control (loopback only) */
  bool insecure;              /* allow a non-loopback address without tokens */
  const char *backup_dir;     /* where POST /v1/admin/backup writes; NULL: refused */
  const char *tls_cert;       /* --tls-cert: PEM certificate (chain) of the server; NULL: no TLS */
  const char *tls_key;        /* --tls-key: PEM private key of --tls-cert (both or neither) */
  const char *tls_client_ca;  /* --tls-client-ca: PEM CAs a client certificate must verify
                               * against (mutual TLS); NULL: none asked for */
  const char *server_names[PCC_MAX_SERVER_NAMES]; /* Host names the server answers to */
  unsigned n_server_names;
  bool retire_unserved;       /* --retire-unserved-magics */
  bool no_embedded;           /* --no-embedded: only the --compiler backends */
  const char *on_damaged_store; /* "refuse" or "quarantine" (docs/OPERATIONS.md) */
  const char *store_compression; /* "none" or "zstd" */
  bool verify_store;          /* --verify-store: check the store and exit */
  const char *log_level;      /* "error", "warn", "info" or "debug" (proto/pcc_log.h) */
  const char *log_format;     /* "text" or "json" */
  const char *access_log;     /* FILE, or "-" for stderr; NULL: no access log */
  const char *shared;         /* --shared redis://HOST:PORT[,...]; NULL: no shared tier */
  uint64_t shared_timeout;    /* ms of one Redis command */
  uint64_t shared_connect_timeout; /* ms of one Redis connect */
  uint64_t shared_ttl;        /* seconds a shared value lives; 0: none (Redis' maxmemory policy) */
  const char *shared_key;     /* --shared-key FILE: values signed and checked with it; NULL: none */
  const char *shared_password_file; /* --shared-password-file FILE: AUTH with it; NULL: none */
  const char *shared_user;    /* --shared-user NAME: the ACL user of that password; NULL: none */
  const char *upstream;       /* --upstream URL[,...]: other pycached servers asked first; NULL: none */
  uint64_t upstream_timeout;  /* ms of one compile asked of an upstream */
  uint64_t upstream_connect_timeout; /* ms of one connect to an upstream */
  const char *upstream_ca_file;    /* CAs of https:// upstreams; NULL: the system's */
  const char *upstream_token_file; /* a token sent to the upstreams; NULL: none */
} pcc_config;

typedef enum {
  PCC_CONFIG_OK = 0,
  PCC_CONFIG_HELP,    /* --help was printed: exit 0 */
  PCC_CONFIG_VERSION, /* --version was printed: exit 0 */
  PCC_CONFIG_LIMITS,  /* --limits was printed: exit 0 */
  PCC_CONFIG_USAGE,   /* a bad option; the message is on stderr: exit 2 */
} pcc_config_status;

/* Fills *out: the defaults, then the --config file (or PYCACHED_CONFIG's), then the PYCACHED_*
 * environment variables, then argv, each over the one before; then resolves --listen (a host
 * name through getaddrinfo). On a bad option prints one line naming it and where it came from
 * (FILE:LINE, the variable, or the flag) and returns PCC_CONFIG_USAGE. Strings in *out point
 * into argv, the environment, or storage of config.c that holds the file's values until the
 * next call (one configuration at a time: not thread-safe). */
pcc_config_status pcc_config_parse(int argc, char **argv, pcc_config *out);

/* The name of the option that sets the pcc_config field at offset ("max-source"), or NULL when
 * no option does. Static storage. */
const char *pcc_config_option_for(size_t offset);

#endif
