/* peer.c: the breaker and the idle-connection pool of one remote server a tier asks (peer.h). */
#include "peer.h"

#include <time.h>

int64_t pcc_peer_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void pcc_peer_init(pcc_peer *peer, unsigned idle_max, unsigned backoff_min_ms,
                   unsigned backoff_max_ms, void (*close_conn)(void *conn))
{
  pthread_mutex_init(&peer->lock, NULL);
  peer->n_idle = 0;
  peer->down = peer->probing = false;
  peer->backoff_ms = 0;
  peer->down_until_ms = 0;
  peer->idle_max = idle_max < PCC_PEER_IDLE_SLOTS ? idle_max : PCC_PEER_IDLE_SLOTS;
  peer->backoff_min_ms = backoff_min_ms;
  peer->backoff_max_ms = backoff_max_ms;
  peer->close_conn = close_conn;
  atomic_init(&peer->failures, 0);
  atomic_init(&peer->skipped, 0);
}

void pcc_peer_destroy(pcc_peer *peer)
{
  for (unsigned i = 0; i < peer->n_idle; i++)
    peer->close_conn(peer->idle[i]);
  peer->n_idle = 0;
  pthread_mutex_destroy(&peer->lock);
}

bool pcc_peer_take(pcc_peer *peer, bool fresh, void **conn)
{
  *conn = NULL;
  pthread_mutex_lock(&peer->lock);
  if (peer->down && (pcc_peer_now_ms() < peer->down_until_ms || peer->probing)) {
    pthread_mutex_unlock(&peer->lock);
    atomic_fetch_add(&peer->skipped, 1);
    return false;
  }
  if (peer->down)
    peer->probing = true; /* this caller probes; the others keep skipping it meanwhile */
  if (!fresh && peer->n_idle > 0)
    *conn = peer->idle[--peer->n_idle];
  pthread_mutex_unlock(&peer->lock);
  return true;
}

bool pcc_peer_give(pcc_peer *peer, void *conn)
{
  pthread_mutex_lock(&peer->lock);
  bool was_down = peer->down;
  peer->down = peer->probing = false;
  peer->backoff_ms = 0;
  if (conn != NULL && peer->n_idle < peer->idle_max) {
    peer->idle[peer->n_idle++] = conn;
    conn = NULL;
  }
  pthread_mutex_unlock(&peer->lock);
  if (conn != NULL)
    peer->close_conn(conn);
  return was_down;
}

bool pcc_peer_failed(pcc_peer *peer, void *conn, bool drop_idle, unsigned *backoff_ms)
{
  if (conn != NULL)
    peer->close_conn(conn);
  atomic_fetch_add(&peer->failures, 1);
  void *dropped[PCC_PEER_IDLE_SLOTS];
  unsigned n_dropped = 0;
  pthread_mutex_lock(&peer->lock);
  bool was_up = !peer->down;
  unsigned doubled = peer->backoff_ms * 2;
  peer->backoff_ms = peer->backoff_ms == 0           ? peer->backoff_min_ms
                     : doubled > peer->backoff_max_ms ? peer->backoff_max_ms
                                                      : doubled;
  peer->down = true;
  peer->probing = false;
  peer->down_until_ms = pcc_peer_now_ms() + peer->backoff_ms;
  if (drop_idle) {
    for (; n_dropped < peer->n_idle; n_dropped++)
      dropped[n_dropped] = peer->idle[n_dropped];
    peer->n_idle = 0;
  }
  *backoff_ms = peer->backoff_ms;
  pthread_mutex_unlock(&peer->lock);
  for (unsigned i = 0; i < n_dropped; i++)
    peer->close_conn(dropped[i]);
  return was_up;
}

bool pcc_peer_up(pcc_peer *peer)
{
  pthread_mutex_lock(&peer->lock);
  bool up = !peer->down;
  pthread_mutex_unlock(&peer->lock);
  return up;
}

void pcc_peer_json(pcc_peer *peer, cJSON *array, const char *name_key, const char *name)
{
  cJSON *s = cJSON_CreateObject();
  cJSON_AddStringToObject(s, name_key, name);
  cJSON_AddBoolToObject(s, "up", pcc_peer_up(peer));
  cJSON_AddNumberToObject(s, "failures", (double)atomic_load(&peer->failures));
  cJSON_AddNumberToObject(s, "skipped", (double)atomic_load(&peer->skipped));
  cJSON_AddItemToArray(array, s);
}
