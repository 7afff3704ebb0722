/* SCION packet parser: one packet in, one fixed-layout record out; no allocation, no callbacks.
 *
 * Rules kept here:
 * - Never reads past `len`. Every field is bounds-checked before it is read.
 * - A packet is either fully valid (status SCION_OK) or carries exactly one reason code and the byte
 *   offset at which the problem was found. The reason names are mirrored by
 *   scion_appliance/scion/errors.py (a test keeps the two in step).
 * - Validity follows the SCION data-plane specification and scionproto's slayers: common header,
 *   address header (IPv4, IPv6, SVC), path types Empty/SCION/OneHop (others kept raw), at most one
 *   hop-by-hop then one end-to-end extension header, and the fixed part of UDP and SCMP.
 */
#ifndef SCION_PARSE_H
#define SCION_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define SCION_COMMON_LEN 12
#define SCION_IA_LEN 16          /* DstISD-AS + SrcISD-AS */
#define SCION_INFO_LEN 8
#define SCION_HOP_LEN 12
#define SCION_META_LEN 4
#define SCION_MAX_INF 3
#define SCION_MAX_HOPS 64

enum scion_path_type { SCION_PATH_EMPTY = 0, SCION_PATH_SCION = 1, SCION_PATH_ONEHOP = 2,
                       SCION_PATH_EPIC = 3, SCION_PATH_COLIBRI = 4 };

enum scion_proto { SCION_PROTO_TCP = 6, SCION_PROTO_UDP = 17, SCION_PROTO_HBH = 200,
                   SCION_PROTO_E2E = 201, SCION_PROTO_SCMP = 202, SCION_PROTO_BFD = 203 };

/* X-macro: code, name. Append only: the numbers appear in counters and logs. */
#define SCION_REASONS(X)                                                     \
    X(SCION_OK, "ok")                                                        \
    X(SCION_E_TRUNCATED_COMMON, "truncated_common_header")                   \
    X(SCION_E_BAD_VERSION, "bad_version")                                    \
    X(SCION_E_BAD_HDR_LEN, "bad_header_length")                              \
    X(SCION_E_TRUNCATED_HEADER, "truncated_header")                          \
    X(SCION_E_BAD_ADDR_TYPE, "bad_address_type")                             \
    X(SCION_E_TRUNCATED_PAYLOAD, "truncated_payload")                        \
    X(SCION_E_TRAILING_BYTES, "trailing_bytes")                              \
    X(SCION_E_BAD_PATH_LEN, "bad_path_length")                               \
    X(SCION_E_BAD_PATH_META, "bad_path_meta")                                \
    X(SCION_E_BAD_CURR_INF, "bad_current_info_field")                        \
    X(SCION_E_BAD_CURR_HF, "bad_current_hop_field")                          \
    X(SCION_E_TRUNCATED_EXT, "truncated_extension")                          \
    X(SCION_E_BAD_EXT_ORDER, "bad_extension_order")                          \
    X(SCION_E_BAD_EXT_OPTION, "bad_extension_option")                        \
    X(SCION_E_TRUNCATED_L4, "truncated_l4_header")                           \
    X(SCION_E_BAD_UDP_LEN, "bad_udp_length")

#define SCION_REASON_ENUM(code, name) code,
enum scion_reason { SCION_REASONS(SCION_REASON_ENUM) SCION_REASON_COUNT };
#undef SCION_REASON_ENUM

/* One record per packet: offsets into the packet and decoded fixed fields. 80 bytes, no padding holes
 * that differ between compilers (fields ordered by size). */
typedef struct scion_rec {
    uint64_t dst_ia;
    uint64_t src_ia;
    uint32_t flow_id;
    uint16_t status;          /* enum scion_reason */
    uint16_t err_offset;      /* where the problem was found */
    uint16_t hdr_len;         /* common + address + path, bytes */
    uint16_t payload_len;     /* from the common header */
    uint16_t dst_host_off;
    uint16_t src_host_off;
    uint16_t path_off;
    uint16_t path_len;
    uint16_t hbh_off;         /* 0: absent */
    uint16_t hbh_len;
    uint16_t e2e_off;         /* 0: absent */
    uint16_t e2e_len;
    uint16_t l4_off;          /* upper layer, after any extension headers */
    uint16_t l4_len;
    uint16_t src_port;        /* UDP only */
    uint16_t dst_port;        /* UDP only */
    uint8_t version;
    uint8_t traffic_class;
    uint8_t next_hdr;         /* the common header's NextHdr */
    uint8_t l4_proto;         /* protocol after the extension headers */
    uint8_t path_type;
    uint8_t dst_addr_type;    /* 4-bit type/length nibble: 0x0 IPv4, 0x3 IPv6, 0x4 SVC */
    uint8_t src_addr_type;
    uint8_t dst_host_len;
    uint8_t src_host_len;
    uint8_t curr_inf;
    uint8_t curr_hf;
    uint8_t num_inf;
    uint8_t num_hops;
    uint8_t seg_len[3];
    uint8_t scmp_type;        /* SCMP only */
    uint8_t scmp_code;
    uint8_t _reserved[6];
} scion_rec_t;

/* Parses one packet; returns rec->status. */
int scion_parse(const uint8_t *pkt, size_t len, scion_rec_t *rec);

/* Parses `count` packets laid out in slots of `stride` bytes with lengths[i] valid bytes each.
 * Returns how many parsed without error. */
size_t scion_parse_batch(const uint8_t *slots, size_t stride, const uint32_t *lengths, size_t count,
                         scion_rec_t *recs);

/* The 16-bit one's-complement sum of the SCION pseudo-header and the upper-layer bytes of a parsed
 * packet, as stored in a checksum field (the field itself is summed as found: a packet whose checksum
 * is right gives 0 here when `zero_field` is 0; with `zero_field` 1 the field is treated as zero and the
 * result is the value to write). */
uint16_t scion_l4_checksum(const uint8_t *pkt, const scion_rec_t *rec, int zero_field);

extern const char *const scion_reason_names[SCION_REASON_COUNT];

#endif
