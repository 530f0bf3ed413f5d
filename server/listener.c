/* listener.c: the listening socket and the accept thread of the HTTP front (listener.h).
 *
 * The thread polls the listening socket (non-blocking) and an eventfd that pcc_listener_stop
 * signals, and accepts until the backlog is empty. Out of descriptors (EMFILE, ENFILE) it
 * frees its spare descriptor (an open /dev/null), accepts one connection into the slot and
 * closes it at once, then opens the spare again: the backlog drains and every client hears a
 * close, the way nginx and libuv handle the same condition. When the spare is gone (another
 * thread took the freed slot) or the kernel is short of memory (ENOBUFS, ENOMEM), the thread
 * waits PCC_ACCEPT_BACKOFF_MS, on the eventfd only, before it tries again. */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "pcc_limits.h"

struct pcc_listener {
  int fd;       /* the listening socket; -1 once stopped */
  int wake;     /* eventfd: written by pcc_listener_stop */
  int spare;    /* an open /dev/null, given up to accept-and-close when out of descriptors */
  pcc_listener_take_fn take;
  void *ctx;
  uint16_t port;
  pthread_t thread;
  bool running; /* the thread was started and not yet joined */
};

const char *pcc_listener_strerror(pcc_listener_status rc)
{
  switch (rc) {
  case PCC_LISTENER_OK:
    return "ok";
  case PCC_LISTENER_NOMEM:
    return "out of memory";
  case PCC_LISTENER_SOCKET:
    return "cannot listen (address in use, or not permitted)";
  case PCC_LISTENER_THREAD:
    return "cannot start the accept thread";
  }
  return "unknown listener status";
}

static int spare_open(void)
{
  return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Waits ms milliseconds or until stopped; returns whether stopped. */
static bool wait_or_stop(const pcc_listener *l, int ms)
{
  struct pollfd p = {.fd = l->wake, .events = POLLIN, .revents = 0};
  return poll(&p, 1, ms) > 0;
}

/* Out of descriptors: one connection of the backlog accepted into the spare's slot and closed.
 * Returns false when that was not possible (the caller backs off). */
static bool refuse_one(pcc_listener *l)
{
  if (l->spare < 0 && (l->spare = spare_open()) < 0)
    return false;
  close(l->spare);
  int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
  if (fd >= 0)
    close(fd);
  l->spare = spare_open();
  return fd >= 0;
}

static void *accept_main(void *arg)
{
  pcc_listener *l = arg;
  struct pollfd p[2] = {{.fd = l->fd, .events = POLLIN, .revents = 0},
                        {.fd = l->wake, .events = POLLIN, .revents = 0}};
  for (;;) {
    if (poll(p, 2, -1) < 0 && errno != EINTR)
      break;
    if (p[1].revents != 0)
      break;
    for (unsigned n = 0; n < PCC_ACCEPT_BATCH; n++) { /* then look at the eventfd again */
      struct sockaddr_storage addr;
      socklen_t len = sizeof addr;
      int fd = accept4(l->fd, (struct sockaddr *)&addr, &len, SOCK_CLOEXEC);
      if (fd >= 0) {
        l->take(l->ctx, fd, (struct sockaddr *)&addr, len);
        continue;
      }
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      if ((errno == EMFILE || errno == ENFILE) && refuse_one(l))
        continue;
      /* out of descriptors with no spare, out of memory, or worse: pause, never spin */
      if (wait_or_stop(l, PCC_ACCEPT_BACKOFF_MS))
        return NULL;
      break;
    }
  }
  return NULL;
}

pcc_listener_status pcc_listener_open(const struct sockaddr *addr, socklen_t addrlen,
                                      pcc_listener_take_fn take, void *ctx,
                                      pcc_listener **out)
{
  pcc_listener *l = calloc(1, sizeof *l);
  if (l == NULL)
    return PCC_LISTENER_NOMEM;
  l->take = take;
  l->ctx = ctx;
  l->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  l->spare = spare_open();
  l->fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int on = 1;
  bool ok = l->wake >= 0 && l->fd >= 0 &&
            setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) == 0 &&
            (addr->sa_family != AF_INET6 ||
             setsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) == 0) &&
            bind(l->fd, addr, addrlen) == 0 && listen(l->fd, SOMAXCONN) == 0;
  struct sockaddr_storage bound;
  socklen_t len = sizeof bound;
  if (ok && getsockname(l->fd, (struct sockaddr *)&bound, &len) == 0)
    l->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
  if (!ok) {
    pcc_listener_close(l);
    return PCC_LISTENER_SOCKET;
  }
  if (pthread_create(&l->thread, NULL, accept_main, l) != 0) {
    pcc_listener_close(l);
    return PCC_LISTENER_THREAD;
  }
  l->running = true;
  *out = l;
  return PCC_LISTENER_OK;
}

uint16_t pcc_listener_port(const pcc_listener *listener)
{
  return listener->port;
}

void pcc_listener_stop(pcc_listener *l)
{
  if (l == NULL)
    return;
  if (l->running) {
    uint64_t one = 1;
    if (write(l->wake, &one, sizeof one) != (ssize_t)sizeof one)
      perror("pycached: listener eventfd");
    pthread_join(l->thread, NULL);
    l->running = false;
  }
  if (l->fd >= 0)
    close(l->fd);
  l->fd = -1;
}

void pcc_listener_close(pcc_listener *l)
{
  if (l == NULL)
    return;
  pcc_listener_stop(l);
  if (l->wake >= 0)
    close(l->wake);
  if (l->spare >= 0)
    close(l->spare);
  free(l);
}
