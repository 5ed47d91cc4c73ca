#!/usr/bin/python3
"""pika scenarios against Gantry's AMQP gateway (issue 9), driven by
amqp_pika.test.mjs: `amqp_pika.py PORT SCENARIO`.  Each scenario uses pika's
BlockingConnection as an application would, asserts what it sees and exits 0;
any failure is an exception (exit 1, traceback on stderr).  Time bounds are
multiplied by GANTRY_TEST_TIME_SCALE (the harness's TIME_SCALE); the
scenarios wait for conditions, never for fixed times.

Debian's python3-pika (1.2) under /usr/bin/python3."""

import os
import sys
import time

import pika
import pika.exceptions as px

SCALE = float(os.environ.get('GANTRY_TEST_TIME_SCALE') or 1)
PORT = int(sys.argv[1])


def scaled(seconds):
    return seconds * SCALE


def connect(**kw):
    kw.setdefault('blocked_connection_timeout', None)
    params = pika.ConnectionParameters(
        host='127.0.0.1', port=PORT,
        credentials=pika.PlainCredentials('guest', 'guest'), **kw)
    return pika.BlockingConnection(params)


def pump(conn, cond, seconds, what):
    """Runs the connection's I/O until cond() holds; fails after
    scaled(seconds)."""
    deadline = time.monotonic() + scaled(seconds)
    while not cond():
        if time.monotonic() >= deadline:
            raise AssertionError('timeout after %.1f s: %s' % (scaled(seconds), what))
        conn.process_data_events(time_limit=0.05)


def fresh_queue(ch, name, **kw):
    ch.queue_delete(name)
    return ch.queue_declare(name, **kw)


def scenario_confirms():
    """Publishes with confirms (every basic_publish returns once acked),
    mandatory to no queue raises UnroutableError, then consumes the
    messages in order with their properties and acks them."""
    conn = connect()
    ch = conn.channel()
    ch.confirm_delivery()
    fresh_queue(ch, 'pika.confirms', durable=True)
    n = 200
    for i in range(n):
        ch.basic_publish('', 'pika.confirms', ('body-%d' % i).encode() * (i % 7 + 1),
                         pika.BasicProperties(content_type='text/plain', delivery_mode=2,
                                              message_id='id-%d' % i,
                                              headers={'i': i, 's': 'x' * (i % 3)}),
                         mandatory=True)
    try:
        ch.basic_publish('', 'pika.nowhere', b'lost', mandatory=True)
        raise AssertionError('a mandatory publish to no queue was confirmed')
    except px.UnroutableError as e:
        assert len(e.messages) == 1 and e.messages[0].body == b'lost', e.messages
        assert e.messages[0].method.reply_code == 312, e.messages[0].method
    assert ch.queue_declare('pika.confirms', passive=True).method.message_count == n

    got = []

    def on_message(chan, method, props, body):
        got.append((method, props, body))
        chan.basic_ack(method.delivery_tag)

    ch.basic_qos(prefetch_count=50)
    tag = ch.basic_consume('pika.confirms', on_message)
    pump(conn, lambda: len(got) >= n, 30, '%d deliveries' % n)
    ch.basic_cancel(tag)
    for i, (method, props, body) in enumerate(got):
        assert body == ('body-%d' % i).encode() * (i % 7 + 1), (i, body)
        assert method.redelivered is False, (i, method)
        assert props.content_type == 'text/plain', props
        assert props.delivery_mode == 2, props
        assert props.message_id == 'id-%d' % i, props
        assert props.headers == {'i': i, 's': 'x' * (i % 3)}, props.headers
    assert ch.queue_declare('pika.confirms', passive=True).method.message_count == 0
    ch.queue_delete('pika.confirms')
    conn.close()


def scenario_qos():
    """basic_qos prefetch 5: the consumer never holds more than 5 unacked
    deliveries, and the server fills the window (the test acks the oldest
    only once the window is full).  Then a channel-wide (global) prefetch of
    4 shared by two consumers on one channel."""
    conn = connect()
    ch = conn.channel()
    fresh_queue(ch, 'pika.qos')
    n, prefetch = 60, 5
    for i in range(n):
        ch.basic_publish('', 'pika.qos', b'%d' % i)
    pump(conn, lambda: ch.queue_declare('pika.qos', passive=True).method.message_count == n,
         10, 'published')
    ch.basic_qos(prefetch_count=prefetch)
    unacked = []
    seen = []
    peak = [0]

    def on_message(chan, method, props, body):
        unacked.append(method.delivery_tag)
        seen.append(int(body))
        peak[0] = max(peak[0], len(unacked))
        assert len(unacked) <= prefetch, 'unacked %d > prefetch %d' % (len(unacked), prefetch)

    tag = ch.basic_consume('pika.qos', on_message)
    while len(seen) < n or unacked:
        window = min(prefetch, n - len(seen) + len(unacked))
        pump(conn, lambda: len(unacked) >= window, 10,
             'a full window of %d (have %d unacked, %d seen)' % (window, len(unacked), len(seen)))
        ch.basic_ack(unacked.pop(0))
    assert peak[0] == prefetch, peak
    assert seen == list(range(n)), seen
    ch.basic_cancel(tag)

    # global: the prefetch is the channel's, across its consumers.
    fresh_queue(ch, 'pika.qos.a')
    fresh_queue(ch, 'pika.qos.b')
    for i in range(20):
        ch.basic_publish('', 'pika.qos.a', b'a')
        ch.basic_publish('', 'pika.qos.b', b'b')
    ch.basic_qos(prefetch_count=4, global_qos=True)
    held = []

    seen_by = {'a': 0, 'b': 0}

    def hold(chan, method, props, body):
        held.append(method.delivery_tag)
        seen_by[body.decode()] += 1
        assert len(held) <= 4, 'channel holds %d unacked > global prefetch 4' % len(held)

    ta = ch.basic_consume('pika.qos.a', hold)
    tb = ch.basic_consume('pika.qos.b', hold)
    total = 0
    while total < 40:
        pump(conn, lambda: len(held) >= min(4, 40 - total), 10,
             'the channel window filled (%d held, %d acked, %s)' % (len(held), total, seen_by))
        ch.basic_ack(held.pop(0))
        total += 1
    ch.basic_cancel(ta)
    ch.basic_cancel(tb)
    for q in ('pika.qos', 'pika.qos.a', 'pika.qos.b'):
        ch.queue_delete(q)
    conn.close()


def scenario_nack_requeue():
    """basic_nack / basic_reject with requeue: the message comes back with
    redelivered=True; without requeue it is gone; nack multiple requeues
    every earlier unacked delivery."""
    conn = connect()
    ch = conn.channel()
    fresh_queue(ch, 'pika.nack')
    for i in range(3):
        ch.basic_publish('', 'pika.nack', b'm%d' % i)
    got = []
    ch.basic_qos(prefetch_count=10)
    tag = ch.basic_consume('pika.nack', lambda c, m, p, b: got.append((m, b)))
    pump(conn, lambda: len(got) == 3, 10, 'three deliveries')
    assert [b for _, b in got] == [b'm0', b'm1', b'm2'], got
    assert not any(m.redelivered for m, _ in got), got
    first = {b: m for m, b in got}
    got.clear()
    ch.basic_nack(first[b'm0'].delivery_tag, requeue=True)
    ch.basic_reject(first[b'm1'].delivery_tag, requeue=True)
    ch.basic_nack(first[b'm2'].delivery_tag, requeue=False)  # dropped
    pump(conn, lambda: len(got) == 2, 10, 'the two requeued messages again')
    assert sorted(b for _, b in got) == [b'm0', b'm1'], got
    for m, b in got:
        assert m.redelivered is True, (b, m)
    again = list(got)
    got.clear()
    # nack multiple on the later tag requeues both.
    last = max(m.delivery_tag for m, _ in again)
    ch.basic_nack(last, multiple=True, requeue=True)
    pump(conn, lambda: len(got) == 2, 10, 'both back after nack multiple')
    assert sorted(b for _, b in got) == [b'm0', b'm1'], got
    assert all(m.redelivered for m, _ in got), got
    for m, _ in got:
        ch.basic_ack(m.delivery_tag)
    ch.basic_cancel(tag)
    assert ch.queue_declare('pika.nack', passive=True).method.message_count == 0
    # basic_get sees a requeued message as redelivered too.
    ch.basic_publish('', 'pika.nack', b'g')
    pump(conn, lambda: ch.queue_declare('pika.nack', passive=True).method.message_count == 1,
         10, 'published')
    m, _, body = ch.basic_get('pika.nack')
    assert body == b'g' and m.redelivered is False, (m, body)
    ch.basic_nack(m.delivery_tag, requeue=True)
    m = [None]

    def get():
        m[0] = ch.basic_get('pika.nack')
        return m[0][0] is not None

    pump(conn, get, 10, 'the requeued message from basic_get')
    assert m[0][2] == b'g' and m[0][0].redelivered is True, m[0]
    ch.basic_ack(m[0][0].delivery_tag)

    # A requeued message goes back ahead of newer ones, as RabbitMQ puts
    # it back at its place: with prefetch 1 the next delivery is m0 again.
    for i in range(3):
        ch.basic_publish('', 'pika.nack', b'm%d' % i)
    pump(conn, lambda: ch.queue_declare('pika.nack', passive=True).method.message_count == 3,
         10, 'published')
    ch.basic_qos(prefetch_count=1)
    got.clear()
    tag = ch.basic_consume('pika.nack', lambda c, m, p, b: got.append((m, b)))
    pump(conn, lambda: len(got) == 1, 10, 'the first delivery')
    m_, b_ = got.pop()
    assert (b_, m_.redelivered) == (b'm0', False), (b_, m_)
    ch.basic_nack(m_.delivery_tag, requeue=True)
    order = []
    for _ in range(3):
        pump(conn, lambda: len(got) == 1, 10, 'the next delivery')
        m_, b_ = got.pop()
        order.append((b_, m_.redelivered))
        ch.basic_ack(m_.delivery_tag)
    assert order == [(b'm0', True), (b'm1', False), (b'm2', False)], order
    ch.basic_cancel(tag)
    ch.queue_delete('pika.nack')
    conn.close()


def expect_closed(fn, code, text):
    try:
        fn()
    except px.ChannelClosedByBroker as e:
        assert e.reply_code == code, (e.reply_code, e.reply_text)
        assert text in e.reply_text, e.reply_text
        return
    raise AssertionError('expected a channel close %d' % code)


def scenario_exclusive():
    """An exclusive queue belongs to its connection: a second connection's
    declare, passive declare, consume, get, purge and delete get 405
    RESOURCE_LOCKED; when the owner closes, the queue is gone."""
    owner = connect()
    och = owner.channel()
    och.queue_declare('pika.excl', exclusive=True)
    och.basic_publish('', 'pika.excl', b'mine')
    other = connect()
    locked = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'pika.excl'"
    for fn in (lambda c: c.queue_declare('pika.excl'),
               lambda c: c.queue_declare('pika.excl', exclusive=True),
               lambda c: c.queue_declare('pika.excl', passive=True),
               lambda c: c.basic_consume('pika.excl', lambda *a: None),
               lambda c: c.basic_get('pika.excl'),
               lambda c: c.queue_purge('pika.excl'),
               lambda c: c.queue_delete('pika.excl')):
        ch = other.channel()
        expect_closed(lambda: fn(ch), 405, locked)
    # The owner still uses it.
    m = [None]

    def get():
        m[0] = och.basic_get('pika.excl', auto_ack=True)
        return m[0][0] is not None

    pump(owner, get, 10, 'the owner gets its message')
    assert m[0][2] == b'mine'
    owner.close()

    def gone():
        ch = other.channel()
        try:
            ch.queue_declare('pika.excl', passive=True)
        except px.ChannelClosedByBroker as e:
            if e.reply_code == 404:
                assert e.reply_text == "NOT_FOUND - no queue 'pika.excl' in vhost '/'", e
                return True
            assert e.reply_code == 405, e  # still being deleted
        return False

    pump(other, gone, 10, "the owner's exclusive queue deleted with its connection")
    ch = other.channel()
    assert ch.queue_declare('pika.excl', exclusive=True).method.message_count == 0
    other.close()


def scenario_heartbeats():
    """A heartbeat of HB seconds (1, scaled) is negotiated; the connection
    sits idle while both sides exchange heartbeats for several intervals and
    stays open, then still works."""
    hb = max(1, int(round(scaled(1))))
    conn = connect(heartbeat=hb)
    checker = conn._impl._heartbeat_checker
    assert checker is not None, 'no heartbeat checker: heartbeat not negotiated'
    assert conn._impl.params.heartbeat == hb, conn._impl.params.heartbeat
    ch = conn.channel()
    intervals = 5
    pump(conn, lambda: checker._heartbeat_frames_received >= intervals, hb * (intervals + 3) + 5,
         '%d heartbeats from the server' % intervals)
    assert checker._heartbeat_frames_sent >= intervals, checker._heartbeat_frames_sent
    assert conn.is_open and ch.is_open
    fresh_queue(ch, 'pika.hb')
    ch.basic_publish('', 'pika.hb', b'after idle')
    m = [None]

    def get():
        m[0] = ch.basic_get('pika.hb', auto_ack=True)
        return m[0][0] is not None

    pump(conn, get, 10, 'a round trip after the idle time')
    assert m[0][2] == b'after idle'
    ch.queue_delete('pika.hb')
    conn.close()


def scenario_blocked():
    """Against a gantry whose flow-control mark is 1 byte (every append in
    flight blocks its publishers): a confirming publisher gets
    connection.blocked 'low on memory' and then connection.unblocked (pika
    drops a connection blocked longer than blocked_connection_timeout),
    every publish is confirmed, and a consumer connection that never
    published is never blocked and gets the messages in order."""
    events = []
    pub = connect(blocked_connection_timeout=scaled(30))
    pub.add_on_connection_blocked_callback(
        lambda c, m: events.append(('blocked', m.method.reason)))
    pub.add_on_connection_unblocked_callback(lambda c, m: events.append(('unblocked',)))
    sub = connect()
    sub_events = []
    sub.add_on_connection_blocked_callback(lambda c, m: sub_events.append('blocked'))
    sch = sub.channel()
    fresh_queue(sch, 'pika.blocked')
    got = []

    def on_message(chan, method, props, body):
        got.append(body)
        chan.basic_ack(method.delivery_tag)

    sch.basic_consume('pika.blocked', on_message)
    ch = pub.channel()
    ch.confirm_delivery()
    n = 20
    for i in range(n):
        ch.basic_publish('', 'pika.blocked', b'f%d' % i)  # returns once confirmed
    pump(pub, lambda: events and events[-1] == ('unblocked',), 10, 'unblocked at the end')
    assert ('blocked', 'low on memory') in events, events
    pump(sub, lambda: len(got) >= n, 10, 'the consumer gets all %d' % n)
    assert got == [b'f%d' % i for i in range(n)], got
    assert sub_events == [], 'a connection that never published was blocked'
    assert pub.is_open
    sch.queue_delete('pika.blocked')
    pub.close()
    sub.close()


def scenario_xdeath_count_max():
    """A client-set x-death entry whose count is the largest long: the
    next death of that queue and reason keeps it there (it went negative)."""
    conn = connect()
    ch = conn.channel()
    fresh_queue(ch, 'pika.xd.dlq')
    fresh_queue(ch, 'pika.xd.src', arguments={'x-dead-letter-exchange': '',
                                             'x-dead-letter-routing-key': 'pika.xd.dlq'})
    big = 2 ** 63 - 1
    death = {'count': big, 'reason': 'rejected', 'queue': 'pika.xd.src', 'exchange': '',
             'routing-keys': ['pika.xd.src']}
    ch.basic_publish('', 'pika.xd.src', b'x', pika.BasicProperties(headers={'x-death': [death]}))
    m = [None]

    def get(q):
        def f():
            m[0] = ch.basic_get(q)
            return m[0][0] is not None
        return f

    pump(conn, get('pika.xd.src'), 10, 'the published message')
    ch.basic_reject(m[0][0].delivery_tag, requeue=False)
    pump(conn, get('pika.xd.dlq'), 10, 'the dead-lettered message')
    ch.basic_ack(m[0][0].delivery_tag)
    deaths = m[0][1].headers['x-death']
    assert len(deaths) == 1 and deaths[0]['count'] == big, deaths
    ch.queue_delete('pika.xd.src')
    ch.queue_delete('pika.xd.dlq')
    conn.close()


SCENARIOS = {name[len('scenario_'):]: fn for name, fn in globals().items()
             if name.startswith('scenario_')}

if __name__ == '__main__':
    SCENARIOS[sys.argv[2]]()
    print('ok', sys.argv[2])
