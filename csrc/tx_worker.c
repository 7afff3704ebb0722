/* The TUN -> wire worker thread. See tx_worker.h for the rules it keeps. */
#define _GNU_SOURCE
#include "tx_worker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "aead_batch.h"

struct txw {
    int tun_fd, vnet, sock_fd, stop_fd, notify_fd;
    unsigned batch;
    size_t stride;
    uint32_t frame_size;
    uint8_t msg_type;
    pl_prefix *pfx;
    size_t npfx;

    pthread_t thread;
    int started, stopping, mu_ready;
    pthread_mutex_t mu;
    txw_lane *lanes; /* TXW_REMOTES */
    int gso;

    /* Batch buffers, used by the thread only. */
    tunio_reader *reader;
    uint8_t *inp;
    uint32_t *in_lens;
    uint8_t *remote_of;
    size_t out_stride, max_out;
    uint8_t *out;
    uint32_t *out_lens, *out_offsets, *order;
    uint8_t *out_status;
    uint64_t *ctrs;

    /* Handoff ring (thread produces, Python consumes). */
    unsigned nh;
    uint8_t *h_data;
    uint32_t *h_lens;
    uint64_t h_head, h_tail;

    /* Send records ring. */
    unsigned ns;
    txw_send *s_recs;
    uint64_t s_head, s_tail;

    uint64_t counters[TXW_COUNTER_COUNT];
    uint64_t errnos[TXW_ERRNOS + 1]; /* the last one: any errno at or above TXW_ERRNOS */
    txw_remote_counters *rc;         /* TXW_REMOTES */
};

static inline void bump(uint64_t *c, uint64_t by) { __atomic_fetch_add(c, by, __ATOMIC_RELAXED); }

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

txw *txw_new(int tun_fd, int vnet, int sock_fd, const pl_prefix *pfx, size_t npfx, unsigned batch,
             size_t stride, uint32_t frame_size, uint8_t msg_type, unsigned handoff_slots, unsigned send_slots)
{
    /* A sealed frame must fit a UDP length field with the 8-byte UDP header: pl_stamp skips longer ones,
     * which would leave sealed counters unsent and the send records' counter runs wrong. */
    if (batch == 0 || stride < 64 || frame_size < PL_SIG_HDR + PL_SIG_MIN_START
        || frame_size > TXW_MAX_FRAME || handoff_slots == 0 || send_slots == 0 || npfx > 65536) {
        errno = EINVAL;
        return NULL;
    }
    txw *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    /* Own copies of the descriptors: if Python closes its TUN device or socket while the thread runs,
     * the numbers cannot be reused under the thread for some other file. */
    w->tun_fd = fcntl(tun_fd, F_DUPFD_CLOEXEC, 0);
    w->vnet = vnet;
    w->sock_fd = fcntl(sock_fd, F_DUPFD_CLOEXEC, 0);
    w->stop_fd = w->notify_fd = -1;
    w->batch = batch;
    w->stride = stride;
    w->frame_size = frame_size;
    w->msg_type = msg_type;
    w->gso = 1;
    w->npfx = npfx;
    /* As pipeline.pyx's TxBatch: a frame slot holds headroom | envelope header | frame | tag. */
    w->out_stride = TXW_HEADROOM + AEAD_HEADER_LEN + frame_size + AEAD_TAG_LEN;
    w->max_out = (size_t)batch * (stride / (frame_size - PL_SIG_HDR) + 2) + 1;
    w->nh = handoff_slots;
    w->ns = send_slots;
    w->pfx = calloc(npfx ? npfx : 1, sizeof(pl_prefix));
    w->lanes = calloc(TXW_REMOTES, sizeof(txw_lane));
    w->rc = calloc(TXW_REMOTES, sizeof(txw_remote_counters));
    w->reader = vnet ? calloc(1, sizeof(tunio_reader)) : NULL;
    w->inp = calloc(batch, stride);
    w->in_lens = calloc(batch, sizeof(uint32_t));
    w->remote_of = calloc(batch, 1);
    w->out = calloc(w->max_out, w->out_stride);
    w->out_lens = calloc(w->max_out, sizeof(uint32_t));
    w->out_offsets = calloc(w->max_out, sizeof(uint32_t));
    w->order = calloc(w->max_out, sizeof(uint32_t));
    w->out_status = calloc(w->max_out, 1);
    w->ctrs = calloc(w->max_out, sizeof(uint64_t));
    w->h_data = calloc(handoff_slots, stride);
    w->h_lens = calloc(handoff_slots, sizeof(uint32_t));
    w->s_recs = calloc(send_slots, sizeof(txw_send));
    if (!w->pfx || !w->lanes || !w->rc || (vnet && !w->reader) || !w->inp || !w->in_lens || !w->remote_of
        || !w->out || !w->out_lens || !w->out_offsets || !w->order || !w->out_status || !w->ctrs || !w->h_data
        || !w->h_lens || !w->s_recs) {
        txw_free(w);
        errno = ENOMEM;
        return NULL;
    }
    if (npfx)
        memcpy(w->pfx, pfx, npfx * sizeof(pl_prefix));
    w->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->tun_fd >= 0 && w->sock_fd >= 0 && w->stop_fd >= 0 && w->notify_fd >= 0
        && pthread_mutex_init(&w->mu, NULL) == 0)
        w->mu_ready = 1;
    if (!w->mu_ready) {
        int e = errno;
        txw_free(w);
        errno = e ? e : ENOMEM;
        return NULL;
    }
    return w;
}

/* ---- rings ---------------------------------------------------------------------------------------- */

static int handoff_put(txw *w, const uint8_t *pkt, uint32_t len)
{
    uint64_t tail = w->h_tail; /* only this thread writes it */
    if (tail - __atomic_load_n(&w->h_head, __ATOMIC_ACQUIRE) >= w->nh) {
        bump(&w->counters[TXW_HANDOFF_FULL], 1);
        return 0;
    }
    size_t at = (size_t)(tail % w->nh);
    size_t keep = len < w->stride ? len : w->stride;
    memcpy(w->h_data + at * w->stride, pkt, keep);
    w->h_lens[at] = len;
    __atomic_store_n(&w->h_tail, tail + 1, __ATOMIC_RELEASE);
    bump(&w->counters[TXW_HANDED_OFF], 1);
    return 1;
}

size_t txw_take_handoff(txw *w, uint8_t *dst, uint32_t *lens, size_t max)
{
    uint64_t head = w->h_head, tail = __atomic_load_n(&w->h_tail, __ATOMIC_ACQUIRE);
    size_t k = 0;
    for (; head < tail && k < max; head++, k++) {
        size_t at = (size_t)(head % w->nh);
        uint32_t len = w->h_lens[at];
        memcpy(dst + k * w->stride, w->h_data + at * w->stride, len < w->stride ? len : w->stride);
        lens[k] = len;
    }
    __atomic_store_n(&w->h_head, head, __ATOMIC_RELEASE);
    return k;
}

static void send_put(txw *w, const txw_send *rec)
{
    uint64_t tail = w->s_tail;
    if (tail - __atomic_load_n(&w->s_head, __ATOMIC_ACQUIRE) >= w->ns) {
        bump(&w->counters[TXW_SENDS_LOST], 1);
        return;
    }
    w->s_recs[tail % w->ns] = *rec;
    __atomic_store_n(&w->s_tail, tail + 1, __ATOMIC_RELEASE);
}

size_t txw_take_sends(txw *w, txw_send *out, size_t max)
{
    uint64_t head = w->s_head, tail = __atomic_load_n(&w->s_tail, __ATOMIC_ACQUIRE);
    size_t k = 0;
    for (; head < tail && k < max; head++, k++)
        out[k] = w->s_recs[head % w->ns];
    __atomic_store_n(&w->s_head, head, __ATOMIC_RELEASE);
    return k;
}

/* ---- one batch ------------------------------------------------------------------------------------ */

/* Sends the stamped datagrams order[0..live) to dest; waits briefly for room; returns how many went
 * (a datagram the kernel refused with an error counts as gone: it is not retried). */
static size_t send_all(txw *w, size_t frames, size_t live, const udpio_addr *dest)
{
    size_t sent = 0;
    uint64_t deadline = 0;
    while (sent < live) {
        int refused = 0, rc;
        if (w->gso)
            rc = udpio_send_gso(w->sock_fd, w->out, w->out_stride, frames, w->out_lens, w->out_offsets, dest,
                                w->order, (unsigned)sent, (unsigned)(live - sent), &refused);
        else
            rc = udpio_send(w->sock_fd, w->out, w->out_stride, frames, w->out_lens, w->out_offsets, dest,
                            UDPIO_DEST_ONE, w->order, (unsigned)sent, (unsigned)(live - sent));
        if (refused) {
            w->gso = 0;
            bump(&w->counters[TXW_GSO_REFUSED], 1);
        }
        if (rc < 0) {
            unsigned e = (unsigned)-rc;
            bump(&w->errnos[e < TXW_ERRNOS ? e : TXW_ERRNOS], 1);
            sent++;
            continue;
        }
        if (rc == 0) {
            uint64_t t = now_ns();
            if (deadline == 0)
                deadline = t + TXW_SEND_WAIT_NS;
            struct pollfd pf = {w->sock_fd, POLLOUT, 0};
            struct timespec left = {0, (long)(deadline > t ? deadline - t : 0)};
            if (deadline <= t || ppoll(&pf, 1, &left, NULL) <= 0) {
                bump(&w->counters[TXW_WOULD_BLOCK], live - sent);
                break;
            }
            continue;
        }
        sent += (size_t)rc;
    }
    return sent;
}

/* Frames, seals, stamps and sends the batch's packets of remote r (lane armed, lock held). */
static void send_remote(txw *w, unsigned r, size_t n)
{
    txw_lane *lane = &w->lanes[r];
    txw_remote_counters *rc = &w->rc[r];
    size_t taken = 0;
    long k = pl_frame(w->inp, w->stride, w->in_lens, w->remote_of, (uint8_t)r, n, w->out, w->out_stride,
                      TXW_HEADROOM + AEAD_HEADER_LEN, w->out_lens, w->out_status, w->max_out, w->frame_size,
                      lane->session, lane->stream, &lane->seq, &taken);
    if (k < 0) {
        bump(&w->counters[TXW_FRAME_OVERFLOW], 1);
        return;
    }
    if (k == 0)
        return;
    bump(&rc->packets, taken);
    bump(&rc->frames, (uint64_t)k);
    size_t sealed = aead_seal_batch(lane->key, w->out, w->out_stride, (size_t)k, w->out_lens, NULL,
                                    TXW_HEADROOM, w->out_status, w->ctrs, w->msg_type, lane->receiver,
                                    lane->next_counter);
    if (sealed < (size_t)k)
        bump(&w->counters[TXW_EXHAUSTED], (size_t)k - sealed);
    size_t live = pl_stamp(w->out, w->out_stride, (size_t)k, w->out_lens, w->out_status, TXW_HEADROOM,
                           lane->tmpl, lane->hdr_len, &lane->trec, w->out_offsets, w->order);
    if (live == 0)
        return;
    uint64_t at = now_ns(), live_bytes = 0, sent_bytes = 0;
    const uint32_t over = lane->hdr_len + AEAD_OVERHEAD;
    for (size_t j = 0; j < live; j++)
        live_bytes += w->out_lens[w->order[j]] - over;
    /* Sealed slots took consecutive counters in slot order, and order[] lists them in slot order. The
     * record goes up before the send: the ack of a datagram can be back before this thread runs on. */
    uint64_t first = w->ctrs[w->order[0]];
    txw_send rec = {r, lane->path_slot, (uint32_t)live, 0, first, live_bytes, at};
    send_put(w, &rec);
    size_t sent = send_all(w, (size_t)k, live, &lane->dest);
    for (size_t j = 0; j < sent; j++)
        sent_bytes += w->out_lens[w->order[j]] - over;
    if (sent < live) { /* the rest never went: taken back, so the path's count of sent data stays right */
        txw_send back = {r, lane->path_slot, (uint32_t)(live - sent), 1, first + sent, live_bytes - sent_bytes,
                         at};
        send_put(w, &back);
    }
    if (sent == 0)
        return;
    bump(&rc->datagrams, sent);
    bump(&rc->bytes, sent_bytes);
    __atomic_store_n(&rc->last_tx_ns, at, __ATOMIC_RELAXED);
}

static void process(txw *w, size_t n)
{
    uint8_t seen[256] = {0};
    uint8_t list[TXW_REMOTES];
    size_t nremotes = 0, handed = 0;

    bump(&w->counters[TXW_TUN_READ], n);
    pthread_mutex_lock(&w->mu);
    pl_classify(w->inp, w->stride, w->in_lens, n, w->pfx, w->npfx, w->remote_of);
    /* One pass in read order: what the C path does not take goes up to Python (and is marked so
     * pl_frame skips it); the rest is listed per remote. */
    for (size_t i = 0; i < n; i++) {
        uint8_t r = w->remote_of[i];
        if (r == PL_SLOW || !w->lanes[r].armed) {
            handed += (size_t)handoff_put(w, w->inp + i * w->stride, w->in_lens[i]);
            w->remote_of[i] = PL_SLOW;
            continue;
        }
        if (!seen[r]) {
            seen[r] = 1;
            list[nremotes++] = r;
        }
    }
    for (size_t j = 0; j < nremotes; j++)
        send_remote(w, list[j], n);
    pthread_mutex_unlock(&w->mu);
    bump(&w->counters[TXW_BATCHES], 1);
    if (handed) {
        uint64_t one = 1;
        ssize_t rc = write(w->notify_fd, &one, sizeof one);
        (void)rc; /* EAGAIN: the counter is already huge and readable; nothing is lost */
    }
}

static int read_batch(txw *w)
{
    if (w->reader) {
        uint32_t dropped = 0;
        int n = tunio_read_vnet(w->tun_fd, w->reader, w->inp, w->stride, w->in_lens, w->batch, &dropped);
        if (dropped)
            bump(&w->counters[TXW_BAD_OFFLOAD], dropped);
        return n;
    }
    return tunio_read(w->tun_fd, w->inp, w->stride, w->in_lens, w->batch);
}

static void *run(void *arg)
{
    txw *w = arg;
    int tun_ok = 1;
    while (!__atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE)) {
        /* A split super-packet left over is read on without waiting. */
        if (!(w->reader && w->reader->len)) {
            struct pollfd fds[2] = {{w->stop_fd, POLLIN, 0}, {w->tun_fd, POLLIN, 0}};
            int r = poll(fds, tun_ok ? 2 : 1, -1);
            if (r < 0) {
                if (errno != EINTR) { /* out of memory in the kernel: do not spin on it */
                    struct timespec pause = {0, 1000000};
                    nanosleep(&pause, NULL);
                }
                continue;
            }
            bump(&w->counters[TXW_WAKEUPS], 1);
            if (fds[0].revents)
                break;
            if (fds[1].revents & (POLLERR | POLLHUP | POLLNVAL) && !(fds[1].revents & POLLIN)) {
                bump(&w->counters[TXW_TUN_CLOSED], 1);
                tun_ok = 0; /* wait for the stop only: spinning on a dead fd helps nobody */
                continue;
            }
        }
        for (int round = 0; round < TXW_DRAIN_ROUNDS; round++) {
            int n = read_batch(w);
            if (n < 0) {
                bump(&w->counters[TXW_TUN_ERRORS], 1);
                if (n == -EBADF) {
                    bump(&w->counters[TXW_TUN_CLOSED], 1);
                    tun_ok = 0;
                }
                break;
            }
            if (n == 0)
                break;
            process(w, (size_t)n);
            if ((unsigned)n < w->batch && !(w->reader && w->reader->len))
                break;
        }
    }
    return NULL;
}

int txw_start(txw *w)
{
    if (w->started)
        return -EALREADY;
    uint64_t junk;
    ssize_t got = read(w->stop_fd, &junk, sizeof junk); /* a stop before this start is over */
    (void)got;
    __atomic_store_n(&w->stopping, 0, __ATOMIC_RELEASE);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* signals stay with the interpreter's thread */
    int rc = pthread_create(&w->thread, NULL, run, w);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return -rc;
    w->started = 1;
    return 0;
}

void txw_stop(txw *w)
{
    if (!w->started)
        return;
    __atomic_store_n(&w->stopping, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    ssize_t rc = write(w->stop_fd, &one, sizeof one);
    (void)rc;
    pthread_join(w->thread, NULL);
    w->started = 0;
}

void txw_free(txw *w)
{
    if (!w)
        return;
    txw_stop(w);
    if (w->mu_ready)
        pthread_mutex_destroy(&w->mu);
    if (w->stop_fd >= 0)
        close(w->stop_fd);
    if (w->notify_fd >= 0)
        close(w->notify_fd);
    if (w->tun_fd >= 0)
        close(w->tun_fd);
    if (w->sock_fd >= 0)
        close(w->sock_fd);
    free(w->pfx);
    free(w->lanes);
    free(w->rc);
    free(w->reader);
    free(w->inp);
    free(w->in_lens);
    free(w->remote_of);
    free(w->out);
    free(w->out_lens);
    free(w->out_offsets);
    free(w->order);
    free(w->out_status);
    free(w->ctrs);
    free(w->h_data);
    free(w->h_lens);
    free(w->s_recs);
    free(w);
}

void txw_lock(txw *w) { pthread_mutex_lock(&w->mu); }
void txw_unlock(txw *w) { pthread_mutex_unlock(&w->mu); }
txw_lane *txw_lane_of(txw *w, unsigned r) { return r < TXW_REMOTES ? &w->lanes[r] : NULL; }
int txw_notify_fd(const txw *w) { return w->notify_fd; }
size_t txw_stride(const txw *w) { return w->stride; }
int txw_gso(const txw *w) { return w->gso; }
int txw_running(const txw *w) { return w->started; }

uint64_t txw_counter(const txw *w, unsigned which)
{
    return which < TXW_COUNTER_COUNT ? __atomic_load_n(&w->counters[which], __ATOMIC_RELAXED) : 0;
}

uint64_t txw_errno_count(const txw *w, unsigned err)
{
    return err <= TXW_ERRNOS ? __atomic_load_n(&w->errnos[err], __ATOMIC_RELAXED) : 0;
}

void txw_remote(const txw *w, unsigned r, txw_remote_counters *out)
{
    memset(out, 0, sizeof *out);
    if (r >= TXW_REMOTES)
        return;
    const txw_remote_counters *c = &w->rc[r];
    out->packets = __atomic_load_n(&c->packets, __ATOMIC_RELAXED);
    out->frames = __atomic_load_n(&c->frames, __ATOMIC_RELAXED);
    out->datagrams = __atomic_load_n(&c->datagrams, __ATOMIC_RELAXED);
    out->bytes = __atomic_load_n(&c->bytes, __ATOMIC_RELAXED);
    out->last_tx_ns = __atomic_load_n(&c->last_tx_ns, __ATOMIC_RELAXED);
}
