/* readfd.c: reading a small file whole, within a hard limit (proto.h): the --config file, the
 * TLS files, the --shared-key file, a token file. */
#include <errno.h>
#include <unistd.h>

#include "proto.h"

int pcc_read_upto(int fd, void *buf, size_t cap, size_t *len)
{
  *len = 0;
  while (*len < cap) { /* bounded: each pass reads a byte or ends */
    ssize_t n = read(fd, (char *)buf + *len, cap - *len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return errno;
    if (n == 0)
      break;
    *len += (size_t)n;
  }
  return 0;
}
