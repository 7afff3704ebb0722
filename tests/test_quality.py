"""Path quality: RTT statistics, loss, jitter, the up/degraded/down machine and data-plane liveness."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scion_appliance.paths.quality import DownNotice, PathQuality, PathState, QualityConfig


def answer(q: PathQuality, probe_id: int, sent: float, rtt: float) -> float | None:
    q.probe_sent(probe_id, sent)
    return q.probe_reply(probe_id, sent + rtt)


def lose(q: PathQuality, probe_id: int, sent: float) -> None:
    q.probe_sent(probe_id, sent)
    q.expire(sent + q.config.probe_timeout_max + 1)


def test_rtt_ewma_follows_rfc6298_smoothing_with_alpha_one_eighth() -> None:
    q = PathQuality()
    assert q.rtt is None and q.rtt_ewma is None
    assert answer(q, 1, 0.0, 0.010) == pytest.approx(0.010)
    assert q.rtt_ewma == pytest.approx(0.010)
    answer(q, 2, 0.1, 0.018)
    assert q.rtt_ewma == pytest.approx(0.010 * 7 / 8 + 0.018 / 8)
    q2 = PathQuality(QualityConfig(ewma_alpha=0.5))
    answer(q2, 1, 0.0, 0.010)
    answer(q2, 2, 0.1, 0.020)
    assert q2.rtt_ewma == pytest.approx(0.015)


def test_p95_is_nearest_rank_over_the_window() -> None:
    q = PathQuality(QualityConfig(rtt_window=20))
    for i in range(1, 21):  # 1..20 ms
        answer(q, i, i * 0.1, i / 1000)
    assert q.rtt_p95 == pytest.approx(0.019)  # rank ceil(0.95 * 20) = 19
    for i in range(21, 41):  # the window slides: only 21..40 ms remain
        answer(q, i, i * 0.1, i / 1000)
    assert q.rtt_p95 == pytest.approx(0.039)


def test_jitter_is_rfc3550_smoothed_rtt_difference() -> None:
    q = PathQuality()
    expected = 0.0
    rtts = [0.010, 0.014, 0.011, 0.020, 0.010]
    for i, r in enumerate(rtts):
        answer(q, i, i * 0.1, r)
        if i:
            expected += (abs(r - rtts[i - 1]) - expected) / 16
    assert q.jitter == pytest.approx(expected)
    assert q.jitter > 0


def test_score_rtt_reacts_to_a_jump_within_two_samples_but_recovers_slowly() -> None:
    q = PathQuality()
    for i in range(20):
        answer(q, i, i * 0.1, 0.010)
    answer(q, 100, 3.0, 0.060)
    assert q.rtt == pytest.approx(q.rtt_ewma)  # one spike: median of the last 3 is still 10 ms
    answer(q, 101, 3.1, 0.060)
    assert q.rtt == pytest.approx(0.060)  # two: the recent median says 60 ms
    answer(q, 102, 3.2, 0.010)
    answer(q, 103, 3.3, 0.010)
    assert q.rtt_recent == pytest.approx(0.010)
    assert (
        q.rtt is not None and q.rtt == pytest.approx(q.rtt_ewma) and q.rtt > 0.015
    )  # the EWMA still remembers


def test_loss_is_share_of_lost_probes_over_the_window() -> None:
    q = PathQuality(QualityConfig(loss_window=10, down_after_lost=5))
    for i in range(8):
        answer(q, i, i * 0.1, 0.01)
    lose(q, 8, 0.8)
    lose(q, 9, 0.9)
    assert q.loss == pytest.approx(0.2)
    for i in range(10, 20):
        answer(q, i, i * 0.1, 0.01)
    assert q.loss == 0.0
    assert q.probes_lost == 2 and q.probes_sent == 20


def test_probe_timeout_adapts_to_rtt_and_is_clamped() -> None:
    cfg = QualityConfig(probe_timeout_initial=1.0, probe_timeout_min=0.05, probe_timeout_max=2.0)
    q = PathQuality(cfg)
    assert q.probe_timeout() == 1.0
    for i in range(30):
        answer(q, i, i * 0.1, 0.002)
    assert q.probe_timeout() == pytest.approx(0.05)  # floor
    q.probe_sent(99, 10.0)
    assert q.expire(10.049) == 0
    assert q.expire(10.05) == 1
    slow = PathQuality(cfg)
    for i in range(30):
        answer(slow, i, i * 1.0, 0.5 + 0.1 * (i % 2))
    assert 0.6 < slow.probe_timeout() <= 2.0


def test_down_after_n_consecutive_losses_and_up_after_m_answers() -> None:
    q = PathQuality(QualityConfig(down_after_lost=3, up_after_answers=2))
    answer(q, 0, 0.0, 0.01)
    assert q.state(0.1)[0] is PathState.UP
    lose(q, 1, 0.1)
    assert q.state(5)[0] is PathState.DEGRADED
    lose(q, 2, 0.2)
    assert q.state(5)[0] is PathState.DEGRADED
    lose(q, 3, 0.3)
    state, reason = q.state(5)
    assert state is PathState.DOWN and reason == "3 probes lost in a row"
    answer(q, 4, 6.0, 0.01)
    state, reason = q.state(6.1)
    assert state is PathState.DOWN and "1 of 2 answers" in reason
    answer(q, 5, 6.1, 0.01)
    assert q.state(6.2)[0] is PathState.DEGRADED  # up, but the loss window still holds the losses
    assert q.state(6.2)[1].startswith("loss 50%")


def test_scmp_notice_takes_the_path_down_at_once() -> None:
    q = PathQuality(QualityConfig(up_after_answers=3))
    for i in range(5):
        answer(q, i, i * 0.1, 0.01)
    q.scmp_down(DownNotice.EXTERNAL_INTERFACE_DOWN, "1-ff00:0:110 interface 5")
    state, reason = q.state(1.0)
    assert state is PathState.DOWN
    assert reason == "SCMP external interface down (1-ff00:0:110 interface 5)"
    for i in range(5, 7):
        answer(q, i, i * 0.1, 0.01)
    assert q.state(1.0)[0] is PathState.DOWN
    answer(q, 7, 0.7, 0.01)
    assert q.state(1.0)[0] is PathState.UP
    q.scmp_down(DownNotice.INTERNAL_CONNECTIVITY_DOWN)
    assert q.snapshot(1.0).state is PathState.DOWN
    assert not q.snapshot(1.0).usable


def test_data_plane_liveness_marks_a_silent_path_suspect() -> None:
    q = PathQuality(QualityConfig(liveness_timeout=0.2, liveness_timeout_without_acks=0.2))
    answer(q, 0, 0.0, 0.01)
    q.data_sent(1.00)
    q.data_sent(1.15)
    assert not q.suspect(1.19)
    assert q.suspect(1.21)
    snap = q.snapshot(1.25)
    assert snap.suspect and snap.state is PathState.DEGRADED
    assert snap.reason == "suspect: data sent, nothing back for 250.0 ms"
    q.data_received(1.3)
    assert not q.suspect(5.0)  # nothing sent since
    q.data_sent(5.0)
    answer(q, 1, 5.1, 0.01)  # a probe answer proves the path delivers too
    assert not q.suspect(6.0)
    assert q.last_seen == pytest.approx(5.11)


def test_late_reply_proves_liveness_but_stays_lost() -> None:
    q = PathQuality()
    answer(q, 0, 0.0, 0.01)
    q.data_sent(0.5)
    lose(q, 1, 0.5)
    assert q.probes_lost == 1
    assert q.probe_reply(1, 3.0) == pytest.approx(2.5)
    assert q.late_replies == 1 and q.probes_lost == 1 and q.samples == 1
    assert not q.suspect(3.0)
    assert q.probe_reply(1, 3.1) is None  # a second answer to the same probe teaches nothing
    assert q.probe_reply(12345, 3.1) is None


def test_outstanding_probes_are_bounded() -> None:
    q = PathQuality(QualityConfig(max_outstanding=4, down_after_lost=100))
    for i in range(10):
        q.probe_sent(i, i * 0.001)
    assert q.probes_lost == 6
    assert q.expire(100.0) == 4


def test_export_restore_round_trip_is_json_safe() -> None:
    q = PathQuality()
    for i in range(10):
        answer(q, i, i * 0.1, 0.01 + i / 1000)
    lose(q, 10, 1.0)
    record = json.loads(json.dumps(q.export(), allow_nan=False))
    r = PathQuality.restore(record)
    assert r.rtt_ewma == pytest.approx(q.rtt_ewma)
    assert r.rtt_p95 == pytest.approx(q.rtt_p95)
    assert r.loss == pytest.approx(q.loss)
    assert r.jitter == pytest.approx(q.jitter)
    assert r.probe_timeout() == pytest.approx(q.probe_timeout())
    assert r.state(0.0)[0] is PathState.DEGRADED  # a loss in the window
    # a path that was down stays down after a restart until it answers again
    for i in range(11, 14):
        lose(q, i, i * 0.1)
    r = PathQuality.restore(q.export(), QualityConfig(up_after_answers=1))
    state, reason = r.state(0.0)
    assert state is PathState.DOWN and reason.startswith("down before restart: ")
    answer(r, 1, 0.0, 0.01)
    assert r.state(0.1)[0] is not PathState.DOWN


@pytest.mark.parametrize(
    "record", [{}, {"v": 2}, {"v": 1, "samples": "x"}, {"v": 1, "samples": [1.0], "outcomes": None}]
)
def test_restore_of_a_bad_record_gives_a_fresh_path(record: dict) -> None:
    r = PathQuality.restore(record)
    assert r.samples == 0 and r.state(0.0) == (PathState.UP, "no probe answered yet")


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="ewma_alpha"):
        QualityConfig(ewma_alpha=0)
    with pytest.raises(ValueError, match="down_after_lost"):
        QualityConfig(down_after_lost=0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(0.0001, 1.5)), min_size=1, max_size=80))
def test_statistics_stay_within_the_samples_and_state_is_consistent(events: list[float | None]) -> None:
    cfg = QualityConfig(down_after_lost=3, up_after_answers=2)
    q = PathQuality(cfg)
    t = 0.0
    answered: list[float] = []
    run_lost = 0
    for i, rtt in enumerate(events):
        if rtt is None:
            lose(q, i, t)
            run_lost += 1
        else:
            answer(q, i, t, rtt)
            answered.append(rtt)
            run_lost = 0
        t += 5.0
    snap = q.snapshot(t)
    if answered:
        lo, hi = min(answered), max(answered)
        assert snap.rtt_ewma is not None and lo - 1e-9 <= snap.rtt_ewma <= hi + 1e-9
        assert snap.rtt_p95 is not None and lo - 1e-9 <= snap.rtt_p95 <= hi + 1e-9
        assert 0.0 <= snap.jitter <= hi - lo + 1e-9
    assert 0.0 <= snap.loss <= 1.0 and math.isfinite(snap.loss)
    if run_lost >= 3:
        assert snap.state is PathState.DOWN
    json.dumps(q.export(), allow_nan=False)


# --- what acknowledged data tells (paths.acks) --------------------------------------------------------


def test_acks_give_the_forward_data_loss_over_the_data_window() -> None:
    q = PathQuality(QualityConfig(data_window=0.5, data_loss_min_sent=16))
    q.data_acked(1.0, sent_seq=10, received=10, rtt=0.01)  # the baseline: no sample yet
    assert q.data_loss(1.0) is None
    q.data_acked(1.1, sent_seq=20, received=17, rtt=0.01)  # 10 sent, 7 arrived
    assert q.data_loss(1.1) is None  # fewer than 16 sent in the window: the probes speak for the path
    q.data_acked(1.2, sent_seq=30, received=24, rtt=0.01)  # 10 sent, 7 arrived
    assert q.data_loss(1.2) == pytest.approx(0.3)
    snap = q.snapshot(1.2)
    assert snap.data_loss == pytest.approx(0.3) and snap.loss == pytest.approx(0.3) and snap.probe_loss == 0.0
    assert snap.state is PathState.DEGRADED and snap.reason == "data loss 30% over the last 0.5 s"
    assert q.data_loss(1.75) is None  # samples older than the window are forgotten: no data, no verdict
    assert q.snapshot(1.75).state is PathState.UP


def test_a_lost_ack_costs_no_precision_and_a_restarted_count_is_a_new_baseline() -> None:
    q = PathQuality(QualityConfig(data_loss_min_sent=1, data_window=0.5))
    q.data_acked(0.0, 100, 4_000_000_000, 0.01)
    q.data_acked(0.3, 120, (4_000_000_000 + 20) % 2**32, 0.01)  # two intervals, count wrapped past 2^32
    assert q.data_loss(0.3) == 0.0
    q.data_acked(0.31, 110, 5, 0.01)  # an older ack overtaken: ignored
    q.data_acked(0.32, 130, 3, 0.01)  # the far end forgot the path (count restarted): new baseline
    q.data_acked(0.33, 140, 13, 0.01)
    assert q.data_loss(0.33) == 0.0


def test_liveness_timeout_adapts_to_the_acked_round_trip() -> None:
    c = QualityConfig(liveness_timeout=0.05, answer_delay=0.01, probe_timeout_min=0.01)
    q = PathQuality(c)
    assert q.liveness_timeout() == pytest.approx(1.0 + 0.01)  # nothing measured: the initial probe timeout
    for i in range(20):
        q.data_acked(i * 0.01, i + 1, i + 1, rtt=0.004)
    assert q.liveness_timeout() == pytest.approx(0.05)  # SRTT + 4 RTTVAR + 10 ms is below the floor
    slow = PathQuality(c)
    for i in range(20):
        slow.data_acked(i * 0.01, i + 1, i + 1, rtt=0.080)
    assert 0.09 < slow.liveness_timeout() < 0.1  # ~80 ms + 4 x (decayed) RTTVAR + 10 ms
    slow.data_sent(1.0)
    assert not slow.suspect(1.085) and slow.suspect(1.1)


def test_data_rtt_is_the_median_of_recent_acks_and_proven_at_the_latest_round_trip_start() -> None:
    q = PathQuality(QualityConfig(data_rtt_samples=3, data_window=0.5))
    for t, rtt in ((1.0, 0.010), (1.01, 0.200), (1.02, 0.012)):
        q.data_acked(t, int(t * 100), int(t * 100), rtt)
    assert q.data_rtt(1.02) == pytest.approx(0.012)
    assert q.data_rtt(1.6) is None
    assert q.proven_at == pytest.approx(1.02 - 0.012)
    answer(q, 1, 1.5, 0.01)
    assert q.proven_at == pytest.approx(1.5)  # a probe sent at 1.5 came back: the path delivered then


def test_a_stale_ack_baseline_charges_no_old_losses() -> None:
    # Traffic left the path during a loss burst and comes back a second later: the first new ack must
    # not count the burst's losses (they are older than the data window) against the path.
    q = PathQuality(QualityConfig(data_window=0.5, data_loss_min_sent=1))
    q.data_acked(1.0, 100, 100, 0.01)
    q.data_acked(2.0, 150, 110, 0.01)  # 40 of 50 lost, but the baseline is 1 s old: a new baseline
    assert q.data_loss(2.0) is None
    q.data_acked(2.1, 160, 120, 0.01)
    assert q.data_loss(2.1) == 0.0


def test_probe_answers_do_not_clear_data_suspicion_while_acked_data_flows() -> None:
    # Probes may pass where data does not (MTU, a filter, a dead far gateway behind a live router).
    q = PathQuality(QualityConfig(liveness_timeout=0.05, probe_timeout_min=0.01))
    answer(q, 1, 0.0, 0.01)
    q.data_sent(0.10)
    q.data_acked(0.12, 1, 1, rtt=0.02)  # the far end acks: from now on, data liveness is about data
    for i in range(10):  # data keeps going out every 10 ms, probes keep answering, acks stop
        q.data_sent(0.13 + i * 0.01)
        answer(q, 10 + i, 0.13 + i * 0.01, 0.005)
    assert q.suspect(0.22)
    # Once no data has gone out for longer than the timeout, a probe answer may clear it again (the
    # path gets another chance later, under the selector's recovery hold).
    answer(q, 99, 0.40, 0.005)
    assert not q.suspect(0.41)


def test_without_acks_probe_answers_keep_a_path_alive() -> None:
    q = PathQuality(QualityConfig(liveness_timeout=0.05, probe_timeout_min=0.01))
    for i in range(10):
        q.data_sent(i * 0.01)
        answer(q, i, i * 0.01, 0.005)
    assert not q.suspect(0.1)  # a far end that never acks: probes are all there is


def test_before_any_ack_the_floor_covers_a_probe_interval() -> None:
    # Data every 5 ms, probes every 100 ms answered in 5 ms, no acks (yet): the path must not turn
    # suspect between two probe answers, so the floor is liveness_timeout_without_acks (250 ms).
    q = PathQuality(QualityConfig(liveness_timeout=0.08, probe_timeout_min=0.01))
    for k in range(10):
        answer(q, k, k * 0.1, 0.005)
        for i in range(1, 20):
            q.data_sent(k * 0.1 + i * 0.005)
            assert not q.suspect(k * 0.1 + i * 0.005)
    assert q.liveness_timeout() == pytest.approx(0.25)
    q.data_acked(1.0, 1, 1, rtt=0.005)
    assert q.liveness_timeout() == pytest.approx(0.08)  # acks flow: the tight floor applies


def test_a_far_end_known_to_ack_gets_the_tight_floor_on_a_new_path() -> None:
    # Traffic just moved to this path; the peer acked on the previous one, so silence here counts
    # after the tight floor, not after a probe interval.
    q = PathQuality(QualityConfig(liveness_timeout=0.08, probe_timeout_min=0.01))
    answer(q, 1, 0.0, 0.005)
    q.far_end_acks = True
    assert q.liveness_timeout() == pytest.approx(0.08)
    q.data_sent(1.0)
    assert q.suspect(1.081)
