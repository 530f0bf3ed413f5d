/* listener.c: the listening socket and the accept thread of the HTTP front (listener.h).
 *
 * The thread polls the listening socket (non-blocking) and an eventfd that pcc_listener_stop
 * signals, and accepts until the backlog is empty. Out of descriptors (EMFILE, ENFILE) it
 * frees its spare descriptor (an open /dev/null), accepts one connection into the slot and
 * closes it at once, then opens the spare again: the backlog drains and every client hears a
 * close, the way nginx and libuv handle the same condition. When the spare is gone (another
 * thread took the freed slot) or the kernel is short of memory (ENOBUFS, ENOMEM), the thread
 * waits PCC_ACCEPT_BACKOFF_MS, on the eventfd only, before it tries again.
 *
 * A unix socket (pcc_listener_open_unix) is bound at a path checked first: a file there that is
 * not a socket is refused, a socket nobody accepts on (connect() is refused) is a stale one and
 * removed, a socket a process answers on is refused. Its group and mode are set between bind()
 * and listen(): until listen() every connect() is refused, so there is no moment at which the
 * socket takes connections with the mode bind() left it. The path is removed at stop when it is
 * still the socket bound (same device and inode). */
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
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "pcc_limits.h"

struct pcc_listener {
  int fd;       /* the listening socket; -1 once stopped */
  int wake;     /* eventfd: written by pcc_listener_stop */
  int spare;    /* an open /dev/null, given up to accept-and-close when out of descriptors */
  pcc_listener_take_fn take;
  void *ctx;
  uint16_t port;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* a unix socket's; "" for TCP */
  dev_t path_dev;                                         /* ... and the socket file bound */
  ino_t path_ino;
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
  case PCC_LISTENER_PATH:
    return "not an absolute path that fits a unix socket address";
  case PCC_LISTENER_NOT_SOCKET:
    return "a file that is not a socket is there (left as it is)";
  case PCC_LISTENER_IN_USE:
    return "another server answers on this socket";
  case PCC_LISTENER_STALE:
    return "cannot remove the stale socket there";
  case PCC_LISTENER_PERMISSIONS:
    return "cannot set the socket's group or mode";
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

/* A listener with its eventfd and spare, no socket yet; NULL when out of memory. */
static pcc_listener *listener_new(pcc_listener_take_fn take, void *ctx)
{
  pcc_listener *l = calloc(1, sizeof *l);
  if (l == NULL)
    return NULL;
  l->take = take;
  l->ctx = ctx;
  l->fd = -1;
  l->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  l->spare = spare_open();
  return l;
}

/* Starts the accept thread of l, whose socket listens; on failure closes l. */
static pcc_listener_status listener_start(pcc_listener *l, pcc_listener **out)
{
  if (pthread_create(&l->thread, NULL, accept_main, l) != 0) {
    pcc_listener_close(l);
    return PCC_LISTENER_THREAD;
  }
  l->running = true;
  *out = l;
  return PCC_LISTENER_OK;
}

pcc_listener_status pcc_listener_open(const struct sockaddr *addr, socklen_t addrlen,
                                      pcc_listener_take_fn take, void *ctx,
                                      pcc_listener **out)
{
  pcc_listener *l = listener_new(take, ctx);
  if (l == NULL)
    return PCC_LISTENER_NOMEM;
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
  return listener_start(l, out);
}

/* What is at a unix socket's path before bind: nothing (or a stale socket, removed), or the
 * reason not to go on. */
static pcc_listener_status unix_path_free(const struct sockaddr_un *addr)
{
  struct stat st;
  if (lstat(addr->sun_path, &st) != 0)
    return errno == ENOENT ? PCC_LISTENER_OK : PCC_LISTENER_SOCKET;
  if (!S_ISSOCK(st.st_mode))
    return PCC_LISTENER_NOT_SOCKET;
  int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0); /* never waits */
  if (probe < 0)
    return PCC_LISTENER_SOCKET;
  int rc = connect(probe, (const struct sockaddr *)addr, sizeof *addr);
  int err = errno;
  close(probe);
  if (rc == 0 || err == EAGAIN) /* EAGAIN: a full backlog, which someone listens behind */
    return PCC_LISTENER_IN_USE;
  if (err != ECONNREFUSED)
    return PCC_LISTENER_SOCKET;
  return unlink(addr->sun_path) == 0 || errno == ENOENT ? PCC_LISTENER_OK : PCC_LISTENER_STALE;
}

pcc_listener_status pcc_listener_open_unix(const char *path, unsigned mode, long gid,
                                           pcc_listener_take_fn take, void *ctx,
                                           pcc_listener **out)
{
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  size_t len = strlen(path);
  if (path[0] != '/' || len >= sizeof addr.sun_path)
    return PCC_LISTENER_PATH;
  memcpy(addr.sun_path, path, len + 1);
  pcc_listener_status rc = unix_path_free(&addr);
  if (rc != PCC_LISTENER_OK)
    return rc;
  pcc_listener *l = listener_new(take, ctx);
  if (l == NULL)
    return PCC_LISTENER_NOMEM;
  l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (l->wake < 0 || l->fd < 0 ||
      bind(l->fd, (const struct sockaddr *)&addr, sizeof addr) != 0) {
    pcc_listener_close(l);
    return PCC_LISTENER_SOCKET;
  }
  struct stat st;
  if (lstat(path, &st) == 0) { /* from here on removed at stop */
    memcpy(l->path, addr.sun_path, len + 1);
    l->path_dev = st.st_dev;
    l->path_ino = st.st_ino;
  }
  /* before listen(): nobody can connect yet, so nobody connects under bind's mode */
  if (l->path[0] == '\0' || (gid >= 0 && chown(path, (uid_t)-1, (gid_t)gid) != 0) ||
      chmod(path, mode) != 0) {
    pcc_listener_close(l);
    return PCC_LISTENER_PERMISSIONS;
  }
  if (listen(l->fd, SOMAXCONN) != 0) {
    pcc_listener_close(l);
    return PCC_LISTENER_SOCKET;
  }
  return listener_start(l, out);
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
  struct stat st; /* the socket file, unless another has taken its place since */
  if (l->path[0] != '\0' && lstat(l->path, &st) == 0 && st.st_dev == l->path_dev &&
      st.st_ino == l->path_ino)
    unlink(l->path);
  l->path[0] = '\0';
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
