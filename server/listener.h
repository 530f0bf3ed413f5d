/* listener.h: the listening socket of pycached's HTTP front and the thread that accepts on it,
 * handing each connection to a callback (http.c gives it to libmicrohttpd). It exists because
 * libmicrohttpd's own accept loop busy-waits when the process is out of file descriptors: a
 * thread of its pool with no connection of its own retries accept() without pause (two cores
 * at 100 % in tests/chaos/drill_resources.py). Out of descriptors, this thread closes a spare
 * descriptor, accepts the connection and closes it at once (the client hears a close instead of
 * waiting in the backlog), takes the spare again, and otherwise waits PCC_ACCEPT_BACKOFF_MS
 * between tries: it never spins. */
#ifndef PCC_LISTENER_H
#define PCC_LISTENER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct pcc_listener pcc_listener;

typedef enum {
  PCC_LISTENER_OK = 0,
  PCC_LISTENER_NOMEM,
  PCC_LISTENER_SOCKET, /* no socket, or bind()/listen() refused (address in use, not permitted) */
  PCC_LISTENER_THREAD, /* the accept thread could not start */
  PCC_LISTENER_PATH,        /* a unix socket's path: not absolute, or too long for sun_path */
  PCC_LISTENER_NOT_SOCKET,  /* a file that is not a socket is at the path (left alone) */
  PCC_LISTENER_IN_USE,      /* a process accepts on the socket at the path */
  PCC_LISTENER_STALE,       /* the stale socket at the path could not be removed */
  PCC_LISTENER_PERMISSIONS, /* chown or chmod of the socket failed */
} pcc_listener_status;

const char *pcc_listener_strerror(pcc_listener_status rc);

/* Takes a connection: fd is the accepted socket (close-on-exec), addr its peer. The callback
 * owns fd from the call on (it closes it when it refuses it). Called on the accept thread. */
typedef void (*pcc_listener_take_fn)(void *ctx, int fd, const struct sockaddr *addr,
                                     socklen_t addrlen);

/* Binds addr (IPv6: v6-only), listens, and starts the accept thread, which calls take(ctx, ...)
 * for each connection until pcc_listener_stop. ctx must outlive the listener. On
 * PCC_LISTENER_OK *out is set; the caller closes it with pcc_listener_close. */
pcc_listener_status pcc_listener_open(const struct sockaddr *addr, socklen_t addrlen,
                                      pcc_listener_take_fn take, void *ctx,
                                      pcc_listener **out);

/* Listens on a unix socket at path (absolute, shorter than sun_path): refuses a file there that
 * is not a socket and a socket a process accepts on, removes a stale one (connect() refused),
 * binds, gives the socket group gid (< 0: left as created, the process's group) and mode (e.g.
 * 0660) before it listens, and starts the accept thread. path is copied. Stop and close remove
 * the socket file unless another file has replaced it. */
pcc_listener_status pcc_listener_open_unix(const char *path, unsigned mode, long gid,
                                           pcc_listener_take_fn take, void *ctx,
                                           pcc_listener **out);

/* The port bound (the one the kernel chose for port 0); 0 for a unix socket. */
uint16_t pcc_listener_port(const pcc_listener *listener);

/* Stops accepting and closes the socket (new connections are refused by the kernel; a unix
 * socket's file is removed); returns
 * when the accept thread has ended, so no take call runs after it. Idempotent; accepts NULL. */
void pcc_listener_stop(pcc_listener *listener);

/* Stops (as above) and frees. Accepts NULL. */
void pcc_listener_close(pcc_listener *listener);

#endif /* PCC_LISTENER_H */
