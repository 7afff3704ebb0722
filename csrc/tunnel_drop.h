/* Why a tunnel packet was dropped: one code per reason, shared by the per-packet status arrays of the
 * batch calls (replay window, AEAD), the drop counters and the log lines.
 *
 * Rules kept here:
 * - 0 is "alive"; a batch call skips a slot whose status is already nonzero and keeps that code, so
 *   stages can run one after another over one status array.
 * - Codes are stable (they appear in counters); add new ones at the end and name them in
 *   tunnel_drop_names.
 */
#ifndef SCION_TUNNEL_DROP_H
#define SCION_TUNNEL_DROP_H

enum tunnel_drop {
    TUNNEL_OK = 0,
    TUNNEL_DROP_MALFORMED = 1, /* shorter than an envelope, or does not fit its slot */
    TUNNEL_DROP_TYPE = 2,      /* envelope type is not the one this call handles */
    TUNNEL_DROP_RECEIVER = 3,  /* receiver index is not this session's */
    TUNNEL_DROP_REPLAYED = 4,  /* counter seen before, too old for the window, or past the limit */
    TUNNEL_DROP_FORGED = 5,    /* authentication tag does not verify */
    TUNNEL_DROP_EXHAUSTED = 6, /* sending counter reached the reject limit: the session must rekey */
    TUNNEL_DROP_COUNT = 7
};

static const char *const tunnel_drop_names[TUNNEL_DROP_COUNT] = {
    "ok", "malformed", "wrong_type", "wrong_receiver", "replayed", "forged", "counter_exhausted",
};

#endif
