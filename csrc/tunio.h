/* Batched TUN device I/O over the shared slot-batch layout (see udpio.h for the layout).
 *
 * Rules kept here:
 * - Safe without the GIL; one read() or write() per packet (a TUN fd moves one packet per call).
 * - Return value >= 0 is a count; < 0 is -errno; EAGAIN before the first packet returns 0; an error after
 *   at least one packet returns the count so far (the next call reports it for exactly that packet).
 * - A packet longer than the stride is flagged by lengths[i] = stride + 1 (the slot holds its first
 *   stride bytes; the kernel drops the rest and does not say how much).
 */
#ifndef SCION_TUNIO_H
#define SCION_TUNIO_H

#include <stddef.h>
#include <stdint.h>

/* Reads up to n packets from a non-blocking TUN fd into slots 0..n-1. */
int tunio_read(int fd, unsigned char *buf, size_t stride, uint32_t *lengths, unsigned n);

/* Writes packets k = start..start+n-1: the slot is order ? order[k] : k; the packet is lengths[slot]
 * bytes at buf + slot*stride + (offsets ? offsets[slot] : 0); a packet outside its slot is EINVAL. */
int tunio_write(int fd, const unsigned char *buf, size_t stride, size_t nslots, const uint32_t *lengths,
                const uint32_t *offsets, const uint32_t *order, unsigned start, unsigned n);

/* ---- virtio-net header mode (IFF_VNET_HDR + TUNSETOFFLOAD), as wireguard-go's tun/offload_linux.go ----
 *
 * Every read and write on such an fd starts with a 10-byte virtio_net_hdr. With offloads on, a read can
 * return a GSO super-packet (TCP up to 64 KiB cut at gso_size, or UDP with USO) whose checksum is only
 * partial; tunio_read_vnet splits it into MTU-sized packets with full checksums, so the rest of the
 * pipeline only ever sees ordinary, valid IP packets. On write, tunio_write_vnet coalesces runs of
 * TCP segments (and UDP datagrams) of one flow into one GSO write, the kernel's GRO done in user space.
 *
 * Rules kept here:
 * - Every packet leaving tunio_read_vnet is a valid IP packet: lengths, IPv4 header checksum and L4
 *   checksum right, TCP sequence numbers advanced, FIN/PSH only on the last segment, CWR only on the first.
 * - A packet the split cannot make valid (inconsistent header) is dropped and counted, never passed on.
 * - Coalescing joins only what the kernel's GRO would: same addresses, ports, TTL/hop limit, TOS and DF;
 *   TCP in sequence with the same ack, window and options, flags ACK (PSH only on the last); UDP of equal
 *   size (only the last may be shorter). Everything else is written alone with a zero header.
 */
#define TUNIO_VNET_HDR_LEN 10
#define TUNIO_GSO_NONE 0
#define TUNIO_GSO_TCPV4 1
#define TUNIO_GSO_UDP 3
#define TUNIO_GSO_TCPV6 4
#define TUNIO_GSO_UDP_L4 5
#define TUNIO_F_NEEDS_CSUM 1
#define TUNIO_MAX_SEGS 64 /* the most segments one coalesced write carries (the kernel's UDP GRO cap) */

/* A pending super-packet: what a read returned that did not fit the batch's slots yet. */
typedef struct {
    uint32_t len;  /* bytes held (virtio header included); 0: none */
    uint32_t next; /* first segment not yet handed out */
    uint8_t pkt[TUNIO_VNET_HDR_LEN + 65535 + 1];
} tunio_reader;

/* Splits one read (virtio header + packet, len bytes) into slots 0..n-1 from segment `first`.
 * Returns the number of packets placed; *next_seg = the next segment still to place (0 when done),
 * or a negative value when the packet cannot be made valid (drop it). */
int tunio_gso_split(const uint8_t *pkt, size_t len, uint32_t first, unsigned char *buf, size_t stride,
                    uint32_t *lengths, unsigned n, uint32_t *next_seg);

/* Reads up to n packets from a non-blocking vnet-header TUN fd, splitting super-packets (a split left
 * over continues in the next call). *dropped counts reads that could not be made valid. Returns the count,
 * or -errno as tunio_read. */
int tunio_read_vnet(int fd, tunio_reader *r, unsigned char *buf, size_t stride, uint32_t *lengths, unsigned n,
                    uint32_t *dropped);

/* Writes n IP packets to a vnet-header TUN fd (or any fd taking one message per writev), coalescing
 * runs of one flow. work: 3*n uint32 of scratch. A refused write is counted in *failed (its packets;
 * first errno in *first_errno) and the rest still go. *writes = writev calls made. Returns packets written. */
size_t tunio_write_vnet(int fd, const uint8_t *const *ptrs, const uint32_t *lens, size_t n, uint32_t *work,
                        size_t *failed, int *first_errno, size_t *writes);

/* tunio_write_vnet with at most udp_max_segs datagrams in one coalesced UDP write (1..TUNIO_MAX_SEGS;
 * 1: every UDP datagram alone). A receiving socket without UDP_GRO takes a coalesced write's datagrams
 * into its buffer all at once; smaller runs leave its reader time between them. TCP is not capped. */
size_t tunio_write_vnet_capped(int fd, const uint8_t *const *ptrs, const uint32_t *lens, size_t n, uint32_t *work,
                               size_t *failed, int *first_errno, size_t *writes, uint32_t udp_max_segs);

/* Writes packets k = start..start+n-1 as tunio_write does, each behind a zero virtio header. */
int tunio_write_plain_vnet(int fd, const unsigned char *buf, size_t stride, size_t nslots, const uint32_t *lengths,
                           const uint32_t *offsets, const uint32_t *order, unsigned start, unsigned n);

#endif
