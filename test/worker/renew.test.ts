/**
 * Session renewal (issue 9 item 5), against the real Worker in workerd: a link that outlives
 * SESSION_TTL_SECONDS must still be able to restart ICE. `renew` on the room socket, while both
 * sides are connected with unexpired tokens, moves the deadline on, re-mints TURN credentials for
 * both, and a side can still rejoin after the old deadline.
 * Unrenewed rooms still close at their deadline and refuse joins after it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PING_FRAME } from '../../protocol/messages.js';
import type { RelayEntry } from '../../worker/config.js';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { connect, online, type Frame, type TestSocket } from './helpers.js';

/**
 * Short sessions so the suite is quick. Renewal grants now + TTL, so the test renews RENEW_BEFORE_MS
 * before the old deadline to get a new one well after it.
 */
const TTL_SECONDS = 8;
const RENEW_BEFORE_MS = 2000;
/** Placeholder relay: only its URLs and credentials are handed out; nothing is sent to it. */
const RELAYS: RelayEntry[] = [{ id: 'r1', region: 'test', lat: 0, lon: 0, host: '198.51.100.7', udpPort: 3478, tcpPort: 3478, tlsPort: 5349 }];

let sig: SignalingHandle;
beforeAll(async () => {
  sig = await startSignaling({ sessionTtlSeconds: TTL_SECONDS, relays: RELAYS });
});
afterAll(async () => sig?.close());

let n = 0;
interface Room {
  ra: TestSocket;
  rb: TestSocket;
  joined: Frame;
  sessionId: string;
  at: string;
  ht: string;
  rest: TestSocket[];
}

async function room(): Promise<Room> {
  n++;
  const home = `home-n${n}`;
  const at = await sig.issuer.accessToken({ sub: `n${n}-app`, homes: [home] });
  const ht = await sig.issuer.accessToken({ sub: `n${n}-hub`, homes: [home] });
  const app = await online(sig.url, at);
  const hub = await online(sig.url, ht);
  app.send({ type: 'dial', reqId: 'r', to: `n${n}-hub` });
  const req = await hub.next('request');
  hub.send({ type: 'answer', reqId: req.reqId, accept: true });
  const s = await app.next('session');
  await hub.next('session');
  const ra = await connect(sig.url, `/v1/rooms/${s.sessionId}`, at);
  const joined = await ra.next('joined');
  const rb = await connect(sig.url, `/v1/rooms/${s.sessionId}`, ht);
  await rb.next('joined');
  await ra.next('peer_joined');
  return { ra, rb, joined, sessionId: s.sessionId as string, at, ht, rest: [app, hub] };
}

const sleepUntil = (t: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, t - Date.now())));
const turnUser = (f: Frame): string => (f.iceServers as Array<{ username?: string }>).find((s) => s.username)!.username!;

describe('renew', () => {
  it('extends a room both sides are in: signals and rejoins work past the old deadline, credentials are fresh', async () => {
    const r = await room();
    const oldDeadline = r.joined.deadline as number;
    const timer = setInterval(() => [r.ra, r.rb].forEach((s) => s.ws.send(PING_FRAME)), 1000);
    await sleepUntil(oldDeadline - RENEW_BEFORE_MS);
    r.ra.send({ type: 'renew' });
    const [a, b] = [await r.ra.next('renewed'), await r.rb.next('renewed')];
    expect(a.deadline).toBe(b.deadline);
    expect(a.deadline).toBeGreaterThan(oldDeadline + TTL_SECONDS * 1000 - RENEW_BEFORE_MS - 1000);
    // TURN credentials minted anew for each side, each for its own endpoint id.
    expect(turnUser(a)).toMatch(/^\d+:n\d+-app$/);
    expect(turnUser(b)).toMatch(/^\d+:n\d+-hub$/);
    expect(Number(turnUser(a).split(':')[0])).toBeGreaterThanOrEqual(Number(turnUser(r.joined).split(':')[0]));

    // Past the old deadline (the sockets keep pinging meanwhile, as clients do).
    try {
      await sleepUntil(oldDeadline + 500);
      expect(r.ra.frames.filter((f) => f.type === 'closed')).toEqual([]);
      // An ICE restart still gets through.
      r.ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'restart', restart: true } });
      expect(await r.rb.next('signal')).toMatchObject({ data: { kind: 'offer', sdp: 'restart', restart: true } });
      // A side that drops can come back: the room kept the new deadline.
      await r.rb.closeAndWait();
      const rb2 = await connect(sig.url, `/v1/rooms/${r.sessionId}`, r.ht);
      expect(await rb2.next('joined')).toMatchObject({ deadline: a.deadline, peerPresent: true });
      rb2.send({ type: 'signal', data: { kind: 'answer', sdp: 'restarted' } });
      expect(await r.ra.next('signal')).toMatchObject({ data: { kind: 'answer', sdp: 'restarted' } });
      r.rest.push(rb2);
    } finally {
      clearInterval(timer);
    }
    // The new deadline holds too.
    expect(await r.ra.next('closed', (a.deadline as number) - Date.now() + 10_000)).toEqual({ type: 'closed', reason: 'deadline' });
    for (const x of [r.ra, ...r.rest]) x.close();
  });

  it('is refused while the peer is away; that room closes at its deadline and refuses joins after it', async () => {
    const r = await room();
    await r.rb.closeAndWait();
    await r.ra.next('peer_left');
    r.ra.send({ type: 'renew' });
    expect(await r.ra.next('error')).toMatchObject({ code: 'out_of_state' });
    expect(await r.ra.next('closed')).toEqual({ type: 'closed', reason: 'deadline' });
    expect(await r.ra.closed()).toBe(1000);
    const late = await connect(sig.url, `/v1/rooms/${r.sessionId}`, r.ht);
    expect(await late.closed()).toBe(1008);
    expect(late.frames).toEqual([]);
    for (const x of r.rest) x.close();
  });
});
