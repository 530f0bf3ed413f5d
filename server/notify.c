/* notify.c: readiness, reload, stop and watchdog notifications to systemd through libsystemd's
 * sd_notify (notify.h says which and when). A no-op without NOTIFY_SOCKET: sd_notify returns 0
 * and sd_watchdog_enabled says no watchdog. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "notify.h"

struct pcc_notify {
  uint64_t interval_usec; /* between two WATCHDOG=1; 0: no watchdog thread */
  bool thread_started;
  bool stop;              /* under lock: the thread returns */
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake;    /* on CLOCK_MONOTONIC */
};

/* Sends state (sd_notify(3) assignments, one a line). Failures are not the server's business:
 * systemd gone, the service fails by its own timeouts. */
static void send_state(const char *state)
{
  (void)sd_notify(0, state);
}

/* The watchdog thread: WATCHDOG=1 at once, then every interval until stop. */
static void *watchdog_main(void *arg)
{
  pcc_notify *notify = arg;
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  pthread_mutex_lock(&notify->lock);
  while (!notify->stop) {
    send_state("WATCHDOG=1");
    uint64_t ns = (uint64_t)next.tv_nsec + notify->interval_usec * 1000u;
    next.tv_sec += (time_t)(ns / 1000000000u);
    next.tv_nsec = (long)(ns % 1000000000u);
    while (!notify->stop && pthread_cond_timedwait(&notify->wake, &notify->lock, &next) != ETIMEDOUT) {
    }
  }
  pthread_mutex_unlock(&notify->lock);
  return NULL;
}

pcc_notify_status pcc_notify_open(pcc_notify **out)
{
  *out = NULL;
  pcc_notify *notify = calloc(1, sizeof *notify);
  if (notify == NULL)
    return PCC_NOTIFY_NOMEM;
  pthread_condattr_t attr;
  if (pthread_condattr_init(&attr) != 0) {
    free(notify);
    return PCC_NOTIFY_NOMEM;
  }
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  int rc = pthread_cond_init(&notify->wake, &attr);
  pthread_condattr_destroy(&attr);
  if (rc != 0 || pthread_mutex_init(&notify->lock, NULL) != 0) {
    if (rc == 0)
      pthread_cond_destroy(&notify->wake);
    free(notify);
    return PCC_NOTIFY_NOMEM;
  }
  uint64_t usec = 0;
  /* 0: leave WATCHDOG_USEC and WATCHDOG_PID set; the workers are other pids, whom
   * sd_watchdog_enabled would not answer anyway. */
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    notify->interval_usec = usec / 2 > 0 ? usec / 2 : 1;
    if (pthread_create(&notify->thread, NULL, watchdog_main, notify) != 0) {
      pcc_notify_close(notify);
      return PCC_NOTIFY_THREAD;
    }
    notify->thread_started = true;
  }
  *out = notify;
  return PCC_NOTIFY_OK;
}

void pcc_notify_ready(pcc_notify *notify, const char *status)
{
  (void)notify;
  char state[512];
  snprintf(state, sizeof state, "READY=1%s%s", status ? "\nSTATUS=" : "", status ? status : "");
  send_state(state);
}

void pcc_notify_reloading(pcc_notify *notify)
{
  (void)notify;
  send_state("RELOADING=1\nSTATUS=reloading the tokens (SIGHUP)");
}

void pcc_notify_stopping(pcc_notify *notify)
{
  (void)notify;
  send_state("STOPPING=1\nSTATUS=shutting down");
}

void pcc_notify_close(pcc_notify *notify)
{
  if (notify == NULL)
    return;
  if (notify->thread_started) {
    pthread_mutex_lock(&notify->lock);
    notify->stop = true;
    pthread_cond_signal(&notify->wake);
    pthread_mutex_unlock(&notify->lock);
    pthread_join(notify->thread, NULL);
  }
  pthread_cond_destroy(&notify->wake);
  pthread_mutex_destroy(&notify->lock);
  free(notify);
}

const char *pcc_notify_strerror(pcc_notify_status rc)
{
  static const char *const messages[] = {
    [PCC_NOTIFY_OK] = "ok",
    [PCC_NOTIFY_NOMEM] = "out of memory",
    [PCC_NOTIFY_THREAD] = "cannot start the watchdog thread",
  };
  if ((unsigned)rc < sizeof messages / sizeof messages[0] && messages[rc] != NULL)
    return messages[rc];
  return "unknown notify status";
}
