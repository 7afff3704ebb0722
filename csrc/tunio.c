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

/* One write per slot; with ``vnet`` each packet goes behind a zero virtio-net header (no offload asked).
 * Stops at the first error after at least one packet, so the caller sees it again on the next call. */
static int write_slots(int fd, const unsigned char *buf, size_t stride, size_t nslots, const uint32_t *lengths,
                       const uint32_t *offsets, const uint32_t *order, unsigned start, unsigned n, int vnet)
{
    static const uint8_t zero[TUNIO_VNET_HDR_LEN];
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
                struct iovec iov[2] = {{(void *)zero, vnet ? TUNIO_VNET_HDR_LEN : 0},
                                       {(void *)(buf + slot * stride + off), len}};
                if (writev(fd, iov, 2) < 0) {
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

int tunio_write(int fd, const unsigned char *buf, size_t stride, size_t nslots, const uint32_t *lengths,
                const uint32_t *offsets, const uint32_t *order, unsigned start, unsigned n)
{
    return write_slots(fd, buf, stride, nslots, lengths, offsets, order, start, n, 0);
}

/* ---- virtio-net header mode: split on read, coalesce on write (see tunio.h) ---- */

#include <string.h>

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v & 0xFFFF); }
static inline uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline void putle16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

static uint32_t fold(uint64_t s)
{
    while (s >> 16)
        s = (s & 0xFFFF) + (s >> 16);
    return (uint32_t)s;
}

/* One's-complement sum of p[0..len) as big-endian 16-bit words, folded (RFC 1071: summed in native
 * order, swapped once at the end). */
static uint32_t sum_bytes(const uint8_t *p, size_t len)
{
    uint64_t s = 0;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        s += (w & 0xFFFFFFFFu) + (w >> 32);
        p += 8;
        len -= 8;
    }
    while (len >= 2) {
        uint16_t w;
        memcpy(&w, p, 2);
        s += w;
        p += 2;
        len -= 2;
    }
    if (len) {
        uint16_t w = 0;
        memcpy(&w, p, 1);
        s += w;
    }
    uint16_t f = (uint16_t)fold(s);
    uint8_t b[2];
    memcpy(b, &f, 2);
    return be16(b);
}

/* Pseudo-header sum of the IP packet at ip (version v) for an L4 segment of l4len bytes. */
static uint32_t pseudo(const uint8_t *ip, int v, uint8_t proto, uint32_t l4len)
{
    uint64_t s = proto + (uint64_t)l4len;
    s += v == 4 ? sum_bytes(ip + 12, 8) : sum_bytes(ip + 8, 32);
    return fold(s);
}

#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_CWR 0x80

int tunio_gso_split(const uint8_t *pkt, size_t len, uint32_t first, unsigned char *buf, size_t stride,
                    uint32_t *lengths, unsigned n, uint32_t *next_seg)
{
    *next_seg = 0;
    if (len < TUNIO_VNET_HDR_LEN || n == 0)
        return len < TUNIO_VNET_HDR_LEN ? -1 : 0;
    uint8_t flags = pkt[0], gso = pkt[1];
    uint32_t gso_size = le16(pkt + 4), cstart = le16(pkt + 6), coff = le16(pkt + 8);
    const uint8_t *ip = pkt + TUNIO_VNET_HDR_LEN;
    size_t plen = len - TUNIO_VNET_HDR_LEN;
    if (gso == TUNIO_GSO_NONE) {
        if (plen > stride) { /* as tunio_read: the slot holds its first bytes, the length flags it */
            memcpy(buf, ip, stride);
            lengths[0] = (uint32_t)stride + 1;
            return 1;
        }
        memcpy(buf, ip, plen);
        if (flags & TUNIO_F_NEEDS_CSUM) {
            if ((size_t)cstart + coff + 2 > plen)
                return -1;
            uint32_t c = ~sum_bytes(buf + cstart, plen - cstart) & 0xFFFF;
            put16(buf + cstart + coff, c ? c : 0xFFFF);
        }
        lengths[0] = (uint32_t)plen;
        return 1;
    }
    if (plen < 20)
        return -1;
    int v = ip[0] >> 4;
    uint32_t iphl;
    uint8_t proto;
    if (v == 4) {
        iphl = (ip[0] & 0x0F) * 4u;
        proto = ip[9];
        if (iphl < 20)
            return -1;
    } else if (v == 6) {
        iphl = 40;
        proto = ip[6];
    } else {
        return -1;
    }
    uint32_t l4hl;
    if ((gso == TUNIO_GSO_TCPV4 && v == 4) || (gso == TUNIO_GSO_TCPV6 && v == 6)) {
        if (proto != 6 || plen < iphl + 20)
            return -1;
        l4hl = (ip[iphl + 12] >> 4) * 4u;
        if (l4hl < 20)
            return -1;
    } else if (gso == TUNIO_GSO_UDP_L4) {
        if (proto != 17)
            return -1;
        l4hl = 8;
    } else {
        return -1;
    }
    uint32_t hl = iphl + l4hl;
    if (hl > plen || gso_size == 0 || hl + gso_size > stride)
        return -1;
    size_t payload = plen - hl;
    uint32_t nseg = payload ? (uint32_t)((payload + gso_size - 1) / gso_size) : 1;
    const uint8_t *l4in = ip + iphl;
    uint32_t s = first, placed = 0;
    for (; s < nseg && placed < n; s++, placed++) {
        uint8_t *out = buf + (size_t)placed * stride;
        size_t at = (size_t)s * gso_size;
        uint32_t seglen = (uint32_t)(payload - at < gso_size ? payload - at : gso_size);
        uint32_t tot = hl + seglen;
        memcpy(out, ip, hl);
        memcpy(out + hl, ip + hl + at, seglen);
        if (v == 4) {
            put16(out + 2, tot);
            put16(out + 4, (be16(ip + 4) + s) & 0xFFFF);
            out[10] = out[11] = 0;
            put16(out + 10, ~sum_bytes(out, iphl) & 0xFFFF);
        } else {
            put16(out + 4, tot - 40);
        }
        uint8_t *l4 = out + iphl;
        uint32_t field;
        if (proto == 6) {
            put32(l4 + 4, be32(l4in + 4) + (uint32_t)at);
            if (s + 1 < nseg)
                l4[13] &= (uint8_t)~(TCP_FIN | TCP_PSH);
            if (s > 0)
                l4[13] &= (uint8_t)~TCP_CWR;
            field = 16;
        } else {
            put16(l4 + 4, l4hl + seglen);
            field = 6;
        }
        l4[field] = l4[field + 1] = 0;
        uint32_t c = ~fold((uint64_t)pseudo(out, v, proto, l4hl + seglen) + sum_bytes(l4, l4hl + seglen)) & 0xFFFF;
        put16(l4 + field, proto == 17 && c == 0 ? 0xFFFF : c);
        lengths[placed] = tot;
    }
    *next_seg = s < nseg ? s : 0;
    return (int)placed;
}

int tunio_read_vnet(int fd, tunio_reader *r, unsigned char *buf, size_t stride, uint32_t *lengths, unsigned n,
                    uint32_t *dropped)
{
    unsigned i = 0;
    *dropped = 0;
    while (i < n) {
        if (r->len == 0) {
            ssize_t got = read(fd, r->pkt, sizeof r->pkt);
            if (got < 0) {
                if (errno == EINTR)
                    continue;
                if (i > 0)
                    break;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return 0;
                return -errno;
            }
            r->len = (uint32_t)got;
            r->next = 0;
        }
        uint32_t next = 0;
        int k = tunio_gso_split(r->pkt, r->len, r->next, buf + (size_t)i * stride, stride, lengths + i, n - i,
                                &next);
        if (k < 0) {
            (*dropped)++;
            r->len = 0;
            continue;
        }
        i += (unsigned)k;
        if (next)
            r->next = next;
        else
            r->len = 0;
    }
    return (int)i;
}

/* ---- coalescing ---- */

typedef struct {
    const uint8_t *p;
    uint32_t len, iphl, l4hl, payload;
    uint8_t v, proto;
} gro_pkt;

/* 1 when p is a packet a coalesced write may carry (see the rules in tunio.h). */
static int gro_parse(const uint8_t *p, uint32_t len, gro_pkt *g)
{
    if (len < 20)
        return 0;
    g->p = p;
    g->len = len;
    g->v = p[0] >> 4;
    if (g->v == 4) {
        if ((p[0] & 0x0F) != 5 || be16(p + 2) != len || (be16(p + 6) & 0x3FFF) != 0)
            return 0; /* options, a wrong length or a fragment: alone */
        g->iphl = 20;
        g->proto = p[9];
    } else if (g->v == 6) {
        if (len < 40 || 40u + be16(p + 4) != len)
            return 0;
        g->iphl = 40;
        g->proto = p[6];
    } else {
        return 0;
    }
    const uint8_t *l4 = p + g->iphl;
    if (g->proto == 6) {
        if (len < g->iphl + 20)
            return 0;
        g->l4hl = (l4[12] >> 4) * 4u;
        if (g->l4hl < 20 || g->iphl + g->l4hl > len)
            return 0;
        if ((l4[13] & ~(TCP_ACK | TCP_PSH)) != 0 || !(l4[13] & TCP_ACK))
            return 0;
    } else if (g->proto == 17) {
        if (len < g->iphl + 8 || be16(l4 + 4) != len - g->iphl)
            return 0;
        g->l4hl = 8;
    } else {
        return 0;
    }
    g->payload = len - g->iphl - g->l4hl;
    return g->payload > 0;
}

static int same_flow(const gro_pkt *a, const gro_pkt *b)
{
    if (a->v != b->v || a->proto != b->proto || a->l4hl != b->l4hl)
        return 0;
    const uint8_t *x = a->p, *y = b->p;
    if (a->v == 4) {
        if (x[1] != y[1] || (x[6] & 0x40) != (y[6] & 0x40) || x[8] != y[8] || memcmp(x + 12, y + 12, 8) != 0)
            return 0;
    } else if (memcmp(x, y, 4) != 0 || x[7] != y[7] || memcmp(x + 8, y + 8, 32) != 0) {
        return 0;
    }
    return memcmp(x + a->iphl, y + b->iphl, 4) == 0; /* ports */
}

typedef struct {
    uint32_t item;   /* index into the item arrays */
    gro_pkt head;
    uint32_t count, total;
    uint32_t next_seq;
    int live;
} gro_run;

#define GRO_OPEN 8 /* flows coalesced at once */

size_t tunio_write_vnet(int fd, const uint8_t *const *ptrs, const uint32_t *lens, size_t n, uint32_t *work,
                        size_t *failed, int *first_errno, size_t *writes)
{
    return tunio_write_vnet_capped(fd, ptrs, lens, n, work, failed, first_errno, writes, TUNIO_MAX_SEGS);
}

size_t tunio_write_vnet_capped(int fd, const uint8_t *const *ptrs, const uint32_t *lens, size_t n, uint32_t *work,
                               size_t *failed, int *first_errno, size_t *writes, uint32_t udp_max_segs)
{
    if (udp_max_segs < 1 || udp_max_segs > TUNIO_MAX_SEGS)
        udp_max_segs = TUNIO_MAX_SEGS;
    uint32_t *item_head = work, *item_tail = work + n, *next_of = work + 2 * n;
    size_t nitems = 0, done = 0, bad = 0, calls = 0;
    gro_run open[GRO_OPEN];
    unsigned evict = 0;
    memset(open, 0, sizeof open);
    *first_errno = 0;
    for (size_t i = 0; i < n; i++) {
        gro_pkt c;
        int ok = gro_parse(ptrs[i], lens[i], &c);
        next_of[i] = UINT32_MAX;
        int joined = 0, slot = -1;
        for (int k = 0; ok && k < GRO_OPEN; k++) {
            gro_run *r = &open[k];
            if (!r->live || !same_flow(&r->head, &c))
                continue;
            const uint8_t *hl4 = r->head.p + r->head.iphl, *cl4 = c.p + c.iphl;
            int fits = c.payload <= r->head.payload
                       && r->count < (c.proto == 17 ? udp_max_segs : TUNIO_MAX_SEGS)
                       && r->head.iphl + r->head.l4hl + r->total + c.payload <= 65535;
            if (fits && c.proto == 6)
                fits = be32(cl4 + 4) == r->next_seq && memcmp(hl4 + 8, cl4 + 8, 4) == 0
                       && memcmp(hl4 + 14, cl4 + 14, 2) == 0
                       && memcmp(hl4 + 20, cl4 + 20, c.l4hl - 20) == 0;
            if (fits) {
                next_of[item_tail[r->item]] = (uint32_t)i;
                item_tail[r->item] = (uint32_t)i;
                r->count++;
                r->total += c.payload;
                r->next_seq += c.payload;
                joined = 1;
                /* A short segment or a PSH ends the run: nothing may follow it in one write. */
                if (c.payload < r->head.payload || (c.proto == 6 && (cl4[13] & TCP_PSH)))
                    r->live = 0;
            } else {
                r->live = 0; /* the flow goes on in a new item, after this one */
                slot = k;
            }
            break;
        }
        if (joined)
            continue;
        item_head[nitems] = item_tail[nitems] = (uint32_t)i;
        if (ok && !(c.proto == 6 && (c.p[c.iphl + 13] & TCP_PSH))) {
            if (slot < 0) {
                for (int k = 0; k < GRO_OPEN && slot < 0; k++)
                    if (!open[k].live)
                        slot = k;
                if (slot < 0)
                    slot = (int)(evict++ % GRO_OPEN);
            }
            gro_run *r = &open[slot];
            r->item = (uint32_t)nitems;
            r->head = c;
            r->count = 1;
            r->total = c.payload;
            r->next_seq = c.proto == 6 ? be32(c.p + c.iphl + 4) + c.payload : 0;
            r->live = 1;
        }
        nitems++;
    }
    uint8_t hdr[TUNIO_VNET_HDR_LEN + 60 + 60];
    struct iovec iov[TUNIO_MAX_SEGS + 1];
    for (size_t it = 0; it < nitems; it++) {
        uint32_t h = item_head[it];
        uint32_t count = 0;
        memset(hdr, 0, TUNIO_VNET_HDR_LEN);
        if (next_of[h] == UINT32_MAX) {
            iov[0].iov_base = hdr;
            iov[0].iov_len = TUNIO_VNET_HDR_LEN;
            iov[1].iov_base = (void *)ptrs[h];
            iov[1].iov_len = lens[h];
            count = 1;
        } else {
            gro_pkt g;
            gro_parse(ptrs[h], lens[h], &g);
            uint32_t hl = g.iphl + g.l4hl, total = 0;
            uint8_t last_flags = 0;
            for (uint32_t m = h; m != UINT32_MAX; m = next_of[m]) {
                iov[1 + count].iov_base = (void *)(ptrs[m] + hl);
                iov[1 + count].iov_len = lens[m] - hl;
                total += lens[m] - hl;
                if (g.proto == 6)
                    last_flags = ptrs[m][g.iphl + 13];
                count++;
            }
            uint8_t *ip = hdr + TUNIO_VNET_HDR_LEN, *l4 = ip + g.iphl;
            memcpy(ip, ptrs[h], hl);
            hdr[0] = TUNIO_F_NEEDS_CSUM;
            hdr[1] = g.proto == 17 ? TUNIO_GSO_UDP_L4 : g.v == 4 ? TUNIO_GSO_TCPV4 : TUNIO_GSO_TCPV6;
            putle16(hdr + 2, hl);
            putle16(hdr + 4, g.payload);
            putle16(hdr + 6, g.iphl);
            putle16(hdr + 8, g.proto == 17 ? 6 : 16);
            if (g.v == 4) {
                put16(ip + 2, hl + total);
                ip[10] = ip[11] = 0;
                put16(ip + 10, ~sum_bytes(ip, 20) & 0xFFFF);
            } else {
                put16(ip + 4, g.l4hl + total);
            }
            uint32_t field = 16;
            if (g.proto == 17) {
                put16(l4 + 4, 8 + total);
                field = 6;
            } else {
                l4[13] = (uint8_t)((l4[13] & ~TCP_PSH) | (last_flags & TCP_PSH));
            }
            /* Partial checksum: the pseudo-header sum, not complemented; the kernel finishes it. */
            put16(l4 + field, pseudo(ip, g.v, g.proto, g.l4hl + total));
            iov[0].iov_base = hdr;
            iov[0].iov_len = TUNIO_VNET_HDR_LEN + hl;
        }
        ssize_t w;
        do {
            w = writev(fd, iov, (int)count + 1);
        } while (w < 0 && errno == EINTR);
        calls++;
        if (w < 0) {
            if (!*first_errno)
                *first_errno = errno;
            bad += count;
        } else {
            done += count;
        }
    }
    *failed = bad;
    *writes = calls;
    return done;
}

int tunio_write_plain_vnet(int fd, const unsigned char *buf, size_t stride, size_t nslots, const uint32_t *lengths,
                           const uint32_t *offsets, const uint32_t *order, unsigned start, unsigned n)
{
    return write_slots(fd, buf, stride, nslots, lengths, offsets, order, start, n, 1);
}
