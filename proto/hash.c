/* hash.c: two of the three hashes of the validation scheme (see proto.h), the SHA-256 content
 * digest (OpenSSL's libcrypto, loaded at the first digest of 4 KiB or more) that names blobs and
 * the XXH3-64 payload checksum, with their hex forms, and the module's strerror. The third, the
 * weak Java Arrays.hashCode() source hash GraalPy uses, is vectorised in java_hash.c. */
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

/* SHA256_Init/Update/Final are deprecated in OpenSSL 3, and kept: see pcc_digest_compute */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/opensslv.h>
#include <openssl/sha.h>
#include <sodium.h>
#include <xxhash.h>

#include "proto_internal.h"

/* Inputs shorter than this are hashed by libsodium (portable C, already loaded), longer ones by
 * libcrypto: SHA-256 both, the same bytes; a short digest (the hook's profile name of a
 * `python3 -c` program, a small module) never loads libcrypto, and a long one gets the CPU's SHA
 * extensions. */
#define HASH_SMALL 4096

#define HASH_STR(x) #x
#define HASH_SONAME(major) "libcrypto.so." HASH_STR(major)

/* libcrypto's low-level SHA-256, resolved at the first digest: every process of pycached links
 * proto, and the import hook starts in every interpreter, where loading libcrypto cost 1-1.6 ms
 * whether or not it imports anything from the cache (docs/BENCHMARKS.md, issue 12). */
static struct {
  __typeof__(SHA256_Init) *init;
  __typeof__(SHA256_Update) *update;
  __typeof__(SHA256_Final) *final;
} hash_crypto;
static pthread_once_t hash_crypto_once = PTHREAD_ONCE_INIT;

static void hash_crypto_load(void)
{
  void *lib = dlopen(HASH_SONAME(OPENSSL_VERSION_MAJOR), RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL)
    return;
  /* POSIX's way to a function from dlsym (ISO C has no object-to-function pointer cast) */
  *(void **)&hash_crypto.init = dlsym(lib, "SHA256_Init");
  *(void **)&hash_crypto.update = dlsym(lib, "SHA256_Update");
  *(void **)&hash_crypto.final = dlsym(lib, "SHA256_Final");
  if (!hash_crypto.init || !hash_crypto.update || !hash_crypto.final)
    hash_crypto.init = NULL; /* the library stays loaded, unused */
}

const char *pcc_proto_strerror(pcc_proto_status rc)
{
  switch (rc) {
  case PCC_PROTO_OK: return "ok";
  case PCC_PROTO_MISSING: return "required parameter missing";
  case PCC_PROTO_INVALID: return "malformed value";
  case PCC_PROTO_RANGE: return "value out of range";
  case PCC_PROTO_HEADER: return "malformed pyc header";
  case PCC_PROTO_CHECKSUM: return "checksum mismatch";
  case PCC_PROTO_NOMEM: return "out of memory";
  }
  return "unknown proto status";
}

void pcc_digest_compute(const void *data, size_t len, pcc_digest *out)
{
  /* The low-level SHA-256 of OpenSSL (the CPU's SHA extensions where there are some): OpenSSL
   * 3's one-shot SHA256() goes through EVP and initialises its providers at the first call,
   * 1.0 ms of every process (the hook's first digest names the profile of a `python3 -c`
   * program), for the same speed on sympy's sources (issue 12). */
  if (len >= HASH_SMALL)
    pthread_once(&hash_crypto_once, hash_crypto_load);
  if (len < HASH_SMALL || hash_crypto.init == NULL) { /* libsodium's SHA-256: the same bytes */
    crypto_hash_sha256(out->bytes, data, len);
    return;
  }
  SHA256_CTX ctx;
  hash_crypto.init(&ctx);
  hash_crypto.update(&ctx, data, len);
  hash_crypto.final(out->bytes, &ctx);
}

void pcc_digest_to_hex(const pcc_digest *digest, char out[PCC_DIGEST_HEX_LEN + 1])
{
  pcc_hex_encode(digest->bytes, PCC_DIGEST_LEN, out);
}

pcc_proto_status pcc_digest_from_hex(const char *hex, pcc_digest *out)
{
  return proto_hex_decode(hex, out->bytes, PCC_DIGEST_LEN);
}

bool pcc_digest_equal(const pcc_digest *a, const pcc_digest *b)
{
  return memcmp(a->bytes, b->bytes, PCC_DIGEST_LEN) == 0;
}

uint64_t pcc_checksum(const void *data, size_t len)
{
  return XXH3_64bits(data, len);
}

void pcc_checksum_to_hex(uint64_t checksum, char out[17])
{
  uint8_t be[8];
  for (int i = 0; i < 8; i++)
    be[i] = (uint8_t)(checksum >> (56 - 8 * i));
  pcc_hex_encode(be, sizeof be, out);
}

pcc_proto_status pcc_checksum_from_hex(const char *hex, uint64_t *out)
{
  uint8_t be[8];
  pcc_proto_status rc = proto_hex_decode(hex, be, sizeof be);
  if (rc != PCC_PROTO_OK)
    return rc;
  uint64_t value = 0;
  for (int i = 0; i < 8; i++)
    value = (value << 8) | be[i];
  *out = value;
  return PCC_PROTO_OK;
}

void pcc_hex_encode(const uint8_t *bytes, size_t len, char *out)
{
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 0xf];
  }
  out[2 * len] = '\0';
}

static int hex_value(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

pcc_proto_status proto_hex_decode(const char *hex, uint8_t *out, size_t len)
{
  if (hex == NULL)
    return PCC_PROTO_INVALID;
  for (size_t i = 0; i < len; i++) {
    int hi = hex_value(hex[2 * i]);
    int lo = hi < 0 ? -1 : hex_value(hex[2 * i + 1]);
    if (lo < 0)
      return PCC_PROTO_INVALID;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  return hex[2 * len] == '\0' ? PCC_PROTO_OK : PCC_PROTO_INVALID;
}
