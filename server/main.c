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
  pthread_sigmask(SIG_BLOCK, &stop, NULL);

  pcc_service *service = NULL;
  pcc_service_status rc = pcc_service_open(&config, &service);
  if (rc != PCC_SERVICE_OK) {
    fprintf(stderr, "pycached: %s\n", pcc_service_strerror(rc));
    return 1;
  }
  pcc_http *http = NULL;
  if (pcc_http_start(&config, service, &http) != 0) {
    pcc_service_close(service);
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
  fflush(stdout);
  cJSON_Delete(stats);

  int sig = 0;
  sigwait(&stop, &sig);
  printf("pycached: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  fflush(stdout);
  pcc_http_quiesce(http);        /* no new connections */
  pcc_service_shutdown(service); /* running compiles end; waiters are resumed */
  unsigned unfinished = pcc_http_drain(http, 5000);
  if (unfinished > 0)
    fprintf(stderr, "pycached: %u requests unfinished at exit\n", unfinished);
  pcc_http_stop(http);
  pcc_service_close(service);
  return 0;
}
