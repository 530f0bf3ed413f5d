/* proto.h: what the pycached server and its clients share.
 *
 * The validation scheme (docs/DESIGN.md): an entry is valid only when the bytecode magic, the
 * source timestamp (mtime and size) and the source hash all match. This header holds the pieces
 * both sides compute the same way: the Java Arrays.hashCode() source hash, the SHA-256 content
 * digest, the XXH3-64 payload checksum, the 16-byte PEP 552 pyc header, the request parameters
 * and the JSON forms of entries and errors. Nothing here allocates except where it says so.
 */
#ifndef PCC_PROTO_H
#define PCC_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "pcc_limits.h"

typedef enum {
  PCC_PROTO_OK = 0,
  PCC_PROTO_MISSING,  /* a required parameter is absent */
  PCC_PROTO_INVALID,  /* a parameter or field is malformed */
  PCC_PROTO_RANGE,    /* a number is out of its range */
  PCC_PROTO_HEADER,   /* a pyc header is malformed */
  PCC_PROTO_CHECKSUM, /* bytes do not match their checksum */
  PCC_PROTO_NOMEM,
} pcc_proto_status;

/* Returns a static, human-readable description of rc. */
const char *pcc_proto_strerror(pcc_proto_status rc);

/* ---- growable buffers ---------------------------------------------------------------------
 * A byte buffer that grows by doubling up to a hard maximum given at init (curl's dynbuf). The
 * fields may be read (data, len); they are changed only through these functions. data is NULL
 * until the first byte is added; the buffer owns it until pcc_dynbuf_take or pcc_dynbuf_free. */

typedef struct {
  void *data;
  size_t len, cap;
  size_t max;             /* the most len may ever be */
  pcc_proto_status error; /* the first failure of an add or addf, else PCC_PROTO_OK */
} pcc_dynbuf;

/* An empty buffer that will hold at most max bytes. Allocates nothing. */
void pcc_dynbuf_init(pcc_dynbuf *buf, size_t max);
/* Frees what the buffer holds and leaves it empty (still usable, error cleared). NULL is fine. */
void pcc_dynbuf_free(pcc_dynbuf *buf);
/* Makes room for n more bytes. PCC_PROTO_RANGE when len + n would pass max (nothing changes),
 * PCC_PROTO_NOMEM when memory runs out. */
pcc_proto_status pcc_dynbuf_reserve(pcc_dynbuf *buf, size_t n);
/* Appends len bytes (same errors as reserve; on error nothing is appended, and the first error is
 * kept in buf->error, so that a chain of adds can be checked once at its end). */
pcc_proto_status pcc_dynbuf_add(pcc_dynbuf *buf, const void *data, size_t len);
/* Appends printf-formatted text, kept NUL-terminated (the NUL is not counted in len and needs
 * one byte of room under max). */
pcc_proto_status pcc_dynbuf_addf(pcc_dynbuf *buf, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));
/* Hands the bytes to the caller (who frees them) and leaves the buffer empty; *len (may be
 * NULL) gets their count. NULL when nothing was ever added. */
void *pcc_dynbuf_take(pcc_dynbuf *buf, size_t *len);
/* Counts n bytes the caller wrote into the room a pcc_dynbuf_reserve made (at data + len) as
 * added, without a copy (a socket read straight into the buffer). Precondition: n <= cap - len. */
void pcc_dynbuf_commit(pcc_dynbuf *buf, size_t n);
/* Appends text[0..len) percent-encoded for a URL query (every byte but A-Z a-z 0-9 - . _ ~ as
 * %XX, as curl_easy_escape does). Same errors as pcc_dynbuf_add; nothing is NUL-terminated. */
pcc_proto_status pcc_dynbuf_add_escaped(pcc_dynbuf *buf, const char *text, size_t len);

/* ---- small files ------------------------------------------------------------------------ */

/* Reads fd until its end or cap bytes, whichever comes first, into buf (EINTR retried); *len is
 * the count read. Returns 0, or the errno of a failed read (*len then counts what came before).
 * A caller with a limit reads cap = limit + 1 bytes: *len > limit says the file is over it. */
int pcc_read_upto(int fd, void *buf, size_t cap, size_t *len);

/* ---- hashes ---------------------------------------------------------------------------- */

/* Java's Arrays.hashCode(byte[]) over len bytes: h = 1, then h = 31*h + b for each byte taken as
 * signed, with 32-bit two's-complement wrap-around. "" gives 1, {0xff} gives 30, "abc" 126145. */
int32_t pcc_java_hash(const void *data, size_t len);

#define PCC_DIGEST_LEN 32
#define PCC_DIGEST_HEX_LEN 64

/* SHA-256 of the source bytes: the name of a blob. A cryptographic digest, because anyone with
 * the compile role could otherwise craft a source that collides with another's (the Java hash is
 * trivially collidable, XXH3 is not collision-resistant either). Its hex form is the one
 * `sha256sum` prints. */
typedef struct {
  uint8_t bytes[PCC_DIGEST_LEN];
} pcc_digest;

void pcc_digest_compute(const void *data, size_t len, pcc_digest *out);
/* Writes 64 lowercase hex digits and a NUL into out. */
void pcc_digest_to_hex(const pcc_digest *digest, char out[PCC_DIGEST_HEX_LEN + 1]);
/* Parses exactly 64 hex digits (either case). */
pcc_proto_status pcc_digest_from_hex(const char *hex, pcc_digest *out);
bool pcc_digest_equal(const pcc_digest *a, const pcc_digest *b);

/* Writes 2*len lowercase hex digits and a NUL into out (2*len + 1 bytes). */
void pcc_hex_encode(const uint8_t *bytes, size_t len, char *out);

/* XXH3-64 checksum of a payload; printed as 16 lowercase hex digits. */
uint64_t pcc_checksum(const void *data, size_t len);
void pcc_checksum_to_hex(uint64_t checksum, char out[17]);
pcc_proto_status pcc_checksum_from_hex(const char *hex, uint64_t *out);

/* ---- magic numbers and the pyc header ---------------------------------------------------- */

#define PCC_MAGIC_LEN 4

/* The 4 bytes of importlib.util.MAGIC_NUMBER, e.g. a7 0d 0d 0a for CPython 3.11. */
typedef struct {
  uint8_t bytes[PCC_MAGIC_LEN];
} pcc_magic;

/* Parses exactly 8 hex digits. The last two bytes of every CPython/PyPy magic are "\r\n";
 * anything else is PCC_PROTO_INVALID. */
pcc_proto_status pcc_magic_from_hex(const char *hex, pcc_magic *out);
void pcc_magic_to_hex(const pcc_magic *magic, char out[2 * PCC_MAGIC_LEN + 1]);
bool pcc_magic_equal(const pcc_magic *a, const pcc_magic *b);

#define PCC_PYC_HEADER_LEN 16
#define PCC_PYC_FLAG_HASH_BASED 0x1u

/* PEP 552 header: magic, u32 flags (0: timestamp-based), u32 mtime, u32 source size, all
 * little-endian. mtime and size are stored modulo 2^32, as CPython does. */
typedef struct {
  pcc_magic magic;
  uint32_t flags;
  uint32_t mtime;
  uint32_t size;
} pcc_pyc_header;

/* Fills a timestamp-based header (flags 0) for the given source mtime and size. */
void pcc_pyc_header_init(pcc_pyc_header *header, const pcc_magic *magic, int64_t mtime,
                         uint64_t size);
void pcc_pyc_header_write(const pcc_pyc_header *header, uint8_t out[PCC_PYC_HEADER_LEN]);
/* Parses the first 16 bytes of buf. PCC_PROTO_HEADER when len < 16, when the magic does not end
 * in "\r\n" or when flags is not 0 (this project serves timestamp-based pycs only). */
pcc_proto_status pcc_pyc_header_parse(const uint8_t *buf, size_t len, pcc_pyc_header *out);

/* ---- request parameters ------------------------------------------------------------------ */

/* PCC_PATH_MAX and PCC_OPT_MAX: pcc_limits.h */

enum {
  PCC_PARAM_MAGIC = 1u << 0,
  PCC_PARAM_OPT = 1u << 1,
  PCC_PARAM_PATH = 1u << 2,
  PCC_PARAM_MTIME = 1u << 3,
  PCC_PARAM_SIZE = 1u << 4,
  PCC_PARAM_HASH = 1u << 5,
  PCC_PARAM_DIGEST = 1u << 6,
};

/* The parameters of a lookup or compile request. `present` has a PCC_PARAM_* bit for each one
 * that was given. path points into the getter's storage and lives as long as it does. */
typedef struct {
  unsigned present;
  pcc_magic magic;
  int opt;
  const char *path;
  size_t path_len;
  int64_t mtime;
  uint64_t size;
  int32_t hash;
  pcc_digest digest;
} pcc_params;

/* Returns the value of parameter `name`, or NULL when absent. */
typedef const char *(*pcc_param_getter)(void *ctx, const char *name);

/* Parses and validates every known parameter through get(ctx, name). On failure returns
 * PCC_PROTO_MISSING (a bit of `required` is absent) or PCC_PROTO_INVALID/RANGE and sets
 * *bad_param to the parameter's name (a static string). opt defaults to 0 when absent.
 *  magic  8 hex digits            opt    0, 1 or 2
 *  path   absolute, <= 4096 bytes  mtime  whole seconds, 0 .. 2^63-1
 *  size   bytes, 0 .. 2^63-1        hash   signed 32-bit decimal
 *  digest 64 hex digits (SHA-256) */
pcc_proto_status pcc_params_parse(pcc_param_getter get, void *ctx, unsigned required,
                                  pcc_params *out, const char **bad_param);

/* Strict decimal parsers used by pcc_params_parse (and by the CLI): the whole string must be a
 * number in [min, max]; no spaces, no leading '+'. */
pcc_proto_status pcc_parse_i64(const char *text, int64_t min, int64_t max, int64_t *out);

/* A JSON number (cJSON keeps every number as a double) as an integer: true and *out set when
 * value is a whole number that int64_t holds (-2^63 .. 2^63-1); false for a fraction, NaN, an
 * infinity or anything out of range (1e300), which a plain (int64_t) cast would turn into
 * undefined behaviour. Check the range the caller wants on *out afterwards. */
bool pcc_double_to_i64(double value, int64_t *out);
/* PCC_JSON_INT_MAX (pcc_limits.h): the JSON forms read mtime, size, line and offset within it. */

/* ---- JSON forms ---------------------------------------------------------------------------- */

/* A served entry: what a hit or a compile answers. pyc is the full pyc (16-byte header built
 * from the request's mtime and size, then the marshal bytes); every pointer is borrowed. */
typedef struct {
  pcc_magic magic;
  int opt;
  const char *path;
  int64_t mtime;
  uint64_t size;
  int32_t hash;
  bool hash_checked; /* false when the lookup was validated by timestamp alone */
  pcc_digest digest;
  const uint8_t *pyc;
  size_t pyc_len;
  uint64_t checksum; /* pcc_checksum(pyc, pyc_len) */
  const char *compiler;
} pcc_entry_view;

/* Builds the JSON object of an entry (pyc in standard base64). Caller owns the result
 * (cJSON_Delete); NULL when out of memory. */
cJSON *pcc_entry_to_json(const pcc_entry_view *entry);
/* The same object printed unformatted, as cJSON_PrintUnformatted(pcc_entry_to_json(entry))
 * would, but with the base64 written straight into the text (no copy of it through cJSON).
 * Returns the NUL-terminated text (caller frees) with its length in *len; NULL without memory. */
char *pcc_entry_to_json_text(const pcc_entry_view *entry, size_t *len);

/* A parsed entry, owning its strings and bytes: free with pcc_entry_free (NULL is fine). */
typedef struct {
  pcc_entry_view view;
  char *path_owned;
  char *compiler_owned;
  uint8_t *pyc_owned;
} pcc_entry;

/* Parses an entry JSON document, decodes its pyc and verifies it: the checksum must match
 * (PCC_PROTO_CHECKSUM), the header must parse and carry the entry's magic, mtime and size
 * (PCC_PROTO_HEADER). *out is set only on PCC_PROTO_OK. */
pcc_proto_status pcc_entry_from_json(const char *text, size_t len, pcc_entry **out);
void pcc_entry_free(pcc_entry *entry);

/* Cuts a NUL-terminated text that snprintf may have truncated inside a UTF-8 character back to
 * its last whole character (clients decode server texts as UTF-8). */
void pcc_utf8_trim(char *text);

/* Builds {"error": code, "message": message}; callers add more fields. Caller owns it. */
cJSON *pcc_error_to_json(const char *code, const char *message);

/* Standard base64 (with padding), decoded through libsodium. pcc_base64_encode returns a
 * NUL-terminated string the caller frees, or NULL when out of memory or len is absurd.
 * pcc_base64_decode sets *out (caller frees) and *out_len; PCC_PROTO_INVALID on malformed
 * input. */
char *pcc_base64_encode(const uint8_t *data, size_t len);
pcc_proto_status pcc_base64_decode(const char *text, size_t text_len, uint8_t **out,
                                   size_t *out_len);

/* ---- bundles (docs/API.md, "Warm start") -----------------------------------------------------
 * Every pyc of an import profile in one response. Binary, little-endian:
 *   header   "PCCB" | version u8 (2) | opt u8 | 0 u16 | magic[4] | count u32
 *   entry    path_len u32 | pyc_len u32 | mtime i64 | size u64 | hash i32 | digest[32] |
 *            checksum u64 (XXH3-64 of the pyc) | path | pyc            (x count)
 *   trailer  "PCCE" | XXH3-64 of every byte before the trailer (u64)
 */

#define PCC_BUNDLE_HEADER_LEN 16
#define PCC_BUNDLE_VERSION 2 /* 2: SHA-256 digests (1 had XXH3-128) */
#define PCC_BUNDLE_ENTRY_FIXED (36 + PCC_DIGEST_LEN)
#define PCC_BUNDLE_TRAILER_LEN 12

typedef struct {
  const char *path; /* not NUL-terminated */
  size_t path_len;
  int64_t mtime;
  uint64_t size;
  int32_t hash;
  pcc_digest digest;
  const uint8_t *pyc;
  size_t pyc_len;
  uint64_t checksum;
} pcc_bundle_entry;

typedef struct pcc_bundle_writer pcc_bundle_writer;

/* A writer of one bundle, at most max_bytes long. Caller owns it (pcc_bundle_writer_close). */
pcc_proto_status pcc_bundle_writer_open(const pcc_magic *magic, int opt, size_t max_bytes,
                                        pcc_bundle_writer **out);
/* Appends an entry (its checksum is computed here). PCC_PROTO_RANGE when it would not fit. */
pcc_proto_status pcc_bundle_writer_add(pcc_bundle_writer *writer, const pcc_bundle_entry *entry);
/* Finishes the bundle: *out (caller frees) and *len. The writer is spent afterwards. */
pcc_proto_status pcc_bundle_writer_finish(pcc_bundle_writer *writer, uint8_t **out,
                                          size_t *len);
void pcc_bundle_writer_close(pcc_bundle_writer *writer); /* NULL is fine */

/* Parses a bundle: the trailer's checksum must match (else PCC_PROTO_CHECKSUM: truncated or
 * damaged, use none of it) and the framing hold (else PCC_PROTO_INVALID). Then calls
 * visit(entry, ctx) for every entry whose pyc matches its checksum and whose pyc header carries
 * the bundle's magic and the entry's mtime and size; *skipped counts the others. Pointers in
 * entries point into data. */
pcc_proto_status pcc_bundle_parse(const uint8_t *data, size_t len, pcc_magic *magic, int *opt,
                                  void (*visit)(const pcc_bundle_entry *entry, void *ctx),
                                  void *ctx, size_t *skipped);

#endif /* PCC_PROTO_H */
