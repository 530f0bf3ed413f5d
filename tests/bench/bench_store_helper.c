/* bench_store_helper.c: the store side of tests/bench/bench_store.py (docs/BENCHMARKS.md, "The
 * store at 10 k and 1 M entries"). Not a test: it fills a store with N entries and times the
 * lookup path of GET /v1/code in the store (pcc_store_get_versions, then pcc_store_get_blob,
 * which copies the payload out and records its use), without HTTP, so that what grows with the
 * store is what is measured. Prints one JSON object per command on stdout.
 *
 *   bench_store_helper fill DIR N SIZES MAP_SIZE  entry i gets a payload of SIZES' line
 *                                                  i % lines bytes (SIZES: one size a line)
 *   bench_store_helper lookup DIR N THREADS COUNT SEED [USES]
 *                                                  a warm-up read of every entry, then for each
 *                                                  of THREADS (a comma list: "1,2") COUNT
 *                                                  lookups of random entries over that many
 *                                                  threads, one JSON line each; USES "server"
 *                                                  (the default): the
 *                                                  server's upkeep policy for the uses (a flush
 *                                                  at 1/4 of the table or every 5 s), "off": no
 *                                                  flush (uses past the table are dropped)
 *   bench_store_helper http PORT N THREADS COUNT SEED SIZES
 *                                                  COUNT GET /v1/code lookups of random entries
 *                                                  of a store filled by `fill` (SIZES the same)
 *                                                  from a pycached on 127.0.0.1:PORT, over
 *                                                  THREADS kept-alive connections, each pyc
 *                                                  read whole (the raw form, as the hook asks);
 *                                                  SEED 0: every entry once, in order (a
 *                                                  warm-up), COUNT ignored
 *   bench_store_helper puts DIR THREADS COUNT PAYLOAD
 *                                                  a fresh store in DIR, synced as the
 *                                                  server's (a commit flushes its pages), and
 *                                                  THREADS threads each putting COUNT entries
 *                                                  of their own with a PAYLOAD-byte blob at
 *                                                  once: puts a second and the bytes the
 *                                                  process wrote (/proc/self/io write_bytes)
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store.h"

#define SIZES_MAX 100000
#define THREADS_MAX 16

static const pcc_magic MAGIC = {{0xa7, 0x0d, 0x0d, 0x0a}};

static double now_seconds(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static void entry_path(uint64_t i, char *out, size_t cap)
{
  snprintf(out, cap, "/srv/bench/pkg%03" PRIu64 "/module_%07" PRIu64 ".py", i % 997, i);
}

static void entry_record(uint64_t i, uint64_t size, pcc_path_record *record)
{
  char source[48];
  int len = snprintf(source, sizeof source, "# bench source %" PRIu64 "\n", i);
  memset(record, 0, sizeof *record);
  record->mtime = 1700000000;
  record->size = size;
  record->hash = (int32_t)i;
  pcc_digest_compute(source, (size_t)len, &record->digest);
}

static int fail(const char *what, pcc_store_status rc)
{
  fprintf(stderr, "bench_store_helper: %s: %s\n", what, pcc_store_strerror(rc));
  return 1;
}

static uint32_t sizes[SIZES_MAX];
static size_t n_sizes;

/* Reads the payload sizes (one a line); returns the largest, 0 on failure. */
static size_t read_sizes(const char *sizes_file)
{
  size_t largest = 0;
  FILE *f = fopen(sizes_file, "r");
  if (f == NULL) {
    perror(sizes_file);
    return 0;
  }
  unsigned long size;
  while (n_sizes < SIZES_MAX && fscanf(f, "%lu", &size) == 1) {
    sizes[n_sizes++] = (uint32_t)size;
    largest = size > largest ? size : largest;
  }
  fclose(f);
  return largest;
}

static int fill(const char *dir, uint64_t n, const char *sizes_file, uint64_t map_size)
{
  size_t largest = read_sizes(sizes_file);
  uint8_t *payload = largest > 0 ? malloc(largest + 1) : NULL;
  if (n_sizes == 0 || payload == NULL)
    return fail("sizes", PCC_STORE_INVALID);
  for (size_t b = 0; b <= largest; b++)
    payload[b] = (uint8_t)(b * 131 + 7);
  pcc_store_config config = {.map_size = map_size, .no_sync = true};
  pcc_store *store = NULL;
  pcc_store_status rc = pcc_store_open(dir, &config, &store);
  if (rc != PCC_STORE_OK)
    return fail("open", rc);
  double start = now_seconds();
  uint64_t payload_bytes = 0;
  for (uint64_t i = 0; i < n && rc == PCC_STORE_OK; i++) {
    char path[96];
    pcc_path_record record;
    uint32_t len = sizes[i % n_sizes];
    entry_path(i, path, sizeof path);
    entry_record(i, len, &record);
    payload[0] = (uint8_t)i; /* each payload its own */
    pcc_blob blob = {.kind = PCC_BLOB_CODE, .hash = record.hash, .size = len,
                     .created = 1700000001, .compile_us = 1000, .payload = payload,
                     .payload_len = len};
    snprintf(blob.compiler, sizeof blob.compiler, "cpython-3.11.2");
    rc = pcc_store_put(store, NULL, &MAGIC, 0, path, strlen(path), &record, &blob);
    payload_bytes += len;
  }
  double seconds = now_seconds() - start;
  free(payload);
  if (rc != PCC_STORE_OK) {
    pcc_store_close(store);
    return fail("put", rc);
  }
  pcc_store_stats stats;
  rc = pcc_store_stat(store, &stats);
  pcc_store_close(store);
  if (rc != PCC_STORE_OK)
    return fail("stat", rc);
  char file[4200];
  struct stat st;
  snprintf(file, sizeof file, "%s/data.mdb", dir);
  if (stat(file, &st) != 0) {
    perror(file);
    return 1;
  }
  printf("{\"entries\": %" PRIu64 ", \"seconds\": %.3f, \"payload\": %" PRIu64
         ", \"stored_bytes\": %" PRIu64 ", \"file\": %lld, \"used\": %" PRIu64
         ", \"free\": %" PRIu64 ", \"blocks\": %lld}\n",
         stats.entries, seconds, payload_bytes, stats.bytes, (long long)st.st_size, stats.used,
         stats.free, (long long)st.st_blocks * 512);
  return 0;
}

typedef struct {
  pcc_store *store;
  uint64_t n, count, seed;
  double *latencies; /* count of them, in microseconds */
  uint64_t misses;
  int port;          /* http: the server's */
  uint64_t port_first; /* http warm-up: its first entry */
} worker;

static uint64_t next_random(uint64_t *state) /* splitmix64 */
{
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* The store's part of a lookup: the path entry's versions, then the blob (copied, its use
 * recorded). Returns false on a miss. */
static bool lookup_one(pcc_store *store, uint64_t i)
{
  char path[96];
  pcc_path_versions versions;
  pcc_blob *blob = NULL;
  entry_path(i, path, sizeof path);
  if (pcc_store_get_versions(store, NULL, &MAGIC, 0, path, strlen(path), &versions) !=
        PCC_STORE_OK ||
      pcc_store_get_blob(store, &MAGIC, 0, &versions.v[0].digest, &blob) != PCC_STORE_OK)
    return false;
  free(blob);
  return true;
}

static void *worker_main(void *arg)
{
  worker *w = arg;
  uint64_t state = w->seed;
  for (uint64_t k = 0; k < w->count; k++) {
    uint64_t i = next_random(&state) % w->n;
    double t0 = now_seconds();
    if (!lookup_one(w->store, i))
      w->misses++;
    w->latencies[k] = (now_seconds() - t0) * 1e6;
  }
  return NULL;
}

/* One GET /v1/code of entry i on the kept-alive connection fd; false on a miss or an error. */
static bool http_one(int fd, uint64_t i, char *buf, size_t cap)
{
  char path[96];
  entry_path(i, path, sizeof path);
  int len = snprintf(buf, cap, "GET /v1/code?magic=a70d0d0a&opt=0&path=%s&mtime=1700000000"
                     "&size=%u&hash=%d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Accept: application/x-python-pyc\r\n\r\n", path,
                     (unsigned)sizes[i % n_sizes], (int32_t)i);
  if (send(fd, buf, (size_t)len, 0) != len)
    return false;
  size_t have = 0;
  char *end = NULL;
  while (end == NULL) { /* the head */
    ssize_t got = recv(fd, buf + have, cap - 1 - have, 0);
    if (got <= 0)
      return false;
    have += (size_t)got;
    buf[have] = '\0';
    end = strstr(buf, "\r\n\r\n");
  }
  const char *length = strcasestr(buf, "\r\nContent-Length:");
  if (length == NULL)
    return false;
  size_t body = strtoull(length + 17, NULL, 10), got_body = have - (size_t)(end + 4 - buf);
  bool hit = strncmp(buf, "HTTP/1.1 200", 12) == 0;
  while (got_body < body) {
    ssize_t got = recv(fd, buf, cap < body - got_body ? cap : body - got_body, 0);
    if (got <= 0)
      return false;
    got_body += (size_t)got;
  }
  return hit;
}

static void *http_main(void *arg)
{
  worker *w = arg;
  size_t cap = 1 << 20;
  char *buf = malloc(cap);
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)w->port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  bool up = buf != NULL && connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0;
  uint64_t state = w->seed;
  for (uint64_t k = 0; k < w->count; k++) {
    uint64_t i = w->seed == 0 ? w->port_first + k : next_random(&state) % w->n;
    double t0 = now_seconds();
    if (!up || !http_one(fd, i, buf, cap))
      w->misses++;
    w->latencies[k] = (now_seconds() - t0) * 1e6;
  }
  close(fd);
  free(buf);
  return NULL;
}

static atomic_bool flushing_stop;

/* The server's upkeep for uses: a look every 250 ms, a flush at a quarter of the table or
 * every PCC_USE_FLUSH_SECONDS. */
static void *flusher_main(void *arg)
{
  pcc_store *store = arg;
  double last = now_seconds();
  while (!atomic_load(&flushing_stop)) {
    usleep(250 * 1000);
    size_t pending = pcc_store_pending_uses(store);
    if (pending >= PCC_USE_TABLE_SLOTS / 4 ||
        (pending > 0 && now_seconds() - last >= PCC_USE_FLUSH_SECONDS)) {
      pcc_store_flush_uses(store, NULL);
      last = now_seconds();
    }
  }
  return NULL;
}

static int compare_doubles(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Prints the figures of count latencies (sorted here) measured over seconds. */
static void print_latencies(double *latencies, uint64_t done, unsigned threads, double seconds,
                            uint64_t misses)
{
  qsort(latencies, done, sizeof *latencies, compare_doubles);
  printf("{\"lookups\": %" PRIu64 ", \"threads\": %u, \"seconds\": %.4f, \"per_second\": %.0f, "
         "\"p50_us\": %.2f, \"p99_us\": %.2f, \"max_us\": %.1f, \"misses\": %" PRIu64,
         done, threads, seconds, done / seconds, latencies[done / 2], latencies[done * 99 / 100],
         latencies[done - 1], misses);
}

/* One measured run: count lookups of random entries over `threads` threads (the uses written
 * by the server's policy when flush), printed as one JSON line; returns the misses. */
static uint64_t lookup_run(pcc_store *store, uint64_t n, unsigned threads, uint64_t count,
                           uint64_t seed, bool flush, double *latencies, double warm,
                           uint64_t warm_misses)
{
  worker workers[THREADS_MAX];
  pthread_t ids[THREADS_MAX], flusher;
  uint64_t each = count / threads, misses = 0;
  atomic_store(&flushing_stop, !flush);
  if (flush)
    pthread_create(&flusher, NULL, flusher_main, store);
  double start = now_seconds();
  for (unsigned t = 0; t < threads; t++) {
    workers[t] = (worker){store, n, each, seed + t * 7919, latencies + t * each, 0, 0, 0};
    pthread_create(&ids[t], NULL, worker_main, &workers[t]);
  }
  for (unsigned t = 0; t < threads; t++) {
    pthread_join(ids[t], NULL);
    misses += workers[t].misses;
  }
  double seconds = now_seconds() - start;
  if (flush) {
    atomic_store(&flushing_stop, true);
    pthread_join(flusher, NULL);
  }
  print_latencies(latencies, each * threads, threads, seconds, misses);
  printf(", \"warm_seconds\": %.2f, \"warm_misses\": %" PRIu64 "}\n", warm, warm_misses);
  return misses;
}

static int lookup(const char *dir, uint64_t n, const char *thread_list, uint64_t count,
                  uint64_t seed, bool flush)
{
  pcc_store *store = NULL;
  pcc_store_config config = {.map_size = 0, .no_sync = true};
  /* the map as the file has it: a larger one is fine, a smaller one would not open */
  char file[4200];
  struct stat st;
  snprintf(file, sizeof file, "%s/data.mdb", dir);
  if (stat(file, &st) == 0)
    config.map_size = (uint64_t)st.st_size + (64u << 20);
  pcc_store_status rc = pcc_store_open(dir, &config, &store);
  if (rc != PCC_STORE_OK)
    return fail("open", rc);
  double warm_start = now_seconds();
  uint64_t misses = 0;
  for (uint64_t i = 0; i < n; i++) /* every page mapped and in the page cache */
    misses += !lookup_one(store, i);
  double warm = now_seconds() - warm_start;
  uint64_t warm_misses = misses;
  pcc_store_flush_uses(store, NULL);
  double *latencies = malloc(count * sizeof *latencies);
  if (latencies == NULL)
    return fail("memory", PCC_STORE_NOMEM);
  for (const char *at = thread_list; *at != '\0';) { /* "1,2": a run on 1 thread, then on 2 */
    unsigned threads = (unsigned)strtoul(at, NULL, 10);
    threads = threads < 1 || threads > THREADS_MAX ? 1 : threads;
    misses += lookup_run(store, n, threads, count, seed, flush, latencies, warm, warm_misses);
    at += strcspn(at, ",");
    at += *at == ',';
  }
  free(latencies);
  pcc_store_close(store);
  return misses == 0 ? 0 : 1;
}

static int http(int port, uint64_t n, unsigned threads, uint64_t count, uint64_t seed,
                const char *sizes_file)
{
  if (read_sizes(sizes_file) == 0)
    return fail("sizes", PCC_STORE_INVALID);
  worker workers[THREADS_MAX];
  pthread_t ids[THREADS_MAX];
  if (seed == 0) /* the warm-up: every entry once */
    count = n;
  uint64_t each = count / threads, misses = 0;
  double *latencies = malloc(count * sizeof *latencies);
  if (latencies == NULL)
    return fail("memory", PCC_STORE_NOMEM);
  double start = now_seconds();
  for (unsigned t = 0; t < threads; t++) {
    workers[t] = (worker){NULL, n, each, seed ? seed + t * 7919 : 0, latencies + t * each, 0,
                          port, t * each};
    pthread_create(&ids[t], NULL, http_main, &workers[t]);
  }
  for (unsigned t = 0; t < threads; t++) {
    pthread_join(ids[t], NULL);
    misses += workers[t].misses;
  }
  print_latencies(latencies, each * threads, threads, now_seconds() - start, misses);
  printf("}\n");
  free(latencies);
  return misses == 0 ? 0 : 1;
}

typedef struct {
  pcc_store *store;
  unsigned thread;
  uint64_t count;
  size_t payload_len;
  pcc_store_status rc;
} putter;

static void *putter_main(void *arg)
{
  putter *p = arg;
  uint8_t *payload = malloc(p->payload_len);
  if (payload == NULL) {
    p->rc = PCC_STORE_NOMEM;
    return NULL;
  }
  for (size_t b = 0; b < p->payload_len; b++)
    payload[b] = (uint8_t)(b * 131 + 7);
  for (uint64_t k = 0; k < p->count && p->rc == PCC_STORE_OK; k++) {
    uint64_t i = (uint64_t)p->thread << 32 | k;
    char path[96];
    pcc_path_record record;
    entry_path(i, path, sizeof path);
    entry_record(i, p->payload_len, &record);
    memcpy(payload, &i, p->payload_len < 8 ? p->payload_len : 8); /* each payload its own */
    pcc_blob blob = {.kind = PCC_BLOB_CODE, .hash = record.hash, .size = p->payload_len,
                     .created = 1700000001, .compile_us = 1000, .payload = payload,
                     .payload_len = p->payload_len};
    snprintf(blob.compiler, sizeof blob.compiler, "cpython-3.11.2");
    p->rc = pcc_store_put(p->store, NULL, &MAGIC, 0, path, strlen(path), &record, &blob);
  }
  free(payload);
  return NULL;
}

/* write_bytes of /proc/self/io: what this process has sent to the storage layer */
static uint64_t written_bytes(void)
{
  uint64_t bytes = 0;
  char line[128];
  FILE *f = fopen("/proc/self/io", "r");
  while (f != NULL && fgets(line, sizeof line, f) != NULL)
    if (strncmp(line, "write_bytes:", 12) == 0)
      bytes = strtoull(line + 12, NULL, 10);
  if (f != NULL)
    fclose(f);
  return bytes;
}

static int puts_concurrent(const char *dir, unsigned threads, uint64_t count, size_t payload_len)
{
  pcc_store_config config = {.map_size = 1ull << 30};
  pcc_store *store = NULL;
  pcc_store_status rc = pcc_store_open(dir, &config, &store);
  if (rc != PCC_STORE_OK)
    return fail("open", rc);
  putter putters[THREADS_MAX];
  pthread_t ids[THREADS_MAX];
  uint64_t written = written_bytes();
  double start = now_seconds();
  for (unsigned t = 0; t < threads; t++) {
    putters[t] = (putter){store, t, count, payload_len, PCC_STORE_OK};
    pthread_create(&ids[t], NULL, putter_main, &putters[t]);
  }
  for (unsigned t = 0; t < threads; t++) {
    pthread_join(ids[t], NULL);
    if (putters[t].rc != PCC_STORE_OK)
      rc = putters[t].rc;
  }
  double seconds = now_seconds() - start;
  written = written_bytes() - written;
  pcc_store_stats stats;
  if (rc == PCC_STORE_OK)
    rc = pcc_store_stat(store, &stats);
  pcc_store_close(store);
  if (rc != PCC_STORE_OK)
    return fail("put", rc);
  if (stats.entries != threads * count)
    return fail("entries", PCC_STORE_NOTFOUND);
  printf("{\"threads\": %u, \"puts\": %" PRIu64 ", \"seconds\": %.3f, \"per_second\": %.1f, "
         "\"write_bytes\": %" PRIu64 ", \"bytes_per_put\": %.1f}\n",
         threads, threads * count, seconds, (double)(threads * count) / seconds, written,
         (double)written / (double)(threads * count));
  return 0;
}

int main(int argc, char **argv)
{
  if (argc == 6 && strcmp(argv[1], "puts") == 0) {
    unsigned threads = (unsigned)strtoul(argv[3], NULL, 10);
    if (threads < 1 || threads > THREADS_MAX)
      threads = 1;
    return puts_concurrent(argv[2], threads, strtoull(argv[4], NULL, 10),
                           (size_t)strtoull(argv[5], NULL, 10));
  }
  if (argc == 6 && strcmp(argv[1], "fill") == 0)
    return fill(argv[2], strtoull(argv[3], NULL, 10), argv[4], strtoull(argv[5], NULL, 10));
  if ((argc == 7 || argc == 8) && strcmp(argv[1], "lookup") == 0)
    return lookup(argv[2], strtoull(argv[3], NULL, 10), argv[4], strtoull(argv[5], NULL, 10),
                  strtoull(argv[6], NULL, 10), argc == 7 || strcmp(argv[7], "off") != 0);
  if (argc == 8 && strcmp(argv[1], "http") == 0) {
    unsigned threads = (unsigned)strtoul(argv[4], NULL, 10);
    if (threads < 1 || threads > THREADS_MAX)
      threads = 1;
    return http(atoi(argv[2]), strtoull(argv[3], NULL, 10), threads,
                strtoull(argv[5], NULL, 10), strtoull(argv[6], NULL, 10), argv[7]);
  }
  fprintf(stderr, "usage: %s fill DIR N SIZES MAP_SIZE | lookup DIR N THREADS COUNT SEED "
          "[server|off] | http PORT N THREADS COUNT SEED SIZES | puts DIR THREADS COUNT "
          "PAYLOAD\n", argv[0]);
  return 2;
}
