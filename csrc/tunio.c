/* Batched TUN I/O: one read()/write() per packet, many packets per call. See tunio.h. */
#include "tunio.h"

#include <errno.h>
#include <sys/uio.h>
#include <unistd.h>

int tunio_read(int fd, unsigned char *buf, size_t stride, uint32_t *lengths, unsigned n)
{
    unsigned char spill; /* a byte landing here means the packet did not fit its slot */
    unsigned i = 0;
    while (i < n) {
        struct iovec iov[2] = {{buf + (size_t)i * stride, stride}, {&spill, 1}};
        ssize_t r = readv(fd, iov, 2);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (i > 0)
                break;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -errno;
        }
        lengths[i++] = (uint32_t)r; /* r == stride + 1 exactly when truncated */
    }
    return (int)i;
}

int tunio_write(int fd, const unsigned char *buf, size_t stride, size_t nslots, const uint32_t *lengths,
                const uint32_t *offsets, const uint32_t *order, unsigned start, unsigned n)
{
    unsigned i = 0;
    while (i < n) {
        size_t k = (size_t)start + i;
        size_t slot = order ? order[k] : k;
        int err = 0;
        if (slot >= nslots) {
            err = EINVAL;
        } else {
            size_t off = offsets ? offsets[slot] : 0;
            size_t len = lengths[slot];
            if (off > stride || len > stride - off) {
                err = EINVAL;
            } else {
                ssize_t w = write(fd, buf + slot * stride + off, len);
                if (w < 0) {
                    if (errno == EINTR)
                        continue;
                    err = errno;
                }
            }
        }
        if (err) {
            if (i > 0)
                break;
            if (err == EAGAIN || err == EWOULDBLOCK)
                return 0;
            return -err;
        }
        i++;
    }
    return (int)i;
}
