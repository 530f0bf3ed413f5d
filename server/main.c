/* main.c: the pycached program: options, signals, start-up and graceful shutdown. It opens the
 * core (core.c), then each feature of the table below (cache.c, admin.c, warm.c), and serves
 * their routes through the HTTP front (http.c); docs/DESIGN.md has the whole picture. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <arpa/inet.h>

#include "auth.h"
#include "config.h"
#include "core.h"
#include "feature_list.h"
#include "http.h"
#include "notify.h"
#include "pcc_log.h"
#include "tls.h"

/* mkdir -p with mode 0750 for each created component. */
static int make_dirs(const char *dir)
{
  char path[PATH_MAX];
  int n = snprintf(path, sizeof path, "%s", dir);
  if (n <= 0 || (size_t)n >= sizeof path)
    return -1;
  for (char *p = path + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(path, 0750) != 0 && errno != EEXIST)
      return -1;
    *p = '/';
  }
  return mkdir(path, 0750) != 0 && errno != EEXIST ? -1 : 0;
}

/* Is address a loopback one (127.0.0.0/8 or ::1)? */
static bool loopback(const char *address)
{
  struct in_addr v4;
  struct in6_addr v6;
  if (inet_pton(AF_INET, address, &v4) == 1)
    return (ntohl(v4.s_addr) >> 24) == 127;
  return inet_pton(AF_INET6, address, &v6) == 1 && memcmp(&v6, &in6addr_loopback, sizeof v6) == 0;
}

/* Loads --tokens, or refuses a non-loopback address without them (unless --insecure). Writes
 * what is in force into note, for the log. */
static int access_control(const pcc_config *config, pcc_auth **auth, char *note, size_t len)
{
  if (config->tokens == NULL) {
    bool local = config->listen[0] == '\0' || loopback(config->listen); /* or unix only */
    if (!local && !config->insecure) {
      pcc_logf(PCC_LOG_ERROR, "refusing to serve %s without --tokens: anyone on the network "
               "could read and fill the cache (pass --insecure to do it anyway)",
               config->listen);
      return -1;
    }
    static const char unix_note[] = "its mode and group decide who may connect";
    bool tcp = config->listen[0] != '\0', unix_socket = config->listen_path[0] != '\0';
    snprintf(note, len, "pycached: no --tokens: every endpoint is open%s%s%s%s",
             !tcp ? " (a unix socket: " : local ? " (loopback only" : ", on a non-loopback "
                                                                     "address (--insecure)",
             tcp && unix_socket ? "; on the unix socket " : "",
             unix_socket ? unix_note : "", tcp && !local ? "" : ")");
    return 0;
  }
  char error[256] = "";
  pcc_auth_status rc = pcc_auth_open(config->tokens, auth, error, sizeof error);
  if (rc != PCC_AUTH_OK) {
    pcc_logf(PCC_LOG_ERROR, "--tokens: %s", error[0] ? error : pcc_auth_strerror(rc));
    return -1;
  }
  snprintf(note, len, "pycached: %zu tokens from %s (reloaded on SIGHUP)", pcc_auth_count(*auth),
           config->tokens);
  return 0;
}

/* The features, opened in this order and closed in the reverse order. */
static const pcc_feature *const features[] = {
  &pcc_cache_feature,
  &pcc_admin_feature,
  &pcc_warm_feature,
};
#define N_FEATURES (sizeof features / sizeof features[0])

/* Closes the features that were opened (states NULL for the others) and the core. */
static void close_all(pcc_core *core, void **states)
{
  for (size_t i = N_FEATURES; i-- > 0;)
    if (states[i] != NULL)
      features[i]->close(states[i]);
  pcc_core_close(core);
}

/* Opens the main log (stderr) and the access log (NULL without --access-log) as the options
 * say; makes the first the main log. -1 after saying why (plainly on stderr, as config errors). */
static int open_logs(const pcc_config *config, pcc_log **main_log, pcc_log **access_log)
{
  pcc_log_level level = PCC_LOG_INFO;
  pcc_log_format format = PCC_LOG_TEXT;
  /* config.c has checked both against their choices */
  if (pcc_log_level_parse(config->log_level, &level) != PCC_LOG_OK ||
      pcc_log_format_parse(config->log_format, &format) != PCC_LOG_OK ||
      pcc_log_open("-", format, level, main_log) != PCC_LOG_OK) {
    fprintf(stderr, "pycached: cannot set up the log\n");
    return -1;
  }
  pcc_log_set_main(*main_log);
  *access_log = NULL;
  if (config->access_log == NULL)
    return 0;
  /* every request's line is written, whatever --log-level says */
  pcc_log_status rc = pcc_log_open(config->access_log, format, PCC_LOG_DEBUG, access_log);
  if (rc != PCC_LOG_OK) {
    pcc_logf(PCC_LOG_ERROR, "--access-log %s: %s", config->access_log,
             rc == PCC_LOG_OPEN ? strerror(errno) : pcc_log_strerror(rc));
    return -1;
  }
  return 0;
}

/* Serves until SIGINT or SIGTERM; the exit status. */
static int serve(const pcc_config *config, pcc_log *access_log)
{
  if (config->verify_store)
    return pcc_core_verify_store(config);
  if (make_dirs(config->store_dir) != 0) {
    pcc_logf(PCC_LOG_ERROR, "cannot create %s: %s", config->store_dir, strerror(errno));
    return 1;
  }

  /* Signals: SIGINT/SIGTERM are taken by sigwait below, in every thread blocked (threads and
   * worker processes inherit the mask; workers reset theirs). Writes to a gone peer are errors,
   * not deaths. */
  signal(SIGPIPE, SIG_IGN);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop, NULL);

  /* systemd (Type=notify): READY=1 below, the watchdog from now on; a no-op otherwise. */
  pcc_notify *notify = NULL;
  pcc_notify_status notify_rc = pcc_notify_open(&notify);
  if (notify_rc != PCC_NOTIFY_OK) {
    pcc_logf(PCC_LOG_ERROR, "systemd notification: %s", pcc_notify_strerror(notify_rc));
    return 1;
  }

  pcc_auth *auth = NULL;
  char access_note[PATH_MAX + 128];
  if (access_control(config, &auth, access_note, sizeof access_note) != 0) {
    pcc_notify_close(notify);
    return 1;
  }

  pcc_tls *tls = NULL; /* the TLS files, read and checked before the store is opened */
  char tls_error[PATH_MAX + 256] = "";
  if (pcc_tls_open(config, &tls, tls_error, sizeof tls_error) != PCC_TLS_OK) {
    pcc_logf(PCC_LOG_ERROR, "%s", tls_error);
    pcc_auth_close(auth);
    pcc_notify_close(notify);
    return 1;
  }

  pcc_core *core = NULL;
  pcc_core_status rc = pcc_core_open(config, &core);
  if (rc != PCC_CORE_OK) {
    pcc_logf(PCC_LOG_ERROR, "%s", pcc_core_strerror(rc));
    pcc_tls_close(tls);
    pcc_auth_close(auth);
    pcc_notify_close(notify);
    return rc == PCC_CORE_DAMAGED ? 3 : 1; /* 3: as --verify-store says of a damaged store */
  }
  void *states[N_FEATURES] = {NULL};
  pcc_http_mount mounts[N_FEATURES];
  for (size_t i = 0; i < N_FEATURES; i++) {
    if (features[i]->open(core, &states[i]) != 0) {
      pcc_logf(PCC_LOG_ERROR, "cannot start the %s feature", features[i]->name);
      close_all(core, states);
      pcc_tls_close(tls);
      pcc_auth_close(auth);
      pcc_notify_close(notify);
      return 1;
    }
    mounts[i] = (pcc_http_mount){features[i]->routes, features[i]->n_routes, states[i]};
  }
  pcc_http *http = NULL;
  if (pcc_http_start(config, mounts, N_FEATURES, pcc_core_counters(core), auth, tls, access_log,
                     &http) != 0) {
    close_all(core, states);
    pcc_tls_close(tls);
    pcc_auth_close(auth);
    pcc_notify_close(notify);
    return 1;
  }
  const pcc_backend *backends;
  pcc_core_backends(core, &backends);
  char magic[2 * PCC_MAGIC_LEN + 1];
  pcc_magic_to_hex(pcc_compiler_magic(backends[0].compiler), magic);
  char where[PCC_UNIX_PATH_MAX + INET6_ADDRSTRLEN + 40], tcp[INET6_ADDRSTRLEN + 24] = "";
  if (config->listen[0] != '\0')
    snprintf(tcp, sizeof tcp, "%s://%s%s%s:%u", tls != NULL ? "https" : "http",
             strchr(config->listen, ':') ? "[" : "", config->listen,
             strchr(config->listen, ':') ? "]" : "", (unsigned)pcc_http_port(http));
  if (config->listen_path[0] != '\0')
    snprintf(where, sizeof where, "unix:%s%s%s", config->listen_path, tcp[0] ? " and " : "",
             tcp);
  else
    snprintf(where, sizeof where, "%s", tcp);
  printf("pycached %s listening on %s (store %s, compiler %s magic %s, %d workers)\n",
         PCC_VERSION, where, config->store_dir, backends[0].name, magic,
         (int)pcc_compiler_workers(backends[0].compiler));
  printf("%s\n", access_note);
  if (tls != NULL)
    printf("pycached: TLS: --tls-cert %s%s%s (the certificate and key reloaded on SIGHUP)\n",
           config->tls_cert, pcc_tls_mutual(tls) ? "; mutual TLS: --tls-client-ca " : "",
           pcc_tls_mutual(tls) ? config->tls_client_ca : "");
  fflush(stdout);
  char status[sizeof where + 16];
  if (config->listen[0] == '\0' || config->listen_path[0] != '\0')
    snprintf(status, sizeof status, "listening on %s", where);
  else
    snprintf(status, sizeof status, "listening on port %u", (unsigned)pcc_http_port(http));
  pcc_notify_ready(notify, status);

  int sig = 0;
  while (sigwait(&stop, &sig) == 0 && sig == SIGHUP) {
    char error[256] = "";
    pcc_notify_reloading(notify);
    if (auth == NULL) {
      printf("pycached: SIGHUP: no --tokens to reload\n");
    } else if (pcc_auth_reload(auth, error, sizeof error) == PCC_AUTH_OK) {
      printf("pycached: SIGHUP: %zu tokens reloaded from %s\n", pcc_auth_count(auth),
             config->tokens);
      PCC_LOG_AUDIT("token-reload", "tokens reloaded", PCC_LOG_STR("result", "ok"),
                    PCC_LOG_INT("tokens", pcc_auth_count(auth)),
                    PCC_LOG_STR("file", config->tokens));
    } else {
      PCC_LOG_AUDIT("token-reload", "SIGHUP: the previous tokens stay in force",
                    PCC_LOG_STR("result", "failed"), PCC_LOG_STR("error", error),
                    PCC_LOG_INT("tokens", pcc_auth_count(auth)),
                    PCC_LOG_STR("file", config->tokens));
    }
    if (tls != NULL) {
      char tls_reload_error[PATH_MAX + 256] = "";
      if (pcc_tls_reload(tls, tls_reload_error, sizeof tls_reload_error) == PCC_TLS_OK) {
        printf("pycached: SIGHUP: --tls-cert %s and --tls-key%s reloaded (new connections)\n",
               config->tls_cert, pcc_tls_mutual(tls) ? " and --tls-client-ca" : "");
        PCC_LOG_AUDIT("tls-reload", "TLS certificate and key reloaded",
                      PCC_LOG_STR("result", "ok"), PCC_LOG_STR("file", config->tls_cert));
      } else {
        PCC_LOG_AUDIT("tls-reload", "SIGHUP: the previous certificate stays in force",
                      PCC_LOG_STR("result", "failed"), PCC_LOG_STR("error", tls_reload_error),
                      PCC_LOG_STR("file", config->tls_cert));
      }
    }
    fflush(stdout);
    if (pcc_log_reopen(access_log) != PCC_LOG_OK) /* logrotate has renamed it */
      pcc_logf(PCC_LOG_ERROR, "SIGHUP: cannot reopen --access-log %s: %s; lines go on to the "
               "old file", config->access_log, strerror(errno));
    pcc_notify_ready(notify, status);
  }
  printf("pycached: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  fflush(stdout);
  pcc_notify_stopping(notify);
  pcc_http_quiesce(http); /* no new connections */
  for (size_t i = 0; i < N_FEATURES; i++) /* work in progress ends; waiters are resumed */
    if (features[i]->shutdown != NULL)
      features[i]->shutdown(states[i]);
  unsigned unfinished = pcc_http_drain(http, 5000);
  if (unfinished > 0)
    pcc_logf(PCC_LOG_WARN, "%u requests unfinished at exit", unfinished);
  pcc_http_stop(http);
  if (pcc_log_dropped(access_log) > 0)
    pcc_logf(PCC_LOG_WARN, "--access-log %s: %llu lines could not be written", config->access_log,
             (unsigned long long)pcc_log_dropped(access_log));
  close_all(core, states);
  pcc_tls_close(tls);
  pcc_auth_close(auth);
  pcc_notify_close(notify);
  return 0;
}

int main(int argc, char **argv)
{
  pcc_config config;
  switch (pcc_config_parse(argc, argv, &config)) {
  case PCC_CONFIG_OK: break;
  case PCC_CONFIG_HELP:
  case PCC_CONFIG_VERSION:
  case PCC_CONFIG_LIMITS: return 0;
  case PCC_CONFIG_USAGE: return 2;
  }
  pcc_log *main_log = NULL, *access_log = NULL;
  int rc = open_logs(&config, &main_log, &access_log) == 0 ? serve(&config, access_log) : 1;
  pcc_log_set_main(NULL);
  pcc_log_close(access_log);
  pcc_log_close(main_log);
  return rc;
}
