/* conns.c: the connection table of the HTTP front (conns.h): phases, deadlines, the reserve, and
 * the idle connections, longest idle first. One mutex guards the table; http.c's callbacks
 * (libmicrohttpd's threads) and the sweeper thread take it for a few list operations each.
 * Cutting is shutdown(2) under that mutex: an entry is removed (under it) before libmicrohttpd
 * closes its descriptor, so the descriptor shut down is always the entry's own. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <time.h>

#include "pcc_limits.h"

#include "conns.h"

/* A doubly-linked list threaded through its members (a connection is in two). */
typedef struct conn_link {
  struct conn_link *prev, *next;
} conn_link;

typedef struct {
  conn_link *head, *tail;
} conn_list;

struct pcc_conn {
  conn_link all;     /* in the list of every connection */
  conn_link idle;    /* in the list of IDLE ones, longest idle first, when idle_listed */
  int fd;
  pcc_conn_phase phase;
  bool reserve;      /* accepted past max: set once, at add */
  bool cut;          /* shut down; libmicrohttpd has yet to close it */
  bool idle_listed;
  bool started;      /* libmicrohttpd has it (pcc_conns_start); until then: taken_ms */
  bool certified;    /* mutual TLS: its client certificate verified (pcc_conns_set_certified) */
  uint64_t deadline; /* CLOCK_MONOTONIC ms; 0: none */
  uint64_t taken_ms; /* when pcc_conns_take took it */
  unsigned char peer[16]; /* the peer's address (IPv4 in the first 4 bytes), for per_ip */
  unsigned char peer_len; /* 0: unknown (pcc_conns_add) */
};

/* The connection a link of the list `member` belongs to. */
#define CONN_OF(link, member) ((pcc_conn *)((char *)(link) - offsetof(pcc_conn, member)))

struct pcc_conns {
  pcc_conns_limits limits;
  pthread_mutex_t lock;
  conn_list all, idle;
  atomic_uint_fast64_t open;    /* entries in the table (written under lock) */
  uint64_t cut_pending;         /* entries cut, not yet removed */
  pcc_conns_counts counts;      /* reserved, cut, evicted */
  pthread_t sweeper;
  bool sweeping;                /* the sweeper thread runs */
  bool stopping;
  pthread_cond_t wake;          /* signalled to stop the sweeper */
};

const char *pcc_conns_strerror(pcc_conns_status rc)
{
  switch (rc) {
  case PCC_CONNS_OK: return "ok";
  case PCC_CONNS_NOMEM: return "out of memory";
  case PCC_CONNS_THREAD: return "cannot start the connection sweeper thread";
  }
  return "unknown connection table status";
}

uint64_t pcc_conns_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- lists (caller holds the lock) ----------------------------------------------------- */

static void list_append(conn_list *list, conn_link *link)
{
  link->prev = list->tail;
  link->next = NULL;
  if (list->tail != NULL)
    list->tail->next = link;
  else
    list->head = link;
  list->tail = link;
}

static void list_unlink(conn_list *list, conn_link *link)
{
  if (link->prev != NULL)
    link->prev->next = link->next;
  else
    list->head = link->next;
  if (link->next != NULL)
    link->next->prev = link->prev;
  else
    list->tail = link->prev;
  link->prev = link->next = NULL;
}

static void idle_unlink(pcc_conns *conns, pcc_conn *conn)
{
  if (conn->idle_listed)
    list_unlink(&conns->idle, &conn->idle);
  conn->idle_listed = false;
}

/* Shuts a connection down: libmicrohttpd sees the end of its stream and closes it. */
static void cut(pcc_conns *conns, pcc_conn *conn)
{
  shutdown(conn->fd, SHUT_RDWR);
  conn->cut = true;
  conns->cut_pending++;
  idle_unlink(conns, conn);
}

/* The deadline of phase for conn, from now (0: none). */
static uint64_t deadline_of(const pcc_conns *conns, const pcc_conn *conn, pcc_conn_phase phase,
                            uint64_t now)
{
  uint64_t ms = phase == PCC_CONN_HEADERS ? conns->limits.header_ms
                : phase == PCC_CONN_BODY  ? conns->limits.body_ms
                : phase == PCC_CONN_IDLE  ? conns->limits.idle_ms
                                          : 0;
  if (ms == 0)
    return 0;
  if (conn->reserve && ms > conns->limits.reserve_ms)
    ms = conns->limits.reserve_ms;
  return now + ms;
}

/* ---- the sweeper ----------------------------------------------------------------------- */

size_t pcc_conns_sweep(pcc_conns *conns, uint64_t now_ms)
{
  size_t n = 0;
  pthread_mutex_lock(&conns->lock);
  for (conn_link *link = conns->all.head, *next; link != NULL; link = next) {
    pcc_conn *conn = CONN_OF(link, all);
    next = link->next;
    if (!conn->started) { /* taken, never started: libmicrohttpd dropped it (its fd is gone) */
      if (now_ms >= conn->taken_ms + PCC_CONN_START_MS) {
        list_unlink(&conns->all, &conn->all);
        atomic_fetch_sub(&conns->open, 1);
        free(conn);
      }
      continue;
    }
    if (!conn->cut && conn->deadline != 0 && now_ms >= conn->deadline) {
      cut(conns, conn);
      n++;
    }
  }
  conns->counts.cut += n;
  pthread_mutex_unlock(&conns->lock);
  return n;
}

static void *sweeper_main(void *arg)
{
  pcc_conns *conns = arg;
  pthread_mutex_lock(&conns->lock);
  while (!conns->stopping) {
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    uint64_t ns = (uint64_t)until.tv_nsec + conns->limits.tick_ms * 1000000;
    until.tv_sec += (time_t)(ns / 1000000000);
    until.tv_nsec = (long)(ns % 1000000000);
    while (!conns->stopping &&
           pthread_cond_timedwait(&conns->wake, &conns->lock, &until) != ETIMEDOUT)
      ;
    if (conns->stopping)
      break;
    pthread_mutex_unlock(&conns->lock);
    pcc_conns_sweep(conns, pcc_conns_now_ms());
    pthread_mutex_lock(&conns->lock);
  }
  pthread_mutex_unlock(&conns->lock);
  return NULL;
}

/* ---- the table ------------------------------------------------------------------------- */

pcc_conns_status pcc_conns_open(const pcc_conns_limits *limits, pcc_conns **out)
{
  pcc_conns *conns = calloc(1, sizeof *conns);
  if (conns == NULL)
    return PCC_CONNS_NOMEM;
  conns->limits = *limits;
  atomic_init(&conns->open, 0);
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&conns->wake, &attr);
  pthread_condattr_destroy(&attr);
  pthread_mutex_init(&conns->lock, NULL);
  if (limits->tick_ms > 0) {
    if (pthread_create(&conns->sweeper, NULL, sweeper_main, conns) != 0) {
      pcc_conns_close(conns);
      return PCC_CONNS_THREAD;
    }
    conns->sweeping = true;
  }
  *out = conns;
  return PCC_CONNS_OK;
}

void pcc_conns_close(pcc_conns *conns)
{
  if (conns == NULL)
    return;
  if (conns->sweeping) {
    pthread_mutex_lock(&conns->lock);
    conns->stopping = true;
    pthread_cond_signal(&conns->wake);
    pthread_mutex_unlock(&conns->lock);
    pthread_join(conns->sweeper, NULL);
  }
  for (conn_link *link = conns->all.head, *next; link != NULL; link = next) {
    next = link->next;
    free(CONN_OF(link, all));
  }
  pthread_cond_destroy(&conns->wake);
  pthread_mutex_destroy(&conns->lock);
  free(conns);
}

bool pcc_conns_admit(const pcc_conns *conns)
{
  return atomic_load(&conns->open) < conns->limits.max + conns->limits.reserve;
}

/* The address bytes of a peer (IPv4, or IPv6 with a v4-mapped one as IPv4), into peer[16];
 * returns their length, 0 for another family. */
static unsigned char peer_bytes(const struct sockaddr *addr, socklen_t len, unsigned char *peer)
{
  static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (addr != NULL && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
    memcpy(peer, &((const struct sockaddr_in *)addr)->sin_addr, 4);
    return 4;
  }
  if (addr != NULL && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
    const unsigned char *a = ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr;
    if (memcmp(a, v4_mapped, sizeof v4_mapped) == 0) {
      memcpy(peer, a + 12, 4);
      return 4;
    }
    memcpy(peer, a, 16);
    return 16;
  }
  return 0;
}

/* Adds conn (fd and peer set) unless the table or the peer's share is full; caller holds the
 * lock. Past max, the connection idle the longest makes room, or the new one is a reserve. */
static bool add_locked(pcc_conns *conns, pcc_conn *conn, bool check, uint64_t now_ms)
{
  if (check && atomic_load(&conns->open) >= conns->limits.max + conns->limits.reserve)
    return false;
  if (check && conns->limits.per_ip != 0 && conn->peer_len != 0) {
    uint64_t same = 0;
    for (conn_link *link = conns->all.head; link != NULL; link = link->next) {
      const pcc_conn *other = CONN_OF(link, all);
      same += other->peer_len == conn->peer_len &&
              memcmp(other->peer, conn->peer, conn->peer_len) == 0;
    }
    if (same >= conns->limits.per_ip)
      return false;
  }
  uint64_t live = atomic_load(&conns->open) - conns->cut_pending;
  if (live >= conns->limits.max) {
    if (conns->idle.head != NULL) { /* make room: the longest idle goes */
      cut(conns, CONN_OF(conns->idle.head, idle));
      conns->counts.evicted++;
    } else {
      conn->reserve = true;
      conns->counts.reserved++;
    }
  }
  conn->deadline = deadline_of(conns, conn, PCC_CONN_HEADERS, now_ms);
  list_append(&conns->all, &conn->all);
  atomic_fetch_add(&conns->open, 1);
  return true;
}

/* A new entry for fd from addr (NULL: unknown) in the table: checked against the limits or not,
 * started already or waiting for pcc_conns_start. NULL when refused or without memory. */
static pcc_conn *conn_insert(pcc_conns *conns, int fd, const struct sockaddr *addr,
                             socklen_t addrlen, bool check, bool started, uint64_t now_ms)
{
  pcc_conn *conn = calloc(1, sizeof *conn);
  if (conn == NULL)
    return NULL;
  conn->fd = fd;
  conn->phase = PCC_CONN_HEADERS;
  conn->started = started;
  conn->taken_ms = now_ms;
  conn->peer_len = peer_bytes(addr, addrlen, conn->peer);
  pthread_mutex_lock(&conns->lock);
  bool added = add_locked(conns, conn, check, now_ms);
  pthread_mutex_unlock(&conns->lock);
  if (!added) {
    free(conn);
    return NULL;
  }
  return conn;
}

pcc_conn *pcc_conns_add(pcc_conns *conns, int fd, uint64_t now_ms)
{
  return conn_insert(conns, fd, NULL, 0, false, true, now_ms);
}

pcc_conn *pcc_conns_take(pcc_conns *conns, int fd, const struct sockaddr *addr,
                         socklen_t addrlen, uint64_t now_ms)
{
  return conn_insert(conns, fd, addr, addrlen, true, false, now_ms);
}

pcc_conn *pcc_conns_start(pcc_conns *conns, int fd)
{
  pcc_conn *found = NULL;
  pthread_mutex_lock(&conns->lock);
  for (conn_link *link = conns->all.head; link != NULL && found == NULL; link = link->next) {
    pcc_conn *conn = CONN_OF(link, all);
    if (!conn->started && conn->fd == fd)
      found = conn;
  }
  if (found != NULL)
    found->started = true;
  pthread_mutex_unlock(&conns->lock);
  return found;
}

void pcc_conns_remove(pcc_conns *conns, pcc_conn *conn)
{
  if (conn == NULL)
    return;
  pthread_mutex_lock(&conns->lock);
  idle_unlink(conns, conn);
  list_unlink(&conns->all, &conn->all);
  if (conn->cut)
    conns->cut_pending--;
  atomic_fetch_sub(&conns->open, 1);
  pthread_mutex_unlock(&conns->lock);
  free(conn);
}

void pcc_conns_enter(pcc_conns *conns, pcc_conn *conn, pcc_conn_phase phase, uint64_t now_ms)
{
  if (conn == NULL)
    return;
  pthread_mutex_lock(&conns->lock);
  if (!(phase == PCC_CONN_HEADERS && conn->phase == PCC_CONN_HEADERS)) {
    conn->phase = phase;
    conn->deadline = deadline_of(conns, conn, phase, now_ms);
    idle_unlink(conns, conn);
    /* a reserve connection is closed after its answer: evicting it would make no room among
     * max, so it is never listed idle (its capped deadline still cuts it if it lingers) */
    if (phase == PCC_CONN_IDLE && !conn->cut && !conn->reserve) {
      list_append(&conns->idle, &conn->idle);
      conn->idle_listed = true;
    }
  }
  pthread_mutex_unlock(&conns->lock);
}

bool pcc_conns_reserved(const pcc_conn *conn)
{
  return conn != NULL && conn->reserve;
}

bool pcc_conns_certified(const pcc_conn *conn)
{
  return conn != NULL && conn->certified;
}

void pcc_conns_set_certified(pcc_conn *conn)
{
  if (conn != NULL)
    conn->certified = true;
}

pcc_conns_counts pcc_conns_counts_now(pcc_conns *conns)
{
  pthread_mutex_lock(&conns->lock);
  pcc_conns_counts counts = conns->counts;
  counts.open = atomic_load(&conns->open);
  pthread_mutex_unlock(&conns->lock);
  return counts;
}
