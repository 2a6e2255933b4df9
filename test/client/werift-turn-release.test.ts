/**
 * werift gathers on after its connection closed: a TURN allocation still in flight when a link is
 * closed (cancelled during gathering, or failed at once) completes afterwards, and before the fix
 * nothing ever closed it: the relay held the allocation and the TURN client's socket and refresh
 * timer stayed open (client/webrtc/werift.ts, `closeLateProtocols`). Checked against our relay's
 * counters: the allocation is made after the close, and deleted again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWeriftBackend } from '../../client/webrtc/werift.js';
import { mintTurnCredential } from '../../protocol/turn-credentials.js';
import { TURN_SECRET, testRelay, type TestRelay } from './relay-helpers.js';

let relay: TestRelay;
beforeAll(async () => {
  relay = await testRelay(47800, 47899, () => undefined, { metrics: true });
});
afterAll(async () => {
  await relay?.close();
});

/** Polls `read` until it returns `want` or `boundMs` passed; returns the last value. */
async function reaches(read: () => Promise<number>, want: (v: number) => boolean, boundMs: number): Promise<number> {
  const until = Date.now() + boundMs;
  let now = await read();
  while (!want(now) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 50));
    now = await read();
  }
  return now;
}

describe('werift: a TURN allocation that completes after close', () => {
  it('a connection closed at its first host candidate (allocation still in flight) leaves no allocation on the relay', async () => {
    const baseline = await relay.allocations();
    for (let round = 0; round < 3; round++) {
      const created = await relay.allocationsCreated();
      const c = await mintTurnCredential(TURN_SECRET, `early-close-${round}`, 600, Date.now() / 1000);
      const iceServers = [{ urls: [`turn:127.0.0.1:${relay.entry.udpPort}`], username: c.username, credential: c.credential }];
      const pc = await createWeriftBackend({ iceServers, hostAddresses: ['127.0.0.1'] });
      const seen: string[] = [];
      let closing: Promise<void> | null = null;
      pc.onCandidate = (x) => {
        if (!x) return;
        seen.push(/ typ (\w+)/.exec(x.candidate)?.[1] ?? '?');
        closing ??= pc.close();
      };
      pc.createChannel('probe');
      const offering = pc.createOffer().catch(() => undefined);
      await reaches(async () => (closing ? 1 : 0), (v) => v === 1, 5_000);
      await closing;
      await offering;
      expect(seen[0], 'closed at the host candidate').toBe('host');
      expect(seen, 'no relayed candidate before the close').not.toContain('relay');
      // The allocation is made after the close (one round trip plus the 401 challenge) ...
      expect(await reaches(() => relay.allocationsCreated(), (v) => v > created, 5_000), `round ${round}: the relay allocated`).toBeGreaterThan(created);
      // ... and deleted again at once, not left for its 600 s lifetime.
      expect(await reaches(() => relay.allocations(), (v) => v === baseline, 2_000), `round ${round}: live allocations`).toBe(baseline);
    }
  });
});
