/**
 * Hibernation with sockets open: workerd hibernates an idle object after about 10 s and builds a
 * new instance on the next event, so everything after the pause runs on objects rebuilt from
 * storage and socket attachments (a pending request lives only in the presence sockets'
 * attachments while both sides are connected). Also: a socket whose token has expired is closed
 * with 1008.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { SEQ_LEASE } from '../../worker/room-rules.js';
import { TIMER_HORIZON_MS } from '../../worker/config.js';
import { connect, online } from './helpers.js';

/** workerd hibernates an object after 10 s without events; wait past that. */
const IDLE_MS = 12_000;
/**
 * With a request pending, the object's last event before the pause is the timer that moves the
 * alarm for it, TIMER_HORIZON_MS after the dial (worker/presence.ts `rearm`).
 */
const PENDING_IDLE_MS = IDLE_MS + TIMER_HORIZON_MS;

let sig: SignalingHandle;
/** The objects' trace lines (`DEBUG_TRACE_EVENTS`): `wake` proves an instance was built again. */
const lines: string[] = [];
const wakes = (kind: string): number => lines.filter((l) => l === `homelink-trace ${kind} wake`).length;
beforeAll(async () => {
  sig = await startSignaling({ vars: { DEBUG_TRACE_EVENTS: '1' }, onOutput: (l) => lines.push(l) });
});
afterAll(async () => sig?.close());

describe('after hibernation', () => {
  it('presence routing, pending requests and room numbering carry on', { timeout: 60_000 }, async () => {
    const at = await sig.issuer.accessToken({ sub: 'h-app', homes: ['home-1'] });
    const ht = await sig.issuer.accessToken({ sub: 'h-hub', homes: ['home-1'] });
    const app = await online(sig.url, at);
    const hub = await online(sig.url, ht);
    app.send({ type: 'dial', reqId: 'one', to: 'h-hub' });
    const req = await hub.next('request');
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    const s = await app.next('session');
    await hub.next('session');
    const ra = await connect(sig.url, `/v1/rooms/${s.sessionId}`, at);
    await ra.next('joined');
    const rb = await connect(sig.url, `/v1/rooms/${s.sessionId}`, ht);
    await rb.next('joined');
    await ra.next('peer_joined');
    ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'o' } });
    expect(await rb.next('signal')).toMatchObject({ seq: 1 });
    const roomWakes = wakes('room');

    await new Promise((r) => setTimeout(r, IDLE_MS));

    // Room: the rebuilt instance knows both sockets, their sides and the numbering. The hub was
    // sent seq 1, which reserved 1..SEQ_LEASE on its socket; the rebuilt room goes on after the
    // reservation (it cannot know how much of it was used): numbers skip ahead, never repeat.
    ra.send({ type: 'signal', data: { kind: 'candidate', candidate: 'c' } });
    ra.send({ type: 'signal', data: { kind: 'candidate', candidate: 'd' } });
    expect(await rb.next('signal')).toEqual({ type: 'signal', seq: 1 + SEQ_LEASE, data: { kind: 'candidate', candidate: 'c' } });
    expect(await rb.next('signal')).toEqual({ type: 'signal', seq: 2 + SEQ_LEASE, data: { kind: 'candidate', candidate: 'd' } });
    // The app was sent nothing before: its numbering starts at 1.
    rb.send({ type: 'signal', data: { kind: 'answer', sdp: 'a' } });
    expect(await ra.next('signal')).toMatchObject({ seq: 1, data: { kind: 'answer' } });
    // The numbering above came from a rebuilt room instance, not a live one.
    expect(wakes('room')).toBeGreaterThan(roomWakes);
    // Presence: identities come back from the attachments; a second request goes through.
    app.send({ type: 'dial', reqId: 'two', to: 'h-hub' });
    const req2 = await hub.next('request');
    expect(req2.from).toBe('h-app');
    hub.send({ type: 'answer', reqId: req2.reqId, accept: false, reason: 'later' });
    expect(await app.next('rejected')).toMatchObject({ reqId: 'two', reason: 'later' });
    for (const x of [app, hub, ra, rb]) x.close();
  });
});

describe('a pending request across hibernation', () => {
  it('is answered, and expires by the alarm, after both presence objects were rebuilt', { timeout: 60_000 }, async () => {
    const tok = (sub: string): Promise<string> => sig.issuer.accessToken({ sub, homes: ['home-p'] });
    const [app, hub, app2, hub2] = await Promise.all([online(sig.url, await tok('p-app')), online(sig.url, await tok('p-hub')), online(sig.url, await tok('p-app2')), online(sig.url, await tok('p-hub2'))]);
    // Pair 1 rings and is answered after the pause; pair 2's budget ends after the objects hibernated.
    app.send({ type: 'dial', reqId: 'held', to: 'p-hub' });
    app2.send({ type: 'dial', reqId: 'short', to: 'p-hub2', timeoutMs: PENDING_IDLE_MS + 2000 });
    const req = await hub.next('request');
    const req2 = await hub2.next('request');
    const wakesBefore = wakes('presence');

    await new Promise((r) => setTimeout(r, PENDING_IDLE_MS));

    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    const sa = await app.next('session');
    const sb = await hub.next('session');
    expect(sa).toMatchObject({ reqId: 'held', peer: 'p-hub', role: 'initiator' });
    expect(sb).toMatchObject({ reqId: req.reqId, peer: 'p-app', role: 'responder', sessionId: sa.sessionId });
    // The alarm woke pair 2's objects: the dial, read back from the attachment, timed out.
    expect(await app2.next('dial_failed')).toMatchObject({ reqId: 'short', code: 'timeout' });
    expect(await hub2.next('cancelled')).toMatchObject({ reqId: req2.reqId });
    // All four presence objects were built again after the pause: the requests survived
    // hibernation, not a live instance.
    expect(wakes('presence') - wakesBefore).toBeGreaterThanOrEqual(4);
    // And a second answer to the same request is out of state: the record is gone from the attachment.
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    expect(await hub.next('error')).toMatchObject({ code: 'out_of_state' });
    for (const x of [app, hub, app2, hub2]) x.close();
  });
});

describe('token expiry', () => {
  it('a socket whose token has expired is closed with 1008 on its next message', async () => {
    const t = await sig.issuer.accessToken({ sub: 'x-app', homes: ['home-1'], ttlSeconds: 1 });
    const app = await online(sig.url, t);
    await new Promise((r) => setTimeout(r, 1500));
    app.send({ type: 'cancel', reqId: 'x' });
    expect(await app.closed()).toBe(1008);
    expect(app.frames).toEqual([]);
  });
});
