/* java_hash.c: the weak source hash of the validation scheme (proto.h, pcc_java_hash): Java's
 * Arrays.hashCode(byte[]) bit for bit, vectorised. The hook hashes every source it imports, so
 * this runs on every lookup; DESIGN.md ("Keys and validation") says what the hash is for.
 *
 * The math. After n bytes, h_n = 31^n * h_0 + sum b_i * 31^(n-1-i) (mod 2^32), b_i signed.
 * Every step below is that sum regrouped, exact in 32-bit wrap-around arithmetic:
 *   - a quad, 4 consecutive bytes: 29791*b0 + 961*b1 + 31*b2 + b3, which two multiply-add
 *     instructions make from bytes without overflow (31*b0 + b1 is within int16, 961*that +
 *     the next pair within int32);
 *   - lane j of an accumulator holds the quads at the same offset of every block; each block
 *     multiplies it by 31^(block length) and adds the block's quad;
 *   - at the end, lane j is weighted by 31^(4 * (quads after it in the block)), the lanes are
 *     summed and added to h_0 * 31^(bytes of the blocks); the scalar loop takes the tail.
 * The implementations sit in one table, best first; pcc_java_hash uses the first the CPU runs
 * (AVX2 where __builtin_cpu_supports says so, SSE2 on any x86-64, the scalar loop elsewhere);
 * tests/unit/test_proto.c checks each against the scalar reference and against a real JVM. */
#include <stdatomic.h>

#include "proto_internal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* 31^(4i) mod 2^32: the weights of quads (unsigned arithmetic wraps by definition, so these are
 * constant expressions) */
#define Q1 923521u /* 31^4 */
#define Q2 (Q1 * Q1)
#define Q3 (Q2 * Q1)
#define Q4 (Q2 * Q2)
#define Q5 (Q4 * Q1)
#define Q6 (Q4 * Q2)
#define Q7 (Q4 * Q3)
#define Q8 (Q4 * Q4)
#define Q16 (Q8 * Q8)
#define Q24 (Q16 * Q8)
#define Q32 (Q16 * Q16) /* 31^128 */

/* ---- the reference: one multiply chain, four bytes a step ------------------------------- */

static uint32_t java_hash_scalar(uint32_t h, const uint8_t *bytes, size_t len)
{
  size_t i = 0;
  for (; i + 4 <= len; i += 4)
    h = Q1 * h + 29791u * (uint32_t)(int32_t)(int8_t)bytes[i] +
        961u * (uint32_t)(int32_t)(int8_t)bytes[i + 1] +
        31u * (uint32_t)(int32_t)(int8_t)bytes[i + 2] + (uint32_t)(int32_t)(int8_t)bytes[i + 3];
  for (; i < len; i++)
    h = 31u * h + (uint32_t)(int32_t)(int8_t)bytes[i];
  return h;
}

static bool always_usable(void)
{
  return true;
}

#if defined(__x86_64__)

/* ---- SSE2 (every x86-64): 64-byte blocks, 4 accumulators of 4 quads --------------------- */

/* Low 32 bits of lane-wise products (SSE4.1's pmulld, from two 32x32->64 multiplies). */
static inline __m128i sse2_mullo(__m128i a, __m128i b)
{
  __m128i even = _mm_mul_epu32(a, b);
  __m128i odd = _mm_mul_epu32(_mm_srli_epi64(a, 32), _mm_srli_epi64(b, 32));
  return _mm_unpacklo_epi32(_mm_shuffle_epi32(even, _MM_SHUFFLE(0, 0, 2, 0)),
                            _mm_shuffle_epi32(odd, _MM_SHUFFLE(0, 0, 2, 0)));
}

/* The 4 quads of 16 bytes. */
static inline __m128i sse2_quads(const uint8_t *p)
{
  const __m128i pair = _mm_set1_epi32(0x0001001f);  /* int16 (31, 1) */
  const __m128i quad = _mm_set1_epi32(0x000103c1);  /* int16 (961, 1) */
  __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
  __m128i sign = _mm_cmpgt_epi8(_mm_setzero_si128(), v);
  __m128i lo = _mm_madd_epi16(_mm_unpacklo_epi8(v, sign), pair);
  __m128i hi = _mm_madd_epi16(_mm_unpackhi_epi8(v, sign), pair);
  return _mm_madd_epi16(_mm_packs_epi32(lo, hi), quad); /* pairs are within int16: no saturation */
}

static inline uint32_t sse2_sum(__m128i v)
{
  v = _mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm_add_epi32(v, _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 3, 0, 1)));
  return (uint32_t)_mm_cvtsi128_si32(v);
}

static uint32_t java_hash_sse2(uint32_t h, const uint8_t *p, size_t len)
{
  if (len >= 64) {
    const __m128i step = _mm_set1_epi32((int)Q16); /* 31^64 */
    __m128i a0 = _mm_setzero_si128(), a1 = a0, a2 = a0, a3 = a0;
    for (; len >= 64; p += 64, len -= 64) {
      a0 = _mm_add_epi32(sse2_mullo(a0, step), sse2_quads(p));
      a1 = _mm_add_epi32(sse2_mullo(a1, step), sse2_quads(p + 16));
      a2 = _mm_add_epi32(sse2_mullo(a2, step), sse2_quads(p + 32));
      a3 = _mm_add_epi32(sse2_mullo(a3, step), sse2_quads(p + 48));
      h *= Q16;
    }
    /* quad i of a block (lane i % 4 of accumulator i / 4) weighs 31^(4 * (15 - i)) */
    __m128i s = sse2_mullo(a0, _mm_setr_epi32((int)(Q8 * Q7), (int)(Q8 * Q6), (int)(Q8 * Q5),
                                              (int)(Q8 * Q4)));
    s = _mm_add_epi32(s, sse2_mullo(a1, _mm_setr_epi32((int)(Q8 * Q3), (int)(Q8 * Q2),
                                                       (int)(Q8 * Q1), (int)Q8)));
    s = _mm_add_epi32(s, sse2_mullo(a2, _mm_setr_epi32((int)Q7, (int)Q6, (int)Q5, (int)Q4)));
    s = _mm_add_epi32(s, sse2_mullo(a3, _mm_setr_epi32((int)Q3, (int)Q2, (int)Q1, 1)));
    h += sse2_sum(s);
  }
  return java_hash_scalar(h, p, len);
}

/* ---- AVX2: 128-byte blocks, 4 accumulators of 8 quads ----------------------------------- */

/* The 8 quads of 32 bytes. */
__attribute__((target("avx2"))) static inline __m256i avx2_quads(const uint8_t *p)
{
  const __m256i pair = _mm256_set1_epi16(0x011f);    /* bytes (31, 1): unsigned times signed */
  const __m256i quad = _mm256_set1_epi32(0x000103c1); /* int16 (961, 1) */
  __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)p);
  return _mm256_madd_epi16(_mm256_maddubs_epi16(pair, v), quad);
}

__attribute__((target("avx2"))) static inline uint32_t avx2_sum(__m256i v)
{
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return (uint32_t)_mm_cvtsi128_si32(s);
}

__attribute__((target("avx2"))) static uint32_t java_hash_avx2(uint32_t h, const uint8_t *p,
                                                               size_t len)
{
  /* the weights of the 8 quads of a 32-byte piece: 31^28, 31^24, ..., 1 */
  const __m256i last = _mm256_setr_epi32((int)Q7, (int)Q6, (int)Q5, (int)Q4, (int)Q3, (int)Q2,
                                         (int)Q1, 1);
  if (len >= 128) {
    const __m256i step = _mm256_set1_epi32((int)Q32); /* 31^128 */
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (; len >= 128; p += 128, len -= 128) {
      a0 = _mm256_add_epi32(_mm256_mullo_epi32(a0, step), avx2_quads(p));
      a1 = _mm256_add_epi32(_mm256_mullo_epi32(a1, step), avx2_quads(p + 32));
      a2 = _mm256_add_epi32(_mm256_mullo_epi32(a2, step), avx2_quads(p + 64));
      a3 = _mm256_add_epi32(_mm256_mullo_epi32(a3, step), avx2_quads(p + 96));
      h *= Q32;
    }
    /* accumulator k's piece is followed by 3 - k pieces of 8 quads: 31^(32 * (3 - k)) more */
    __m256i s = _mm256_mullo_epi32(a0, _mm256_mullo_epi32(last, _mm256_set1_epi32((int)Q24)));
    s = _mm256_add_epi32(s, _mm256_mullo_epi32(a1, _mm256_mullo_epi32(
                                                      last, _mm256_set1_epi32((int)Q16))));
    s = _mm256_add_epi32(s, _mm256_mullo_epi32(a2, _mm256_mullo_epi32(
                                                      last, _mm256_set1_epi32((int)Q8))));
    s = _mm256_add_epi32(s, _mm256_mullo_epi32(a3, last));
    h += avx2_sum(s);
  }
  for (; len >= 32; p += 32, len -= 32)
    h = h * Q8 + avx2_sum(_mm256_mullo_epi32(avx2_quads(p), last));
  return java_hash_scalar(h, p, len);
}

static bool avx2_usable(void)
{
  return __builtin_cpu_supports("avx2"); /* libgcc checks that the OS saves the YMM state */
}

#endif

const proto_java_hash_impl proto_java_hash_impls[] = {
#if defined(__x86_64__)
  {"avx2", avx2_usable, java_hash_avx2},
  {"sse2", always_usable, java_hash_sse2},
#endif
  {"scalar", always_usable, java_hash_scalar}, /* last: the reference, usable everywhere */
};
const size_t proto_java_hash_impl_count = sizeof proto_java_hash_impls /
                                          sizeof proto_java_hash_impls[0];

static _Atomic(proto_java_hash_fn) chosen;

/* The first implementation of the table this CPU runs (picked once; racing first calls pick
 * the same one). */
static proto_java_hash_fn java_hash_fn(void)
{
  proto_java_hash_fn fn = atomic_load_explicit(&chosen, memory_order_relaxed);
  if (fn != NULL)
    return fn;
  size_t i = 0;
  while (!proto_java_hash_impls[i].usable())
    i++; /* the scalar row is always usable */
  fn = proto_java_hash_impls[i].fn;
  atomic_store_explicit(&chosen, fn, memory_order_relaxed);
  return fn;
}

uint32_t proto_java_hash_update(uint32_t state, const void *data, size_t len)
{
  return java_hash_fn()(state, data, len);
}

int32_t pcc_java_hash(const void *data, size_t len)
{
  return (int32_t)java_hash_fn()(1, data, len); /* two's complement on every platform we build for */
}
