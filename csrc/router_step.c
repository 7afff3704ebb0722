/* One border-router step on a SCION packet's path.  See router_step.h for the rules. */
#include "router_step.h"

#include <string.h>

#define CMN_LEN 12
#define META_LEN 4
#define INFO_LEN 8
#define HOP_LEN 12
#define PT_SCION 1
#define PT_ONEHOP 2
#define ONEHOP_LEN (INFO_LEN + 2 * HOP_LEN)
/* pkg/slayers/path/hopfield.go: expTimeUnit = MaxTTL / 256 with integer division. */
#define EXP_TIME_UNIT (24 * 60 * 60 / 256)
#define RS_CHUNK 16 /* packets whose first MACs are computed together */

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t rd32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t rd64(const uint8_t *p) { return ((uint64_t)rd32(p) << 32) | rd32(p + 4); }
static inline void wr16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

typedef struct path_state {
    uint8_t *path;
    uint32_t path_off;
    uint8_t curr_inf, curr_hf, s0, s1, s2, num_inf, num_hops;
} path_state;

static inline uint8_t inf_index(const path_state *ps, uint8_t hf) {
    if (hf < ps->s0)
        return 0;
    if (hf < ps->s0 + ps->s1)
        return 1;
    return 2;
}

static inline uint8_t *info_at(const path_state *ps, uint8_t i) {
    return ps->path + META_LEN + INFO_LEN * i;
}
static inline uint8_t *hop_at(const path_state *ps, uint8_t h) {
    return ps->path + META_LEN + INFO_LEN * ps->num_inf + HOP_LEN * h;
}
static inline uint16_t hop_pointer(const path_state *ps) {
    return (uint16_t)(ps->path_off + META_LEN + INFO_LEN * ps->num_inf + HOP_LEN * ps->curr_hf);
}
static inline uint16_t info_pointer(const path_state *ps) {
    return (uint16_t)(ps->path_off + META_LEN + INFO_LEN * ps->curr_inf);
}

/* MetaHdr.SerializeTo: the reserved bits are written as zero. */
static inline void write_meta(const path_state *ps) {
    uint32_t m = ((uint32_t)ps->curr_inf << 30) | ((uint32_t)(ps->curr_hf & 0x3f) << 24) |
                 ((uint32_t)ps->s0 << 12) | ((uint32_t)ps->s1 << 6) | ps->s2;
    ps->path[0] = (uint8_t)(m >> 24);
    ps->path[1] = (uint8_t)(m >> 16);
    ps->path[2] = (uint8_t)(m >> 8);
    ps->path[3] = (uint8_t)m;
}

/* InfoField.SerializeTo after UpdateSegID: flags kept, other bits of byte 0 and byte 1 zeroed. */
static inline void update_seg_id(uint8_t *info, const uint8_t *hop) {
    uint16_t seg = (uint16_t)(rd16(info + 2) ^ rd16(hop + 6));
    info[0] &= 0x03;
    info[1] = 0;
    wr16(info + 2, seg);
}

static inline int hop_expired(const uint8_t *info, const uint8_t *hop, uint64_t now) {
    uint64_t expiry = (uint64_t)rd32(info + 4) + ((uint64_t)hop[1] + 1) * EXP_TIME_UNIT;
    return expiry < now;
}

static inline int mac_ok(const rs_config *cfg, const uint8_t *info, const uint8_t *hop) {
    return hm_hop_verify(&cfg->key, info, hop, NULL);
}

/* Clears one router-alert bit the way HopField.SerializeTo would write the field back. */
static inline int take_alert(uint8_t *hop, uint8_t bit) {
    if (!(hop[0] & bit))
        return 0;
    hop[0] = (uint8_t)(hop[0] & 0x03 & ~bit);
    return 1;
}

static __attribute__((noinline)) int step_onehop(const rs_config *cfg, uint8_t *pkt, uint32_t path_off, uint32_t avail,
                       int from_external, uint16_t ingress, rs_result *out) {
    if (avail < ONEHOP_LEN)
        return RS_MALFORMED_PATH;
    uint8_t *info = pkt + path_off, *h1 = info + INFO_LEN, *h2 = h1 + HOP_LEN;
    if (!(info[0] & 0x01))
        return RS_MALFORMED_PATH;
    out->flags |= RS_F_CONSDIR;
    uint64_t dst_ia = rd64(pkt + CMN_LEN), src_ia = rd64(pkt + CMN_LEN + 8);
    if (!from_external) {
        /* Leaving our AS on the first hop: we made it, we check it, we chain the SegID. */
        if (cfg->local_ia && src_ia != cfg->local_ia)
            return RS_INVALID_SRC_IA;
        uint16_t eg = rd16(h1 + 4);
        out->egress = eg;
        if (eg == 0)
            return RS_UNKNOWN_EGRESS;
        if (cfg->mode == RS_MODE_TABLE) {
            uint8_t e = cfg->ifs[eg];
            if ((e & RS_LINK_MASK) == RS_LINK_NONE || !(e & RS_IF_OWNED))
                return RS_UNKNOWN_EGRESS;
        }
        out->pointer = (uint16_t)(path_off + INFO_LEN);
        if (!mac_ok(cfg, info, h1))
            return RS_BAD_MAC;
        update_seg_id(info, h1);
        out->action = RS_ACT_FORWARD;
        return RS_OK;
    }
    /* Entering our AS: the second hop field is ours to fill in. */
    if (cfg->local_ia && dst_ia != cfg->local_ia)
        return RS_INVALID_DST_IA;
    if (ingress == 0)
        return RS_NO_INGRESS_IF;
    uint8_t in[16], full[16];
    hm_mac_input(in, rd16(info + 2), rd32(info + 4), h1[1], ingress, 0);
    hm_cmac_block(&cfg->key, in, full);
    h2[0] = 0;
    h2[1] = h1[1];
    wr16(h2 + 2, ingress);
    wr16(h2 + 4, 0);
    memcpy(h2 + 6, full, HM_MAC_LEN);
    out->action = RS_ACT_DELIVER;
    return RS_OK;
}

/* What stage 2 needs from stage 1 of a standard path. */
typedef struct rs_work {
    path_state ps;
    uint8_t *info, *hop;
    uint64_t dst_ia;
    uint16_t seg;    /* SegID the first MAC is checked with */
    uint8_t chain;   /* write seg into the info field after the check (ingress, against cons dir) */
    uint8_t cons_dir, peering, from_external, last_hop;
} rs_work;

/* Whether packets arriving on `ingress` come from a neighbour AS (else the internal side). */
static inline int from_external(const rs_config *cfg, uint16_t ingress) {
    return cfg->mode == RS_MODE_INGRESS_ONLY || (cfg->mode == RS_MODE_TABLE && ingress);
}

#define RS_PENDING (-1) /* stage 1 done: the first hop field's MAC decides */

/* Stage 1: every check before the first MAC, in the reference order. */
static inline __attribute__((always_inline)) int stage1(const rs_config *cfg, uint8_t *pkt, uint32_t len,
                                                        uint16_t ingress, int from_external, uint64_t now,
                                                        rs_result *out, rs_work *w) {
    memset(out, 0, sizeof(*out));
    if (len < CMN_LEN)
        return RS_TRUNCATED;
    uint32_t hdr = (uint32_t)pkt[5] * 4;
    uint32_t dl = (pkt[9] >> 4) & 3, sl = pkt[9] & 3;
    uint32_t path_off = CMN_LEN + 16 + 4 * (dl + 1) + 4 * (sl + 1);
    if (hdr < path_off)
        return RS_BAD_HDR_LEN;
    if (hdr > len)
        return RS_TRUNCATED;
    uint32_t avail = hdr - path_off;
    if (pkt[8] == PT_ONEHOP)
        return step_onehop(cfg, pkt, path_off, avail, from_external, ingress, out);
    if (pkt[8] != PT_SCION)
        return RS_UNSUPPORTED_PATH_TYPE;

    /* parsePath: Base.DecodeFromBytes, Raw length, current fields, segment shape. */
    if (avail < META_LEN)
        return RS_MALFORMED_PATH;
    path_state *const ps = &w->ps;
    ps->path = pkt + path_off;
    ps->path_off = path_off;
    uint32_t meta = rd32(ps->path);
    ps->curr_inf = (uint8_t)(meta >> 30);
    ps->curr_hf = (uint8_t)((meta >> 24) & 0x3f);
    ps->s0 = (uint8_t)((meta >> 12) & 0x3f);
    ps->s1 = (uint8_t)((meta >> 6) & 0x3f);
    ps->s2 = (uint8_t)(meta & 0x3f);
    if ((ps->s2 && !ps->s1) || (ps->s1 && !ps->s0))
        return RS_MALFORMED_PATH;
    ps->num_inf = ps->s2 ? 3 : ps->s1 ? 2 : ps->s0 ? 1 : 0;
    ps->num_hops = (uint8_t)(ps->s0 + ps->s1 + ps->s2);
    if (ps->num_inf == 0)
        return RS_MALFORMED_PATH;
    if (META_LEN + INFO_LEN * (uint32_t)ps->num_inf + HOP_LEN * (uint32_t)ps->num_hops > avail)
        return RS_MALFORMED_PATH;
    if (ps->curr_hf >= ps->num_hops)
        return RS_BAD_CURR_HF;
    if (ps->curr_inf >= ps->num_inf)
        return RS_BAD_CURR_INF;
    uint8_t *info = info_at(ps, ps->curr_inf), *hop = hop_at(ps, ps->curr_hf);
    int peer_flag = info[0] & 0x02, cons_dir = info[0] & 0x01;
    if (cons_dir)
        out->flags |= RS_F_CONSDIR;
    if (!peer_flag && (ps->s0 == 1 || ps->s1 == 1 || ps->s2 == 1))
        return RS_MALFORMED_PATH; /* scionproto/scion#4524: singleton segments */
    if (ps->curr_inf != inf_index(ps, ps->curr_hf))
        return RS_BAD_CURR_INF;

    /* determinePeer */
    int peering = 0;
    if (peer_flag) {
        if (ps->s1 == 0 || ps->s2 != 0)
            return RS_MALFORMED_PATH;
        peering = ps->curr_hf == ps->s0 - 1 || ps->curr_hf == ps->s0;
    }
    if (peering)
        out->flags |= RS_F_PEERING;

    out->pointer = hop_pointer(ps);
    if (hop_expired(info, hop, now))
        return RS_EXPIRED_HOP;
    if (from_external && ingress) {
        uint16_t want = cons_dir ? rd16(hop + 2) : rd16(hop + 4);
        if (want != ingress)
            return RS_INGRESS_MISMATCH;
    }
    if (hdr + rd16(pkt + 6) != len) {
        out->pointer = 0;
        return RS_BAD_PACKET_SIZE;
    }
    uint64_t dst_ia = rd64(pkt + CMN_LEN), src_ia = rd64(pkt + CMN_LEN + 8);
    int last_hop = ps->curr_hf == ps->num_hops - 1;
    if (cfg->local_ia) {
        int src_local = src_ia == cfg->local_ia, dst_local = dst_ia == cfg->local_ia;
        if (!from_external) {
            if (ps->curr_hf == 0 && !src_local) {
                out->pointer = CMN_LEN + 8;
                return RS_INVALID_SRC_IA;
            }
            if (dst_local) {
                out->pointer = CMN_LEN;
                return RS_INVALID_DST_IA;
            }
        } else {
            if (src_local) {
                out->pointer = CMN_LEN + 8;
                return RS_INVALID_SRC_IA;
            }
            if (last_hop != dst_local) {
                out->pointer = CMN_LEN;
                return RS_INVALID_DST_IA;
            }
        }
    }

    /* Against construction direction the ingress router chains the SegID back before the
     * MAC check (the hop's MAC was made with the SegID as it was before this hop).  The
     * reference writes the new SegID even when the MAC then fails; so do we, after checking
     * (checking first avoids a store-to-load stall). */
    w->info = info;
    w->hop = hop;
    w->dst_ia = dst_ia;
    w->chain = !cons_dir && from_external && !peering;
    w->seg = (uint16_t)(rd16(info + 2) ^ (w->chain ? rd16(hop + 6) : 0));
    w->cons_dir = (uint8_t)(cons_dir != 0);
    w->peering = (uint8_t)peering;
    w->from_external = (uint8_t)from_external;
    w->last_hop = (uint8_t)last_hop;
    return RS_PENDING;
}

/* Stage 2: the rest of the processing once the first MAC's verdict (mac_good) is known. */
static inline __attribute__((always_inline)) int stage2(const rs_config *cfg, uint16_t ingress, uint64_t now, rs_result *out, rs_work *w,
                  int mac_good) {
    path_state *const ps = &w->ps;
    uint8_t *info = w->info, *hop = w->hop;
    int cons_dir = w->cons_dir, peering = w->peering, from_external = w->from_external;
    int last_hop = w->last_hop;
    uint64_t dst_ia = w->dst_ia;
    if (w->chain)
        update_seg_id(info, hop);
    if (!mac_good)
        return RS_BAD_MAC;
    if (from_external && take_alert(hop, cons_dir ? 0x02 : 0x01))
        return RS_ROUTER_ALERT_INGRESS;

    int deliver = cfg->local_ia ? dst_ia == cfg->local_ia : (from_external && last_hop);
    if (deliver) {
        out->pointer = 0;
        out->action = RS_ACT_DELIVER;
        return RS_OK;
    }

    int xover = 0;
    if (!peering && ps->curr_hf + 1 < ps->num_hops && ps->curr_inf != inf_index(ps, ps->curr_hf + 1)) {
        xover = 1;
        out->flags |= RS_F_XOVER;
        ps->curr_hf++;
        ps->curr_inf = inf_index(ps, ps->curr_hf);
        write_meta(ps);
        info = info_at(ps, ps->curr_inf);
        hop = hop_at(ps, ps->curr_hf);
        cons_dir = info[0] & 0x01;
        out->flags = (uint8_t)((out->flags & ~RS_F_CONSDIR) | (cons_dir ? RS_F_CONSDIR : 0));
        out->pointer = hop_pointer(ps);
        if (hop_expired(info, hop, now))
            return RS_EXPIRED_HOP;
        if (!mac_ok(cfg, info, hop))
            return RS_BAD_MAC;
    }

    uint16_t eg = cons_dir ? rd16(hop + 4) : rd16(hop + 2);
    out->egress = eg;
    if (eg == 0)
        return RS_UNKNOWN_EGRESS;
    if (xover && !from_external) {
        /* A segment change received from the internal side is never valid. */
        out->pointer = info_pointer(ps);
        return RS_INVALID_SEGMENT_CHANGE;
    }
    int owned;
    if (cfg->mode == RS_MODE_TABLE) {
        uint8_t e = cfg->ifs[eg];
        int elt = e & RS_LINK_MASK;
        owned = (e & RS_IF_OWNED) != 0;
        if (elt == RS_LINK_NONE || (!from_external && !owned))
            return RS_UNKNOWN_EGRESS;
        if (from_external) {
            int ilt = cfg->ifs[ingress] & RS_LINK_MASK;
            if (!xover) {
                int ok = (ilt == RS_LINK_CORE && elt == RS_LINK_CORE) ||
                         (ilt == RS_LINK_CHILD && elt == RS_LINK_PARENT) ||
                         (ilt == RS_LINK_PARENT && elt == RS_LINK_CHILD) ||
                         (ilt == RS_LINK_CHILD && elt == RS_LINK_PEER) ||
                         (ilt == RS_LINK_PEER && elt == RS_LINK_CHILD);
                if (!ok)
                    return RS_INVALID_LINK_PAIR;
            } else {
                int ok = (ilt == RS_LINK_CORE && elt == RS_LINK_CHILD) ||
                         (ilt == RS_LINK_CHILD && elt == RS_LINK_CORE) ||
                         (ilt == RS_LINK_CHILD && elt == RS_LINK_CHILD);
                if (!ok) {
                    out->pointer = info_pointer(ps);
                    return RS_INVALID_SEGMENT_CHANGE;
                }
            }
        }
    } else {
        owned = cfg->mode == RS_MODE_EGRESS_ALL;
    }

    /* The egress router alert is ours only when the egress link is ours; the reply must
     * still go out even if the link is down, so this comes before the liveness check. */
    if (owned && take_alert(hop, cons_dir ? 0x01 : 0x02))
        return RS_ROUTER_ALERT_EGRESS;
    if (cfg->mode == RS_MODE_TABLE && (cfg->ifs[eg] & RS_IF_DOWN))
        return owned ? RS_EGRESS_DOWN : RS_SIBLING_DOWN;

    if (!owned) {
        out->pointer = 0;
        out->action = RS_ACT_SIBLING;
        return RS_OK;
    }
    /* processEgress: in construction direction the egress router chains the SegID forward
     * (not at a peering hop: both peering hop fields chain to the same SegID). */
    if (ps->curr_hf + 1 >= ps->num_hops)
        return RS_PATH_AT_END;
    if (cons_dir && !peering)
        update_seg_id(info, hop);
    ps->curr_hf++;
    ps->curr_inf = inf_index(ps, ps->curr_hf);
    write_meta(ps);
    out->pointer = 0;
    out->action = RS_ACT_FORWARD;
    return RS_OK;
}

int rs_step(const rs_config *cfg, uint8_t *pkt, uint32_t len, uint16_t ingress, uint64_t now,
            rs_result *out) {
    rs_work w;
    memset(&w, 0, sizeof(w));
    int st = stage1(cfg, pkt, len, ingress, from_external(cfg, ingress), now, out, &w);
    if (st != RS_PENDING)
        return st;
    return stage2(cfg, ingress, now, out, &w, hm_hop_verify_seg(&cfg->key, w.seg, w.info, w.hop, NULL));
}

/* ---- The batch fast path ---------------------------------------------------------------
 *
 * rs_batch runs most packets through a second rendering of the same checks, for the shapes a
 * border router sees all the time: a standard path without peering, a valid hop, no router
 * alert, a forward/sibling/delivery decision with at most one segment change.  It reads each
 * header field once (three loads for the hop and info fields), decides with few, well-predicted
 * branches, and builds the MAC input in registers.
 *
 * The contract that keeps it exact: the fast path only ever *accepts*.  It returns an OK result
 * when, and only when, every check of stage1/stage2 above passes, and it then writes exactly
 * the bytes the reference writes.  On anything else it writes nothing and the packet is given
 * to stage1/stage2 (the reference, also used by rs_step), which finds the reason, the pointer
 * and the bytes the reference router leaves.  tests/test_router_step.py compares rs_batch with
 * rs_step on mutated packets under every mode to hold this. */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define RS_LE64(x) __builtin_bswap64(x)
#define RS_LE32(x) __builtin_bswap32(x)
#else
#define RS_LE64(x) (x)
#define RS_LE32(x) (x)
#endif
/* Little-endian loads: byte k of the field is bits 8k..8k+7 of the value. */
static inline uint64_t ld64le(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return RS_LE64(v);
}
static inline uint32_t ld32le(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return RS_LE32(v);
}
static inline void st32le(uint8_t *p, uint32_t v) {
    v = RS_LE32(v);
    memcpy(p, &v, 4);
}
/* The big-endian 16-bit field at byte k of a little-endian loaded word. */
static inline uint16_t be16_at(uint64_t w, unsigned k) {
    return (uint16_t)(((w >> (8 * k)) & 0xff) << 8 | ((w >> (8 * k + 8)) & 0xff));
}
static inline uint32_t bswap32_(uint32_t v) { return __builtin_bswap32(v); }

#define SH_FIRST 0x01   /* CurrHF is 0 */
#define SH_LAST 0x02    /* CurrHF is the last hop field */
#define SH_XOVER 0x04   /* the next hop field starts the next segment */
#define SH_AT_END 0x08  /* no next hop field */
#define SH_XAT_END 0x10 /* after the segment change, no next hop field */

/* What a path meta header, with HdrLen and the address lengths, says by itself: every check
 * of stage1 on these bytes passed, and where the fields are.  A batch decodes it once per
 * distinct header (the packets of one path at one hop share it) instead of once per packet;
 * the key is the six bytes it is a function of, so a hit gives exactly what decoding would. */
typedef struct rs_shape {
    uint32_t meta_le; /* key: the meta header bytes as loaded */
    uint16_t hb;      /* key: HdrLen << 8 | common header byte 9 (address lengths); 0 = empty */
    uint8_t what;     /* SH_* */
    uint16_t info_off, hop_off, info2_off, hop2_off; /* from the path start */
    uint32_t meta_fwd;  /* meta header after a plain forward, as stored */
    uint32_t meta_xsib; /* after a segment change, handed to a sibling */
    uint32_t meta_xfwd; /* after a segment change, forwarded */
} rs_shape;

/* Per batch: what does not change from packet to packet. */
typedef struct rs_bctx {
    const uint8_t *ifs;
    uint64_t local_ia, now;
    int mode, ext;
    uint16_t ingress;
    uint16_t ingress_raw; /* ingress as its two big-endian bytes read little-endian */
    uint8_t check_in;     /* from an external link with a known interface: the hop must name it */
    uint8_t pair_plain;   /* bit elt: (ingress link type, elt) is a valid hop without segment change */
    uint8_t pair_xover;   /* bit elt: ... a valid segment change */
    rs_shape shape;       /* the last path meta header decoded */
} rs_bctx;

static void bctx_init(rs_bctx *b, const rs_config *cfg, uint16_t ingress, uint64_t now) {
    b->ifs = cfg->ifs;
    b->local_ia = cfg->local_ia;
    b->now = now;
    b->mode = cfg->mode;
    b->ext = from_external(cfg, ingress);
    b->ingress = ingress;
    b->ingress_raw = (uint16_t)((ingress >> 8) | (ingress << 8));
    b->check_in = (uint8_t)(b->ext && ingress);
    b->shape.hb = 0;
    b->pair_plain = b->pair_xover = 0;
    if (cfg->mode == RS_MODE_TABLE && b->ext) {
        /* The same pairs as stage2's link-type tests. */
        switch (cfg->ifs[ingress] & RS_LINK_MASK) {
        case RS_LINK_CORE:
            b->pair_plain = 1 << RS_LINK_CORE;
            b->pair_xover = 1 << RS_LINK_CHILD;
            break;
        case RS_LINK_CHILD:
            b->pair_plain = (1 << RS_LINK_PARENT) | (1 << RS_LINK_PEER);
            b->pair_xover = (1 << RS_LINK_CORE) | (1 << RS_LINK_CHILD);
            break;
        case RS_LINK_PARENT:
        case RS_LINK_PEER:
            b->pair_plain = 1 << RS_LINK_CHILD;
            break;
        default:
            break;
        }
    }
}

#define FW_INFO 0x01  /* write info_w to the current info field (SegID update) */
#define FW_META 0x02  /* write meta_w to the path meta header */
#define FW_INFO2 0x04 /* write info2_w to the info field after a segment change */
#define FW_XOVER 0x08 /* a segment change: the second MAC must hold too */

/* A packet the fast path has decided, waiting for its MAC verdicts.  Field values are raw:
 * the bytes as stored, read little-endian, ready to be written back. */
typedef struct rs_fast {
    uint8_t *path, *info, *info2;
    uint32_t info_w, info2_w, meta_w;
    uint16_t egress;
    uint8_t action, writes;
} rs_fast;

static inline uint32_t inf_of(uint32_t hf, uint32_t s0, uint32_t s1) {
    return (uint32_t)(hf >= s0) + (uint32_t)(hf >= s0 + s1);
}

/* write_meta's word for CurrINF `inf`, CurrHF `hf` (reserved bits zero), as stored. */
static inline uint32_t meta_raw(uint32_t meta, uint32_t inf, uint32_t hf) {
    return bswap32_((inf << 30) | ((hf & 0x3f) << 24) | (meta & 0x3ffff));
}

/* update_seg_id on info word a (info[0:8]) with hop word h (hop[0:8]), as the new info[0:4]:
 * flags kept, byte 1 zero, SegID xor hop MAC[0:2]. */
static inline uint32_t seg_updated(uint64_t a, uint64_t h) {
    return (uint32_t)(((a ^ (h >> 32)) & 0xffff0000u) | (a & 0x03));
}

/* The hop's expiry (ExpTime at hop byte 1, Timestamp at info bytes 4-7) is before now. */
static inline int expired_raw(uint64_t a, uint64_t h, uint64_t now) {
    uint64_t ts = bswap32_((uint32_t)(a >> 32));
    return ts + (((h >> 8) & 0xff) + 1) * EXP_TIME_UNIT < now;
}

/* The egress interface of hop word h (ConsEgress in construction direction, else ConsIngress). */
static inline uint16_t egress_of(uint64_t h, uint32_t cons) {
    uint16_t raw = (uint16_t)(h >> (cons ? 32 : 16));
    return (uint16_t)((raw >> 8) | (raw << 8));
}

/* MAC input: 0,0 | SegID | Timestamp || 0 | ExpTime | ConsIngress | ConsEgress | 0,0; `seg_x`
 * is xored into the SegID bytes (raw, at bits 16..31). */
static inline void put_job(hm_job *job, uint64_t a, uint64_t h, uint32_t mac_hi, uint64_t seg_x) {
    job->lo = (a & 0xffffffffffff0000ULL) ^ seg_x;
    job->hi = h & 0x0000ffffffffff00ULL;
    job->tag48 = (h >> 48) | ((uint64_t)mac_hi << 16);
}

/* The egress checks of stage2 for egress `eg` of hop word h: 0 unless all pass; *owned says
 * whether the egress link is ours (else a sibling's). */
static inline __attribute__((always_inline)) int fast_egress(const rs_bctx *b, uint16_t eg, uint64_t h,
                                                             uint32_t cons, uint8_t pairs, int *owned) {
    if (eg == 0)
        return 0;
    int own;
    if (b->mode == RS_MODE_TABLE) {
        uint32_t e = b->ifs[eg];
        own = (e & RS_IF_OWNED) != 0;
        /* Link type known and a valid pair (from outside) or our own link (from inside; the
         * pair masks are 0 then), and not down. */
        uint32_t allowed = b->ext ? pairs : (own ? 0xfe : 0);
        if (!((allowed >> (e & RS_LINK_MASK)) & 1) || (e & RS_IF_DOWN))
            return 0;
    } else {
        own = b->mode == RS_MODE_EGRESS_ALL;
    }
    /* The egress router alert (ours only on our own link) is the reference's business. */
    if (own && (h & (cons ? 0x01 : 0x02)))
        return 0;
    *owned = own;
    return 1;
}

/* Path offset (common + address header length) from byte 9 (DT|DL|ST|SL). */
#define PO_(x) (uint8_t)(CMN_LEN + 16 + 8 + 4 * (((x) >> 4) & 3) + 4 * ((x) & 3))
#define PO8_(x) PO_(x), PO_(x + 1), PO_(x + 2), PO_(x + 3), PO_(x + 4), PO_(x + 5), PO_(x + 6), PO_(x + 7)
#define PO32_(x) PO8_(x), PO8_(x + 8), PO8_(x + 16), PO8_(x + 24)
static const uint8_t path_off_of[256] = {PO32_(0),   PO32_(32),  PO32_(64),  PO32_(96),
                                         PO32_(128), PO32_(160), PO32_(192), PO32_(224)};
#undef PO_
#undef PO8_
#undef PO32_

/* Decodes a path meta header (see rs_shape) into *sh; 0, leaving *sh as it was, unless every
 * stage1 check on these bytes passes for a standard path without singleton segments.
 * `avail` is HdrLen minus the path offset. */
static __attribute__((noinline)) int shape_fill(rs_shape *sh, uint32_t meta_le, uint16_t hb, uint32_t avail) {
    uint32_t meta = bswap32_(meta_le);
    uint32_t hf = (meta >> 24) & 0x3f, inf = meta >> 30;
    uint32_t s0 = (meta >> 12) & 0x3f, s1 = (meta >> 6) & 0x3f, s2 = meta & 0x3f;
    /* Segment shape with no singleton (the fast path takes no peering flag): s0 >= 2, s1 and
     * s2 0 or >= 2, s2 only after s1. */
    if (s0 < 2 || s1 == 1 || s2 == 1 || (s1 == 0 && s2 != 0))
        return 0;
    uint32_t hops_at = META_LEN + INFO_LEN + (s1 ? INFO_LEN : 0) + (s2 ? INFO_LEN : 0);
    uint32_t num_hops = s0 + s1 + s2;
    /* The whole path within HdrLen; CurrHF in range and CurrINF its segment (then CurrINF <
     * NumINF too). */
    if (hops_at + HOP_LEN * num_hops > avail || hf >= num_hops || inf != inf_of(hf, s0, s1))
        return 0;
    uint32_t nhf = hf + 1, ninf = inf_of(nhf, s0, s1);
    uint32_t what = (hf == 0 ? SH_FIRST : 0) | (nhf == num_hops ? SH_LAST : 0);
    sh->info_off = (uint16_t)(META_LEN + INFO_LEN * inf);
    sh->hop_off = (uint16_t)(hops_at + HOP_LEN * hf);
    if (nhf >= num_hops) {
        what |= SH_AT_END;
    } else if (ninf != inf) {
        what |= SH_XOVER | (nhf + 1 >= num_hops ? SH_XAT_END : 0);
        sh->info2_off = (uint16_t)(META_LEN + INFO_LEN * ninf);
        sh->hop2_off = (uint16_t)(hops_at + HOP_LEN * nhf);
        sh->meta_xsib = meta_raw(meta, ninf, nhf);
        sh->meta_xfwd = meta_raw(meta, inf_of(nhf + 1, s0, s1), nhf + 1);
    } else {
        sh->meta_fwd = meta_raw(meta, inf, nhf);
    }
    sh->what = (uint8_t)what;
    sh->meta_le = meta_le;
    sh->hb = hb;
    return 1;
}

/* Stage 1 and the decision of stage 2 on the fast path: 1 when, given good MACs, every check
 * of stage1/stage2 passes on a standard path without the peering flag; then *f holds what to
 * write and answer, and one MAC job (two for a segment change) is appended at jobs[*nj].  0
 * otherwise.  Nothing is written to the packet here.  Each refusal is a branch that real
 * traffic almost never takes. */
static inline __attribute__((always_inline)) int fast_stage1(rs_bctx *b, uint8_t *pkt, uint32_t len,
                                                             rs_fast *f, hm_job *jobs, size_t *nj) {
    if (len < CMN_LEN + 16 || pkt[8] != PT_SCION)
        return 0;
    uint32_t hdr = (uint32_t)pkt[5] * 4, path_off = path_off_of[pkt[9]];
    /* hdr + PayloadLen == len also gives hdr <= len: the path lies inside the packet. */
    if (hdr < path_off + META_LEN || hdr + rd16(pkt + 6) != len)
        return 0;
    uint8_t *path = pkt + path_off;
    uint32_t meta_le = ld32le(path);
    uint16_t hb = (uint16_t)(pkt[5] << 8 | pkt[9]);
    const rs_shape *sh = &b->shape;
    if (__builtin_expect(meta_le != sh->meta_le || hb != sh->hb, 0) &&
        !shape_fill(&b->shape, meta_le, hb, hdr - path_off))
        return 0;
    uint32_t what = sh->what;
    uint8_t *info = path + sh->info_off, *hop = path + sh->hop_off;
    uint64_t a = ld64le(info), h = ld64le(hop);
    uint32_t cons = (uint32_t)a & 0x01;
    /* The peering flag (the reference's business), then expiry. */
    if ((a & 0x02) || expired_raw(a, h, b->now))
        return 0;
    if (b->ext) {
        if (b->check_in && (uint16_t)(h >> (cons ? 16 : 32)) != b->ingress_raw)
            return 0;
        if (h & (cons ? 0x02 : 0x01)) /* ingress router alert */
            return 0;
    }
    uint32_t last_hop = (what & SH_LAST) != 0, deliver;
    if (b->local_ia) {
        uint64_t dst = rd64(pkt + CMN_LEN), src = rd64(pkt + CMN_LEN + 8);
        uint32_t src_local = src == b->local_ia, dst_local = dst == b->local_ia;
        if (!b->ext ? (((what & SH_FIRST) && !src_local) || dst_local) : (src_local || last_hop != dst_local))
            return 0;
        deliver = dst_local;
    } else {
        deliver = b->ext && last_hop;
    }
    /* Against construction direction the ingress router chains the SegID back: the MAC is
     * checked with the chained value, which is also what is written. */
    uint32_t chain = !cons && b->ext;
    hm_job *job = &jobs[*nj];
    if (deliver) {
        f->egress = 0;
        f->action = RS_ACT_DELIVER;
        f->writes = (uint8_t)(chain ? FW_INFO : 0);
    } else if (__builtin_expect(what & SH_XOVER, 0)) {
        /* Segment change (only valid from an external link): the next hop field is checked
         * with its own info field, whose SegID nothing before has changed. */
        if (!b->ext)
            return 0;
        uint8_t *info2 = path + sh->info2_off, *hop2 = path + sh->hop2_off;
        uint64_t a2 = ld64le(info2), h2 = ld64le(hop2);
        uint32_t cons2 = (uint32_t)a2 & 0x01;
        int owned;
        uint16_t eg = egress_of(h2, cons2);
        if (expired_raw(a2, h2, b->now) || !fast_egress(b, eg, h2, cons2, b->pair_xover, &owned))
            return 0;
        /* SH_XAT_END is never set while the shape rule forbids singleton segments; checked so
         * that this path does not lean on that rule. */
        if (owned && (what & SH_XAT_END))
            return 0; /* path at end */
        f->egress = eg;
        f->info2 = info2;
        f->info2_w = seg_updated(a2, h2);
        if (!owned) {
            f->action = RS_ACT_SIBLING;
            f->writes = (uint8_t)(FW_XOVER | FW_META | (chain ? FW_INFO : 0));
            f->meta_w = sh->meta_xsib;
        } else {
            f->action = RS_ACT_FORWARD;
            f->writes = (uint8_t)(FW_XOVER | FW_META | (chain ? FW_INFO : 0) | (cons2 ? FW_INFO2 : 0));
            f->meta_w = sh->meta_xfwd;
        }
        put_job(job + 1, a2, h2, ld32le(hop2 + 8), 0);
        *nj += 1;
    } else {
        int owned;
        uint16_t eg = egress_of(h, cons);
        if (!fast_egress(b, eg, h, cons, b->pair_plain, &owned))
            return 0;
        f->egress = eg;
        if (!owned) {
            f->action = RS_ACT_SIBLING;
            f->writes = (uint8_t)(chain ? FW_INFO : 0);
        } else {
            if (what & SH_AT_END)
                return 0; /* path at end */
            /* Chained back at ingress (against construction direction) or forward at egress
             * (in it): the same new SegID, never both. */
            f->action = RS_ACT_FORWARD;
            f->writes = (uint8_t)(FW_META | (chain | cons ? FW_INFO : 0));
            f->meta_w = sh->meta_fwd;
        }
    }
    f->path = path;
    f->info = info;
    f->info_w = seg_updated(a, h);
    put_job(job, a, h, ld32le(hop + 8), chain ? (h >> 32) & 0xffff0000u : 0);
    *nj += 1;
    return 1;
}

static inline void put_out(size_t i, uint8_t *reason, uint8_t *action, uint16_t *egress, uint16_t *pointer,
                           int st, const rs_result *r) {
    reason[i] = (uint8_t)st;
    action[i] = r->action;
    egress[i] = r->egress;
    pointer[i] = r->pointer;
}

/* The reference for one batch packet, given the first MAC's verdict (nothing written yet). */
static __attribute__((noinline)) int slow_with_mac(const rs_config *cfg, uint8_t *pkt, uint32_t len,
                                                   const rs_bctx *b, int good, rs_result *r) {
    rs_work w;
    int st = stage1(cfg, pkt, len, b->ingress, b->ext, b->now, r, &w);
    if (st == RS_PENDING)
        st = stage2(cfg, b->ingress, b->now, r, &w, good);
    return st;
}

static inline void job_of_work(const rs_work *w, hm_job *job) {
    uint64_t a = ld64le(w->info), h = ld64le(w->hop);
    uint64_t seg_raw = (uint64_t)(uint16_t)((w->seg >> 8) | (w->seg << 8)) << 16;
    put_job(job, a, h, ld32le(w->hop + 8), seg_raw ^ (a & 0xffff0000u));
}

#define K_DONE 0 /* decided in stage 1: st[j], r[j] */
#define K_FAST 1 /* fast path: f[j], MAC job(s) from job[j] */
#define K_SLOW 2 /* reference: w[j], r[j], MAC job job[j] */

/* One chunk of the batch between the stages. */
typedef struct rs_chunk {
    rs_fast f[RS_CHUNK];
    rs_work w[RS_CHUNK];
    rs_result r[RS_CHUNK];
    hm_job jobs[2 * RS_CHUNK];
    uint8_t good[2 * RS_CHUNK];
    uint8_t kind[RS_CHUNK], job[RS_CHUNK];
    int st[RS_CHUNK];
} rs_chunk;

/* Stage 1 of the reference for a packet the fast path did not take. */
static __attribute__((noinline)) void slow_stage1(const rs_config *cfg, const rs_bctx *b, uint8_t *pkt,
                                                  uint32_t len, size_t stride, rs_chunk *c, size_t j,
                                                  size_t *nj) {
    if (len > stride) {
        memset(&c->r[j], 0, sizeof(c->r[j]));
        c->st[j] = RS_TRUNCATED;
    } else {
        c->st[j] = stage1(cfg, pkt, len, b->ingress, b->ext, b->now, &c->r[j], &c->w[j]);
    }
    if (c->st[j] == RS_PENDING) {
        c->kind[j] = K_SLOW;
        job_of_work(&c->w[j], &c->jobs[*nj]);
        *nj += 1;
    } else {
        c->kind[j] = K_DONE;
    }
}

/* Stage 1 over packets base .. base+m-1; returns the number of MAC jobs. */
static __attribute__((noinline)) size_t chunk_stage1(const rs_config *cfg, rs_bctx *b, uint8_t *buf,
                                                     size_t stride, const uint32_t *lens, size_t base, size_t m,
                                                     rs_chunk *c) {
    size_t nj = 0;
    for (size_t j = 0; j < m; j++) {
        uint8_t *pkt = buf + (base + j) * stride;
        uint32_t len = lens[base + j];
        c->job[j] = (uint8_t)nj;
        if (__builtin_expect(len <= stride && fast_stage1(b, pkt, len, &c->f[j], c->jobs, &nj), 1))
            c->kind[j] = K_FAST;
        else
            slow_stage1(cfg, b, pkt, len, stride, c, j, &nj);
    }
    return nj;
}

/* The reference's verdict for packet j of the chunk that the fast path did not finish. */
static __attribute__((noinline)) void slow_finish(const rs_config *cfg, const rs_bctx *b, uint8_t *pkt,
                                                  uint32_t len, rs_chunk *c, size_t j) {
    if (c->kind[j] == K_FAST)
        c->st[j] = slow_with_mac(cfg, pkt, len, b, c->good[c->job[j]], &c->r[j]);
    else if (c->kind[j] == K_SLOW)
        c->st[j] = stage2(cfg, b->ingress, b->now, &c->r[j], &c->w[j], c->good[c->job[j]]);
}

/* Grouping state: OK packets in arrival order, distinct keys sorted with their counts. */
typedef struct rs_groups {
    uint32_t *order, *off, *key;
    size_t g, ok, last;
    uint32_t last_key;
} rs_groups;

/* Index of key in the sorted keys[0..g), or the insertion point with *found = 0. */
static inline size_t find_key(const uint32_t *keys, size_t g, uint32_t key, int *found) {
    size_t lo = 0, hi = g;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (keys[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < g && keys[lo] == key;
    return lo;
}

/* A key not seen last: find or insert it among the sorted keys. */
static __attribute__((noinline)) void group_insert(rs_groups *gr, uint32_t key) {
    int found;
    size_t g = gr->g, at = find_key(gr->key, g, key, &found);
    if (!found) {
        memmove(gr->key + at + 1, gr->key + at, (g - at) * sizeof(uint32_t));
        memmove(gr->off + at + 1, gr->off + at, (g - at) * sizeof(uint32_t));
        gr->key[at] = key;
        gr->off[at] = 0;
        gr->g = g + 1;
    }
    gr->last = at;
    gr->last_key = key;
}

/* Adds OK packet i with `key` to the groups (packets come in arrival order). */
static inline void group_add(rs_groups *gr, size_t i, uint32_t key) {
    gr->order[gr->ok++] = (uint32_t)i;
    if (__builtin_expect(!gr->g || key != gr->last_key, 0))
        group_insert(gr, key);
    gr->off[gr->last]++;
}

/* ---- The parse record of a delivered packet (see rs_deliver_rec in router_step.h) ---------
 *
 * What the step has established for every packet it delivers, whichever way it was decided:
 * HdrLen covers the common and address header (address lengths taken from the low two bits of
 * each type nibble) and lies within the packet; for a standard path, HdrLen + PayloadLen is the
 * packet length and the meta header is consistent (segments fill from the first, CurrINF and
 * CurrHF in range, the fields within HdrLen); for a OneHop path, HdrLen holds its 32 bytes.
 * What scion_parse checks beyond that, and is checked here: the version, the address types
 * (reserved nibbles), PayloadLen for OneHop, the path length exactly, at most 64 hop fields, and
 * the UDP header.  Whenever one of these fails, or the packet has extension headers or SCMP (the
 * parser's own business), scion_parse decides the record. */

static inline unsigned rec_host_len(uint8_t nibble) {
    return nibble == 0x0 || nibble == 0x4 ? 4 : nibble == 0x3 ? 16 : 0;
}

void rs_deliver_rec(const uint8_t *pkt, uint32_t len, scion_rec_t *rec) {
    if (len < CMN_LEN) /* never delivered; keeps this total on any bytes */
        goto parse;
    uint8_t at = pkt[9], dt = at >> 4, st = at & 0xf, nh = pkt[4], pt = pkt[8];
    unsigned dl = rec_host_len(dt), sl = rec_host_len(st);
    uint32_t hdr = (uint32_t)pkt[5] * 4, addr_end = CMN_LEN + 16 + dl + sl;
    uint16_t payload = rd16(pkt + 6);
    if ((pkt[0] >> 4) != 0 || !dl || !sl || hdr < addr_end || hdr + payload != len)
        goto parse;
    uint32_t plen = hdr - addr_end, meta = 0, s0 = 0, s1 = 0, s2 = 0, ninf = 0, nhops = 0;
    if (pt == PT_SCION) {
        if (plen < META_LEN)
            goto parse;
        meta = rd32(pkt + addr_end);
        s0 = (meta >> 12) & 0x3f, s1 = (meta >> 6) & 0x3f, s2 = meta & 0x3f;
        ninf = s2 ? 3 : s1 ? 2 : s0 ? 1 : 0;
        nhops = s0 + s1 + s2;
        if ((s2 && !s1) || (s1 && !s0) || !ninf || nhops > SCION_MAX_HOPS ||
            plen != META_LEN + INFO_LEN * ninf + HOP_LEN * nhops || (meta >> 30) >= ninf ||
            ((meta >> 24) & 0x3f) >= nhops)
            goto parse;
    } else if (pt != PT_ONEHOP || plen != ONEHOP_LEN) {
        goto parse;
    }
    uint32_t l4_len = len - hdr;
    uint16_t sport = 0, dport = 0;
    if (nh == SCION_PROTO_UDP) {
        if (l4_len < 8 || rd16(pkt + hdr + 4) != l4_len)
            goto parse;
        sport = rd16(pkt + hdr);
        dport = rd16(pkt + hdr + 2);
    } else if (nh == SCION_PROTO_SCMP || nh == SCION_PROTO_HBH || nh == SCION_PROTO_E2E) {
        goto parse;
    }
    memset(rec, 0, sizeof(*rec));
    uint32_t w0 = rd32(pkt);
    rec->traffic_class = (uint8_t)(w0 >> 20);
    rec->flow_id = w0 & 0xfffff;
    rec->next_hdr = nh;
    rec->hdr_len = (uint16_t)hdr;
    rec->payload_len = payload;
    rec->path_type = pt;
    rec->dst_addr_type = dt;
    rec->src_addr_type = st;
    rec->dst_host_len = (uint8_t)dl;
    rec->src_host_len = (uint8_t)sl;
    rec->dst_ia = rd64(pkt + CMN_LEN);
    rec->src_ia = rd64(pkt + CMN_LEN + 8);
    rec->dst_host_off = CMN_LEN + 16;
    rec->src_host_off = (uint16_t)(CMN_LEN + 16 + dl);
    rec->path_off = (uint16_t)addr_end;
    rec->path_len = (uint16_t)plen;
    if (pt == PT_SCION) {
        rec->curr_inf = (uint8_t)(meta >> 30);
        rec->curr_hf = (uint8_t)((meta >> 24) & 0x3f);
        rec->seg_len[0] = (uint8_t)s0;
        rec->seg_len[1] = (uint8_t)s1;
        rec->seg_len[2] = (uint8_t)s2;
        rec->num_inf = (uint8_t)ninf;
        rec->num_hops = (uint8_t)nhops;
    }
    rec->l4_proto = nh;
    rec->l4_off = (uint16_t)hdr;
    rec->l4_len = (uint16_t)l4_len;
    rec->src_port = sport;
    rec->dst_port = dport;
    return;
parse:
    scion_parse(pkt, len, rec);
}

static __attribute__((noinline)) void deliver_recs(const uint8_t *buf, size_t stride, const uint32_t *lens,
                                                   size_t n, const uint8_t *reason, const uint8_t *action,
                                                   scion_rec_t *recs) {
    for (size_t i = 0; i < n; i++)
        if (reason[i] == RS_OK && action[i] == RS_ACT_DELIVER)
            rs_deliver_rec(buf + i * stride, lens[i], &recs[i]);
}

size_t rs_batch(const rs_config *cfg, uint8_t *buf, size_t stride, const uint32_t *lens, size_t n,
                uint16_t ingress, uint64_t now, uint8_t *reason, uint8_t *action, uint16_t *egress,
                uint16_t *pointer, uint32_t *order, uint32_t *group_off, uint32_t *group_key,
                size_t *n_ok, scion_rec_t *recs) {
    rs_bctx b;
    bctx_init(&b, cfg, ingress, now);
    rs_groups gr = {order, group_off, group_key, 0, 0, 0, 0};
    rs_chunk c;
    for (size_t base = 0; base < n; base += RS_CHUNK) {
        size_t m = n - base < RS_CHUNK ? n - base : RS_CHUNK;
        /* Stage 1 for the chunk, then all MACs together (the AES rounds of several packets
         * overlap), then the verdicts, in arrival order. */
        size_t nj = chunk_stage1(cfg, &b, buf, stride, lens, base, m, &c);
        hm_verify_jobs(&cfg->key, nj, c.jobs, c.good);
        for (size_t j = 0; j < m; j++) {
            size_t i = base + j;
            if (__builtin_expect(c.kind[j] == K_FAST, 1)) {
                const rs_fast *fp = &c.f[j];
                uint32_t w = fp->writes, q = c.job[j];
                uint32_t ok = c.good[q] & ((w & FW_XOVER) ? c.good[q + 1] : 1);
                if (__builtin_expect(ok, 1)) {
                    if (w & FW_INFO)
                        st32le(fp->info, fp->info_w);
                    if (w & FW_INFO2)
                        st32le(fp->info2, fp->info2_w);
                    if (w & FW_META)
                        st32le(fp->path, fp->meta_w);
                    reason[i] = RS_OK;
                    action[i] = fp->action;
                    egress[i] = fp->egress;
                    pointer[i] = 0;
                    group_add(&gr, i, (uint32_t)fp->action << 16 | fp->egress);
                    continue;
                }
            }
            slow_finish(cfg, &b, buf + i * stride, lens[i], &c, j);
            put_out(i, reason, action, egress, pointer, c.st[j], &c.r[j]);
            if (c.st[j] == RS_OK)
                group_add(&gr, i, (uint32_t)c.r[j].action << 16 | c.r[j].egress);
        }
    }

    size_t g = gr.g, ok = gr.ok;
    *n_ok = ok;
    /* Records of delivered packets: a pass of its own, so the loop above stays as it is without. */
    if (recs)
        deliver_recs(buf, stride, lens, n, reason, action, recs);
    if (g <= 1) {
        /* One link (the usual case): `order` already lists the group in arrival order. */
        group_off[0] = 0;
        group_off[g] = (uint32_t)ok;
        return g;
    }
    /* Several groups: counts -> end offsets, then fill backwards so each group keeps arrival
     * order and each group_off[k] ends at the group's start. */
    uint32_t acc = 0;
    for (size_t k = 0; k < g; k++) {
        acc += group_off[k];
        group_off[k] = acc;
    }
    size_t last = 0;
    for (size_t i = n; i-- > 0;) {
        if (reason[i] != RS_OK)
            continue;
        uint32_t key = ((uint32_t)action[i] << 16) | egress[i];
        if (group_key[last] != key) {
            int found;
            last = find_key(group_key, g, key, &found);
        }
        order[--group_off[last]] = (uint32_t)i;
    }
    group_off[g] = (uint32_t)ok;
    return g;
}
