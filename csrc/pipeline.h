/* The gateway's data pipeline steps between the batch primitives: TUN slots -> SIG frames -> (seal) ->
 * SCION/UDP headers -> sendmmsg, and recvmmsg -> (parse) -> data envelopes -> (open) -> SIG deframing ->
 * TUN writes. Sealing and opening are aead_batch's; these are the steps around them.
 *
 * Rules kept here:
 * - Safe without the GIL; no allocation; every index and length is checked against its buffer.
 * - Byte-exact with the Python reference: pl_frame packs exactly as scion/sig_frame.py's FrameEncoder
 *   (same headers, same sequence numbers, same cut points); pl_stamp writes what UdpPacketBuilder builds.
 * - Only the common case runs here. Whatever is unusual (a packet the encoder would refuse, no remote,
 *   a frame that is not whole packets, a message that is not a data envelope) is marked for the Python
 *   path, which keeps the reference behaviour and counts the drop by its reason.
 */
#ifndef SCION_PIPELINE_H
#define SCION_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "scion_parse.h"

#define PL_SLOW 0xFF      /* per-slot mark: the Python path handles this packet or frame */
#define PL_SIG_HDR 16
#define PL_SIG_MIN_START 40

/* One prefix of a remote AS: IPv4 in net[0..4). 20 bytes. */
typedef struct {
    uint8_t v6;
    uint8_t plen;
    uint8_t remote;
    uint8_t pad;
    uint8_t net[16];
} pl_prefix;

/* Per TUN packet: the remote index (prefix owner) of a packet the encoder takes as it is (well-formed
 * IPv4/IPv6 whose length field matches, unicast, inside a prefix), else PL_SLOW. Returns the number of
 * packets not PL_SLOW. */
size_t pl_classify(const uint8_t *buf, size_t stride, const uint32_t *lens, size_t n, const pl_prefix *pfx,
                   size_t npfx, uint8_t *remote_out);

/* Packs the packets whose remote_of[i] == want into SIG frames, one frame per output slot: frame k is
 * written at out + k*out_stride + out_off, out_lens[k] = its length (header + payload), out_status[k] = 0.
 * *seq is the next sequence number (advanced). Returns the number of frames, or -1 if max_out slots
 * could not hold them (nothing is consumed from *seq then). */
long pl_frame(const uint8_t *in, size_t in_stride, const uint32_t *in_lens, const uint8_t *remote_of,
              uint8_t want, size_t n_in, uint8_t *out, size_t out_stride, uint32_t out_off, uint32_t *out_lens,
              uint8_t *out_status, size_t max_out, uint32_t frame_size, uint8_t session, uint32_t stream,
              uint64_t *seq, size_t *packets_taken);

/* After aead_seal_batch at envelope offset env_off (lengths[i] = env_off + envelope length): writes the
 * SCION/UDP header template (hdr_len bytes, its parse record trec) right before each live envelope,
 * patches PayloadLen, the UDP length and checksum; lengths[i] becomes the datagram length and
 * offsets[i] where it starts in the slot. Returns the number of live slots, listed in order[]. */
size_t pl_stamp(uint8_t *buf, size_t stride, size_t n, uint32_t *lengths, const uint8_t *status,
                uint32_t env_off, const uint8_t *tmpl, uint32_t hdr_len, const scion_rec_t *trec,
                uint32_t *offsets, uint32_t *order);

/* Per received datagram: 1 when it is a whole, parsed SCION/UDP datagram to `port` carrying a data
 * envelope (type `type`) of at least 32 bytes, else 0; offsets[i] = envelope offset, receivers[i] = its
 * receiver index. Returns how many are data envelopes. */
size_t pl_rx_select(const uint8_t *buf, size_t stride, const uint32_t *lengths, const scion_rec_t *recs,
                    size_t n, uint16_t port, uint8_t type, uint32_t *offsets, uint32_t *receivers,
                    uint8_t *is_data);

/* 1 when slots i and j came on the same route: same SCION path bytes, same underlay source record. */
int pl_same_route(const uint8_t *buf, size_t stride, const scion_rec_t *recs, const uint8_t *addrs,
                  size_t addr_size, size_t i, size_t j);

/* Reassembly carried across frames and batches of one peer: the packet whose first bytes came in
 * the last frame handled here, awaiting frame next_seq of (session, stream). */
typedef struct {
    int active;
    uint8_t session;
    uint32_t stream;
    uint64_t next_seq;
    uint32_t have, total;
    uint8_t data[65600]; /* the longest IPv6 packet: 40 + 65535 */
} pl_carry;

/* Deframes opened SIG frames (frame at offsets[i] + 16, lengths[i] bytes; live when status[i] == 0 and
 * lengths[i] > 0), as sig_frame.FrameDecoder does for frames in sequence: whole packets are listed where
 * they lie; a packet continued in the next frame of its stream is reassembled (carry) into the arena
 * (at least n*stride + 65600 bytes). The first frame that is anything else (gap, restart, late frame,
 * malformed, bad index) and every live frame after it get slow[i] = 1 for the Python decoder, which then
 * owns the stream's state (the carry is dropped). Packets whose source lies in none of the prefixes of
 * `remote` are counted in *spoofed and not listed. Returns the number listed in pkt_ptrs/pkt_lens. */
size_t pl_deframe(const uint8_t *buf, size_t stride, const uint32_t *offsets, const uint32_t *lengths,
                  const uint8_t *status, size_t n, const pl_prefix *pfx, size_t npfx, uint8_t remote,
                  pl_carry *carry, uint8_t *arena, size_t arena_size, const uint8_t **pkt_ptrs,
                  uint32_t *pkt_lens, size_t max_pkts, uint8_t *slow, size_t *spoofed, size_t *frames_fast);

/* Writes n packets (ptrs[k], lens[k] bytes) to a TUN fd, one write() each. A refused packet is
 * counted in *failed (first errno in *first_errno) and the rest still go. Returns packets written. */
size_t pl_tun_write(int fd, const uint8_t *const *ptrs, const uint32_t *lens, size_t n, size_t *failed,
                    int *first_errno);

#endif
