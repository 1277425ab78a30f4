"""Grouping bursts into digests without ever holding back illegal or immediate alerts (notify.throttle)."""

from __future__ import annotations

import datetime as dt

from common.contracts import ChannelAddress, ChannelKind, IncidentClass, Urgency
from notify.throttle import Pending, ThrottlePolicy, address_key, plan

T0 = dt.datetime(2025, 3, 4, 9, 30, tzinfo=dt.UTC)
WINDOW = dt.timedelta(minutes=2)
POLICY = ThrottlePolicy(window=WINDOW)
EMAIL = ChannelAddress(kind=ChannelKind.EMAIL, address="dsl@oakfield.example")
SMS = ChannelAddress(kind=ChannelKind.SMS, address="07700 900123")


def pending(make_request, n: int, *, seconds: int = 0, channel: ChannelAddress = EMAIL, **kw) -> Pending:
    fields = {"incident_class": IncidentClass.INAPPROPRIATE, "urgency": Urgency.NORMAL}
    fields.update(kw)
    request = make_request(notification_id=f"n-{n}", reference=f"OSI-{n:05d}", **fields)
    return Pending(request, channel, T0 + dt.timedelta(seconds=seconds))


def ids(batch) -> list[str]:
    return [p.request.notification_id for p in batch.items]


def test_a_quiet_address_gets_its_message_at_once(make_request):
    result = plan(T0, [pending(make_request, 1)], policy=POLICY)
    assert [ids(b) for b in result.send_now] == [["n-1"]] and result.held == ()
    assert result.next_wake is None


def test_a_burst_to_a_busy_address_is_held_then_sent_as_one_digest(make_request):
    last_sent = {address_key(EMAIL): T0}
    burst = [pending(make_request, n, seconds=10 + n) for n in range(1, 5)]

    waiting = plan(T0 + dt.timedelta(seconds=20), burst, policy=POLICY, last_sent=last_sent)
    assert waiting.send_now == ()
    assert {h.until for h in waiting.held} == {T0 + WINDOW}
    assert waiting.next_wake == T0 + WINDOW

    released = plan(T0 + WINDOW, burst, policy=POLICY, last_sent=last_sent)
    [digest] = released.send_now
    assert digest.is_digest and ids(digest) == ["n-1", "n-2", "n-3", "n-4"]
    assert released.held == ()


def test_illegal_content_is_never_held_back_even_at_a_busy_address(make_request):
    last_sent = {address_key(EMAIL): T0}
    routine = pending(make_request, 1, seconds=5)
    illegal = pending(make_request, 2, seconds=6, incident_class=IncidentClass.ILLEGAL, urgency=Urgency.HIGH)
    result = plan(T0 + dt.timedelta(seconds=10), [routine, illegal], policy=POLICY, last_sent=last_sent)
    assert [ids(b) for b in result.send_now] == [["n-2"]]
    assert [h.item.request.notification_id for h in result.held] == ["n-1"]


def test_illegal_alerts_are_not_folded_into_a_digest(make_request):
    items = [pending(make_request, n, incident_class=IncidentClass.ILLEGAL) for n in (1, 2)]
    items.append(pending(make_request, 3))
    result = plan(T0, items, policy=POLICY)
    assert [ids(b) for b in result.send_now] == [["n-1"], ["n-2"], ["n-3"]]


def test_a_child_at_immediate_risk_is_never_held_back(make_request):
    last_sent = {address_key(EMAIL): T0}
    urgent = pending(make_request, 1, incident_class=IncidentClass.SECURITY, urgency=Urgency.IMMEDIATE)
    result = plan(T0 + dt.timedelta(seconds=1), [urgent], policy=POLICY, last_sent=last_sent)
    assert [ids(b) for b in result.send_now] == [["n-1"]]


def test_routine_sms_to_a_busy_phone_are_held_and_go_as_one_and_illegal_ones_go_at_once(make_request):
    """Issue 5: a burst for one school does not become a hundred SMS to one phone in a minute."""
    last_sent = {address_key(SMS): T0}
    texts = [pending(make_request, n, channel=SMS) for n in range(1, 31)]
    texts.append(pending(make_request, 99, channel=SMS, incident_class=IncidentClass.ILLEGAL))
    during = plan(T0 + dt.timedelta(seconds=1), texts, policy=POLICY, last_sent=last_sent)
    assert [ids(b) for b in during.send_now] == [["n-99"]]
    assert len(during.held) == 30 and {h.until for h in during.held} == {T0 + WINDOW}
    routine = [t for t in texts if t.request.notification_id != "n-99"]
    after = plan(T0 + WINDOW, routine, policy=POLICY, last_sent=last_sent)
    assert [len(b.items) for b in after.send_now] == [20, 10]  # two SMS for thirty incidents


def test_no_message_waits_longer_than_one_window(make_request):
    last_sent = {address_key(EMAIL): T0 + dt.timedelta(seconds=100)}  # someone else kept the address busy
    old = pending(make_request, 1, seconds=0)
    assert plan(T0 + dt.timedelta(seconds=110), [old], policy=POLICY, last_sent=last_sent).held[0].until == T0 + WINDOW
    assert plan(T0 + WINDOW, [old], policy=POLICY, last_sent=last_sent).send_now


def test_spellings_of_one_address_are_one_address_and_repeats_are_dropped(make_request):
    a = pending(make_request, 1, channel=ChannelAddress(kind=ChannelKind.EMAIL, address="DSL@Oakfield.example "))
    b = pending(make_request, 2, seconds=1)
    again = pending(make_request, 2, seconds=2)
    [batch] = plan(T0 + dt.timedelta(seconds=5), [a, b, again], policy=POLICY).send_now
    assert ids(batch) == ["n-1", "n-2"]
    assert address_key(ChannelAddress(kind=ChannelKind.SMS, address="+44 7700 900123")) == address_key(SMS)


def test_different_addresses_are_planned_independently(make_request):
    other = ChannelAddress(kind=ChannelKind.EMAIL, address="head@oakfield.example")
    last_sent = {address_key(EMAIL): T0}
    result = plan(
        T0 + dt.timedelta(seconds=5),
        [pending(make_request, 1, seconds=1), pending(make_request, 2, seconds=1, channel=other)],
        policy=POLICY,
        last_sent=last_sent,
    )
    assert [ids(b) for b in result.send_now] == [["n-2"]]
    assert [h.item.request.notification_id for h in result.held] == ["n-1"]


def test_large_bursts_are_split_into_digests_of_the_maximum_size(make_request):
    small = ThrottlePolicy(window=WINDOW, max_batch={ChannelKind.EMAIL: 3})
    burst = [pending(make_request, n, seconds=n) for n in range(1, 8)]
    result = plan(T0 + dt.timedelta(seconds=10), burst, policy=small)
    assert [len(b.items) for b in result.send_now] == [3, 3, 1]


def test_most_urgent_batches_go_first(make_request):
    items = [
        pending(make_request, 1, channel=ChannelAddress(kind=ChannelKind.EMAIL, address="a@x.example")),
        pending(make_request, 2, urgency=Urgency.HIGH, channel=ChannelAddress(kind=ChannelKind.EMAIL, address="b@x")),
        pending(make_request, 3, incident_class=IncidentClass.ILLEGAL, seconds=9),
    ]
    assert [ids(b) for b in plan(T0 + dt.timedelta(seconds=10), items, policy=POLICY).send_now] == [
        ["n-3"],
        ["n-2"],
        ["n-1"],
    ]
