/* The gateway's data pipeline steps around sealing and opening. See pipeline.h. */
#include "pipeline.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

static int prefix_match(const pl_prefix *p, const uint8_t *addr)
{
    unsigned full = p->plen / 8, rest = p->plen % 8;
    if (memcmp(p->net, addr, full) != 0)
        return 0;
    if (rest) {
        uint8_t mask = (uint8_t)(0xFF << (8 - rest));
        if ((addr[full] & mask) != p->net[full])
            return 0;
    }
    return 1;
}

/* Remote index owning addr (longest prefix), or -1. */
static int lookup(const pl_prefix *pfx, size_t npfx, int v6, const uint8_t *addr)
{
    int best = -1, best_len = -1;
    for (size_t k = 0; k < npfx; k++) {
        if (pfx[k].v6 != v6 || pfx[k].plen <= best_len)
            continue;
        if (prefix_match(&pfx[k], addr)) {
            best = pfx[k].remote;
            best_len = pfx[k].plen;
        }
    }
    return best;
}

size_t pl_classify(const uint8_t *buf, size_t stride, const uint32_t *lens, size_t n, const pl_prefix *pfx,
                   size_t npfx, uint8_t *remote_out)
{
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = buf + i * stride;
        uint32_t len = lens[i];
        int r = -1;
        remote_out[i] = PL_SLOW;
        if (len > stride || len < 20)
            continue;
        if (p[0] >> 4 == 4) {
            if (rd16(p + 2) != len || p[16] >> 4 == 0xE || memcmp(p + 16, "\xff\xff\xff\xff", 4) == 0)
                continue;
            r = lookup(pfx, npfx, 0, p + 16);
        } else if (p[0] >> 4 == 6) {
            if (len < 40 || 40u + rd16(p + 4) != len || p[24] == 0xFF)
                continue;
            r = lookup(pfx, npfx, 1, p + 24);
        }
        if (r >= 0 && r < PL_SLOW) {
            remote_out[i] = (uint8_t)r;
            ok++;
        }
    }
    return ok;
}

static void put_sig_header(uint8_t *f, uint8_t session, uint16_t index, uint32_t stream, uint64_t seq)
{
    f[0] = 0;
    f[1] = session;
    wr16(f + 2, index);
    f[4] = (uint8_t)((stream >> 24) & 0x0F); /* reserved bits zero; stream is 20 bits */
    f[5] = (uint8_t)(stream >> 16);
    f[6] = (uint8_t)(stream >> 8);
    f[7] = (uint8_t)stream;
    for (int b = 0; b < 8; b++)
        f[8 + b] = (uint8_t)(seq >> (56 - 8 * b));
}

long pl_frame(const uint8_t *in, size_t in_stride, const uint32_t *in_lens, const uint8_t *remote_of,
              uint8_t want, size_t n_in, uint8_t *out, size_t out_stride, uint32_t out_off, uint32_t *out_lens,
              uint8_t *out_status, size_t max_out, uint32_t frame_size, uint8_t session, uint32_t stream,
              uint64_t *seq_io, size_t *packets_taken)
{
    if (frame_size < PL_SIG_HDR + PL_SIG_MIN_START || (size_t)out_off + frame_size > out_stride)
        return -1;
    const size_t room = frame_size - PL_SIG_HDR;
    /* Bound first: a packet of len bytes opens at most len/room + 2 frames (the reference's rule). */
    size_t need = 1, taken = 0;
    for (size_t i = 0; i < n_in; i++)
        if (remote_of[i] == want) {
            need += in_lens[i] / room + 2;
            taken++;
        }
    *packets_taken = taken;
    if (taken == 0)
        return 0;
    if (need > max_out)
        return -1;
    uint64_t seq = *seq_io;
    size_t k = 0;          /* current frame slot */
    size_t cur = 0;        /* payload bytes in the current frame */
    uint32_t index = 0xFFFF;
    uint8_t *frame = out + out_off;
    for (size_t i = 0; i < n_in; i++) {
        if (remote_of[i] != want)
            continue;
        const uint8_t *p = in + i * in_stride;
        size_t left = in_lens[i];
        if (room - cur < PL_SIG_MIN_START) {
            put_sig_header(frame, session, (uint16_t)index, stream, seq);
            out_lens[k] = (uint32_t)(PL_SIG_HDR + cur);
            out_status[k] = 0;
            k++;
            seq++;
            frame = out + k * out_stride + out_off;
            cur = 0;
            index = 0xFFFF;
        }
        if (index == 0xFFFF)
            index = (uint32_t)cur;
        while (left > room - cur) {
            /* The packet continues in a fresh frame, which starts with the rest of it. */
            size_t part = room - cur;
            memcpy(frame + PL_SIG_HDR + cur, p, part);
            p += part;
            left -= part;
            put_sig_header(frame, session, (uint16_t)index, stream, seq);
            out_lens[k] = (uint32_t)frame_size;
            out_status[k] = 0;
            k++;
            seq++;
            frame = out + k * out_stride + out_off;
            cur = 0;
            index = 0xFFFF;
        }
        memcpy(frame + PL_SIG_HDR + cur, p, left);
        cur += left;
    }
    put_sig_header(frame, session, (uint16_t)index, stream, seq);
    out_lens[k] = (uint32_t)(PL_SIG_HDR + cur);
    out_status[k] = 0;
    k++;
    seq++;
    *seq_io = seq;
    return (long)k;
}

size_t pl_stamp(uint8_t *buf, size_t stride, size_t n, uint32_t *lengths, const uint8_t *status,
                uint32_t env_off, const uint8_t *tmpl, uint32_t hdr_len, const scion_rec_t *trec,
                uint32_t *offsets, uint32_t *order)
{
    size_t live = 0;
    if (hdr_len > env_off || hdr_len < 8 || env_off > stride)
        return 0;
    uint32_t start = env_off - hdr_len;
    scion_rec_t rec = *trec;
    for (size_t i = 0; i < n; i++) {
        if (status[i] || lengths[i] < env_off || lengths[i] > stride)
            continue;
        uint8_t *p = buf + i * stride + start;
        uint32_t env_len = lengths[i] - env_off;
        uint32_t udp_len = 8 + env_len;
        if (udp_len > 0xFFFF)
            continue;
        memcpy(p, tmpl, hdr_len);
        wr16(p + 6, (uint16_t)udp_len); /* PayloadLen: the UDP datagram (no extension headers) */
        wr16(p + rec.l4_off + 4, (uint16_t)udp_len);
        rec.l4_len = (uint16_t)udp_len;
        rec.payload_len = (uint16_t)udp_len;
        wr16(p + rec.l4_off + 6, scion_l4_checksum(p, &rec, 1));
        lengths[i] = hdr_len + env_len;
        offsets[i] = start;
        order[live++] = (uint32_t)i;
    }
    return live;
}

size_t pl_rx_select(const uint8_t *buf, size_t stride, const uint32_t *lengths, const scion_rec_t *recs,
                    size_t n, uint16_t port, uint8_t type, uint32_t *offsets, uint32_t *receivers,
                    uint8_t *is_data)
{
    size_t data = 0;
    for (size_t i = 0; i < n; i++) {
        const scion_rec_t *r = &recs[i];
        is_data[i] = 0;
        if (r->status != SCION_OK || r->l4_proto != SCION_PROTO_UDP || r->dst_port != port)
            continue;
        if (lengths[i] > stride || (uint32_t)r->l4_off + r->l4_len != lengths[i] || r->l4_len < 8 + 32)
            continue;
        const uint8_t *env = buf + i * stride + r->l4_off + 8;
        if (env[0] != type)
            continue;
        offsets[i] = (uint32_t)r->l4_off + 8;
        receivers[i] = (uint32_t)env[4] | ((uint32_t)env[5] << 8) | ((uint32_t)env[6] << 16)
                       | ((uint32_t)env[7] << 24);
        is_data[i] = 1;
        data++;
    }
    return data;
}

int pl_same_route(const uint8_t *buf, size_t stride, const scion_rec_t *recs, const uint8_t *addrs,
                  size_t addr_size, size_t i, size_t j)
{
    const scion_rec_t *a = &recs[i], *b = &recs[j];
    if (a->path_len != b->path_len || a->src_ia != b->src_ia)
        return 0;
    if (memcmp(addrs + i * addr_size, addrs + j * addr_size, addr_size) != 0)
        return 0;
    return memcmp(buf + i * stride + a->path_off, buf + j * stride + b->path_off, a->path_len) == 0;
}

/* Length of the IP packet starting at p with avail bytes, 0 when its header cannot be read or is
 * impossible (the Python decoder then decides and counts). */
static size_t ip_len(const uint8_t *p, size_t avail)
{
    if (p[0] >> 4 == 4 && avail >= 20) {
        size_t l = rd16(p + 2);
        return l >= 20 ? l : 0;
    }
    if (p[0] >> 4 == 6 && avail >= 40)
        return 40u + rd16(p + 4);
    return 0;
}

typedef struct {
    const pl_prefix *pfx;
    size_t npfx;
    uint8_t remote;
    const uint8_t **ptrs;
    uint32_t *lens;
    size_t np, max, spoofed;
} emit_ctx;

static void emit(emit_ctx *e, const uint8_t *p, size_t len)
{
    int v6 = p[0] >> 4 == 6;
    if (lookup(e->pfx, e->npfx, v6, v6 ? p + 8 : p + 12) != e->remote) {
        e->spoofed++;
        return;
    }
    e->ptrs[e->np] = p;
    e->lens[e->np] = (uint32_t)len;
    e->np++;
}

size_t pl_deframe(const uint8_t *buf, size_t stride, const uint32_t *offsets, const uint32_t *lengths,
                  const uint8_t *status, size_t n, const pl_prefix *pfx, size_t npfx, uint8_t remote,
                  pl_carry *carry, uint8_t *arena, size_t arena_size, const uint8_t **pkt_ptrs,
                  uint32_t *pkt_lens, size_t max_pkts, uint8_t *slow, size_t *spoofed, size_t *frames_fast)
{
    emit_ctx e = {pfx, npfx, remote, pkt_ptrs, pkt_lens, 0, max_pkts, 0};
    size_t fast = 0, used = 0;
    int gone_slow = 0;
    for (size_t i = 0; i < n; i++) {
        slow[i] = 0;
        if (status[i] || lengths[i] == 0)
            continue;
        if (gone_slow) {
            slow[i] = 1;
            continue;
        }
        size_t flen = lengths[i];
        const uint8_t *f = buf + i * stride + offsets[i] + PL_SIG_HDR;
        int ok = flen >= PL_SIG_HDR && offsets[i] + PL_SIG_HDR + flen <= stride && f[0] == 0;
        size_t payload = ok ? flen - PL_SIG_HDR : 0;
        uint32_t index = ok ? rd16(f + 2) : 0;
        uint8_t session = ok ? f[1] : 0;
        uint32_t stream = ok ? (((uint32_t)f[5] & 0x0F) << 16 | (uint32_t)f[6] << 8 | f[7]) : 0;
        uint64_t seq = 0;
        for (int b = 0; ok && b < 8; b++)
            seq = seq << 8 | f[8 + b];
        if (ok && index != 0xFFFF && index >= payload)
            ok = 0;
        /* Dry run: decide the whole frame before anything is listed or appended. */
        size_t need = 0, pos = PL_SIG_HDR, count = 0, tail = 0, tail_len = 0;
        int completes = 0, appends_only = 0;
        if (ok && carry->active) {
            if (carry->session != session || carry->stream != stream || carry->next_seq != seq) {
                ok = 0;
            } else {
                need = carry->total - carry->have;
                if (index == 0xFFFF) {
                    if (payload < need)
                        appends_only = 1;
                    else if (payload == need)
                        completes = 1, pos = flen;
                    else
                        ok = 0;
                } else if (index == need) {
                    completes = 1;
                    pos = PL_SIG_HDR + index;
                } else {
                    ok = 0;
                }
            }
        } else if (ok && index != 0) {
            ok = 0;
        }
        while (ok && !appends_only && pos < flen) {
            size_t l = ip_len(f + pos, flen - pos);
            if (l == 0) {
                ok = 0;
            } else if (l > flen - pos) {
                tail = pos;
                tail_len = l;
                break;
            } else {
                pos += l;
                count++;
            }
        }
        if (ok && e.np + count + 1 > max_pkts)
            ok = 0;
        if (ok && completes && used + carry->total > arena_size)
            ok = 0;
        if (!ok) {
            slow[i] = 1;
            gone_slow = 1;
            carry->active = 0; /* the Python decoder owns the stream from here */
            continue;
        }
        fast++;
        if (appends_only) {
            memcpy(carry->data + carry->have, f + PL_SIG_HDR, payload);
            carry->have += (uint32_t)payload;
            carry->next_seq = seq + 1;
            continue;
        }
        pos = PL_SIG_HDR;
        if (completes) {
            memcpy(carry->data + carry->have, f + PL_SIG_HDR, need);
            memcpy(arena + used, carry->data, carry->total);
            emit(&e, arena + used, carry->total);
            used += carry->total;
            carry->active = 0;
            if (index == 0xFFFF)
                continue;
            pos = PL_SIG_HDR + index;
        }
        while (pos < flen && (!tail || pos < tail)) {
            size_t l = ip_len(f + pos, flen - pos);
            emit(&e, f + pos, l);
            pos += l;
        }
        if (tail) {
            carry->active = 1;
            carry->session = session;
            carry->stream = stream;
            carry->next_seq = seq + 1;
            carry->total = (uint32_t)tail_len;
            carry->have = (uint32_t)(flen - tail);
            memcpy(carry->data, f + tail, carry->have);
        }
    }
    *spoofed = e.spoofed;
    *frames_fast = fast;
    return e.np;
}

size_t pl_tun_write(int fd, const uint8_t *const *ptrs, const uint32_t *lens, size_t n, size_t *failed,
                    int *first_errno)
{
    size_t done = 0, bad = 0;
    *first_errno = 0;
    for (size_t k = 0; k < n; k++) {
        ssize_t w;
        do {
            w = write(fd, ptrs[k], lens[k]);
        } while (w < 0 && errno == EINTR);
        if (w < 0) {
            if (!*first_errno)
                *first_errno = errno;
            bad++;
        } else {
            done++;
        }
    }
    *failed = bad;
    return done;
}
