/* bench_hash_helper.c: the C side of tests/bench/bench_hash.py (docs/BENCHMARKS.md, "Hashing
 * and group commits (issue 12)"). Not a test: it hashes one buffer of random bytes over and over
 * with each METHOD named, in the order named, for about SECONDS each, and prints one JSON line a
 * method: {"method", "size", "rounds", "seconds", "gbps"}.
 *
 *   bench_hash_helper SIZE SECONDS METHOD...
 *
 * Methods: the Java hash's implementations by their names in proto/java_hash.c's table
 * ("scalar" is the loop of before issue 12, "sse2", "avx2"), "java" (pcc_java_hash, the one it
 * picks), "xxh3" (pcc_checksum), "read" (a read-only pass: 256-bit loads XORed together, what
 * any hash of the bytes must at least do), "sha256" (pcc_digest_compute), "both" (pcc_java_hash,
 * then pcc_digest_compute: what the hook and the server compute for a source) and "both-blocks"
 * (the two in one pass, 64 KiB at a time, SHA-256 through EVP's incremental calls). */
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <immintrin.h>

#include "proto.h"
#include "proto_internal.h"

#define BLOCK (64 * 1024)

static volatile uint64_t sink;

static double now_seconds(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + t.tv_nsec / 1e9;
}

__attribute__((target("avx2"))) static void read_pass(const uint8_t *p, size_t len)
{
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  size_t i = 0;
  for (; i + 128 <= len; i += 128) {
    a = _mm256_xor_si256(a, _mm256_loadu_si256((const __m256i *)(const void *)(p + i)));
    b = _mm256_xor_si256(b, _mm256_loadu_si256((const __m256i *)(const void *)(p + i + 32)));
    c = _mm256_xor_si256(c, _mm256_loadu_si256((const __m256i *)(const void *)(p + i + 64)));
    d = _mm256_xor_si256(d, _mm256_loadu_si256((const __m256i *)(const void *)(p + i + 96)));
  }
  a = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
  uint64_t x = (uint64_t)_mm256_extract_epi64(a, 0) ^ (uint64_t)_mm256_extract_epi64(a, 3);
  for (; i < len; i++)
    x ^= p[i];
  sink ^= x;
}

static void both_blocks(const uint8_t *p, size_t len)
{
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
    abort();
  uint32_t h = 1;
  for (size_t i = 0; i < len; i += BLOCK) {
    size_t n = len - i < BLOCK ? len - i : BLOCK;
    h = proto_java_hash_update(h, p + i, n);
    if (EVP_DigestUpdate(ctx, p + i, n) != 1)
      abort();
  }
  pcc_digest digest;
  unsigned int out_len = 0;
  if (EVP_DigestFinal_ex(ctx, digest.bytes, &out_len) != 1 || out_len != PCC_DIGEST_LEN)
    abort();
  EVP_MD_CTX_free(ctx);
  sink ^= h ^ digest.bytes[0];
}

/* One pass of method over the buffer; false for an unknown method. */
static bool run(const char *method, const uint8_t *p, size_t len)
{
  pcc_digest digest;
  for (size_t i = 0; i < proto_java_hash_impl_count; i++)
    if (strcmp(method, proto_java_hash_impls[i].name) == 0) {
      if (!proto_java_hash_impls[i].usable())
        return false;
      sink ^= proto_java_hash_impls[i].fn(1, p, len);
      return true;
    }
  if (strcmp(method, "java") == 0) {
    sink ^= (uint32_t)pcc_java_hash(p, len);
  } else if (strcmp(method, "xxh3") == 0) {
    sink ^= pcc_checksum(p, len);
  } else if (strcmp(method, "read") == 0) {
    read_pass(p, len);
  } else if (strcmp(method, "sha256") == 0) {
    pcc_digest_compute(p, len, &digest);
    sink ^= digest.bytes[0];
  } else if (strcmp(method, "both") == 0) {
    sink ^= (uint32_t)pcc_java_hash(p, len);
    pcc_digest_compute(p, len, &digest);
    sink ^= digest.bytes[0];
  } else if (strcmp(method, "both-blocks") == 0) {
    both_blocks(p, len);
  } else {
    return false;
  }
  return true;
}

int main(int argc, char **argv)
{
  if (argc < 4) {
    fprintf(stderr, "usage: bench_hash_helper SIZE SECONDS METHOD...\n");
    return 2;
  }
  char *end = NULL;
  unsigned long long size = strtoull(argv[1], &end, 10);
  double seconds = strtod(argv[2], NULL);
  if (*end != '\0' || size == 0 || size > (1ull << 30) || !(seconds > 0 && seconds < 60)) {
    fprintf(stderr, "bench_hash_helper: SIZE 1..2^30, SECONDS 0..60\n");
    return 2;
  }
  uint8_t *buf = aligned_alloc(64, (size_t)((size + 63) & ~63ull));
  if (buf == NULL)
    return 1;
  uint64_t seed = 0x9e3779b97f4a7c15u;
  for (size_t i = 0; i < size; i++) {
    seed = seed * 6364136223846793005u + 1442695040888963407u;
    buf[i] = (uint8_t)(seed >> 56);
  }
  for (int m = 3; m < argc; m++) {
    if (!run(argv[m], buf, (size_t)size)) { /* also the warm-up pass */
      fprintf(stderr, "bench_hash_helper: %s: unknown or not usable here\n", argv[m]);
      return 2;
    }
    uint64_t rounds = 0, batch = 1;
    double start = now_seconds(), elapsed = 0;
    while (elapsed < seconds && rounds < (1ull << 40)) {
      for (uint64_t i = 0; i < batch; i++)
        run(argv[m], buf, (size_t)size);
      rounds += batch;
      elapsed = now_seconds() - start;
      if (elapsed < seconds / 8)
        batch *= 2;
    }
    printf("{\"method\": \"%s\", \"size\": %llu, \"rounds\": %" PRIu64 ", \"seconds\": %.6f, "
           "\"gbps\": %.4f}\n",
           argv[m], size, rounds, elapsed, (double)size * (double)rounds / elapsed / 1e9);
  }
  free(buf);
  return 0;
}
