/* SCION packet parser; see scion_parse.h for the rules it keeps. */
#include "scion_parse.h"

#include <string.h>

#define SCION_REASON_NAME(code, name) name,
const char *const scion_reason_names[SCION_REASON_COUNT] = { SCION_REASONS(SCION_REASON_NAME) };
#undef SCION_REASON_NAME

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t rd32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t rd64(const uint8_t *p) { return ((uint64_t)rd32(p) << 32) | rd32(p + 4); }

static inline int fail(scion_rec_t *rec, int reason, size_t offset) {
    rec->status = (uint16_t)reason;
    rec->err_offset = (uint16_t)(offset > 0xffff ? 0xffff : offset);
    return reason;
}

/* Host address length from the 4-bit type/length nibble; 0 for reserved combinations. */
static inline unsigned host_len(uint8_t nibble) {
    switch (nibble) {
    case 0x0: return 4;   /* IPv4 */
    case 0x3: return 16;  /* IPv6 */
    case 0x4: return 4;   /* SVC: 2-byte service address + 2 bytes padding */
    default: return 0;
    }
}

static int parse_scion_path(const uint8_t *p, size_t off, size_t plen, scion_rec_t *rec) {
    if (plen < SCION_META_LEN) return fail(rec, SCION_E_BAD_PATH_LEN, off);
    uint32_t meta = rd32(p + off);
    rec->curr_inf = (uint8_t)(meta >> 30);
    rec->curr_hf = (uint8_t)((meta >> 24) & 0x3f);
    rec->seg_len[0] = (uint8_t)((meta >> 12) & 0x3f);
    rec->seg_len[1] = (uint8_t)((meta >> 6) & 0x3f);
    rec->seg_len[2] = (uint8_t)(meta & 0x3f);
    /* Segments fill from the first: a non-empty segment after an empty one is invalid. */
    unsigned num_inf = 0, num_hops = 0;
    for (int i = 2; i >= 0; i--) {
        if (rec->seg_len[i] == 0 && num_inf > 0) return fail(rec, SCION_E_BAD_PATH_META, off + 1);
        if (rec->seg_len[i] > 0 && num_inf == 0) num_inf = (unsigned)i + 1;
        num_hops += rec->seg_len[i];
    }
    if (num_inf == 0 || num_hops > SCION_MAX_HOPS) return fail(rec, SCION_E_BAD_PATH_META, off + 1);
    rec->num_inf = (uint8_t)num_inf;
    rec->num_hops = (uint8_t)num_hops;
    if (plen != SCION_META_LEN + num_inf * SCION_INFO_LEN + num_hops * SCION_HOP_LEN)
        return fail(rec, SCION_E_BAD_PATH_LEN, off);
    if (rec->curr_inf >= num_inf) return fail(rec, SCION_E_BAD_CURR_INF, off);
    if (rec->curr_hf >= num_hops) return fail(rec, SCION_E_BAD_CURR_HF, off);
    return SCION_OK;
}

/* One extension header (hop-by-hop or end-to-end) at `off`; options must fill it exactly. */
static int parse_ext(const uint8_t *p, size_t off, size_t end, uint16_t *ext_len, scion_rec_t *rec) {
    if (off + 2 > end) return fail(rec, SCION_E_TRUNCATED_EXT, off);
    size_t len = ((size_t)p[off + 1] + 1) * 4;
    if (off + len > end) return fail(rec, SCION_E_TRUNCATED_EXT, off + 1);
    size_t o = off + 2, stop = off + len;
    while (o < stop) {
        if (p[o] == 0) { o += 1; continue; }                 /* Pad1 */
        if (o + 2 > stop) return fail(rec, SCION_E_BAD_EXT_OPTION, o);
        size_t olen = 2 + (size_t)p[o + 1];
        if (o + olen > stop) return fail(rec, SCION_E_BAD_EXT_OPTION, o + 1);
        o += olen;
    }
    *ext_len = (uint16_t)len;
    return SCION_OK;
}

static int parse_l4(const uint8_t *p, scion_rec_t *rec) {
    size_t off = rec->l4_off, len = rec->l4_len;
    switch (rec->l4_proto) {
    case SCION_PROTO_UDP:
        if (len < 8) return fail(rec, SCION_E_TRUNCATED_L4, off + len);
        rec->src_port = rd16(p + off);
        rec->dst_port = rd16(p + off + 2);
        if (rd16(p + off + 4) != len) return fail(rec, SCION_E_BAD_UDP_LEN, off + 4);
        return SCION_OK;
    case SCION_PROTO_SCMP: {
        if (len < 4) return fail(rec, SCION_E_TRUNCATED_L4, off + len);
        rec->scmp_type = p[off];
        rec->scmp_code = p[off + 1];
        size_t need = 4;
        switch (rec->scmp_type) {
        case 1: case 2: case 4: case 128: case 129: need = 8; break;   /* 4 bytes of fixed fields */
        case 5: need = 20; break;                                    /* ISD-AS + interface */
        case 6: need = 28; break;                                    /* ISD-AS + ingress + egress */
        case 130: case 131: need = 24; break;                        /* id, seq, ISD-AS, interface */
        default: break;                                              /* unknown: kept raw */
        }
        if (len < need) return fail(rec, SCION_E_TRUNCATED_L4, off + len);
        return SCION_OK;
    }
    default:
        return SCION_OK;  /* BFD, TCP and unknown protocols are kept raw */
    }
}

int scion_parse(const uint8_t *p, size_t len, scion_rec_t *rec) {
    memset(rec, 0, sizeof(*rec));
    if (len < SCION_COMMON_LEN) return fail(rec, SCION_E_TRUNCATED_COMMON, len);
    uint32_t w0 = rd32(p);
    rec->version = (uint8_t)(w0 >> 28);
    rec->traffic_class = (uint8_t)(w0 >> 20);
    rec->flow_id = w0 & 0xfffff;
    if (rec->version != 0) return fail(rec, SCION_E_BAD_VERSION, 0);
    rec->next_hdr = p[4];
    size_t hdr_len = (size_t)p[5] * 4;
    rec->payload_len = rd16(p + 6);
    rec->path_type = p[8];
    rec->dst_addr_type = p[9] >> 4;
    rec->src_addr_type = p[9] & 0xf;
    unsigned dl = host_len(rec->dst_addr_type), sl = host_len(rec->src_addr_type);
    if (!dl) return fail(rec, SCION_E_BAD_ADDR_TYPE, 9);
    if (!sl) return fail(rec, SCION_E_BAD_ADDR_TYPE, 9);
    rec->dst_host_len = (uint8_t)dl;
    rec->src_host_len = (uint8_t)sl;
    size_t addr_end = SCION_COMMON_LEN + SCION_IA_LEN + dl + sl;
    if (hdr_len < addr_end) return fail(rec, SCION_E_BAD_HDR_LEN, 5);
    if (hdr_len > len) return fail(rec, SCION_E_TRUNCATED_HEADER, len);
    rec->hdr_len = (uint16_t)hdr_len;
    if (hdr_len + rec->payload_len > len) return fail(rec, SCION_E_TRUNCATED_PAYLOAD, len);
    if (hdr_len + rec->payload_len < len) return fail(rec, SCION_E_TRAILING_BYTES, hdr_len + rec->payload_len);
    rec->dst_ia = rd64(p + 12);
    rec->src_ia = rd64(p + 20);
    rec->dst_host_off = 28;
    rec->src_host_off = (uint16_t)(28 + dl);
    rec->path_off = (uint16_t)addr_end;
    rec->path_len = (uint16_t)(hdr_len - addr_end);

    int r;
    switch (rec->path_type) {
    case SCION_PATH_EMPTY:
        if (rec->path_len != 0) return fail(rec, SCION_E_BAD_PATH_LEN, rec->path_off);
        break;
    case SCION_PATH_SCION:
        if ((r = parse_scion_path(p, rec->path_off, rec->path_len, rec)) != SCION_OK) return r;
        break;
    case SCION_PATH_ONEHOP:
        if (rec->path_len != SCION_INFO_LEN + 2 * SCION_HOP_LEN)
            return fail(rec, SCION_E_BAD_PATH_LEN, rec->path_off);
        break;
    default:
        break;  /* EPIC, COLIBRI and unknown types: the header length bounds them; kept raw */
    }

    size_t off = hdr_len, end = len;
    uint8_t proto = rec->next_hdr;
    if (proto == SCION_PROTO_HBH) {
        if ((r = parse_ext(p, off, end, &rec->hbh_len, rec)) != SCION_OK) return r;
        rec->hbh_off = (uint16_t)off;
        proto = p[off];
        off += rec->hbh_len;
    }
    if (proto == SCION_PROTO_E2E) {
        if ((r = parse_ext(p, off, end, &rec->e2e_len, rec)) != SCION_OK) return r;
        rec->e2e_off = (uint16_t)off;
        proto = p[off];
        off += rec->e2e_len;
    }
    /* A second hop-by-hop header, or one after the end-to-end header, is out of order. */
    if (proto == SCION_PROTO_HBH || proto == SCION_PROTO_E2E)
        return fail(rec, SCION_E_BAD_EXT_ORDER, rec->e2e_off ? rec->e2e_off : rec->hbh_off);
    rec->l4_proto = proto;
    rec->l4_off = (uint16_t)off;
    rec->l4_len = (uint16_t)(end - off);
    if ((r = parse_l4(p, rec)) != SCION_OK) return r;
    return SCION_OK;
}

size_t scion_parse_batch(const uint8_t *slots, size_t stride, const uint32_t *lengths, size_t count,
                         scion_rec_t *recs) {
    size_t ok = 0;
    for (size_t i = 0; i < count; i++) {
        size_t len = lengths[i] < stride ? lengths[i] : stride;
        ok += scion_parse(slots + i * stride, len, &recs[i]) == SCION_OK;
    }
    return ok;
}

static inline uint32_t sum16(const uint8_t *p, size_t n, uint32_t acc) {
    size_t i = 0;
    for (; i + 1 < n; i += 2) acc += (uint32_t)((p[i] << 8) | p[i + 1]);
    if (n & 1) acc += (uint32_t)p[n - 1] << 8;
    return acc;
}

uint16_t scion_l4_checksum(const uint8_t *p, const scion_rec_t *rec, int zero_field) {
    uint64_t acc = 0;
    acc = sum16(p + 12, SCION_IA_LEN, (uint32_t)acc);                      /* DstIA, SrcIA */
    acc = sum16(p + rec->dst_host_off, rec->dst_host_len, (uint32_t)acc);
    acc = sum16(p + rec->src_host_off, rec->src_host_len, (uint32_t)acc);
    acc += (rec->l4_len >> 16) + (rec->l4_len & 0xffff);                   /* u32 upper-layer length */
    acc += rec->l4_proto;                                                  /* 3 zero bytes + NextHdr */
    acc = sum16(p + rec->l4_off, rec->l4_len, (uint32_t)acc);
    if (zero_field) {
        size_t field = rec->l4_proto == SCION_PROTO_UDP ? 6 : rec->l4_proto == SCION_PROTO_TCP ? 16 : 2;
        if (field + 2 <= rec->l4_len) acc -= rd16(p + rec->l4_off + field);
    }
    while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)~acc;
}
