/* Batched UDP I/O: recvmmsg/sendmmsg over slot batches. See udpio.h for the contract. */
#define _GNU_SOURCE
#include "udpio.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* Messages per syscall; larger batches take several calls. Keeps the scratch arrays on the stack
 * (about 27 KiB), well inside any thread's stack. */
#define CHUNK 256

typedef union {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
} sockaddr_any;

_Static_assert(sizeof(udpio_addr) == UDPIO_ADDR_SIZE, "udpio_addr must stay 24 bytes");

static const uint8_t V4MAPPED[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void to_record(const sockaddr_any *sa, socklen_t len, udpio_addr *rec)
{
    memset(rec, 0, sizeof *rec);
    if (sa->sa.sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        rec->family = AF_INET;
        rec->port = ntohs(sa->in4.sin_port);
        memcpy(rec->addr, &sa->in4.sin_addr, 4);
    } else if (sa->sa.sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const uint8_t *a = sa->in6.sin6_addr.s6_addr;
        rec->port = ntohs(sa->in6.sin6_port);
        if (memcmp(a, V4MAPPED, 12) == 0) {
            /* A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; one peer, one record. */
            rec->family = AF_INET;
            memcpy(rec->addr, a + 12, 4);
        } else {
            rec->family = AF_INET6;
            rec->scope_id = sa->in6.sin6_scope_id;
            memcpy(rec->addr, a, 16);
        }
    }
}

/* Returns the sockaddr length, or 0 for a record of unknown family. An AF_INET record given to an
 * AF_INET6 socket is sent as IPv4 by the kernel (unless the socket is IPV6_V6ONLY). */
static socklen_t from_record(const udpio_addr *rec, sockaddr_any *sa)
{
    if (rec->family == AF_INET) {
        memset(&sa->in4, 0, sizeof sa->in4);
        sa->in4.sin_family = AF_INET;
        sa->in4.sin_port = htons(rec->port);
        memcpy(&sa->in4.sin_addr, rec->addr, 4);
        return sizeof sa->in4;
    }
    if (rec->family == AF_INET6) {
        memset(&sa->in6, 0, sizeof sa->in6);
        sa->in6.sin6_family = AF_INET6;
        sa->in6.sin6_port = htons(rec->port);
        sa->in6.sin6_scope_id = rec->scope_id;
        memcpy(&sa->in6.sin6_addr, rec->addr, 16);
        return sizeof sa->in6;
    }
    return 0;
}

int udpio_recv(int fd, unsigned char *buf, size_t stride, uint32_t *lengths, udpio_addr *addrs,
               unsigned n)
{
    struct mmsghdr msgs[CHUNK];
    struct iovec iov[CHUNK];
    sockaddr_any names[CHUNK];
    unsigned total = 0;

    while (total < n) {
        unsigned want = n - total < CHUNK ? n - total : CHUNK;
        for (unsigned j = 0; j < want; j++) {
            iov[j].iov_base = buf + (size_t)(total + j) * stride;
            iov[j].iov_len = stride;
            memset(&msgs[j].msg_hdr, 0, sizeof msgs[j].msg_hdr);
            msgs[j].msg_hdr.msg_iov = &iov[j];
            msgs[j].msg_hdr.msg_iovlen = 1;
            if (addrs) {
                msgs[j].msg_hdr.msg_name = &names[j];
                msgs[j].msg_hdr.msg_namelen = sizeof names[j];
            }
        }
        /* MSG_TRUNC: msg_len is the datagram's real length, so a length > stride flags truncation. */
        int got = recvmmsg(fd, msgs, want, MSG_DONTWAIT | MSG_TRUNC, NULL);
        if (got < 0) {
            if (total > 0)
                break;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -errno;
        }
        for (int j = 0; j < got; j++) {
            lengths[total + j] = msgs[j].msg_len;
            if (addrs)
                to_record(&names[j], msgs[j].msg_hdr.msg_namelen, &addrs[total + j]);
        }
        total += (unsigned)got;
        if ((unsigned)got < want)
            break;
    }
    return (int)total;
}

int udpio_send(int fd, const unsigned char *buf, size_t stride, size_t nslots, const uint32_t *lengths,
               const uint32_t *offsets, const udpio_addr *dests, int dest_mode, const uint32_t *order,
               unsigned start, unsigned n)
{
    struct mmsghdr msgs[CHUNK];
    struct iovec iov[CHUNK];
    sockaddr_any names[CHUNK];
    sockaddr_any one;
    socklen_t one_len = 0;
    unsigned total = 0;

    if (dest_mode == UDPIO_DEST_ONE) {
        one_len = from_record(&dests[0], &one);
        if (one_len == 0)
            return -EAFNOSUPPORT;
    }
    while (total < n) {
        unsigned want = n - total < CHUNK ? n - total : CHUNK;
        unsigned built = 0;
        int bad = 0; /* errno of the packet that stopped this chunk, if any */
        for (; built < want; built++) {
            size_t k = (size_t)start + total + built;
            size_t slot = order ? order[k] : k;
            if (slot >= nslots) {
                bad = EINVAL;
                break;
            }
            size_t off = offsets ? offsets[slot] : 0;
            size_t len = lengths[slot];
            if (off > stride || len > stride - off) {
                bad = EINVAL;
                break;
            }
            iov[built].iov_base = (void *)(buf + slot * stride + off);
            iov[built].iov_len = len;
            struct msghdr *h = &msgs[built].msg_hdr;
            memset(h, 0, sizeof *h);
            h->msg_iov = &iov[built];
            h->msg_iovlen = 1;
            if (dest_mode == UDPIO_DEST_ONE) {
                h->msg_name = &one;
                h->msg_namelen = one_len;
            } else if (dest_mode == UDPIO_DEST_SLOT) {
                socklen_t l = from_record(&dests[slot], &names[built]);
                if (l == 0) {
                    bad = EAFNOSUPPORT;
                    break;
                }
                h->msg_name = &names[built];
                h->msg_namelen = l;
            }
        }
        if (built == 0)
            return total > 0 ? (int)total : -bad;
        int sent = sendmmsg(fd, msgs, built, 0);
        if (sent < 0) {
            if (total > 0)
                break;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -errno;
        }
        total += (unsigned)sent;
        if ((unsigned)sent < built || bad)
            break;
    }
    return (int)total;
}

/* ---- UDP GSO / GRO (see udpio.h) ---- */

#include <netinet/udp.h>
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

#define GSO_MSGS 32

int udpio_send_gso(int fd, const unsigned char *buf, size_t stride, size_t nslots, const uint32_t *lengths,
                   const uint32_t *offsets, const udpio_addr *dest, const uint32_t *order, unsigned start,
                   unsigned n, int *gso_refused)
{
    struct mmsghdr msgs[GSO_MSGS];
    struct iovec iov[GSO_MSGS][UDPIO_GSO_MAX_SEGS];
    unsigned segs[GSO_MSGS];
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } ctl[GSO_MSGS];
    sockaddr_any one;
    socklen_t one_len = 0;
    unsigned total = 0;

    if (dest) {
        one_len = from_record(dest, &one);
        if (one_len == 0)
            return -EAFNOSUPPORT;
    }
    while (total < n) {
        unsigned m = 0, k = start + total, end = start + n;
        int bad = 0;
        while (m < GSO_MSGS && k < end && !bad) {
            unsigned cnt = 0;
            size_t seg = 0, bytes = 0;
            while (k < end && cnt < UDPIO_GSO_MAX_SEGS) {
                size_t slot = order ? order[k] : k;
                if (slot >= nslots) {
                    bad = EINVAL;
                    break;
                }
                size_t off = offsets ? offsets[slot] : 0, len = lengths[slot];
                if (off > stride || len > stride - off) {
                    bad = EINVAL;
                    break;
                }
                if (cnt == 0)
                    seg = len;
                else if (len > seg || bytes + len > UDPIO_GSO_MAX_BYTES)
                    break;
                iov[m][cnt].iov_base = (void *)(buf + slot * stride + off);
                iov[m][cnt].iov_len = len;
                cnt++;
                bytes += len;
                k++;
                if (len < seg)
                    break; /* a shorter one ends the run */
            }
            if (cnt == 0)
                break;
            struct msghdr *h = &msgs[m].msg_hdr;
            memset(h, 0, sizeof *h);
            h->msg_iov = iov[m];
            h->msg_iovlen = cnt;
            if (dest) {
                h->msg_name = &one;
                h->msg_namelen = one_len;
            }
            if (cnt > 1) {
                memset(&ctl[m], 0, sizeof ctl[m]);
                h->msg_control = ctl[m].buf;
                h->msg_controllen = sizeof ctl[m].buf;
                struct cmsghdr *c = CMSG_FIRSTHDR(h);
                c->cmsg_level = SOL_UDP;
                c->cmsg_type = UDP_SEGMENT;
                c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                uint16_t s16 = (uint16_t)seg;
                memcpy(CMSG_DATA(c), &s16, sizeof s16);
            }
            segs[m++] = cnt;
        }
        if (m == 0)
            return total > 0 ? (int)total : -bad;
        int sent = sendmmsg(fd, msgs, m, 0);
        if (sent < 0) {
            int e = errno;
            if (segs[0] > 1 && (e == EINVAL || e == EMSGSIZE || e == EIO || e == EOPNOTSUPP)) {
                /* The kernel will not cut this run: send it plainly, and say so. */
                *gso_refused = 1;
                int r = udpio_send(fd, buf, stride, nslots, lengths, offsets, dest,
                                   dest ? UDPIO_DEST_ONE : UDPIO_DEST_NONE, order, start + total, segs[0]);
                if (r < 0)
                    return total > 0 ? (int)total : r;
                total += (unsigned)r;
                if ((unsigned)r < segs[0])
                    break;
                continue;
            }
            if (total > 0)
                break;
            if (e == EAGAIN || e == EWOULDBLOCK)
                return 0;
            return -e;
        }
        for (int j = 0; j < sent; j++)
            total += segs[j];
        if (sent < (int)m || bad)
            break;
    }
    return (int)total;
}

int udpio_gro_recv(int fd, udpio_gro_reader *r, unsigned char *buf, size_t stride, uint32_t *lengths,
                   udpio_addr *addrs, unsigned n)
{
    unsigned i = 0;
    while (i < n) {
        if (r->cur >= r->nmsg) {
            struct mmsghdr msgs[UDPIO_GRO_MSGS];
            struct iovec iov[UDPIO_GRO_MSGS];
            sockaddr_any names[UDPIO_GRO_MSGS];
            union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
            } ctl[UDPIO_GRO_MSGS];
            for (unsigned j = 0; j < UDPIO_GRO_MSGS; j++) {
                iov[j].iov_base = r->data[j];
                iov[j].iov_len = UDPIO_GRO_BUF;
                memset(&msgs[j].msg_hdr, 0, sizeof msgs[j].msg_hdr);
                msgs[j].msg_hdr.msg_iov = &iov[j];
                msgs[j].msg_hdr.msg_iovlen = 1;
                msgs[j].msg_hdr.msg_name = &names[j];
                msgs[j].msg_hdr.msg_namelen = sizeof names[j];
                msgs[j].msg_hdr.msg_control = ctl[j].buf;
                msgs[j].msg_hdr.msg_controllen = sizeof ctl[j].buf;
            }
            int got = recvmmsg(fd, msgs, UDPIO_GRO_MSGS, MSG_DONTWAIT, NULL);
            if (got < 0) {
                if (i > 0)
                    break;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return 0;
                return -errno;
            }
            for (int j = 0; j < got; j++) {
                r->len[j] = msgs[j].msg_len;
                r->seg[j] = 0;
                for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[j].msg_hdr); c;
                     c = CMSG_NXTHDR(&msgs[j].msg_hdr, c)) {
                    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                        int s;
                        memcpy(&s, CMSG_DATA(c), sizeof s);
                        r->seg[j] = (uint32_t)s;
                    }
                }
                if (r->seg[j] == 0 || r->seg[j] > r->len[j])
                    r->seg[j] = r->len[j]; /* one datagram */
                to_record(&names[j], msgs[j].msg_hdr.msg_namelen, &r->addr[j]);
            }
            r->nmsg = (unsigned)got;
            r->cur = 0;
            r->off = 0;
            if (got == 0)
                break;
        }
        unsigned m = r->cur;
        uint32_t left = r->len[m] - r->off;
        uint32_t l = left < r->seg[m] ? left : r->seg[m];
        size_t copy = l < stride ? l : stride;
        memcpy(buf + (size_t)i * stride, r->data[m] + r->off, copy);
        lengths[i] = l; /* > stride flags truncation, as udpio_recv */
        if (addrs)
            addrs[i] = r->addr[m];
        i++;
        r->off += l;
        if (r->off >= r->len[m]) {
            r->cur++;
            r->off = 0;
        }
    }
    return (int)i;
}
