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

size_t rs_batch(const rs_config *cfg, uint8_t *buf, size_t stride, const uint32_t *lens, size_t n,
                uint16_t ingress, uint64_t now, uint8_t *reason, uint8_t *action, uint16_t *egress,
                uint16_t *pointer, uint32_t *order, uint32_t *group_off, uint32_t *group_key,
                size_t *n_ok) {
    size_t g = 0, ok = 0, last = 0;
    int ext = from_external(cfg, ingress);
    rs_work w[RS_CHUNK];
    rs_result r[RS_CHUNK];
    int st[RS_CHUNK];
    const uint8_t *infos[RS_CHUNK], *hops[RS_CHUNK];
    uint16_t segs[RS_CHUNK];
    uint8_t good[RS_CHUNK];
    size_t pend[RS_CHUNK];
    for (size_t base = 0; base < n; base += RS_CHUNK) {
        size_t m = n - base < RS_CHUNK ? n - base : RS_CHUNK, np = 0;
        /* Stage 1 for the chunk, then all first MACs together (the AES rounds of several
         * packets overlap), then stage 2. */
        for (size_t j = 0; j < m; j++) {
            size_t i = base + j;
            if (lens[i] > stride) {
                memset(&r[j], 0, sizeof(r[j]));
                st[j] = RS_TRUNCATED;
                continue;
            }
            st[j] = stage1(cfg, buf + i * stride, lens[i], ingress, ext, now, &r[j], &w[j]);
            if (st[j] == RS_PENDING) {
                infos[np] = w[j].info;
                hops[np] = w[j].hop;
                segs[np] = w[j].seg;
                pend[np++] = j;
            }
        }
        hm_hop_verify_many(&cfg->key, np, infos, hops, segs, good);
        for (size_t q = 0; q < np; q++) {
            size_t j = pend[q];
            st[j] = stage2(cfg, ingress, now, &r[j], &w[j], good[q]);
        }
        for (size_t j = 0; j < m; j++) {
            size_t i = base + j;
            reason[i] = (uint8_t)st[j];
            action[i] = r[j].action;
            egress[i] = r[j].egress;
            pointer[i] = r[j].pointer;
            if (st[j] == RS_OK)
                ok++;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (reason[i] != RS_OK)
            continue;
        /* Distinct keys kept sorted in group_key, their counts in group_off. */
        uint32_t key = ((uint32_t)action[i] << 16) | egress[i];
        int found = 1;
        size_t at = last;
        if (g == 0 || group_key[last] != key)
            at = find_key(group_key, g, key, &found);
        if (!found) {
            memmove(group_key + at + 1, group_key + at, (g - at) * sizeof(uint32_t));
            memmove(group_off + at + 1, group_off + at, (g - at) * sizeof(uint32_t));
            group_key[at] = key;
            group_off[at] = 0;
            g++;
        }
        group_off[at]++;
        last = at;
    }
    /* Counts -> end offsets, then fill backwards so each group keeps arrival order and each
     * group_off[k] ends at the group's start. */
    uint32_t acc = 0;
    for (size_t k = 0; k < g; k++) {
        acc += group_off[k];
        group_off[k] = acc;
    }
    last = 0;
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
    *n_ok = ok;
    return g;
}
