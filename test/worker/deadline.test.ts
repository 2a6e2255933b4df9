/**
 * The dialer's deadline reaches the answering side (issue 9 item 7): `dial.timeoutMs` sets when
 * the service times the request out (capped at REQUEST_TIMEOUT_MS), and `request.timeoutMs` tells
 * the target what is left of it, so dialer, service and target give up together. Real Worker in
 * workerd; the service's own request timeout is set long (60 s) so a verdict within the dialer's
 * few seconds can only come from the budget.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePresenceServerMessage } from '../../protocol/messages.js';
import { MAX_DIAL_TIMEOUT_MS, MIN_DIAL_TIMEOUT_MS } from '../../protocol/messages.js';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { online, type TestSocket } from './helpers.js';

let sig: SignalingHandle;
beforeAll(async () => {
  sig = await startSignaling({ requestTimeoutMs: 60_000 });
});
afterAll(async () => sig?.close());

let n = 0;
async function pair(): Promise<{ app: TestSocket; hub: TestSocket; hubId: string }> {
  n++;
  const home = `home-d${n}`;
  const app = await online(sig.url, await sig.issuer.accessToken({ sub: `d${n}-app`, homes: [home] }));
  const hub = await online(sig.url, await sig.issuer.accessToken({ sub: `d${n}-hub`, homes: [home] }));
  return { app, hub, hubId: `d${n}-hub` };
}

describe("the dialer's budget", () => {
  it('reaches the target in request.timeoutMs, and an unanswered request ends when the dialer gives up', async () => {
    const { app, hub, hubId } = await pair();
    const sent = Date.now();
    app.send({ type: 'dial', reqId: 'short', to: hubId, timeoutMs: 4000 });
    const req = await hub.next('request');
    expect(typeof req.timeoutMs).toBe('number');
    expect(req.timeoutMs).toBeGreaterThan(0);
    expect(req.timeoutMs).toBeLessThanOrEqual(4000);
    // Nobody answers: the dialer hears timeout at its own deadline, not the service's 60 s.
    expect(await app.next('dial_failed')).toMatchObject({ reqId: 'short', code: 'timeout' });
    expect(Date.now() - sent).toBeGreaterThanOrEqual(4000);
    expect(Date.now() - sent).toBeLessThan(60_000);
    expect(await hub.next('cancelled')).toEqual({ type: 'cancelled', reqId: req.reqId, reason: 'timeout' });
    // The answer comes too late.
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    expect(await hub.next('error')).toMatchObject({ code: 'out_of_state' });
    app.close();
    hub.close();
  });

  it('within the budget an accept opens the session as before', async () => {
    const { app, hub, hubId } = await pair();
    app.send({ type: 'dial', reqId: 'ok', to: hubId, timeoutMs: 20_000 });
    const req = await hub.next('request');
    expect(req.timeoutMs).toBeLessThanOrEqual(20_000);
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    expect(await app.next('session')).toMatchObject({ reqId: 'ok', peer: hubId });
    app.close();
    hub.close();
  });

  it('without a budget the service timeout applies, and the target is told what is left of it', async () => {
    const { app, hub, hubId } = await pair();
    app.send({ type: 'dial', reqId: 'plain', to: hubId });
    const req = await hub.next('request');
    expect(req.timeoutMs).toBeGreaterThan(4000);
    expect(req.timeoutMs).toBeLessThanOrEqual(60_000);
    app.send({ type: 'cancel', reqId: 'plain' });
    await app.next('cancelled');
    app.close();
    hub.close();
  });

  it('a budget out of bounds or of the wrong type is refused and changes nothing', async () => {
    const { app, hub, hubId } = await pair();
    for (const bad of [0, MIN_DIAL_TIMEOUT_MS - 1, MAX_DIAL_TIMEOUT_MS + 1, 1500.5, -1, '5000', null, 1e300]) {
      app.send({ type: 'dial', reqId: 'bad', to: hubId, timeoutMs: bad });
      expect((await app.next('error')).code, String(bad)).toBe('invalid_field');
    }
    expect(hub.frames).toEqual([]);
    app.close();
    hub.close();
  });

  it("the client's parser takes request.timeoutMs within bounds and refuses anything else", () => {
    const req = (t: unknown): string => JSON.stringify({ type: 'request', reqId: 'r', from: 'app-1', sessionId: 'S'.repeat(22), timeoutMs: t });
    expect(parsePresenceServerMessage(req(1234))).toMatchObject({ ok: true, value: { timeoutMs: 1234 } });
    expect(parsePresenceServerMessage(req(0))).toMatchObject({ ok: true, value: { timeoutMs: 0 } });
    for (const bad of [-1, 1.5, MAX_DIAL_TIMEOUT_MS + 1, '1000', null]) expect(parsePresenceServerMessage(req(bad)).ok, String(bad)).toBe(false);
    // An older service without the field still works.
    expect(parsePresenceServerMessage(JSON.stringify({ type: 'request', reqId: 'r', from: 'app-1', sessionId: 'S'.repeat(22) }))).toMatchObject({ ok: true });
  });
});
