/**
 * Confirmed delivery (issue 9 item 1: a dial sent between a hub's silent mapping loss and the
 * service noticing it), against the real Worker in workerd with real sockets:
 * - a target that declared `?caps=ack` but stays silent after a request (its path is dead; TCP on
 *   the service's side still looks open) has that socket closed with 1001 `unresponsive`, and the
 *   dialer gets `dial_failed{peer_offline}` at the ack deadline instead of waiting for its timeout;
 * - a target that acknowledges (`ringing`, or any frame or ping after the request) is left alone
 *   and answers past the deadline into a normal session;
 * - a target that reconnects before the deadline gets the request again on the new socket;
 * - a legacy target (no capability) that stays silent keeps the old behaviour: the dial ends in
 *   its own timeout and the socket stays open.
 * The deadline is the production one (DELIVERY_ACK_MS); the request timeout is long, so a
 * `peer_offline` can only come from the ack rule.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CAPS_PARAM, CAP_DELIVERY_ACK, PING_FRAME } from '../../protocol/messages.js';
import { DELIVERY_ACK_MS } from '../../worker/presence-rules.js';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { connect, online, WAIT_MS, type TestSocket } from './helpers.js';

/** Long enough that no dial here can time out by itself unless a test asks for it. */
const REQUEST_TIMEOUT_MS = 60_000;
/** How long an acking target takes to answer: past the ack deadline, so an unacked one would have failed. */
const SLOW_ANSWER_MS = DELIVERY_ACK_MS + 1500;
const ACK_QUERY = `?${CAPS_PARAM}=${CAP_DELIVERY_ACK}`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('confirmed delivery', () => {
  let sig: SignalingHandle;
  beforeAll(async () => {
    sig = await startSignaling({ requestTimeoutMs: REQUEST_TIMEOUT_MS });
  });
  afterAll(async () => sig?.close());

  let n = 0;
  const pair = async (): Promise<{ app: string; hub: string; appToken: string; hubToken: string }> => {
    n++;
    const home = `home-d${n}`;
    const app = `d${n}-app`;
    const hub = `d${n}-hub`;
    return {
      app,
      hub,
      appToken: await sig.issuer.accessToken({ sub: app, homes: [home] }),
      hubToken: await sig.issuer.accessToken({ sub: hub, homes: [home] }),
    };
  };
  /** A presence socket declaring the delivery-ack capability, after its `hello`. */
  const acking = async (token: string): Promise<TestSocket> => {
    const s = await connect(sig.url, `/v1/presence${ACK_QUERY}`, token);
    await s.next('hello');
    return s;
  };

  it('a target that declared acks but stays silent: its socket is closed 1001 and the dial fails peer_offline', async () => {
    const p = await pair();
    const hub = await acking(p.hubToken);
    const app = await online(sig.url, p.appToken);
    try {
      const dialAt = Date.now();
      app.send({ type: 'dial', reqId: 'lost', to: p.hub });
      // The request reaches the socket; the hub's "path" is dead from here: it sends nothing.
      const req = await hub.next('request');
      expect(req.from).toBe(p.app);
      const failed = await app.next('dial_failed', DELIVERY_ACK_MS + WAIT_MS);
      const failedAfter = Date.now() - dialAt;
      expect(failed).toEqual({ type: 'dial_failed', reqId: 'lost', code: 'peer_offline' });
      // Not before the deadline, and from the ack rule, not the request timeout.
      expect(failedAfter).toBeGreaterThanOrEqual(DELIVERY_ACK_MS);
      expect(failedAfter).toBeLessThan(REQUEST_TIMEOUT_MS);
      expect(await hub.closed()).toBe(1001);
      expect(hub.closeReason).toBe('unresponsive');
      // The hub counts as offline now: the next dial is held, and answered peer_offline too.
      app.send({ type: 'dial', reqId: 'after', to: p.hub });
      expect(await app.next('dial_failed')).toEqual({ type: 'dial_failed', reqId: 'after', code: 'peer_offline' });
      expect(app.closeCode).toBeNull();
    } finally {
      app.close();
      hub.close();
    }
  });

  it('a target that acks with ringing answers past the deadline into a normal session', async () => {
    const p = await pair();
    const hub = await acking(p.hubToken);
    const app = await online(sig.url, p.appToken);
    try {
      app.send({ type: 'dial', reqId: 'acked', to: p.hub });
      const req = await hub.next('request');
      hub.send({ type: 'ringing', reqId: req.reqId });
      await sleep(SLOW_ANSWER_MS);
      expect(hub.closeCode).toBeNull();
      hub.send({ type: 'answer', reqId: req.reqId, accept: true });
      const s = await app.next('session');
      expect(s).toMatchObject({ reqId: 'acked', peer: p.hub, role: 'initiator' });
      expect(await hub.next('session')).toMatchObject({ sessionId: s.sessionId, peer: p.app, role: 'responder' });
      expect(app.frames.filter((f) => f.type === 'dial_failed')).toEqual([]);
      expect(hub.closeCode).toBeNull();
    } finally {
      app.close();
      hub.close();
    }
  });

  it('a ping after the request counts as a receipt (any sign of life does)', async () => {
    const p = await pair();
    const hub = await acking(p.hubToken);
    const app = await online(sig.url, p.appToken);
    try {
      app.send({ type: 'dial', reqId: 'pinged', to: p.hub });
      const req = await hub.next('request');
      // Answered by the runtime itself; the object sees it only through the auto-response time.
      await sleep(50);
      hub.ws.send(PING_FRAME);
      await sleep(SLOW_ANSWER_MS);
      expect(hub.closeCode).toBeNull();
      hub.send({ type: 'answer', reqId: req.reqId, accept: true });
      expect(await app.next('session')).toMatchObject({ reqId: 'pinged', peer: p.hub });
      expect(app.frames.filter((f) => f.type === 'dial_failed')).toEqual([]);
    } finally {
      app.close();
      hub.close();
    }
  });

  it('a target that reconnects before the deadline gets the request again on its new socket', async () => {
    const p = await pair();
    const old = await acking(p.hubToken);
    const app = await online(sig.url, p.appToken);
    try {
      app.send({ type: 'dial', reqId: 'moved', to: p.hub });
      const first = await old.next('request');
      // The hub noticed its dead path and came back on a new connection, without a receipt.
      const hub = await acking(p.hubToken);
      try {
        const again = await hub.next('request');
        expect(again.reqId).toBe(first.reqId);
        hub.send({ type: 'ringing', reqId: again.reqId });
        await sleep(SLOW_ANSWER_MS);
        hub.send({ type: 'answer', reqId: again.reqId, accept: true });
        expect(await app.next('session')).toMatchObject({ reqId: 'moved', peer: p.hub });
        expect(app.frames.filter((f) => f.type === 'dial_failed')).toEqual([]);
        expect(hub.closeCode).toBeNull();
      } finally {
        hub.close();
      }
    } finally {
      app.close();
      old.close();
    }
  });

  it('a legacy target (no capability) that stays silent keeps the old behaviour: timeout, socket open', async () => {
    const p = await pair();
    const hub = await online(sig.url, p.hubToken);
    const app = await online(sig.url, p.appToken);
    try {
      // Budget past the ack deadline, so an ack rule applied by mistake would answer first.
      const budget = DELIVERY_ACK_MS + 3000;
      app.send({ type: 'dial', reqId: 'legacy', to: p.hub, timeoutMs: budget });
      await hub.next('request');
      const failed = await app.next('dial_failed', budget + WAIT_MS);
      expect(failed).toEqual({ type: 'dial_failed', reqId: 'legacy', code: 'timeout' });
      expect(hub.closeCode).toBeNull();
      // Still reachable on the same socket.
      app.send({ type: 'dial', reqId: 'legacy-2', to: p.hub });
      const req = await hub.next('request');
      hub.send({ type: 'answer', reqId: req.reqId, accept: true });
      expect(await app.next('session')).toMatchObject({ reqId: 'legacy-2', peer: p.hub });
    } finally {
      app.close();
      hub.close();
    }
  });
});
