/* auth.h: bearer tokens and roles of pycached (docs/API.md, "Access control"). Tokens come from a
 * JSON file, are kept only as SHA-256 digests and are compared in constant time; the file can be
 * reloaded while requests are checked (SIGHUP). */
#ifndef PCC_AUTH_H
#define PCC_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "pcc_limits.h"

typedef struct pcc_auth pcc_auth;

typedef enum {
  PCC_ROLE_READ = 1u << 0,
  PCC_ROLE_COMPILE = 1u << 1,
  PCC_ROLE_ADMIN = 1u << 2,
} pcc_role;

typedef enum {
  PCC_AUTH_OK = 0,
  PCC_AUTH_MISSING,   /* no "Authorization: Bearer" header */
  PCC_AUTH_UNKNOWN,   /* no such token */
  PCC_AUTH_NO_ROLE,   /* a known token without the role */
  PCC_AUTH_BAD_FILE,  /* the token file cannot be read or is malformed */
  PCC_AUTH_NOMEM,
} pcc_auth_status;

const char *pcc_auth_strerror(pcc_auth_status rc);
const char *pcc_role_name(pcc_role role);

/* Loads the token file (at most 1 MiB, at most 1024 tokens; each token 16..512 printable
 * characters, names unique, an optional "namespace"). On failure writes why into error (error_len bytes) and returns
 * PCC_AUTH_BAD_FILE. *out is owned by the caller (pcc_auth_close). */
pcc_auth_status pcc_auth_open(const char *file, pcc_auth **out, char *error, size_t error_len);

/* As pcc_auth_open, from the bytes of a token file (text, len bytes, read as the file would be:
 * up to a NUL) instead of the file: for tests and tests/fuzz/fuzz_token_file.c. Such an auth has
 * no file: pcc_auth_reload answers PCC_AUTH_BAD_FILE. */
pcc_auth_status pcc_auth_parse(const char *text, size_t len, pcc_auth **out, char *error,
                               size_t error_len);

/* Reloads the file given to pcc_auth_open; on failure the tokens in force stay and error says
 * why. Thread-safe against pcc_auth_check. */
pcc_auth_status pcc_auth_reload(pcc_auth *auth, char *error, size_t error_len);

/* Number of tokens in force. */
size_t pcc_auth_count(pcc_auth *auth);

/* Who a token is: its name and its namespace (the trust domain of what it writes and reads
 * by path; "" is the default namespace). */
typedef struct {
  char name[65];
  char ns[PCC_NAMESPACE_MAX + 1];
} pcc_auth_identity;

/* Checks an Authorization header value (NULL when absent) for role. On PCC_AUTH_OK and
 * PCC_AUTH_NO_ROLE, *who (may be NULL) gets the token's identity. Constant time in the tokens'
 * contents. Thread-safe. */
pcc_auth_status pcc_auth_check(pcc_auth *auth, const char *authorization, pcc_role role,
                               pcc_auth_identity *who);

/* Is ns a valid namespace name: 1..PCC_NAMESPACE_MAX characters of [a-z0-9._-]? */
bool pcc_namespace_ok(const char *ns);

void pcc_auth_close(pcc_auth *auth); /* NULL is fine */

#endif
