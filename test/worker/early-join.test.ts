/**
 * Early join (issue 10 item 3, protocol/messages.ts CAP_EARLY_JOIN): when both sides declare
 * `?caps=early` (with `ticket`), the dialer gets its `session` as soon as the request reached the
 * target, joins the room and leaves its offer there before the target answers; the target's
 * `request` carries its half of the session, so it joins as it accepts. Neither gets a later
 * `session`. A side without the capability keeps the old exchange. Real workerd, real sockets.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TICKET_PARAM } from '../../protocol/messages.js';
import { Meters, startSignaling, type SignalingHandle } from '../support/signaling.js';
import { connect, online, type Frame, type TestSocket } from './helpers.js';

let sig: SignalingHandle;
const meters = new Meters();

beforeAll(async () => {
  sig = await startSignaling({ relays: [], roomGraceMs: 200, vars: { DEBUG_TRACE_EVENTS: '1' }, onOutput: meters.onOutput });
});
afterAll(async () => sig?.close());

const EARLY = 'ack,ticket,batch,early';
const roomPath = (sessionId: unknown, ticket: unknown): string => `/v1/rooms/${sessionId as string}?${TICKET_PARAM}=${ticket as string}`;

/** `app-<tag>` (declaring `appCaps`) and `hub-<tag>` (declaring `hubCaps`) online in one home. */
async function pair(tag: string, appCaps: string, hubCaps: string): Promise<{ at: string; ht: string; app: TestSocket; hub: TestSocket }> {
  const at = await sig.issuer.accessToken({ sub: `app-${tag}`, homes: [`home-${tag}`] });
  const ht = await sig.issuer.accessToken({ sub: `hub-${tag}`, homes: [`home-${tag}`] });
  return { at, ht, app: await online(sig.url, at, appCaps), hub: await online(sig.url, ht, hubCaps) };
}

const types = (s: TestSocket): string[] => s.frames.map((f) => f.type);

describe('early join', () => {
  it('both sides early: the dialer joins before the answer, the target as it accepts; no later session; nothing stored', async () => {
    meters.reset();
    const { at, ht, app, hub } = await pair('e1', EARLY, EARLY);
    app.send({ type: 'dial', reqId: 'e1', to: 'hub-e1' });
    const req = await hub.next('request');
    const sa = await app.next('session');
    // The dialer's half, before any answer: its role, a ticket, ICE servers, batches.
    expect(sa).toMatchObject({ reqId: 'e1', sessionId: req.sessionId, peer: 'hub-e1', role: 'initiator', early: true, batch: true, iceServers: [] });
    expect(typeof sa.ticket).toBe('string');
    const early = req.early as Frame & { ticket: string; deadline: number };
    expect(early).toMatchObject({ batch: true, iceServers: [] });
    expect(typeof early.ticket).toBe('string');
    expect(early.deadline).toBeGreaterThan(Date.now());
    // The dialer is in the room while the target is still deciding. Like the client, it holds its
    // offer until the target is there (client/link.ts SignalOutbox): the room would store it.
    const ra = await connect(sig.url, roomPath(sa.sessionId, sa.ticket), at);
    expect(await ra.next('joined')).toMatchObject({ role: 'initiator', peer: 'hub-e1', peerPresent: false });
    // The target accepts and joins with the ticket its request carried.
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    const rb = await connect(sig.url, roomPath(req.sessionId, early.ticket), ht);
    expect(await rb.next('joined')).toMatchObject({ role: 'responder', peer: 'app-e1', peerPresent: true });
    await ra.next('peer_joined');
    ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'o' } });
    expect(await rb.next('signal')).toMatchObject({ seq: 1, data: { kind: 'offer', sdp: 'o' } });
    rb.send({ type: 'signal', data: { kind: 'answer', sdp: 'a' } });
    expect(await ra.next('signal')).toMatchObject({ seq: 1, data: { kind: 'answer', sdp: 'a' } });
    ra.send({ type: 'signal', data: { kind: 'bye' } });
    await rb.next('closed');
    await ra.next('closed');
    // The whole exchange has run since the answer: no second session went to either side.
    expect(types(app)).not.toContain('session');
    expect(types(hub)).not.toContain('session');
    ra.close();
    rb.close();
    await new Promise((r) => setTimeout(r, 1500));
    expect(meters.count('room.write')).toBe(0);
    expect(meters.count('presence.write')).toBe(0);
    app.close();
    hub.close();
  });

  it('a rejected early dial: the dialer, already in the room, gets rejected and its bye ends the room', async () => {
    const { at, app, hub } = await pair('e2', EARLY, EARLY);
    app.send({ type: 'dial', reqId: 'e2', to: 'hub-e2' });
    const req = await hub.next('request');
    const sa = await app.next('session');
    const ra = await connect(sig.url, roomPath(sa.sessionId, sa.ticket), at);
    await ra.next('joined');
    hub.send({ type: 'answer', reqId: req.reqId, accept: false, reason: 'busy' });
    expect(await app.next('rejected')).toMatchObject({ reqId: 'e2', reason: 'busy' });
    ra.send({ type: 'signal', data: { kind: 'bye' } });
    expect(await ra.next('closed')).toMatchObject({ reason: 'bye' });
    expect(types(hub)).not.toContain('session');
    for (const s of [ra, app, hub]) s.close();
  });

  it('an early target whose dialer gave up gets cancelled for its answer', async () => {
    const { app, hub } = await pair('e3', EARLY, EARLY);
    app.send({ type: 'dial', reqId: 'e3', to: 'hub-e3' });
    const req = await hub.next('request');
    await app.next('session');
    app.send({ type: 'cancel', reqId: 'e3' });
    await app.next('cancelled');
    await hub.next('cancelled');
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    expect(await hub.next('error')).toMatchObject({ code: 'out_of_state', reqId: req.reqId });
    for (const s of [app, hub]) s.close();
  });

  it.each([
    ['the target', EARLY, 'ack,ticket,batch'],
    ['the dialer', 'ack,ticket,batch', EARLY],
    ['either side without tickets', 'ack,batch,early', EARLY],
  ])('%s without early join: the old exchange, both sessions after the answer', async (_name, appCaps, hubCaps) => {
    const tag = `m${appCaps.length}${hubCaps.length}`;
    const { app, hub } = await pair(tag, appCaps, hubCaps);
    app.send({ type: 'dial', reqId: tag, to: `hub-${tag}` });
    const req = await hub.next('request');
    expect(req.early).toBeUndefined();
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    const sb = await hub.next('session');
    const sa = await app.next('session');
    expect(sa.early).toBeUndefined();
    expect(sa).toMatchObject({ role: 'initiator', sessionId: req.sessionId });
    expect(sb).toMatchObject({ role: 'responder', sessionId: req.sessionId });
    expect(types(app)).not.toContain('session');
    for (const s of [app, hub]) s.close();
  });
});
