/* The TUN -> wire direction as one C thread: poll the TUN fd, read a batch, classify it by the remote
 * prefixes, and for each remote whose lane is armed frame, seal, stamp and send its packets; everything
 * else is handed up to Python. No Python and no GIL in the thread, ever.
 *
 * Rules kept here:
 * - The batch steps are the existing ones, called, not copied: tunio_read / tunio_read_vnet (GSO split),
 *   pl_classify, pl_frame, aead_seal_batch (its atomic counter reservation lets the trio thread seal
 *   keepalives and acks with the same key meanwhile), pl_stamp, udpio_send_gso / udpio_send.
 * - One mutex guards the lanes. The thread holds it while it processes a batch (never while it polls);
 *   Python arms and disarms lanes under it, so once txw_unlock() follows a disarm the thread no longer
 *   touches that lane's key, and Python may close (wipe) it.
 * - A remote's SIG frames come from one framer at a time: while its lane is armed the lane's seq is the
 *   stream's next sequence number; disarming hands it back to the Python encoder.
 * - Nothing blocks the thread on Python: what Python must see goes into bounded single-producer /
 *   single-consumer rings (handed-up packets; per batch the counter range and path slot of what is sent,
 *   for the acks' SendLog, published before the send and corrected after it if some could not go). A full ring drops and counts (TXW_HANDOFF_FULL, TXW_SENDS_LOST).
 * - A send that finds the socket buffer full waits at most TXW_SEND_WAIT_NS for room, then drops the rest
 *   of that batch and counts it (TXW_WOULD_BLOCK), as the trio batch path does.
 * - Counters are only written by the thread (relaxed atomics) and read by Python at any time.
 * - The worker reads and sends on its own duplicates of the TUN and socket descriptors (closed when it
 *   is freed): Python closing its device or socket never leaves the thread on a reused fd number.
 */
#ifndef SCION_TX_WORKER_H
#define SCION_TX_WORKER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "pipeline.h"
#include "scion_parse.h"
#include "tunio.h"
#include "udpio.h"

#define TXW_REMOTES 255          /* remote indexes 0..254 (PL_SLOW is 255) */
#define TXW_HEADROOM 896         /* room before the envelope for the SCION/UDP header (as pipeline.pyx) */
#define TXW_ERRNOS 134           /* send errnos counted one by one below this */
#define TXW_SEND_WAIT_NS 5000000 /* longest wait for room in the socket's send buffer */
#define TXW_DRAIN_ROUNDS 64      /* batches read per wake-up before the stop flag is looked at again */
#define TXW_MAX_FRAME (0xFFFF - 8 - 32) /* longest SIG frame: + UDP header + envelope fits UDP length */

/* Worker-wide counters (indexes into txw.counters). */
enum {
    TXW_TUN_READ,        /* packets read from the TUN device */
    TXW_HANDED_OFF,      /* packets put into the handoff ring */
    TXW_HANDOFF_FULL,    /* packets dropped: the handoff ring was full */
    TXW_BAD_OFFLOAD,     /* GSO super-packets that could not be split validly */
    TXW_WOULD_BLOCK,     /* datagrams dropped: no room in the socket's send buffer in time */
    TXW_GSO_REFUSED,     /* times the kernel refused UDP GSO (plain sendmmsg from then on) */
    TXW_EXHAUSTED,       /* frames not sealed: the key's counter reached its limit */
    TXW_SENDS_LOST,      /* send records dropped: the sends ring was full (acks then find no path) */
    TXW_TUN_ERRORS,      /* TUN reads that failed (other than would-block) */
    TXW_TUN_CLOSED,      /* the TUN fd reported hang-up or error: the thread stopped reading it */
    TXW_FRAME_OVERFLOW,  /* batches whose frames did not fit the out slots (cannot happen by sizing) */
    TXW_BATCHES,         /* batches processed */
    TXW_WAKEUPS,         /* poll wake-ups */
    TXW_COUNTER_COUNT
};

/* Per remote, cumulative (never reset by arm/disarm). last_tx_ns: CLOCK_MONOTONIC of the last send. */
typedef struct {
    uint64_t packets, frames, datagrams, bytes, last_tx_ns;
} txw_remote_counters;

/* What the thread needs to send for one remote. Set under the mutex by txw_arm. */
typedef struct {
    int armed;
    const unsigned char *key; /* the sending AeadKey's bytes (held by Python for as long as armed) */
    uint64_t *next_counter;   /* that key's send counter (shared with the trio thread; atomic) */
    uint32_t receiver;        /* the peer's receiver index of the session */
    uint8_t session;          /* SIG session id */
    uint32_t stream;          /* SIG stream id */
    uint64_t seq;             /* the stream's next frame sequence number */
    uint32_t path_slot;       /* Python's token for (session, path) in the send records */
    uint32_t hdr_len;
    scion_rec_t trec;
    udpio_addr dest;
    uint8_t tmpl[TXW_HEADROOM];
} txw_lane;

/* One batch's sends for one remote: counters first..first+count-1 go on path_slot (recorded before the
 * send); a record with `retract` set follows when the last `count` of them could not be sent after all. */
typedef struct {
    uint32_t remote, path_slot, count, retract;
    uint64_t first, bytes, at_ns;
} txw_send;

typedef struct txw txw;

/* Allocates a worker (not started). Returns NULL on allocation failure or bad sizes (errno set). */
txw *txw_new(int tun_fd, int vnet, int sock_fd, const pl_prefix *pfx, size_t npfx, unsigned batch,
             size_t stride, uint32_t frame_size, uint8_t msg_type, unsigned handoff_slots, unsigned send_slots);
/* Starts the thread (signals blocked in it). 0 or -errno. */
int txw_start(txw *w);
/* Asks the thread to stop and joins it; safe to call twice and on a worker never started. */
void txw_stop(txw *w);
/* Stops (if needed) and frees. */
void txw_free(txw *w);

void txw_lock(txw *w);
void txw_unlock(txw *w);
/* Under the lock: the lane of remote r (r < TXW_REMOTES). */
txw_lane *txw_lane_of(txw *w, unsigned r);

/* The fd that turns readable when packets wait in the handoff ring (an eventfd; read it to clear). */
int txw_notify_fd(const txw *w);
/* Moves up to max handed-up packets out: packet k (lens[k] bytes as read; at most stride of them are
 * kept) to dst + k*stride. Returns how many. Only one consumer at a time. */
size_t txw_take_handoff(txw *w, uint8_t *dst, uint32_t *lens, size_t max);
/* Moves up to max send records out. Only one consumer at a time. */
size_t txw_take_sends(txw *w, txw_send *out, size_t max);
size_t txw_stride(const txw *w);

uint64_t txw_counter(const txw *w, unsigned which);
uint64_t txw_errno_count(const txw *w, unsigned err);
void txw_remote(const txw *w, unsigned r, txw_remote_counters *out);
int txw_gso(const txw *w);
int txw_running(const txw *w);

#endif
