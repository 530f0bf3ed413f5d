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

/* The port bound (the one the kernel chose for port 0). */
uint16_t pcc_listener_port(const pcc_listener *listener);

/* Stops accepting and closes the socket (new connections are refused by the kernel); returns
 * when the accept thread has ended, so no take call runs after it. Idempotent; accepts NULL. */
void pcc_listener_stop(pcc_listener *listener);

/* Stops (as above) and frees. Accepts NULL. */
void pcc_listener_close(pcc_listener *listener);

#endif /* PCC_LISTENER_H */
