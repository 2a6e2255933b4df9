import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CAP_DELIVERY_ACK,
  CAP_ROOM_TICKET,
  MAX_CAPS_CHARS,
  parsePresenceServerMessage,
  parseRoomTicket,
  roomQuery,
  MAX_FRAME_BYTES,
  CAP_SIGNAL_BATCH,
  CAP_EARLY_JOIN,
  parsePresenceCaps,
  parsePresenceClientMessage,
  presenceQuery,
  parseRoomClientMessage,
  parseServerFrame,
  tokenFromProtocolHeader,
  wsProtocols,
} from '../../protocol/index.js';

describe('presence client messages', () => {
  it('parses dial, answer and cancel into typed values', () => {
    expect(parsePresenceClientMessage('{"type":"dial","reqId":"r1","to":"hub-1"}')).toEqual({
      ok: true,
      value: { type: 'dial', reqId: 'r1', to: 'hub-1' },
    });
    expect(parsePresenceClientMessage('{"type":"answer","reqId":"r1","accept":false,"reason":"busy"}')).toEqual({
      ok: true,
      value: { type: 'answer', reqId: 'r1', accept: false, reason: 'busy' },
    });
    expect(parsePresenceClientMessage('{"type":"cancel","reqId":"r1"}')).toMatchObject({ ok: true });
  });

  it.each([
    ['not json', '{', 'malformed'],
    ['array', '[]', 'malformed'],
    ['null', 'null', 'malformed'],
    ['binary', new Uint8Array([123, 125]), 'malformed'],
    ['unknown type', '{"type":"hack"}', 'unknown_type'],
    ['missing to', '{"type":"dial","reqId":"r1"}', 'invalid_field'],
    ['bad target id', '{"type":"dial","reqId":"r1","to":"../x"}', 'invalid_field'],
    ['bad reqId', '{"type":"dial","reqId":"r 1","to":"a"}', 'invalid_field'],
    ['accept not boolean', '{"type":"answer","reqId":"r1","accept":"yes"}', 'invalid_field'],
    ['long reason', `{"type":"answer","reqId":"r1","accept":false,"reason":"${'x'.repeat(201)}"}`, 'invalid_field'],
    ['oversized', `{"type":"dial","pad":"${'x'.repeat(MAX_FRAME_BYTES)}"}`, 'oversized'],
    ['ringing without reqId', '{"type":"ringing"}', 'invalid_field'],
    ['ringing with a numeric reqId', '{"type":"ringing","reqId":7}', 'invalid_field'],
    ['ringing with a bad reqId', '{"type":"ringing","reqId":"a/b"}', 'invalid_field'],
    ['ringing with a long reqId', `{"type":"ringing","reqId":"${'r'.repeat(65)}"}`, 'invalid_field'],
    ['oversized ringing', `{"type":"ringing","reqId":"r1","pad":"${'x'.repeat(MAX_FRAME_BYTES)}"}`, 'oversized'],
  ])('rejects %s with a typed error', (_name, frame, code) => {
    const r = parsePresenceClientMessage(frame);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error.code).toBe(code);
  });

  it('parses the ringing receipt and drops unknown fields', () => {
    expect(parsePresenceClientMessage('{"type":"ringing","reqId":"t-1_A","extra":{"x":1}}')).toEqual({
      ok: true,
      value: { type: 'ringing', reqId: 't-1_A' },
    });
  });

  it('counts the size limit in UTF-8 bytes, not UTF-16 units', () => {
    const r = parsePresenceClientMessage(`{"type":"dial","pad":"${'é'.repeat(MAX_FRAME_BYTES / 2)}"}`);
    expect(r.ok === false && r.error.code).toBe('oversized');
  });
});

describe('presence capabilities in the URL query', () => {
  it('reads the delivery-ack capability, alone or among others', () => {
    expect(parsePresenceCaps(`?caps=${CAP_DELIVERY_ACK}`)).toEqual({ deliveryAck: true, roomTicket: false, signalBatch: false, earlyJoin: false });
    expect(parsePresenceCaps('?caps=future,ack,other')).toEqual({ deliveryAck: true, roomTicket: false, signalBatch: false, earlyJoin: false });
    expect(parsePresenceCaps('caps=ack')).toEqual({ deliveryAck: true, roomTicket: false, signalBatch: false, earlyJoin: false });
    expect(parsePresenceCaps(presenceQuery({ deliveryAck: true }))).toEqual({ deliveryAck: true, roomTicket: false, signalBatch: false, earlyJoin: false });
    expect(presenceQuery({ deliveryAck: false })).toBe('');
  });

  it('reads the room-ticket capability, and declares both together', () => {
    expect(parsePresenceCaps(`?caps=${CAP_ROOM_TICKET}`)).toEqual({ deliveryAck: false, roomTicket: true, signalBatch: false, earlyJoin: false });
    expect(presenceQuery({ deliveryAck: true, roomTicket: true })).toBe('?caps=ack,ticket');
    expect(parsePresenceCaps(presenceQuery({ deliveryAck: true, roomTicket: true }))).toEqual({ deliveryAck: true, roomTicket: true, signalBatch: false, earlyJoin: false });
    expect(presenceQuery({ deliveryAck: false, roomTicket: true })).toBe('?caps=ticket');
  });

  it('reads the signal-batch capability, and declares all three together', () => {
    expect(parsePresenceCaps(`?caps=${CAP_SIGNAL_BATCH}`)).toEqual({ deliveryAck: false, roomTicket: false, signalBatch: true, earlyJoin: false });
    const three = { deliveryAck: true, roomTicket: true, signalBatch: true };
    expect(presenceQuery(three)).toBe('?caps=ack,ticket,batch');
    expect(parsePresenceCaps(presenceQuery(three))).toEqual({ ...three, earlyJoin: false });
    expect(parsePresenceCaps('?caps=batches')).toEqual({ deliveryAck: false, roomTicket: false, signalBatch: false, earlyJoin: false });
  });

  it('reads the early-join capability, and declares all four together', () => {
    expect(parsePresenceCaps(`?caps=${CAP_EARLY_JOIN}`)).toEqual({ deliveryAck: false, roomTicket: false, signalBatch: false, earlyJoin: true });
    const all = { deliveryAck: true, roomTicket: true, signalBatch: true, earlyJoin: true };
    expect(presenceQuery(all)).toBe('?caps=ack,ticket,batch,early');
    expect(parsePresenceCaps(presenceQuery(all))).toEqual(all);
    expect(parsePresenceCaps('?caps=earlyjoin')).toEqual({ deliveryAck: false, roomTicket: false, signalBatch: false, earlyJoin: false });
  });

  it.each([
    ['no query', ''],
    ['another parameter', '?x=ack'],
    ['an unknown capability', '?caps=acknowledge'],
    ['a different case', '?caps=ACK'],
    ['a repeated parameter', '?caps=ack&caps=ack'],
    ['an oversized value', `?caps=${'x,'.repeat(MAX_CAPS_CHARS)}ack`],
    ['an oversized query', `?pad=${'x'.repeat(4 * MAX_CAPS_CHARS)}&caps=ack`],
    ['a garbled escape', '?caps=%E0%A4%A'],
  ])('declares nothing for %s', (_name, search) => {
    expect(parsePresenceCaps(search)).toEqual({ deliveryAck: false, roomTicket: false, signalBatch: false, earlyJoin: false });
  });

  it('never throws on arbitrary query strings', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 600 }), (q) => {
        const caps = parsePresenceCaps(q);
        expect(typeof caps.deliveryAck).toBe('boolean');
      }),
    );
  });
});

describe('room tickets on the wire', () => {
  const ticket = `${'A'.repeat(100)}.${'b'.repeat(43)}`;
  const session = { type: 'session', reqId: 'r1', sessionId: 'abcdefghijklmnopqrstuv', peer: 'hub-1', role: 'initiator', iceServers: [], deadline: 1 };

  it('round-trips through the room URL query; anything else is no ticket', () => {
    expect(roomQuery(undefined)).toBe('');
    expect(parseRoomTicket(roomQuery(ticket))).toBe(ticket);
    for (const q of ['', '?ticket=', `?ticket=${ticket}&ticket=${ticket}`, `?ticket=${ticket}x`, `?ticket=${'A'.repeat(600)}.${'b'.repeat(43)}`, '?ticket=a.b', '?ticket=%E0%A4%A', `?pad=${'x'.repeat(1100)}&ticket=${ticket}`]) {
      expect(parseRoomTicket(q)).toBeNull();
    }
  });

  it('a session carries a ticket of the right shape or none; any other ticket refuses the frame', () => {
    expect(parsePresenceServerMessage(JSON.stringify(session))).toMatchObject({ ok: true, value: { type: 'session' } });
    expect(parsePresenceServerMessage(JSON.stringify({ ...session, ticket }))).toMatchObject({ ok: true, value: { ticket } });
    for (const bad of [42, '', 'a.b', `${ticket}!`, `${'A'.repeat(500)}.${'b'.repeat(43)}`]) {
      expect(parsePresenceServerMessage(JSON.stringify({ ...session, ticket: bad })).ok).toBe(false);
    }
  });

  it('a session says batch: true, or nothing; false reads as absent, anything else refuses the frame', () => {
    expect(parsePresenceServerMessage(JSON.stringify({ ...session, batch: true }))).toMatchObject({ ok: true, value: { batch: true } });
    const off = parsePresenceServerMessage(JSON.stringify({ ...session, batch: false }));
    expect(off.ok && 'batch' in off.value).toBe(false);
    for (const bad of [1, 'true', null, {}]) expect(parsePresenceServerMessage(JSON.stringify({ ...session, batch: bad })).ok).toBe(false);
  });

  it("an early session is the initiator's and carries a ticket; any other early session refuses the frame", () => {
    expect(parsePresenceServerMessage(JSON.stringify({ ...session, ticket, early: true }))).toMatchObject({ ok: true, value: { early: true, ticket } });
    const off = parsePresenceServerMessage(JSON.stringify({ ...session, early: false }));
    expect(off.ok && 'early' in off.value).toBe(false);
    expect(parsePresenceServerMessage(JSON.stringify({ ...session, early: true })).ok).toBe(false); // no ticket
    expect(parsePresenceServerMessage(JSON.stringify({ ...session, ticket, role: 'responder', early: true })).ok).toBe(false);
    for (const bad of [1, 'true', null, {}]) expect(parsePresenceServerMessage(JSON.stringify({ ...session, ticket, early: bad })).ok).toBe(false);
  });

  it("a request carries the target's early half whole, or nothing; a malformed one refuses the frame", () => {
    const request = { type: 'request', reqId: 'r1', from: 'app-1', sessionId: 'abcdefghijklmnopqrstuv', timeoutMs: 1000 };
    const early = { iceServers: [{ urls: ['stun:127.0.0.1:3478'] }], deadline: 5, ticket };
    expect(parsePresenceServerMessage(JSON.stringify(request))).toEqual({ ok: true, value: request });
    expect(parsePresenceServerMessage(JSON.stringify({ ...request, early }))).toEqual({ ok: true, value: { ...request, early } });
    expect(parsePresenceServerMessage(JSON.stringify({ ...request, early: { ...early, batch: true } }))).toMatchObject({ ok: true, value: { early: { batch: true } } });
    // Unknown fields inside are dropped, not passed on.
    expect(parsePresenceServerMessage(JSON.stringify({ ...request, early: { ...early, evil: 'x' } }))).toEqual({ ok: true, value: { ...request, early } });
    for (const bad of [
      null,
      [],
      'x',
      { ...early, ticket: undefined },
      { ...early, ticket: 'a.b' },
      { ...early, deadline: '5' },
      { ...early, deadline: null },
      { ...early, iceServers: 'stun:x' },
      { ...early, iceServers: [{ urls: ['http://x'] }] },
      { ...early, batch: 'yes' },
    ]) {
      expect(parsePresenceServerMessage(JSON.stringify({ ...request, early: bad })).ok).toBe(false);
    }
  });
});

describe('cancelled', () => {
  it("says reason 'timeout' or nothing; any other reason refuses the frame", () => {
    expect(parsePresenceServerMessage('{"type":"cancelled","reqId":"r1"}')).toEqual({ ok: true, value: { type: 'cancelled', reqId: 'r1' } });
    expect(parsePresenceServerMessage('{"type":"cancelled","reqId":"r1","reason":"timeout"}')).toEqual({ ok: true, value: { type: 'cancelled', reqId: 'r1', reason: 'timeout' } });
    for (const bad of ['"withdrawn"', '1', 'null', '{}']) expect(parsePresenceServerMessage(`{"type":"cancelled","reqId":"r1","reason":${bad}}`).ok).toBe(false);
  });

  it("a dialer's cancel says reason 'timeout' or nothing; any other reason is refused", () => {
    expect(parsePresenceClientMessage('{"type":"cancel","reqId":"r1"}')).toEqual({ ok: true, value: { type: 'cancel', reqId: 'r1' } });
    expect(parsePresenceClientMessage('{"type":"cancel","reqId":"r1","reason":"timeout"}')).toEqual({ ok: true, value: { type: 'cancel', reqId: 'r1', reason: 'timeout' } });
    for (const bad of ['"abort"', 'true', 'null']) expect(parsePresenceClientMessage(`{"type":"cancel","reqId":"r1","reason":${bad}}`)).toMatchObject({ ok: false, error: { code: 'invalid_field' } });
  });
});

describe('room client messages', () => {
  it('parses each signal kind', () => {
    const kinds = [
      { kind: 'offer', sdp: 'v=0' },
      { kind: 'offer', sdp: 'v=0', restart: true },
      { kind: 'offer', sdp: 'v=0', rebuild: true },
      { kind: 'offer', sdp: 'v=0', probe: true },
      { kind: 'answer', sdp: 'v=0' },
      { kind: 'answer', sdp: 'v=0', probe: true },
      { kind: 'candidate', candidate: 'candidate:1 1 udp 1 198.18.0.1 5000 typ host', probe: true, sdpMid: '0', sdpMLineIndex: 0 },
      { kind: 'candidate', candidate: 'candidate:1 1 udp 1 127.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 },
      { kind: 'candidate', candidate: '' },
      { kind: 'identity', cert: 'a.b.c', proof: 'd.e.f' },
      { kind: 'identity', cert: 'a.b.c', proof: 'd.e.f', resume: true, noRestart: true },
      { kind: 'identity', cert: 'a.b.c', proof: 'd.e.f', resume: true, probe: true },
      { kind: 'identity', cert: 'a.b.c', proof: 'd.e.f', earlyDtls: true },
      { kind: 'bye' },
      { kind: 'batch', items: [{ kind: 'offer', sdp: 'v=0' }, { kind: 'candidate', candidate: 'candidate:1 1 udp 1 127.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 }, { kind: 'candidate', candidate: '' }] },
      { kind: 'batch', items: [{ kind: 'identity', cert: 'a.b.c', proof: 'd.e.f', resume: true, probe: true }] },
    ];
    for (const data of kinds) {
      expect(parseRoomClientMessage(JSON.stringify({ type: 'signal', data }))).toEqual({ ok: true, value: { type: 'signal', data } });
    }
    expect(parseRoomClientMessage('{"type":"ice_servers"}')).toEqual({ ok: true, value: { type: 'ice_servers' } });
  });

  it('drops unknown fields instead of forwarding them', () => {
    const r = parseRoomClientMessage('{"type":"signal","data":{"kind":"bye","evil":"x"}}');
    expect(r).toEqual({ ok: true, value: { type: 'signal', data: { kind: 'bye' } } });
  });

  it('keeps identity flags only when true (false is the same as absent)', () => {
    const r = parseRoomClientMessage('{"type":"signal","data":{"kind":"identity","cert":"a","proof":"b","earlyDtls":false,"resume":true,"probe":false}}');
    expect(r).toEqual({ ok: true, value: { type: 'signal', data: { kind: 'identity', cert: 'a', proof: 'b', resume: true } } });
  });

  it.each([
    ['no data', '{"type":"signal"}'],
    ['unknown kind', '{"type":"signal","data":{"kind":"x"}}'],
    ['empty sdp', '{"type":"signal","data":{"kind":"offer","sdp":""}}'],
    ['restart not boolean', '{"type":"signal","data":{"kind":"offer","sdp":"v=0","restart":1}}'],
    ['rebuild not boolean', '{"type":"signal","data":{"kind":"offer","sdp":"v=0","rebuild":"yes"}}'],
    ['restart and rebuild at once', '{"type":"signal","data":{"kind":"offer","sdp":"v=0","restart":true,"rebuild":true}}'],
    ['rebuild and probe at once', '{"type":"signal","data":{"kind":"offer","sdp":"v=0","rebuild":true,"probe":true}}'],
    ['probe not boolean (offer)', '{"type":"signal","data":{"kind":"offer","sdp":"v=0","probe":"yes"}}'],
    ['probe not boolean (answer)', '{"type":"signal","data":{"kind":"answer","sdp":"v=0","probe":1}}'],
    ['probe not boolean (candidate)', '{"type":"signal","data":{"kind":"candidate","candidate":"","probe":{}}}'],
    ['probe not boolean (identity)', '{"type":"signal","data":{"kind":"identity","cert":"a","proof":"b","probe":"true"}}'],
    ['resume not boolean', '{"type":"signal","data":{"kind":"identity","cert":"a","proof":"b","resume":1}}'],
    ['noRestart not boolean', '{"type":"signal","data":{"kind":"identity","cert":"a","proof":"b","noRestart":"true"}}'],
    ['earlyDtls not boolean', '{"type":"signal","data":{"kind":"identity","cert":"a","proof":"b","earlyDtls":1}}'],
    ['bad mline', '{"type":"signal","data":{"kind":"candidate","candidate":"","sdpMLineIndex":-1}}'],
    ['identity without proof', '{"type":"signal","data":{"kind":"identity","cert":"a"}}'],
  ])('rejects %s', (_name, frame) => {
    expect(parseRoomClientMessage(frame).ok).toBe(false);
  });

  it('never throws on arbitrary input', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json(), fc.anything()), (input) => {
        parseRoomClientMessage(input);
        parsePresenceClientMessage(input);
        parseServerFrame(input);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('token in Sec-WebSocket-Protocol', () => {
  it('round-trips through the header a browser sends', () => {
    const token = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln';
    expect(tokenFromProtocolHeader(wsProtocols(token).join(', '))).toBe(token);
  });

  it.each([null, '', 'homelink.v1', 'homelink.auth.x', 'homelink.v1, homelink.auth.', 'homelink.v1, homelink.auth.a, homelink.auth.b'])(
    'refuses %j',
    (h) => {
      expect(tokenFromProtocolHeader(h)).toBeNull();
    },
  );
});
