/**
 * The client library's side of room tickets (issue 10 item 4), against the real worker in
 * workerd: two endpoints of this library declare the capability, join their room with the ticket
 * their `session` carried, and a link set up, used and closed leaves the service with no storage
 * written for it and no `init` call (the worker's own meters, `DEBUG_TRACE_EVENTS`). The side that
 * hears the bye first over the control channel sends one back through the room before leaving it
 * (client/session.ts): without that, the room saw a side leave mid-session and stored its counter
 * (6 rows written in this test). The same holds on either backend; nothing here is simulated.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Endpoint } from '../../client/index.js';
import { Meters, startSignaling, type SignalingHandle } from '../support/signaling.js';
import { endpointFor, nextChannel, nextLink, randomId } from './helpers.js';

/** Short grace so the room's end falls within the test. */
const GRACE_MS = 300;

let sig: SignalingHandle;
const meters = new Meters();
const endpoints: Endpoint[] = [];
const track = <T extends Endpoint>(e: T): T => (endpoints.push(e), e);

beforeAll(async () => {
  sig = await startSignaling({
    offlineWaitMs: 500,
    roomGraceMs: GRACE_MS,
    vars: { DEBUG_TRACE_EVENTS: '1' },
    onOutput: meters.onOutput,
  });
});
afterAll(async () => sig?.close());
afterEach(async () => {
  await Promise.all(endpoints.splice(0).map((e) => e.close()));
});

describe('room tickets from the library', () => {
  it('a link set up, used and closed writes no storage on the service and needs no init call', async () => {
    const home = randomId('home');
    const hub = track(await endpointFor(sig, randomId('hub'), [home]));
    const app = track(await endpointFor(sig, randomId('app'), [home]));
    const accepted = nextLink(hub);
    hub.on('request', (req) => void req.accept());
    const link = await app.dial(hub.id, { timeoutMs: 20_000 });
    const peerLink = await accepted;
    const incoming = nextChannel(peerLink);
    const ch = await link.channel('hello');
    const rx = await incoming;
    const got = new Promise<string>((r) => rx.once('message', (d: Uint8Array | string) => r(typeof d === 'string' ? d : new TextDecoder().decode(d))));
    ch.send('over a ticketed room');
    expect(await got).toBe('over a ticketed room');
    const closed = new Promise<string>((r) => peerLink.once('close', r));
    link.close();
    expect(await closed).toMatch(/closed/);
    // The room's end (one grace after bye) and the meter lines' way out of workerd.
    await new Promise((r) => setTimeout(r, GRACE_MS + 1500));
    // The room was created by the first join's ticket: it counts the two upgrades and its own
    // alarms, no `init` call; it stored nothing, and neither did presence.
    expect(meters.count('room.request') - meters.traced('room.alarm')).toBe(2);
    expect(meters.count('room.write')).toBe(0);
    expect(meters.count('presence.write')).toBe(0);
    // What a ticketed room leaves in the log when it is made (the worker's trace).
    expect(meters.traced('room.ticket')).toBe(1);
  });
});
