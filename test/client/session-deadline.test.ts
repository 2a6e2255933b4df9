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
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { endpointFor, nextChannel, nextLink, randomId, sha256Of, transfer, needsWerift } from './helpers.js';
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

  it('retries an unanswered renew at half the remaining time (at least MIN_RETRY_MS apart), stops at the deadline', () => {
    const l = new RoomLease();
    l.update(10_000, 0);
    expect(l.poll(5_000)).toBe(true);
    expect(l.nextAt()).toBe(7_500);
    expect(l.poll(7_500)).toBe(true);
    expect(l.nextAt()).toBe(8_750);
    expect(l.poll(8_750)).toBe(true);
    expect(l.nextAt()).toBe(8_750 + MIN_RETRY_MS);
    expect(l.poll(10_000)).toBe(false);
    expect(l.nextAt()).toBeNull();
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
  it('renews its room and survives a relay restart (ICE restart through the renewed room)', async () => {
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
