/* Batched UDP I/O (recvmmsg/sendmmsg) over the shared slot-batch layout.
 *
 * A batch is N slots in one buffer: slot i starts at buf + i*stride; lengths[i] is its byte count.
 * Addresses travel in fixed 24-byte records (udpio_addr) so C code (the router's batch step, the
 * gateway) can read and write them without Python.
 *
 * Rules kept here:
 * - Every function is safe without the GIL: no Python, no allocation on the heap.
 * - Return value >= 0 is a count; < 0 is -errno. EAGAIN before the first packet returns 0.
 * - An error after at least one packet returns the count so far: the caller resumes at that packet and
 *   sees the error (now first) on the next call, so exactly the failing packet is known.
 * - A received length greater than the stride marks a truncated packet (the slot holds its first
 *   stride bytes). It is the datagram's real length.
 */
#ifndef SCION_UDPIO_H
#define SCION_UDPIO_H

#include <stddef.h>
#include <stdint.h>

/* One endpoint. family is AF_INET or AF_INET6 (0: none). IPv4 sits in addr[0..4), rest zero.
 * Port in host byte order. IPv4-mapped IPv6 sources are stored as AF_INET. */
typedef struct {
    uint16_t family;
    uint16_t port;
    uint32_t scope_id;
    uint8_t addr[16];
} udpio_addr;

#define UDPIO_ADDR_SIZE 24

/* Destination modes of udpio_send. */
#define UDPIO_DEST_NONE 0  /* connected socket: no address per message */
#define UDPIO_DEST_ONE 1   /* dests[0] for every packet */
#define UDPIO_DEST_SLOT 2  /* dests[slot] for the packet in that slot */

/* Receives up to n datagrams into slots 0..n-1 (MSG_DONTWAIT). addrs may be NULL. */
int udpio_recv(int fd, unsigned char *buf, size_t stride, uint32_t *lengths, udpio_addr *addrs,
               unsigned n);

/* Sends packets k = start..start+n-1: the slot is order ? order[k] : k; the packet is
 * lengths[slot] bytes at buf + slot*stride + (offsets ? offsets[slot] : 0). A packet that does not fit
 * its slot is an EINVAL error, a destination record of unknown family EAFNOSUPPORT (both for that
 * packet, as above). nslots bounds every slot index (EINVAL beyond). */
int udpio_send(int fd, const unsigned char *buf, size_t stride, size_t nslots, const uint32_t *lengths,
               const uint32_t *offsets, const udpio_addr *dests, int dest_mode, const uint32_t *order,
               unsigned start, unsigned n);

/* ---- UDP GSO (UDP_SEGMENT) on send, GRO (UDP_GRO) on receive ----
 *
 * udpio_send_gso sends like udpio_send to one destination (DEST_NONE or DEST_ONE), but a run of packets
 * of one size (the last may be shorter; at most 64 and 64000 bytes) goes as one message the kernel cuts
 * at that size. A run the kernel refuses as GSO (segment above the route MTU, no GSO support) is sent
 * again without it, and *gso_refused is set so the caller may stop asking. Counts are packets.
 *
 * udpio_gro_recv receives into slot batches from a socket with UDP_GRO on: a coalesced message is cut
 * back into its datagrams (the gso_size the kernel reports), each in its own slot with the sender's
 * address; what does not fit the batch waits in the reader for the next call.
 */
#define UDPIO_GSO_MAX_SEGS 64
#define UDPIO_GSO_MAX_BYTES 64000
#define UDPIO_GRO_MSGS 8
#define UDPIO_GRO_BUF 65536

typedef struct {
    unsigned nmsg, cur;  /* messages held, the one being cut */
    uint32_t off;        /* where in it the next datagram starts */
    uint32_t len[UDPIO_GRO_MSGS], seg[UDPIO_GRO_MSGS];
    udpio_addr addr[UDPIO_GRO_MSGS];
    unsigned char data[UDPIO_GRO_MSGS][UDPIO_GRO_BUF];
} udpio_gro_reader;

int udpio_send_gso(int fd, const unsigned char *buf, size_t stride, size_t nslots, const uint32_t *lengths,
                   const uint32_t *offsets, const udpio_addr *dest, const uint32_t *order, unsigned start,
                   unsigned n, int *gso_refused);

int udpio_gro_recv(int fd, udpio_gro_reader *r, unsigned char *buf, size_t stride, uint32_t *lengths,
                   udpio_addr *addrs, unsigned n);

#endif
