/* dynbuf.c: the growable byte buffer with a hard maximum (proto.h, "Growable buffers"), in the
 * spirit of curl's dynbuf: every body, response, list and text that grows goes through it, so
 * that no growth loop is written twice and none grows past its limit. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define DYNBUF_FIRST 256 /* the first allocation, unless a hint asks for more */

void pcc_dynbuf_init(pcc_dynbuf *buf, size_t max)
{
  buf->data = NULL;
  buf->len = 0;
  buf->cap = 0;
  buf->max = max;
  buf->error = PCC_PROTO_OK;
}

void pcc_dynbuf_free(pcc_dynbuf *buf)
{
  if (buf == NULL)
    return;
  free(buf->data);
  buf->data = NULL;
  buf->len = buf->cap = 0;
  buf->error = PCC_PROTO_OK;
}

pcc_proto_status pcc_dynbuf_reserve(pcc_dynbuf *buf, size_t n)
{
  if (n > buf->max - buf->len)
    return PCC_PROTO_RANGE;
  size_t need = buf->len + n;
  if (need <= buf->cap)
    return PCC_PROTO_OK;
  size_t cap = buf->cap ? buf->cap : DYNBUF_FIRST;
  while (cap < need)
    cap = cap > buf->max / 2 ? buf->max : cap * 2;
  if (cap > buf->max)
    cap = buf->max;
  void *grown = realloc(buf->data, cap);
  if (grown == NULL)
    return PCC_PROTO_NOMEM;
  buf->data = grown;
  buf->cap = cap;
  return PCC_PROTO_OK;
}

/* Keeps the first error of an add. */
static pcc_proto_status failed(pcc_dynbuf *buf, pcc_proto_status rc)
{
  if (buf->error == PCC_PROTO_OK)
    buf->error = rc;
  return rc;
}

pcc_proto_status pcc_dynbuf_add(pcc_dynbuf *buf, const void *data, size_t len)
{
  pcc_proto_status rc = pcc_dynbuf_reserve(buf, len);
  if (rc != PCC_PROTO_OK)
    return failed(buf, rc);
  if (len == 0)
    return PCC_PROTO_OK;
  memcpy((char *)buf->data + buf->len, data, len);
  buf->len += len;
  return PCC_PROTO_OK;
}

pcc_proto_status pcc_dynbuf_addf(pcc_dynbuf *buf, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return failed(buf, PCC_PROTO_INVALID);
  /* room for the text and its NUL, which is not counted in len */
  pcc_proto_status rc = pcc_dynbuf_reserve(buf, (size_t)n + 1);
  if (rc != PCC_PROTO_OK)
    return failed(buf, rc);
  va_start(ap, fmt);
  vsnprintf((char *)buf->data + buf->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  buf->len += (size_t)n;
  return PCC_PROTO_OK;
}

void *pcc_dynbuf_take(pcc_dynbuf *buf, size_t *len)
{
  void *data = buf->data;
  if (len != NULL)
    *len = buf->len;
  buf->data = NULL;
  buf->len = buf->cap = 0;
  return data;
}

void pcc_dynbuf_commit(pcc_dynbuf *buf, size_t n)
{
  buf->len += n;
}

/* Whether a query keeps byte c as it is (RFC 3986's unreserved characters). */
static bool dynbuf_unreserved(unsigned char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

pcc_proto_status pcc_dynbuf_add_escaped(pcc_dynbuf *buf, const char *text, size_t len)
{
  static const char hex[] = "0123456789ABCDEF";
  size_t out_len = 0;
  for (size_t i = 0; i < len; i++)
    out_len += dynbuf_unreserved((unsigned char)text[i]) ? 1 : 3;
  pcc_proto_status rc = pcc_dynbuf_reserve(buf, out_len);
  if (rc != PCC_PROTO_OK)
    return failed(buf, rc);
  if (out_len == 0)
    return PCC_PROTO_OK;
  char *out = (char *)buf->data + buf->len;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)text[i];
    if (dynbuf_unreserved(c)) {
      *out++ = (char)c;
    } else {
      *out++ = '%';
      *out++ = hex[c >> 4];
      *out++ = hex[c & 15];
    }
  }
  buf->len += out_len;
  return PCC_PROTO_OK;
}
