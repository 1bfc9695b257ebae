"""The CA rotation phase machine, without a cluster: every transition, the waits between
them, rollback, a third key queued behind a rollover, and the status round trip a
restarted operator resumes from."""

from __future__ import annotations

import datetime
from dataclasses import replace

import pytest

from signet.api import SpecError
from signet.api.issuer import RotationSettings, parse_issuer_spec
from signet.controller.rollover import ReissuePacer
from signet.decisions import rotation
from signet.decisions.rotation import Anchor, Facts, Phase, Rollover, Step
from signet.reasons import Reason

T0 = datetime.datetime(2026, 12, 1, 8, 0, tzinfo=datetime.UTC)
OLD = Anchor("k/1", "old-ca", "ssh-ed25519 OLD")
NEW = Anchor("k/2", "new-ca", "ssh-ed25519 NEW")
THIRD = Anchor("k/3", "third-ca", None)
SETTINGS = RotationSettings(
    trust_propagation=datetime.timedelta(seconds=30),
    retirement_grace=datetime.timedelta(seconds=20),
)


def facts(
    now: datetime.datetime,
    *,
    published: bool = True,
    leaves: dict[str, int] | None = None,
    unreissuable: datetime.timedelta = datetime.timedelta(0),
    known: bool = True,
) -> Facts:
    counts = leaves or {}
    return Facts(
        now=now,
        trust_published=lambda anchors: published,
        old_leaves=lambda key: counts.get(key, 0),
        unreissuable_lifetime=unreissuable,
        certificates_known=known,
    )


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def run(recorded: Rollover | None, wanted: Anchor, now: Facts, signing: Anchor = OLD) -> Step:
    return rotation.step(recorded, signing, wanted, SETTINGS, now)


def test_an_unchanged_key_is_stable_and_publishes_one_anchor() -> None:
    result = run(None, OLD, facts(T0))
    assert (result.phase, result.signing_key, result.transition) == (Phase.STABLE, "k/1", None)
    assert result.anchors == ()
    assert rotation.step(None, None, NEW, SETTINGS, facts(T0)).signing_key == "k/2"


def test_a_new_key_propagates_both_anchors_while_the_old_one_signs() -> None:
    started = run(None, NEW, facts(T0))
    assert started.transition is Reason.ROTATION_STARTED
    assert started.phase is Phase.PROPAGATING
    assert started.signing_key == "k/1"
    assert started.anchors == (OLD, NEW)


def test_propagation_waits_for_every_bundle_then_for_the_period() -> None:
    started = run(None, NEW, facts(T0)).rollover
    unpublished = run(started, NEW, facts(at(100), published=False))
    assert unpublished.phase is Phase.PROPAGATING and unpublished.signing_key == "k/1"
    assert unpublished.next_look == at(101)
    published = run(unpublished.rollover, NEW, facts(at(110)))
    assert published.rollover is not None and published.rollover.trust_published_at == at(110)
    assert published.next_look == at(140)  # counted from publication, not from the start
    waiting = run(published.rollover, NEW, facts(at(139)))
    assert waiting.signing_key == "k/1" and waiting.transition is None
    switched = run(waiting.rollover, NEW, facts(at(140), leaves={"k/1": 200}))
    assert switched.transition is Reason.ROTATION_REISSUING
    assert switched.signing_key == "k/2"
    assert switched.anchors == (NEW, OLD)
    assert switched.rollover is not None and switched.rollover.leaves == 200


def reissuing(leaves: int = 200) -> Rollover:
    return Rollover(Phase.REISSUING, OLD, NEW, T0, at(40), at(10), leaves, leaves)


def test_reissuing_counts_progress_until_no_old_leaf_remains() -> None:
    midway = run(reissuing(), NEW, facts(at(50), leaves={"k/1": 150}), signing=NEW)
    assert midway.rollover is not None
    assert midway.rollover.progress() == "Reissuing 50/200"
    assert midway.transition is None and midway.next_look == at(52)
    done = run(midway.rollover, NEW, facts(at(60)), signing=NEW)
    assert done.transition is Reason.ROTATION_RETIRING
    assert done.rollover is not None and done.rollover.retire_after == at(80)
    assert done.anchors == (NEW, OLD)


def test_a_restart_does_not_count_before_every_certificate_is_listed() -> None:
    """Unlisted Certificates look like no leaves and no bundles: without the wait a
    restarted operator would retire an anchor some leaves still need."""
    published = run(None, NEW, facts(T0)).rollover
    assert published is not None
    due = replace(published, trust_published_at=T0)
    for recorded, signing_key in ((due, "k/1"), (reissuing(), "k/2")):
        held = run(recorded, NEW, facts(at(100), known=False), signing=OLD)
        assert held.rollover == recorded and held.transition is None
        assert held.signing_key == signing_key
        assert held.next_look == at(101)
        assert "waiting for every Certificate to be listed" in held.message
    moved = run(due, NEW, facts(at(100), leaves={"k/1": 3}))
    assert moved.transition is Reason.ROTATION_REISSUING and moved.rollover is not None
    assert moved.rollover.leaves == 3


def test_retirement_outlives_the_longest_pod_certificate_signed_by_the_old_key() -> None:
    day = datetime.timedelta(hours=24)
    done = run(reissuing(), NEW, facts(at(60), unreissuable=day), signing=NEW)
    assert done.rollover is not None and done.rollover.retire_after == at(40) + day


def test_retiring_withdraws_the_old_anchor_after_the_grace() -> None:
    retiring = Rollover(Phase.RETIRING, OLD, NEW, T0, at(60), at(10), 200, 0, at(80))
    still = run(retiring, NEW, facts(at(79)), signing=NEW)
    assert still.phase is Phase.RETIRING and still.anchors == (NEW, OLD)
    finished = run(retiring, NEW, facts(at(80)), signing=NEW)
    assert finished.transition is Reason.ROTATION_COMPLETED
    assert finished.phase is Phase.STABLE and finished.signing_key == "k/2"


def test_rolling_back_before_the_switch_drops_the_unused_anchor_at_once() -> None:
    started = run(None, NEW, facts(T0)).rollover
    back = run(started, OLD, facts(at(5)))
    assert back.transition is Reason.ROTATION_ROLLED_BACK
    assert (back.phase, back.signing_key) == (Phase.STABLE, "k/1")


@pytest.mark.parametrize("phase", [Phase.REISSUING, Phase.RETIRING])
def test_rolling_back_after_the_switch_reissues_toward_the_old_key(phase: Phase) -> None:
    recorded = Rollover(phase, OLD, NEW, T0, at(40), at(10), 200, 100, at(500))
    back = run(recorded, OLD, facts(at(50), leaves={"k/2": 100}), signing=NEW)
    assert back.transition is Reason.ROTATION_ROLLED_BACK
    assert back.phase is Phase.REISSUING
    assert back.signing_key == "k/1"
    assert back.anchors == (OLD, NEW)  # no propagation: both were published all along
    resumed = run(back.rollover, OLD, facts(at(52), leaves={"k/2": 100}), signing=OLD)
    assert resumed.rollover is not None and resumed.rollover.progress() == "Reissuing 0/100"


def test_a_third_key_during_propagation_retargets_the_rollover() -> None:
    started = run(None, NEW, facts(T0)).rollover
    retargeted = run(started, THIRD, facts(at(5)))
    assert retargeted.transition is Reason.ROTATION_STARTED
    assert retargeted.anchors == (OLD, THIRD)
    assert retargeted.rollover is not None and retargeted.rollover.trust_published_at is None


def test_a_third_key_while_reissuing_waits_for_the_rollover_to_finish() -> None:
    queued = run(reissuing(), THIRD, facts(at(50), leaves={"k/1": 10}), signing=NEW)
    assert queued.signing_key == "k/2" and queued.anchors == (NEW, OLD)
    assert "k/3 waits" in queued.message
    retiring = Rollover(Phase.RETIRING, OLD, NEW, T0, at(60), at(10), 200, 0, at(80))
    finished = run(retiring, THIRD, facts(at(80)), signing=NEW)
    assert finished.transition is Reason.ROTATION_COMPLETED
    assert finished.next_look == at(80)  # and the next rollover starts at once
    nxt = rotation.step(None, NEW, THIRD, SETTINGS, facts(at(80)))
    assert nxt.transition is Reason.ROTATION_STARTED and nxt.anchors == (NEW, THIRD)


def test_without_overlap_keys_switch_at_once() -> None:
    result = rotation.step(None, OLD, NEW, SETTINGS, facts(T0), overlap=False)
    assert (result.phase, result.signing_key) == (Phase.STABLE, "k/2")
    assert result.transition is Reason.ROTATION_COMPLETED


@pytest.mark.parametrize(
    "recorded",
    [
        Rollover(Phase.PROPAGATING, OLD, NEW, T0, T0),
        Rollover(Phase.PROPAGATING, OLD, NEW, T0, T0, trust_published_at=at(3)),
        reissuing(),
        Rollover(Phase.RETIRING, OLD, NEW, T0, at(60), at(10), 200, 0, at(80)),
    ],
)
def test_the_status_holds_everything_a_restart_resumes_from(recorded: Rollover) -> None:
    status = {"rotation": rotation.to_status(recorded)}
    assert rotation.from_status(status) == recorded
    assert None not in status["rotation"].values()


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "Propagating",
        {"phase": "Sideways"},
        {"phase": "Stable"},
        {"phase": "Reissuing", "from": {"keyVersion": "k/1"}},
    ],
)
def test_a_damaged_record_reads_as_no_rollover(raw: object) -> None:
    assert rotation.from_status({"rotation": raw}) is None


def test_signing_anchor_comes_from_the_top_of_the_status() -> None:
    status = {"keyVersion": "k/1", "caBundle": "pem", "sshCAPublicKey": "line"}
    assert rotation.signing_anchor(status) == Anchor("k/1", "pem", "line")
    assert rotation.signing_anchor({"caCertificate": "pem"}) is None


KEY = "projects/p-1234/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"


def test_rotation_settings_parse_with_defaults() -> None:
    spec = parse_issuer_spec(
        "Issuer", "ca", "ns", {"kms": {"cloudKMS": {"keyVersion": KEY}}, "ssh": {}}
    )
    assert spec.rotation == RotationSettings()
    assert spec.rotation.grace == datetime.timedelta(minutes=5)
    custom = parse_issuer_spec(
        "Issuer",
        "ca",
        "ns",
        {
            "kms": {"cloudKMS": {"keyVersion": KEY}},
            "ssh": {},
            "rotation": {"trustPropagation": "30s", "reissueQPS": 2.5, "retirementGrace": "1m"},
        },
    )
    assert custom.rotation.trust_propagation == datetime.timedelta(seconds=30)
    assert custom.rotation.reissue_qps == 2.5
    assert custom.rotation.grace == datetime.timedelta(minutes=1)


@pytest.mark.parametrize(
    ("rotation_spec", "field"),
    [
        ({"trustPropagation": "0s"}, "spec.rotation.trustPropagation"),
        ({"trustPropagation": "200h"}, "spec.rotation.trustPropagation"),
        ({"reissueQPS": 0}, "spec.rotation.reissueQPS"),
        ({"reissueQPS": True}, "spec.rotation.reissueQPS"),
        ({"retirementGrace": "soon"}, "spec.rotation.retirementGrace"),
        ("fast", "spec.rotation"),
    ],
)
def test_bad_rotation_settings_name_the_field(rotation_spec: object, field: str) -> None:
    spec = {"kms": {"cloudKMS": {"keyVersion": KEY}}, "ssh": {}, "rotation": rotation_spec}
    with pytest.raises(SpecError) as raised:
        parse_issuer_spec("Issuer", "ca", "ns", spec)
    assert field in raised.value.message
    assert raised.value.reason.permanent


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reissue_slots_go_in_reservation_order_an_interval_apart() -> None:
    clock = Clock()
    pacer = ReissuePacer(clock)
    issuer = ("Issuer", "ns", "ca")
    waits = [pacer.wait(issuer, ("ns", f"c{i}"), qps=4) for i in range(4)]
    assert waits == [0.0, 0.25, 0.5, 0.75]
    assert pacer.wait(("Issuer", "ns", "other"), ("ns", "x"), qps=4) == 0.0  # per issuer
    clock.now += 0.25
    assert pacer.wait(issuer, ("ns", "c1"), qps=4) == 0.0
    assert len(pacer) == 2


def test_a_queue_that_fell_behind_does_not_catch_up_in_a_burst() -> None:
    clock = Clock()
    pacer = ReissuePacer(clock)
    issuer = ("Issuer", "ns", "ca")
    for i in range(3):
        pacer.wait(issuer, ("ns", f"c{i}"), qps=2)
    clock.now += 10  # every slot long past
    assert pacer.wait(issuer, ("ns", "c0"), qps=2) == 0.0
    assert pacer.wait(issuer, ("ns", "c1"), qps=2) == 0.5
    assert pacer.wait(issuer, ("ns", "c2"), qps=2) == 0.5
    clock.now += 0.5
    assert pacer.wait(issuer, ("ns", "c2"), qps=2) == 0.0
    assert pacer.wait(issuer, ("ns", "c1"), qps=2) == 0.5
