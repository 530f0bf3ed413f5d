/* bodies.h: the JSON bodies of the warm-start requests (docs/API.md, "Warm start"), parsed and
 * checked without the store: POST /v1/profile {"paths": [...]}, POST /v1/batch {"lookups":
 * [...]} and POST /v1/report {"fallbacks": {...}}. warm.c answers them; the parsing is here so
 * that it can be tested and fuzzed on its own (tests/fuzz/fuzz_warm_bodies.c). Everything a body
 * holds is checked here: a number a client sends is converted only when it is whole and in range
 * (pcc_double_to_i64). */
#ifndef PCC_BODIES_H
#define PCC_BODIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* A profile body: count absolute paths of at most PCC_PATH_MAX bytes (at most
 * PCC_PROFILE_PATHS_MAX), pointing into doc. Free with pcc_body_profile_free. */
typedef struct {
  cJSON *doc;
  const char **paths;
  size_t count;
} pcc_body_profile;

/* Parses body (len bytes; NULL when empty). True with *out set (the caller frees it with
 * pcc_body_profile_free); false when the body is not {"paths": [absolute paths]} within the
 * limits, or memory runs out (*out is left empty). */
bool pcc_body_profile_parse(const uint8_t *body, size_t len, pcc_body_profile *out);
void pcc_body_profile_free(pcc_body_profile *profile); /* NULL is fine; leaves it empty */

/* One lookup of a batch. A malformed one has error (its result: a bad-parameter object of at
 * most PCC_BATCH_SMALL_MAX bytes), a well-formed one params (whose path points into path). A
 * lookup identical to an earlier one has same_as, that one's index; else PCC_BODY_NOT_SAME. */
typedef struct {
  pcc_params params;
  char *path;   /* owned */
  char *error;  /* owned, or NULL */
  size_t same_as;
} pcc_body_lookup;

#define PCC_BODY_NOT_SAME SIZE_MAX

/* Parses a batch body {"lookups": [...]} (NULL when empty) into *lookups (caller frees with
 * pcc_body_lookups_free) and *n, and points every lookup identical to an earlier one at the
 * first. Returns PCC_PROTO_OK; PCC_PROTO_INVALID when the body is not such an object or holds
 * more than max_lookups lookups; PCC_PROTO_RANGE when its n lookups, at PCC_BATCH_SMALL_MAX + 1
 * bytes each at least, and framing bytes would pass response_max (*n is set for the message);
 * PCC_PROTO_NOMEM. *lookups is set only on PCC_PROTO_OK. */
pcc_proto_status pcc_body_batch_parse(const uint8_t *body, size_t len, uint64_t max_lookups,
                                      uint64_t framing, uint64_t response_max,
                                      pcc_body_lookup **lookups, size_t *n);
void pcc_body_lookups_free(pcc_body_lookup *lookups, size_t n); /* NULL is fine */

/* A report body: up to PCC_REASONS_MAX reasons ([a-z0-9-], 1..PCC_REASON_LEN characters, as
 * keys of doc) with their counts (0..1e9). Free with pcc_body_report_free. */
typedef struct {
  cJSON *doc;
  struct {
    const char *reason;
    uint64_t count;
  } items[PCC_REASONS_MAX];
  size_t n;
} pcc_body_report;

/* Parses body (NULL when empty). False when it is not {"fallbacks": {reason: count}} within
 * those limits (*out is left empty). */
bool pcc_body_report_parse(const uint8_t *body, size_t len, pcc_body_report *out);
void pcc_body_report_free(pcc_body_report *report); /* NULL is fine; leaves it empty */

#endif /* PCC_BODIES_H */
