/* One border-router processing step on the SCION path of a packet, in place.
 *
 * Rules kept here:
 * - Follows scionproto's router/dataplane.go `process()` for the standard SCION path
 *   (PathType 1) check by check and in the same order, so the first failing check names the
 *   same reason (and the same SCMP code and pointer) as the reference router.
 * - Reads only what it needs from the common and address headers (lengths, path type, ISD-ASes)
 *   and bounds-checks every read against the buffer length: any input, however short or
 *   malformed, yields a reason code and never reads or writes outside [pkt, pkt+len).
 * - Writes to the packet only where the reference router does: the current info field's
 *   SegID, the path meta header (CurrINF/CurrHF), and a router-alert flag it clears.
 * - No allocation, no locks, no callbacks: safe to run on a whole batch without the GIL.
 */
#ifndef SCION_ROUTER_STEP_H
#define SCION_ROUTER_STEP_H

#include <stddef.h>
#include <stdint.h>

#include "aes_cmac.h"
#include "scion_parse.h"

/* Reason codes (keep in step with scion_appliance/router/reasons.py). */
enum rs_reason {
    RS_OK = 0,
    RS_TRUNCATED = 1,              /* shorter than common + address header, or than HdrLen */
    RS_BAD_HDR_LEN = 2,            /* HdrLen smaller than common + address header */
    RS_BAD_PACKET_SIZE = 3,        /* PayloadLen disagrees with the packet length */
    RS_UNSUPPORTED_PATH_TYPE = 4,
    RS_MALFORMED_PATH = 5,         /* SegLen pattern, path beyond HdrLen, singleton segment, peering */
    RS_BAD_CURR_INF = 6,           /* CurrINF out of range or not the segment of CurrHF */
    RS_BAD_CURR_HF = 7,            /* CurrHF out of range */
    RS_EXPIRED_HOP = 8,
    RS_INGRESS_MISMATCH = 9,       /* hop field's ingress is not the interface it arrived on */
    RS_INVALID_SRC_IA = 10,
    RS_INVALID_DST_IA = 11,
    RS_BAD_MAC = 12,
    RS_UNKNOWN_EGRESS = 13,        /* egress interface unknown here (or 0 at a transit hop) */
    RS_INVALID_LINK_PAIR = 14,     /* ingress/egress link types do not make a valid hop */
    RS_INVALID_SEGMENT_CHANGE = 15,
    RS_EGRESS_DOWN = 16,           /* our external egress interface is down */
    RS_SIBLING_DOWN = 17,          /* the sibling router owning the egress is unreachable */
    RS_PATH_AT_END = 18,           /* egress processing on the last hop field */
    RS_ROUTER_ALERT_INGRESS = 19,  /* not a drop: hand to the slow path (traceroute) */
    RS_ROUTER_ALERT_EGRESS = 20,   /* not a drop: hand to the slow path (traceroute) */
    RS_NO_INGRESS_IF = 21,         /* OneHop path entering: the arrival interface is needed */
    RS_NREASONS = 22
};

/* What happens next with an RS_OK packet. */
enum rs_action {
    RS_ACT_NONE = 0,      /* not OK: see the reason */
    RS_ACT_FORWARD = 1,   /* egress processing done: send out of our external interface `egress` */
    RS_ACT_SIBLING = 2,   /* `egress` belongs to another router of this AS: send there internally */
    RS_ACT_DELIVER = 3    /* destined to this AS: deliver to the end host */
};

/* Result flags. */
#define RS_F_XOVER 0x01   /* an effective segment change (cross-over) was made */
#define RS_F_PEERING 0x02 /* the hop was a peering hop */
#define RS_F_CONSDIR 0x04 /* the current info field is in construction direction (picks SCMP codes) */

/* How the router knows its interfaces. */
enum rs_mode {
    RS_MODE_TABLE = 0,        /* per-interface table below; ingress 0 means from the internal side */
    RS_MODE_INGRESS_ONLY = 1, /* from an external link (ingress may be 0: unknown, not checked);
                                 no egress is ours: stop after ingress processing */
    RS_MODE_EGRESS_ALL = 2    /* from the internal side; every egress is ours: do egress processing */
};

/* Interface table entries (RS_MODE_TABLE): link type in the low 3 bits, then flags. */
#define RS_LINK_NONE 0   /* interface not configured in this AS */
#define RS_LINK_CORE 1
#define RS_LINK_PARENT 2
#define RS_LINK_CHILD 3
#define RS_LINK_PEER 4
#define RS_LINK_MASK 0x07
#define RS_IF_OWNED 0x08 /* an external interface of this router (else a sibling's) */
#define RS_IF_DOWN 0x10  /* link or sibling currently down */

typedef struct rs_config {
    hm_key key;
    uint64_t local_ia;   /* ISD(16)|AS(48); 0 = unknown: IA checks skipped, last hop = delivery */
    const uint8_t *ifs;  /* 65536 entries for RS_MODE_TABLE, else NULL */
    int mode;
} rs_config;

typedef struct rs_result {
    uint16_t egress;  /* egress interface (RS_ACT_FORWARD / RS_ACT_SIBLING; router alert egress) */
    uint16_t pointer; /* SCMP parameter-problem pointer: byte offset from the SCION header start */
    uint8_t action;   /* enum rs_action */
    uint8_t flags;    /* RS_F_* */
} rs_result;

/* One step on pkt[0:len) arriving on interface `ingress` (see rs_mode) at unix time `now`.
 * Returns an rs_reason; `out` is always written. */
int rs_step(const rs_config *cfg, uint8_t *pkt, uint32_t len, uint16_t ingress, uint64_t now,
            rs_result *out);

/* The step over a batch: slot i at buf + i*stride with length lens[i] (lens[i] > stride is
 * reported as RS_TRUNCATED, never read past the slot).  Gives every packet exactly what rs_step
 * gives it (reason, action, egress, pointer, bytes): common packets are decided on a fast path
 * that can only accept what the reference accepts, all others by the reference itself (see
 * router_step.c).  The MACs of a chunk of packets are computed together.  Writes reason[i], action[i],
 * egress[i], pointer[i].  Then lists the OK packets in `order`, grouped by (action, egress)
 * in ascending order and stable within a group; group g is order[group_off[g] ..
 * group_off[g+1]) with key group_key[g] = action << 16 | egress.  `order` and `group_key`
 * need n entries, `group_off` n + 1.  Returns the number of groups; *n_ok gets the number of
 * OK packets.
 *
 * With `recs` (n entries; NULL: none), every packet delivered locally (RS_ACT_DELIVER) also gets
 * recs[i], the parse record scion_parse would give its bytes as the step leaves them, so a
 * receiver in the same process need not parse it again (see rs_deliver_rec); other entries are
 * left as they were. */
size_t rs_batch(const rs_config *cfg, uint8_t *buf, size_t stride, const uint32_t *lens, size_t n,
                uint16_t ingress, uint64_t now, uint8_t *reason, uint8_t *action, uint16_t *egress,
                uint16_t *pointer, uint32_t *order, uint32_t *group_off, uint32_t *group_key,
                size_t *n_ok, scion_rec_t *recs);

/* The parse record of a packet the step delivered (reason RS_OK, action RS_ACT_DELIVER): equal,
 * field by field, to what scion_parse(pkt, len) gives.  It is built from the header fields the
 * step has already checked (lengths, path type, path meta header): for a standard or OneHop path
 * with a UDP datagram (or an upper layer scion_parse keeps raw) right after the path, nothing else
 * needs parsing but the exact path length and the UDP header.  Packets with extension headers or
 * SCMP, and packets scion_parse would reject (which the router may still deliver), are handed to
 * scion_parse itself: the one parser decides every field there.  Total: on any bytes at all it
 * gives scion_parse's record (the checks the step made are made again where they are cheap). */
void rs_deliver_rec(const uint8_t *pkt, uint32_t len, scion_rec_t *rec);

#endif
