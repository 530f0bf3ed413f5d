/* fuzz_worker_frames.c: what a compiler worker sends to the server's pool (compiler/reply.c, as
 * compiler/pool.c uses it): its hello, then its answers to compiles, framed as frame.h says.
 * A worker is not trusted (a hostile source may have subverted it).
 *
 * Input: the bytes of the worker's side of the socket. As read_frame does, the first frame is
 * read with the hello's limit (PCC_FRAME_HELLO_MAX) and decoded as a hello; every later one, with
 * the frame limit, as an answer; the reading stops where the pool's would fail (a bad prefix, or
 * fewer bytes than the frame says: the worker is killed). Checked: a hello that decodes has a
 * well-formed magic and a short printable name; an answer that decodes is marshal bytes or an
 * error with a type and a message and no negative position. */
#include "fuzz_common.h"
#include "reply.h"

#define FUZZ_FRAME_MAX (1u << 20) /* the pool's is 64 MiB; inputs are far smaller */

/* Takes the next frame out of [*at, end): false where the pool's read would fail. */
static bool next_frame(const uint8_t **at, const uint8_t *end, size_t max, uint8_t *type,
                       uint8_t **payload, size_t *len)
{
  if ((size_t)(end - *at) < PCC_FRAME_PREFIX_LEN ||
      pcc_reply_prefix(*at, max, type, len) != PCC_COMPILER_OK)
    return false;
  *at += PCC_FRAME_PREFIX_LEN;
  if ((size_t)(end - *at) < *len)
    return false;
  *payload = malloc(*len + 1); /* with the NUL read_frame adds */
  FUZZ_CHECK(*payload != NULL);
  memcpy(*payload, *at, *len);
  (*payload)[*len] = '\0';
  *at += *len;
  return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const uint8_t *at = data, *end = data + size;
  uint8_t type = 0, *payload = NULL;
  size_t len = 0;
  if (!next_frame(&at, end, PCC_FRAME_HELLO_MAX, &type, &payload, &len))
    return 0;
  FUZZ_CHECK(len < PCC_FRAME_HELLO_MAX);
  pcc_magic magic;
  char name[2 * PCC_WORKER_NAME_PART_MAX + 2];
  pcc_compiler_status rc = pcc_reply_hello(type, payload, len, &magic, name, sizeof name);
  free(payload);
  if (rc != PCC_COMPILER_OK) {
    FUZZ_CHECK(rc == PCC_COMPILER_SPAWN);
    return 0; /* the pool kills a worker with a bad hello */
  }
  FUZZ_CHECK(magic.bytes[2] == '\r' && magic.bytes[3] == '\n');
  size_t name_len = strlen(name);
  FUZZ_CHECK(name_len >= 3 && name_len < sizeof name && strchr(name, '-') != NULL);
  for (size_t i = 0; i < name_len; i++)
    FUZZ_CHECK(name[i] > 0x20 && name[i] < 0x7f && name[i] != '"' && name[i] != '\\');

  while (next_frame(&at, end, FUZZ_FRAME_MAX, &type, &payload, &len)) {
    pcc_compile_result *result = NULL;
    rc = pcc_reply_answer(type, payload, len, &result); /* takes payload */
    if (rc != PCC_COMPILER_OK) {
      FUZZ_CHECK(rc == PCC_COMPILER_PROTOCOL && result == NULL);
      break; /* the pool kills the worker */
    }
    if (result->ok) {
      FUZZ_CHECK(type == PCC_FRAME_CODE && result->marshal != NULL &&
                 result->marshal_len == len && len > 0);
    } else {
      FUZZ_CHECK(type == PCC_FRAME_ERROR && result->error_type != NULL &&
                 result->error_type[0] != '\0' && result->error_message != NULL);
      FUZZ_CHECK(result->error_line >= 0 && result->error_offset >= 0);
    }
    pcc_compile_result_free(result);
  }
  return 0;
}
