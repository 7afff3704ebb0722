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

#endif
