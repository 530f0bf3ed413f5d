/* main.c: the pycached program: options, signals, start-up and graceful shutdown. The cache
 * logic is in service.c, the HTTP front in http.c; docs/DESIGN.md has the whole picture. */
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
#include "http.h"
#include "service.h"

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
    if (!loopback(config->listen) && !config->insecure) {
      fprintf(stderr, "pycached: refusing to serve %s without --tokens: anyone on the network "
              "could read and fill the cache (pass --insecure to do it anyway)\n",
              config->listen);
      return -1;
    }
    snprintf(note, len, "pycached: no --tokens: every endpoint is open%s",
             loopback(config->listen) ? " (loopback only)" : ", on a non-loopback address (--insecure)");
    return 0;
  }
  char error[256] = "";
  pcc_auth_status rc = pcc_auth_open(config->tokens, auth, error, sizeof error);
  if (rc != PCC_AUTH_OK) {
    fprintf(stderr, "pycached: --tokens: %s\n", error[0] ? error : pcc_auth_strerror(rc));
    return -1;
  }
  snprintf(note, len, "pycached: %zu tokens from %s (reloaded on SIGHUP)", pcc_auth_count(*auth),
           config->tokens);
  return 0;
}

int main(int argc, char **argv)
{
  pcc_config config;
  switch (pcc_config_parse(argc, argv, &config)) {
  case PCC_CONFIG_OK: break;
  case PCC_CONFIG_HELP:
  case PCC_CONFIG_VERSION: return 0;
  case PCC_CONFIG_USAGE: return 2;
  }
  if (make_dirs(config.store_dir) != 0) {
    fprintf(stderr, "pycached: cannot create %s: %s\n", config.store_dir, strerror(errno));
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

  pcc_auth *auth = NULL;
  char access_note[PATH_MAX + 128];
  if (access_control(&config, &auth, access_note, sizeof access_note) != 0)
    return 1;

  pcc_service *service = NULL;
  pcc_service_status rc = pcc_service_open(&config, &service);
  if (rc != PCC_SERVICE_OK) {
    fprintf(stderr, "pycached: %s\n", pcc_service_strerror(rc));
    pcc_auth_close(auth);
    return 1;
  }
  pcc_http *http = NULL;
  if (pcc_http_start(&config, service, auth, &http) != 0) {
    pcc_service_close(service);
    pcc_auth_close(auth);
    return 1;
  }
  cJSON *stats = svc_stats(service);
  const cJSON *compiler = cJSON_GetArrayItem(cJSON_GetObjectItem(stats, "compilers"), 0);
  printf("pycached %s listening on http://%s%s%s:%u (store %s, compiler %s magic %s, %d "
         "workers)\n",
         PCC_VERSION, strchr(config.listen, ':') ? "[" : "", config.listen,
         strchr(config.listen, ':') ? "]" : "", (unsigned)pcc_http_port(http), config.store_dir,
         cJSON_GetStringValue(cJSON_GetObjectItem(compiler, "name")),
         cJSON_GetStringValue(cJSON_GetObjectItem(compiler, "magic")),
         (int)cJSON_GetNumberValue(cJSON_GetObjectItem(compiler, "workers")));
  printf("%s\n", access_note);
  fflush(stdout);
  cJSON_Delete(stats);

  int sig = 0;
  while (sigwait(&stop, &sig) == 0 && sig == SIGHUP) {
    char error[256] = "";
    if (auth == NULL)
      printf("pycached: SIGHUP: no --tokens to reload\n");
    else if (pcc_auth_reload(auth, error, sizeof error) == PCC_AUTH_OK)
      printf("pycached: SIGHUP: %zu tokens reloaded from %s\n", pcc_auth_count(auth),
             config.tokens);
    else
      fprintf(stderr, "pycached: SIGHUP: %s; the previous tokens stay in force\n", error);
    fflush(stdout);
  }
  printf("pycached: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  fflush(stdout);
  pcc_http_quiesce(http);        /* no new connections */
  pcc_service_shutdown(service); /* running compiles end; waiters are resumed */
  unsigned unfinished = pcc_http_drain(http, 5000);
  if (unfinished > 0)
    fprintf(stderr, "pycached: %u requests unfinished at exit\n", unfinished);
  pcc_http_stop(http);
  pcc_service_close(service);
  pcc_auth_close(auth);
  return 0;
}
