/**
 * Session deadline, client side (issue 9, item 5): a link keeps its pair room alive past the
 * session TTL by renewing it (client/room-lease.ts; `renew` -> `ice_servers{deadline}`), so a link
 * older than the deadline can still restart ICE. The lease on virtual time, then a relayed link
 * through our relay and the real worker (TTL 4 s) that outlives several deadlines and survives a
 * relay restart.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MIN_RETRY_MS, RENEW_LEAD_MS, RoomLease } from '../../client/room-lease.js';
import type { Endpoint } from '../../client/index.js';
import { Meters, startSignaling, type SignalingHandle } from '../support/signaling.js';
import { endpointFor, nextChannel, nextLink, randomId, sha256Of, transfer, needsWerift, relayOnlyOnWerift } from './helpers.js';
import { TURN_SECRET, testRelay, type TestRelay } from './relay-helpers.js';

describe('RoomLease (virtual time)', () => {
  it('renews the lead time before a long deadline, at half-time before a short one', () => {
    const long = new RoomLease();
    long.update(600_000, 0);
    expect(long.nextAt()).toBe(600_000 - RENEW_LEAD_MS);
    const short = new RoomLease();
    short.update(4_000, 0);
    expect(short.nextAt()).toBe(2_000);
    expect(short.poll(1_999)).toBe(false);
    expect(short.poll(2_000)).toBe(true);
  });

  it('retries an unanswered renew at half the remaining time (at least MIN_RETRY_MS apart), once more past the deadline, then stops', () => {
    const l = new RoomLease();
    l.update(10_000, 0);
    expect(l.poll(5_000)).toBe(true);
    expect(l.nextAt()).toBe(7_500);
    expect(l.poll(7_500)).toBe(true);
    expect(l.nextAt()).toBe(8_750);
    expect(l.poll(8_750)).toBe(true);
    expect(l.nextAt()).toBe(8_750 + MIN_RETRY_MS);
    // Past the deadline: one last renew (a room without an alarm closes on it), then nothing.
    expect(l.poll(10_000)).toBe(true);
    expect(l.nextAt()).toBeNull();
    expect(l.poll(20_000)).toBe(false);
  });

  it('a later deadline reschedules; an earlier or equal one is ignored; stop() ends it', () => {
    const l = new RoomLease();
    l.update(10_000, 0);
    l.update(8_000, 0);
    expect(l.nextAt()).toBe(5_000);
    l.poll(5_000);
    l.update(15_000, 5_000);
    expect(l.nextAt()).toBe(10_000);
    l.stop();
    expect(l.nextAt()).toBeNull();
    expect(l.poll(20_000)).toBe(false);
  });
});

/** Short session TTL so the link outlives several deadlines within a test. */
const TTL_S = 4;

let relay: TestRelay;
let sig: SignalingHandle;
const endpoints: Endpoint[] = [];
const track = <T extends Endpoint>(e: T): T => (endpoints.push(e), e);

beforeAll(async () => {
  relay = await testRelay(45000, 45999, () => undefined);
  sig = await startSignaling({ relays: [relay.entry], turnSecret: TURN_SECRET, offlineWaitMs: 500, sessionTtlSeconds: TTL_S });
});
afterAll(async () => {
  await sig?.close();
  await relay?.close();
});
afterEach(async () => {
  await Promise.all(endpoints.splice(0).map((e) => e.close()));
});

describe('a link older than the session deadline', () => {
  it.skipIf(relayOnlyOnWerift('renews its room and survives a relay restart (ICE restart through the renewed room)'))('renews its room and survives a relay restart (ICE restart through the renewed room)', async () => {
    const home = randomId('home');
    const opts = { iceTransportPolicy: 'relay' as const, turnTlsOptions: { ca: relay.ca } };
    const hub = track(await endpointFor(sig, randomId('hub'), [home], opts));
    const app = track(await endpointFor(sig, randomId('app'), [home], opts));
    const accepted = nextLink(hub);
    hub.on('request', (r) => void r.accept());
    const link = await app.dial(hub.id, { timeoutMs: 20_000 });
    const peerLink = await accepted;
    const incoming = nextChannel(peerLink);
    const ch = await link.channel('bulk');
    const rx = await incoming;

    // Outlive more than two deadlines.
    await new Promise((r) => setTimeout(r, 2.5 * TTL_S * 1000));
    expect(link.isOpen && peerLink.isOpen).toBe(true);
    expect(link.roomRenewalCount).toBeGreaterThanOrEqual(2);
    expect(peerLink.roomRenewalCount).toBeGreaterThanOrEqual(2);

    const resumed = new Promise<void>((r) => link.once('resumed', r));
    await relay.stop();
    await new Promise((r) => setTimeout(r, 500));
    await relay.start();
    const total = 2 * 1024 * 1024;
    expect(await transfer(ch, rx, total, 11)).toBe(sha256Of(total, 11));
    await resumed;
    expect((await link.stats()).restarts).toBeGreaterThan(0);
    expect(link.isOpen).toBe(true);
  });
});

describe('a link whose room cannot be renewed', () => {
  it('its room closes at the deadline and the link lives on', { timeout: 40_000 }, async () => {
    // Sessions of 8 s; the hub's access token expires after 3 s. The service refuses a renewal
    // unless both sides' tokens are unexpired, and closes a socket whose token expired on its next
    // frame (here the hub's renew): the hub's room socket is gone for good, the room keeps the
    // hub's counter for its return (a row, so an alarm), and that alarm ends it at the deadline.
    const m = new Meters();
    const svc = await startSignaling({ offlineWaitMs: 500, sessionTtlSeconds: 8, vars: { DEBUG_TRACE_EVENTS: '1' }, onOutput: m.onOutput });
    try {
      const home = randomId('home');
      const hubId = randomId('hub');
      const hub = track(await endpointFor(svc, hubId, [home], { token: await svc.issuer.accessToken({ sub: hubId, homes: [home], ttlSeconds: 3 }) }));
      const app = track(await endpointFor(svc, randomId('app'), [home]));
      const accepted = nextLink(hub);
      hub.on('request', (r) => void r.accept());
      const link = await app.dial(hub.id, { timeoutMs: 20_000 });
      const peerLink = await accepted;
      const incoming = nextChannel(peerLink);
      const ch = await link.channel('data');
      const rx = await incoming;
      const deadline = Date.now() + 8_000;
      await new Promise((r) => setTimeout(r, deadline - Date.now() + 500));
      await m.settle(() => m.traced('room.deleted') >= 1);
      expect(m.traced('room.deleted')).toBe(1);
      expect(link.roomRenewalCount + peerLink.roomRenewalCount).toBe(0);
      // The link itself does not depend on its room.
      expect(link.isOpen && peerLink.isOpen).toBe(true);
      const total = 256 * 1024;
      expect(await transfer(ch, rx, total, 5)).toBe(sha256Of(total, 5));
    } finally {
      await Promise.all(endpoints.splice(0).map((e) => e.close()));
      await svc.close();
    }
  });
});
