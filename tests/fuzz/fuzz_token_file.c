/* fuzz_token_file.c: the server's token file (--tokens; server/auth.c through pcc_auth_parse,
 * the same parser pcc_auth_open runs on the file's bytes) and the check of a bearer token
 * against it (pcc_auth_check).
 *
 * Input: the file's bytes. Checked: a file that loads has 1..1024 tokens, and each "token" it
 * lists (read here with cJSON on its own) is known under its own "name" and with its roles; an
 * Authorization value made of the input is refused unless it is one of them. */
#include "auth.h"
#include "fuzz_common.h"

static unsigned roles_of(const cJSON *roles)
{
  unsigned bits = 0;
  const cJSON *role;
  cJSON_ArrayForEach(role, roles) {
    if (strcmp(role->valuestring, "read") == 0)
      bits |= PCC_ROLE_READ;
    else if (strcmp(role->valuestring, "compile") == 0)
      bits |= PCC_ROLE_COMPILE;
    else if (strcmp(role->valuestring, "admin") == 0)
      bits |= PCC_ROLE_ADMIN;
  }
  return bits;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  pcc_auth *auth = NULL;
  char error[256] = "";
  pcc_auth_status rc = pcc_auth_parse((const char *)data, size, &auth, error, sizeof error);
  if (rc != PCC_AUTH_OK) {
    FUZZ_CHECK(rc == PCC_AUTH_BAD_FILE && auth == NULL && error[0] != '\0');
    return 0;
  }
  size_t count = pcc_auth_count(auth);
  FUZZ_CHECK(count >= 1 && count <= 1024);
  FUZZ_CHECK(pcc_auth_reload(auth, error, sizeof error) == PCC_AUTH_BAD_FILE);

  char *text = fuzz_text(data, size);
  cJSON *doc = cJSON_Parse(text);
  const cJSON *item;
  cJSON_ArrayForEach(item, cJSON_GetObjectItemCaseSensitive(doc, "tokens")) {
    const char *token = cJSON_GetObjectItemCaseSensitive(item, "token")->valuestring;
    const char *name = cJSON_GetObjectItemCaseSensitive(item, "name")->valuestring;
    unsigned roles = roles_of(cJSON_GetObjectItemCaseSensitive(item, "roles"));
    char header[600];
    snprintf(header, sizeof header, "Bearer %s", token);
    static const pcc_role all[] = {PCC_ROLE_READ, PCC_ROLE_COMPILE, PCC_ROLE_ADMIN};
    for (size_t r = 0; r < 3; r++) {
      pcc_auth_identity who;
      pcc_auth_status check = pcc_auth_check(auth, header, all[r], &who);
      FUZZ_CHECK(check == ((roles & all[r]) ? PCC_AUTH_OK : PCC_AUTH_NO_ROLE));
      FUZZ_CHECK(strcmp(who.name, name) == 0);
    }
  }
  /* the input itself as a token: known only if the file lists it */
  char header[600];
  snprintf(header, sizeof header, "Bearer %.*s", (int)(size < 512 ? size : 512), text);
  pcc_auth_status check = pcc_auth_check(auth, header, PCC_ROLE_READ, NULL);
  FUZZ_CHECK(check == PCC_AUTH_OK || check == PCC_AUTH_NO_ROLE || check == PCC_AUTH_UNKNOWN ||
             check == PCC_AUTH_MISSING);
  cJSON_Delete(doc);
  free(text);
  pcc_auth_close(auth);
  return 0;
}
