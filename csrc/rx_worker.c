/* The receive direction of the data path in one C thread. See rx_worker.h for the rules it keeps. */
#define _GNU_SOURCE
#include "rx_worker.h"

#include <errno.h>
#include <stddef.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "aead_batch.h"
#include "tunio.h"

/* rxworker.pyx harvests the lanes into fixed arrays of 64. */
_Static_assert(RXW_MAX_LANES <= 64, "rxworker.pyx harvests at most 64 lanes");

int64_t rxw_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *xcalloc(size_t n, size_t size, int *bad)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        *bad = 1;
    return p;
}

rx_worker *rxw_new(int sock_fd, int gro, int tun_fd, int vnet, uint32_t udp_segs, uint16_t port, uint8_t data_type,
                   const pl_prefix *pfx, size_t npfx, size_t batch, size_t stride, int64_t ack_interval_ns)
{
    int bad = 0;
    rx_worker *w;
    pthread_mutexattr_t attr;

    if (batch == 0 || stride < 64 || udp_segs == 0) {
        errno = EINVAL;
        return NULL;
    }
    w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->sock_fd = sock_fd;
    w->tun_fd = tun_fd;
    w->gro = gro;
    w->vnet = vnet;
    w->udp_segs = udp_segs;
    w->port = port;
    w->data_type = data_type;
    w->ack_interval_ns = ack_interval_ns;
    w->batch = batch;
    w->stride = stride;
    w->wake_fd = w->up_fd = -1;
    w->npfx = npfx;
    w->pfx = xcalloc(npfx, sizeof(pl_prefix), &bad);
    if (w->pfx && npfx)
        memcpy(w->pfx, pfx, npfx * sizeof(pl_prefix));
    w->max_pkts = batch * (stride / 20 + 1) + 1;
    w->buf = xcalloc(batch, stride, &bad);
    w->lengths = xcalloc(batch, sizeof(uint32_t), &bad);
    w->dlens = xcalloc(batch, sizeof(uint32_t), &bad);
    w->offsets = xcalloc(batch, sizeof(uint32_t), &bad);
    w->receivers = xcalloc(batch, sizeof(uint32_t), &bad);
    w->addrs = xcalloc(batch, sizeof(udpio_addr), &bad);
    w->recs = xcalloc(batch, sizeof(scion_rec_t), &bad);
    w->is_data = xcalloc(batch, 1, &bad);
    w->status = xcalloc(batch, 1, &bad);
    w->slow = xcalloc(batch, 1, &bad);
    w->mine = xcalloc(batch, 1, &bad);
    w->done = xcalloc(batch, 1, &bad);
    w->counters = xcalloc(batch, sizeof(uint64_t), &bad);
    w->pkt_ptrs = xcalloc(w->max_pkts, sizeof(uint8_t *), &bad);
    w->pkt_lens = xcalloc(w->max_pkts, sizeof(uint32_t), &bad);
    w->gro_work = xcalloc(3 * w->max_pkts, sizeof(uint32_t), &bad);
    w->gro_reader = gro ? xcalloc(1, sizeof(udpio_gro_reader), &bad) : NULL;
    w->ring = xcalloc(RXW_HANDOFF_SLOTS, sizeof(rxw_record), &bad);
    w->ring_data = xcalloc(RXW_HANDOFF_SLOTS, stride, &bad);
    pthread_mutexattr_init(&attr);
    /* Recursive: Python may disarm (and take the lock again) while it holds it for a slow-path open. */
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&w->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (!bad) {
        w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        w->up_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (w->wake_fd < 0 || w->up_fd < 0)
            bad = 2;
    }
    if (bad) {
        int e = bad == 2 ? errno : ENOMEM;
        rxw_free(w);
        errno = e;
        return NULL;
    }
    return w;
}

void rxw_free(rx_worker *w)
{
    if (!w)
        return;
    rxw_stop(w);
    if (w->wake_fd >= 0)
        close(w->wake_fd);
    if (w->up_fd >= 0)
        close(w->up_fd);
    for (size_t r = 0; r < RXW_REMOTES; r++)
        free(w->remotes[r]);
    free(w->pfx);
    free(w->buf);
    free(w->lengths);
    free(w->dlens);
    free(w->offsets);
    free(w->receivers);
    free(w->addrs);
    free(w->recs);
    free(w->is_data);
    free(w->status);
    free(w->slow);
    free(w->mine);
    free(w->done);
    free(w->counters);
    free(w->pkt_ptrs);
    free(w->pkt_lens);
    free(w->gro_work);
    free(w->gro_reader);
    free(w->ring);
    free(w->ring_data);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

void rxw_lock(rx_worker *w) { pthread_mutex_lock(&w->lock); }
void rxw_unlock(rx_worker *w) { pthread_mutex_unlock(&w->lock); }

static void signal_up(rx_worker *w)
{
    uint64_t one = 1;
    ssize_t rc = write(w->up_fd, &one, sizeof(one));
    (void)rc; /* EAGAIN: the counter is already at its limit, Python is woken anyway */
}

/* ---- the handoff ring (single producer: the thread, or rxw_process's caller) ---- */

static int hand_up(rx_worker *w, uint8_t kind, uint8_t remote, uint32_t receiver, const uint8_t *data,
                   uint32_t len, uint32_t zero_from, uint64_t counter, uint32_t received, const udpio_addr *addr)
{
    uint32_t head = w->head, tail = __atomic_load_n(&w->tail, __ATOMIC_ACQUIRE);
    if (head - tail >= RXW_HANDOFF_SLOTS) {
        w->c.handoff_full++;
        return 0;
    }
    uint32_t slot = head % RXW_HANDOFF_SLOTS;
    rxw_record *r = &w->ring[slot];
    uint8_t *d = w->ring_data + (size_t)slot * w->stride;
    if (len > w->stride)
        len = (uint32_t)w->stride;
    memcpy(d, data, len);
    if (zero_from && zero_from < len)
        memset(d + zero_from, 0, len - zero_from); /* an ack record never carries the plaintext */
    r->kind = kind;
    r->remote = remote;
    r->receiver = receiver;
    r->len = len;
    r->counter = counter;
    r->received = received;
    if (addr)
        r->addr = *addr;
    else
        memset(&r->addr, 0, sizeof(r->addr));
    __atomic_store_n(&w->head, head + 1, __ATOMIC_RELEASE);
    w->c.handed_up++;
    return 1;
}

const rxw_record *rxw_handoff_peek(rx_worker *w, const uint8_t **data)
{
    uint32_t tail = w->tail, head = __atomic_load_n(&w->head, __ATOMIC_ACQUIRE);
    if (tail == head)
        return NULL;
    uint32_t slot = tail % RXW_HANDOFF_SLOTS;
    *data = w->ring_data + (size_t)slot * w->stride;
    return &w->ring[slot];
}

void rxw_handoff_pop(rx_worker *w)
{
    __atomic_store_n(&w->tail, w->tail + 1, __ATOMIC_RELEASE);
}

/* ---- lanes ---- */

static rxw_lane *find_lane(rx_worker *w, uint32_t receiver)
{
    for (size_t k = 0; k < RXW_MAX_LANES; k++)
        if (w->lanes[k].armed && w->lanes[k].receiver == receiver)
            return &w->lanes[k];
    return NULL;
}

int rxw_arm(rx_worker *w, uint32_t receiver, const unsigned char *key, replay_window *window, uint8_t remote,
            pl_carry *carry, uint8_t *arena, size_t arena_size, int64_t expires_ns)
{
    int rc = 0;
    if (remote >= RXW_REMOTES || !key || !window || !carry || !arena)
        return -EINVAL;
    rxw_lock(w);
    if (find_lane(w, receiver)) {
        rc = -EEXIST;
        goto out;
    }
    rxw_lane *lane = NULL;
    for (size_t k = 0; k < RXW_MAX_LANES && !lane; k++)
        if (!w->lanes[k].armed)
            lane = &w->lanes[k];
    if (!lane) {
        rc = -ENOSPC;
        goto out;
    }
    rxw_remote *rm = w->remotes[remote];
    if (!rm) {
        rm = w->remotes[remote] = calloc(1, sizeof(rxw_remote));
        if (!rm) {
            rc = -ENOMEM;
            goto out;
        }
    }
    rm->carry = carry;
    rm->arena = arena;
    rm->arena_size = arena_size;
    memset(lane, 0, sizeof(*lane));
    lane->receiver = receiver;
    lane->remote = remote;
    lane->key = key;
    lane->window = window;
    lane->expires_ns = expires_ns;
    lane->armed = 1;
out:
    rxw_unlock(w);
    return rc;
}

int rxw_disarm(rx_worker *w, uint32_t receiver, rxw_lane_counters *out)
{
    rxw_lock(w);
    rxw_lane *lane = find_lane(w, receiver);
    if (!lane) {
        rxw_unlock(w);
        return -ENOENT;
    }
    if (out)
        *out = lane->c;
    memset(lane, 0, sizeof(*lane));
    rxw_unlock(w);
    return 0;
}

void rxw_stream_idle(rx_worker *w, uint8_t remote, uint32_t seen)
{
    rxw_lock(w);
    if (remote < RXW_REMOTES && w->remotes[remote] && w->remotes[remote]->frames_up == seen)
        w->remotes[remote]->py_owns = 0;
    rxw_unlock(w);
}

int rxw_harvest_lane(rx_worker *w, size_t k, uint32_t *receiver, rxw_lane_counters *out)
{
    int armed;
    if (k >= RXW_MAX_LANES)
        return 0;
    rxw_lock(w);
    rxw_lane *lane = &w->lanes[k];
    armed = lane->armed;
    if (armed) {
        *receiver = lane->receiver;
        *out = lane->c;
        int64_t last = lane->c.last_rx_ns;
        memset(&lane->c, 0, sizeof(lane->c));
        lane->c.last_rx_ns = last;
    }
    rxw_unlock(w);
    return armed;
}

void rxw_harvest(rx_worker *w, rxw_counters *out)
{
    rxw_lock(w);
    *out = w->c;
    memset(&w->c, 0, sizeof(w->c));
    rxw_unlock(w);
}

/* ---- one batch ---- */

/* The remote's route record for slot i (found, or a free / least recently used one reset). */
static rxw_route *find_route(rx_worker *w, rxw_remote *rm, size_t i)
{
    const scion_rec_t *rec = &w->recs[i];
    const uint8_t *path = w->buf + i * w->stride + rec->path_off;
    rxw_route *victim = NULL;
    if (rec->path_len > RXW_PATH_MAX)
        return NULL;
    rm->use_clock++;
    for (size_t k = 0; k < RXW_ROUTES; k++) {
        rxw_route *r = &rm->routes[k];
        if (!r->used) {
            if (!victim || victim->used)
                victim = r;
            continue;
        }
        if (r->path_len == rec->path_len && r->src_ia == rec->src_ia
            && memcmp(&r->addr, &w->addrs[i], sizeof(udpio_addr)) == 0
            && memcmp(r->path, path, rec->path_len) == 0) {
            r->last_use = rm->use_clock;
            return r;
        }
        if (!victim || (victim->used && r->last_use < victim->last_use))
            victim = r;
    }
    /* A forgotten route's count restarts: the sender's loss estimate treats that as a reset. */
    memset(victim, 0, offsetof(rxw_route, path));
    victim->used = 1;
    victim->path_len = rec->path_len;
    victim->src_ia = rec->src_ia;
    victim->addr = w->addrs[i];
    victim->last_ack_ns = INT64_MIN;
    victim->last_use = rm->use_clock;
    memcpy(victim->path, path, rec->path_len);
    return victim;
}

/* Opens, acks, deframes and writes the slots marked mine (status 0) of one lane. */
static void run_lane(rx_worker *w, rxw_lane *lane, size_t n, int64_t now)
{
    rxw_remote *rm = w->remotes[lane->remote];
    rxw_lane_counters *c = &lane->c;
    size_t opened = 0, data = 0;
    const uint8_t *mine = w->mine;

    aead_open_batch(lane->key, w->buf, w->stride, n, w->lengths, w->offsets, 0, w->status, w->counters,
                    w->data_type, (int64_t)lane->receiver, lane->window);
    for (size_t i = 0; i < n; i++) {
        if (!mine[i])
            continue;
        if (w->status[i]) {
            c->drops[w->status[i] < TUNNEL_DROP_COUNT ? w->status[i] : TUNNEL_DROP_MALFORMED]++;
            continue;
        }
        opened++;
        c->rx_bytes += w->lengths[i];
        if (w->lengths[i])
            data++;
        else
            c->keepalives++;
    }
    c->rx_packets += opened;
    if (opened)
        c->last_rx_ns = now;
    if (!data)
        return;
    c->data += data;

    /* Acks: every data message counts on its arrival route; consecutive slots of one route share the
     * lookup. */
    rxw_route *route = NULL;
    size_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        if (!mine[i] || w->status[i] || !w->lengths[i])
            continue;
        if (!route || !pl_same_route(w->buf, w->stride, w->recs, (const uint8_t *)w->addrs, sizeof(udpio_addr),
                                     prev, i))
            route = find_route(w, rm, i);
        prev = i;
        if (!route)
            continue;
        route->received++;
        if (route->last_ack_ns != INT64_MIN && now - route->last_ack_ns < w->ack_interval_ns)
            continue;
        route->last_ack_ns = now;
        hand_up(w, RXW_H_ACK, lane->remote, lane->receiver, w->buf + i * w->stride, w->dlens[i],
                w->offsets[i] + AEAD_HEADER_LEN, w->counters[i], route->received, &w->addrs[i]);
    }

    /* Deframing: while the Python decoder owns the stream, every frame goes up to it. */
    size_t np = 0, spoofed = 0, fast = 0;
    if (rm->py_owns) {
        rm->carry->active = 0;
        for (size_t i = 0; i < n; i++)
            w->slow[i] = mine[i] && !w->status[i] && w->lengths[i] > 0;
    } else {
        np = pl_deframe(w->buf, w->stride, w->offsets, w->lengths, w->status, n, w->pfx, w->npfx, lane->remote,
                        rm->carry, rm->arena, rm->arena_size, w->pkt_ptrs, w->pkt_lens, w->max_pkts, w->slow,
                        &spoofed, &fast);
    }
    c->frames_fast += fast;
    c->spoofed += spoofed;
    if (np) {
        size_t failed = 0, writes = 0, done;
        int err = 0;
        if (w->vnet)
            done = tunio_write_vnet_capped(w->tun_fd, w->pkt_ptrs, w->pkt_lens, np, w->gro_work, &failed, &err,
                                           &writes, w->udp_segs);
        else
            done = pl_tun_write(w->tun_fd, w->pkt_ptrs, w->pkt_lens, np, &failed, &err);
        c->written += done;
        c->tun_failed += failed;
        if (failed && !c->tun_errno)
            c->tun_errno = err;
    }
    for (size_t i = 0; i < n; i++) {
        if (!w->slow[i])
            continue;
        rm->py_owns = 1;
        if (hand_up(w, RXW_H_FRAME, lane->remote, lane->receiver,
                    w->buf + i * w->stride + w->offsets[i] + AEAD_HEADER_LEN, w->lengths[i], 0, w->counters[i],
                    rm->frames_up + 1, NULL))
            rm->frames_up++;
    }
}

size_t rxw_process(rx_worker *w, size_t n, int64_t now)
{
    size_t before;
    uint8_t *done = w->done;

    if (n > w->batch)
        n = w->batch;
    scion_parse_batch(w->buf, w->stride, w->lengths, n, w->recs);
    rxw_lock(w);
    before = w->c.handed_up + w->c.handoff_full;
    w->c.batches++;
    w->c.datagrams += n;
    pl_rx_select(w->buf, w->stride, w->lengths, w->recs, n, w->port, w->data_type, w->offsets, w->receivers,
                 w->is_data);
    /* Everything without an armed lane goes up first, in arrival order. */
    rxw_lane *lane = NULL;
    uint32_t lane_of = 0;
    int looked = 0;
    for (size_t i = 0; i < n; i++) {
        done[i] = 1;
        if (w->recs[i].status != SCION_OK) {
            w->c.parse[w->recs[i].status < SCION_REASON_COUNT ? w->recs[i].status : 0]++;
            continue;
        }
        if (w->is_data[i]) {
            if (!looked || w->receivers[i] != lane_of) {
                lane_of = w->receivers[i];
                lane = find_lane(w, lane_of);
                if (lane && now >= lane->expires_ns)
                    lane = NULL; /* past its receive lifetime: the Python path drops it by its reason */
                looked = 1;
            }
            if (lane) {
                done[i] = 0;
                continue;
            }
        }
        hand_up(w, RXW_H_DATAGRAM, 0, 0, w->buf + i * w->stride, w->lengths[i], 0, 0, 0, &w->addrs[i]);
    }
    /* Then one pass per armed receiver, in order of first appearance. */
    for (size_t i = 0; i < n; i++) {
        if (done[i])
            continue;
        uint32_t receiver = w->receivers[i];
        lane = find_lane(w, receiver);
        for (size_t j = 0; j < n; j++) {
            int m = j >= i && !done[j] && w->receivers[j] == receiver;
            if (m)
                done[j] = 1;
            w->mine[j] = (uint8_t)m;
            w->status[j] = m ? 0 : PL_SLOW;
            w->dlens[j] = w->lengths[j];
        }
        run_lane(w, lane, n, now);
    }
    size_t up = w->c.handed_up + w->c.handoff_full - before;
    rxw_unlock(w);
    return up;
}

/* ---- the thread ---- */

static void *loop(void *arg)
{
    rx_worker *w = arg;
    struct pollfd p[2];
    p[0].fd = w->sock_fd;
    p[0].events = POLLIN;
    p[1].fd = w->wake_fd;
    p[1].events = POLLIN;
    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        int pending = w->gro_reader && w->gro_reader->cur < w->gro_reader->nmsg;
        if (!pending) {
            int rc = poll(p, 2, -1);
            if (rc < 0) {
                if (errno == EINTR)
                    continue;
                w->failed_errno = errno;
                break;
            }
            if (p[1].revents) {
                uint64_t v;
                ssize_t r = read(w->wake_fd, &v, sizeof(v));
                (void)r;
                continue;
            }
            if (p[0].revents & POLLNVAL) {
                w->failed_errno = EBADF;
                break;
            }
            if (!(p[0].revents & (POLLIN | POLLERR)))
                continue;
        }
        int n = w->gro_reader ? udpio_gro_recv(w->sock_fd, w->gro_reader, w->buf, w->stride, w->lengths, w->addrs,
                                               (unsigned)w->batch)
                              : udpio_recv(w->sock_fd, w->buf, w->stride, w->lengths, w->addrs, (unsigned)w->batch);
        if (n < 0) {
            rxw_lock(w);
            w->c.recv_errors++;
            rxw_unlock(w);
            if (n == -EBADF || n == -ENOTSOCK) {
                w->failed_errno = -n;
                break;
            }
            continue;
        }
        if (n == 0)
            continue;
        if (rxw_process(w, (size_t)n, rxw_now_ns()))
            signal_up(w);
    }
    signal_up(w); /* Python sees the end (a failure, or the stop it asked for) */
    return NULL;
}

int rxw_start(rx_worker *w)
{
    if (w->started)
        return -EALREADY;
    __atomic_store_n(&w->stop, 0, __ATOMIC_RELEASE);
    w->failed_errno = 0;
    int rc = pthread_create(&w->thread, NULL, loop, w);
    if (rc)
        return -rc;
    w->started = 1;
    return 0;
}

void rxw_stop(rx_worker *w)
{
    uint64_t one = 1;
    if (!w->started)
        return;
    __atomic_store_n(&w->stop, 1, __ATOMIC_RELEASE);
    ssize_t r = write(w->wake_fd, &one, sizeof(one));
    (void)r;
    pthread_join(w->thread, NULL);
    w->started = 0;
}
