/* The receive direction of the data path (wire -> TUN) in one C thread: poll the underlay UDP socket,
 * receive a batch (recvmmsg, UDP GRO), parse it, open the data envelopes of armed sessions ("lanes"),
 * deframe their SIG frames and write the packets to the TUN device, all without Python.
 *
 * Rules kept here:
 * - The thread never takes the GIL and never calls Python. It reuses the batch pieces (udpio, scion_parse,
 *   pipeline, aead_batch) and copies none of them.
 * - One recursive mutex guards the lanes, the remotes' deframing state and the counters. The thread holds
 *   it while it works on a batch (never while it polls); Python arms, disarms and opens messages of an
 *   armed session under it. So once rxw_disarm returns, the thread no longer touches that lane's key or
 *   window: only then may they be wiped or freed.
 * - A lane is opened only with its own key and replay window (check before decrypting, commit after the
 *   tag verified: aead_open_batch); a lane past its expiry time is treated as absent.
 * - Whatever the thread does not take whole is handed up to Python through a bounded single-producer,
 *   single-consumer ring plus an eventfd: datagrams that are not data envelopes of an armed lane
 *   (handshakes, acks, SCMP, probes, unknown receivers), the frames the C deframer leaves to the Python
 *   decoder, and "ack due" records. A full ring drops the record and counts `handoff_full`; the thread
 *   never blocks on Python.
 * - Acks follow paths/acks.py's AckResponder per remote and arrival route (path bytes, source ISD-AS and
 *   underlay source, as pl_same_route compares): every opened data message counts; at most one ack per
 *   interval per route, the first after a quiet interval at once. Python seals and sends the ack.
 * - Every drop is counted under the reason names the Python path uses (tunnel_drop_names, scion reasons,
 *   spoofed_source, tun_write_failed).
 */
#ifndef SCION_RX_WORKER_H
#define SCION_RX_WORKER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "pipeline.h"
#include "replay.h"
#include "scion_parse.h"
#include "tunnel_drop.h"
#include "udpio.h"

#define RXW_MAX_LANES 64     /* armed sessions at once (peers x their current and previous sessions) */
#define RXW_REMOTES 255      /* remote indexes of the prefix table (pipeline's PL_SLOW is not one) */
#define RXW_ROUTES 8         /* arrival routes remembered per remote for acks (least recently used goes) */
#define RXW_PATH_MAX 1024    /* a SCION path is at most 4 + 3*8 + 64*12 = 796 bytes */
#define RXW_HANDOFF_SLOTS 512

/* Kinds of handed-up records. */
#define RXW_H_DATAGRAM 1 /* a received datagram for the Python path (data: the datagram) */
#define RXW_H_ACK 2      /* an ack is due (counter, received; data: the datagram, payload zeroed) */
#define RXW_H_FRAME 3    /* an opened SIG frame the C deframer left (data: the frame) */

typedef struct {
    uint8_t kind;
    uint8_t remote;
    uint16_t pad;
    uint32_t receiver;
    uint32_t len;
    uint32_t received;
    uint64_t counter;
    udpio_addr addr;
} rxw_record;

typedef struct {
    uint64_t rx_packets, rx_bytes; /* opened messages (keepalives too) and their plaintext bytes */
    uint64_t data;                 /* opened messages with a payload (SIG frames) */
    uint64_t keepalives;
    uint64_t frames_fast;          /* frames deframed here (the rest went up) */
    uint64_t written, tun_failed, spoofed;
    uint64_t drops[TUNNEL_DROP_COUNT];
    int64_t last_rx_ns;            /* CLOCK_MONOTONIC of the last opened message; 0: none yet */
    int tun_errno;                 /* the first errno of a refused TUN write since the last harvest */
} rxw_lane_counters;

typedef struct {
    int armed;
    uint32_t receiver;
    uint8_t remote;
    const unsigned char *key;
    replay_window *window;
    int64_t expires_ns;
    rxw_lane_counters c;
} rxw_lane;

typedef struct {
    int used;
    uint16_t path_len;
    uint64_t src_ia;
    udpio_addr addr;
    uint32_t received;
    int64_t last_ack_ns;
    uint64_t last_use;
    uint8_t path[RXW_PATH_MAX];
} rxw_route;

typedef struct {
    pl_carry *carry; /* the remote's deframer (shared with Python's batch path, under the lock) */
    uint8_t *arena;
    size_t arena_size;
    int py_owns;     /* a frame went up: the Python decoder owns the stream until rxw_stream_idle */
    uint32_t frames_up; /* frames of this remote handed up so far (mod 2^32); each FRAME record carries it */
    uint64_t use_clock;
    rxw_route routes[RXW_ROUTES];
} rxw_remote;

typedef struct {
    uint64_t batches, datagrams, handed_up, handoff_full, recv_errors, parse[SCION_REASON_COUNT];
} rxw_counters;

typedef struct rx_worker {
    int sock_fd, tun_fd, wake_fd, up_fd;
    int gro, vnet;
    uint32_t udp_segs;
    uint16_t port;
    uint8_t data_type;
    int64_t ack_interval_ns;
    size_t batch, stride;
    pl_prefix *pfx;
    size_t npfx;

    pthread_t thread;
    int started;
    int stop;        /* read and written atomically */
    int failed_errno; /* set when the loop ended on its own (the socket went bad) */
    pthread_mutex_t lock;

    uint8_t *buf;
    uint32_t *lengths, *dlens, *offsets, *receivers;
    udpio_addr *addrs;
    scion_rec_t *recs;
    uint8_t *is_data, *status, *slow, *mine, *done;
    uint64_t *counters;
    const uint8_t **pkt_ptrs;
    uint32_t *pkt_lens, *gro_work;
    size_t max_pkts;
    udpio_gro_reader *gro_reader;

    rxw_lane lanes[RXW_MAX_LANES];
    rxw_remote *remotes[RXW_REMOTES];

    rxw_record *ring;
    uint8_t *ring_data;
    uint32_t head, tail; /* head: written by the thread; tail: by the consumer (atomics) */

    rxw_counters c;
} rx_worker;

/* Allocates a worker (not started). pfx/npfx is copied. Returns NULL on allocation failure (errno). */
rx_worker *rxw_new(int sock_fd, int gro, int tun_fd, int vnet, uint32_t udp_segs, uint16_t port, uint8_t data_type,
                   const pl_prefix *pfx, size_t npfx, size_t batch, size_t stride, int64_t ack_interval_ns);
/* Stops (if running) and frees. */
void rxw_free(rx_worker *w);
/* Starts the thread; 0 or -errno. */
int rxw_start(rx_worker *w);
/* Tells the thread to stop and joins it. Idempotent. */
void rxw_stop(rx_worker *w);

void rxw_lock(rx_worker *w);
void rxw_unlock(rx_worker *w);

/* Under the lock (taken inside): installs the remote's deframing state if not known yet, then arms the
 * lane. 0, or -ENOSPC (no free lane), -EINVAL (bad remote), -EEXIST (receiver armed already). */
int rxw_arm(rx_worker *w, uint32_t receiver, const unsigned char *key, replay_window *window, uint8_t remote,
            pl_carry *carry, uint8_t *arena, size_t arena_size, int64_t expires_ns);
/* Under the lock: disarms the lane and copies its unharvested counters to *out (may be NULL). Returns 0,
 * or -ENOENT when the receiver has no lane. */
int rxw_disarm(rx_worker *w, uint32_t receiver, rxw_lane_counters *out);
/* The Python decoder of `remote` holds no partial packet after the FRAME record numbered `seen` (its
 * `received` field): the thread deframes the remote's frames again, unless it handed up more frames
 * since; those are still in the ring and must be decoded first, or frames would overtake each other. */
void rxw_stream_idle(rx_worker *w, uint8_t remote, uint32_t seen);

/* Under the lock: copies lane k's counters to *out and zeroes them (last_rx_ns is kept). Returns 1 when
 * lane k is armed (its receiver in *receiver), else 0. */
int rxw_harvest_lane(rx_worker *w, size_t k, uint32_t *receiver, rxw_lane_counters *out);
/* Under the lock: the worker's own counters since the last call (zeroed). */
void rxw_harvest(rx_worker *w, rxw_counters *out);

/* Consumer side of the ring (one consumer thread): the oldest record not taken yet, or NULL; its data
 * pointer in *data. rxw_handoff_pop releases it. */
const rxw_record *rxw_handoff_peek(rx_worker *w, const uint8_t **data);
void rxw_handoff_pop(rx_worker *w);

/* One pass over a batch already in w->buf/lengths/addrs (n datagrams), as the thread does after a
 * receive; takes the lock. For tests and tools; returns the number of datagrams handed up. */
size_t rxw_process(rx_worker *w, size_t n, int64_t now_ns);

int64_t rxw_now_ns(void);

#endif
