/* params.c: the request parameters of /v1/code and /v1/compile, parsed and validated in one
 * place so that server, CLI and tests agree on what is valid (see proto.h for the rules), and
 * the integer readers (decimal text, JSON numbers) they and the JSON forms use. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto_internal.h"

pcc_proto_status pcc_parse_i64(const char *text, int64_t min, int64_t max, int64_t *out)
{
  if (text == NULL || *text == '\0')
    return PCC_PROTO_INVALID;
  const char *p = text;
  if (*p == '-')
    p++;
  if (*p < '0' || *p > '9')
    return PCC_PROTO_INVALID; /* rejects "", "-", " 1", "+1" */
  errno = 0;
  char *end = NULL;
  long long value = strtoll(text, &end, 10);
  if (*end != '\0')
    return PCC_PROTO_INVALID;
  if (errno == ERANGE || value < min || value > max)
    return PCC_PROTO_RANGE;
  *out = (int64_t)value;
  return PCC_PROTO_OK;
}

bool pcc_double_to_i64(double value, int64_t *out)
{
  /* -2^63 and 2^63 are exact doubles; every double in [-2^63, 2^63) converts without UB.
   * Written as a negation so that NaN (every comparison false) fails too. */
  if (!(value >= -9223372036854775808.0 && value < 9223372036854775808.0))
    return false;
  int64_t whole = (int64_t)value;
  if ((double)whole != value)
    return false; /* a fraction */
  *out = whole;
  return true;
}

static pcc_proto_status parse_path(const char *text, pcc_params *out)
{
  size_t len = strlen(text);
  if (len == 0 || text[0] != '/')
    return PCC_PROTO_INVALID;
  if (len > PCC_PATH_MAX)
    return PCC_PROTO_RANGE;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
      return PCC_PROTO_INVALID; /* control characters have no place in a module path */
  out->path = text;
  out->path_len = len;
  return PCC_PROTO_OK;
}

pcc_proto_status pcc_params_parse(pcc_param_getter get, void *ctx, unsigned required,
                                  pcc_params *out, const char **bad_param)
{
  static const struct {
    const char *name;
    unsigned bit;
  } known[] = {
    {"magic", PCC_PARAM_MAGIC}, {"opt", PCC_PARAM_OPT},   {"path", PCC_PARAM_PATH},
    {"mtime", PCC_PARAM_MTIME}, {"size", PCC_PARAM_SIZE}, {"hash", PCC_PARAM_HASH},
    {"digest", PCC_PARAM_DIGEST},
  };
  pcc_params params;
  memset(&params, 0, sizeof params);

  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
    const char *text = get(ctx, known[i].name);
    pcc_proto_status rc = PCC_PROTO_OK;
    int64_t number = 0;
    *bad_param = known[i].name;
    if (text == NULL) {
      if (required & known[i].bit)
        return PCC_PROTO_MISSING;
      continue;
    }
    switch (known[i].bit) {
    case PCC_PARAM_MAGIC:
      rc = pcc_magic_from_hex(text, &params.magic);
      break;
    case PCC_PARAM_OPT:
      rc = pcc_parse_i64(text, 0, PCC_OPT_MAX, &number);
      params.opt = (int)number;
      break;
    case PCC_PARAM_PATH:
      rc = parse_path(text, &params);
      break;
    case PCC_PARAM_MTIME:
      rc = pcc_parse_i64(text, 0, INT64_MAX, &params.mtime);
      break;
    case PCC_PARAM_SIZE:
      rc = pcc_parse_i64(text, 0, INT64_MAX, &number);
      params.size = (uint64_t)number;
      break;
    case PCC_PARAM_HASH:
      rc = pcc_parse_i64(text, INT32_MIN, INT32_MAX, &number);
      params.hash = (int32_t)number;
      break;
    case PCC_PARAM_DIGEST:
      rc = pcc_digest_from_hex(text, &params.digest);
      break;
    }
    if (rc != PCC_PROTO_OK)
      return rc;
    params.present |= known[i].bit;
  }
  *bad_param = NULL;
  *out = params;
  return PCC_PROTO_OK;
}
