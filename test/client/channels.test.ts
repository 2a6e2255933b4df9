/**
 * Channels the peer opens before our side is ready are held, with their first messages, until
 * the application listens (client/link.ts, client/channel.ts). Real worker in workerd, real
 * werift peers on loopback. The listener is attached only after an `await` that follows
 * `dial()` / `accept()`, so nothing depends on which side's link opened first.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import type { Channel, Endpoint, Link } from '../../client/index.js';
import { endpointFor, randomId } from './helpers.js';

let sig: SignalingHandle;
const endpoints: Endpoint[] = [];
const track = <T extends Endpoint>(e: T): T => (endpoints.push(e), e);

/** How long the application "does something else" before it listens: long enough for the peer's messages to arrive first. */
const LATE_LISTENER_MS = 300;
/** A lost channel shows as a wait that never ends: fail well before the project's 120 s. */
const TEST_TIMEOUT_MS = 30_000;
const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  sig = await startSignaling({ offlineWaitMs: 500 });
});
afterAll(async () => {
  await sig?.close();
});
afterEach(() => {
  for (const e of endpoints.splice(0)) e.close();
});

/** Resolves with the label and the first `n` messages of the first channel the peer opens on `link`. */
function firstMessages(link: Link, n: number): Promise<{ label: string; messages: string[] }> {
  return new Promise((resolve) => {
    link.once('channel', (ch: Channel) => {
      const messages: string[] = [];
      ch.on('message', (m) => {
        messages.push(typeof m === 'string' ? m : new TextDecoder().decode(m));
        if (messages.length === n) resolve({ label: ch.label, messages });
      });
    });
  });
}

async function pair() {
  const home = randomId('home');
  const hub = track(await endpointFor(sig, randomId('hub'), [home]));
  const app = track(await endpointFor(sig, randomId('app'), [home]));
  return { hub, app };
}

const EXPECTED = ['first', 'second', 'third'];

describe('channels opened before the other side listens', () => {
  it('a channel the dialer opens right after dial() resolves reaches a listener the acceptor adds after awaiting accept()', async () => {
    const { hub, app } = await pair();
    const received = new Promise<{ label: string; messages: string[] }>((resolve, reject) => {
      hub.on('request', (req) => {
        void (async () => {
          const link = await req.accept();
          await pause(LATE_LISTENER_MS);
          resolve(await firstMessages(link, EXPECTED.length));
        })().catch(reject);
      });
    });
    const link = await app.dial(hub.id, { timeoutMs: 20_000 });
    const ch = await link.channel('from-dialer');
    for (const m of EXPECTED) await ch.send(m);
    expect(await received).toEqual({ label: 'from-dialer', messages: EXPECTED });
  }, TEST_TIMEOUT_MS);

  it('a channel the acceptor opens right on accept reaches a listener the dialer adds after awaiting dial()', async () => {
    const { hub, app } = await pair();
    const sent = new Promise<void>((resolve, reject) => {
      hub.on('request', (req) => {
        void (async () => {
          const link = await req.accept();
          const ch = await link.channel('from-acceptor');
          for (const m of EXPECTED) await ch.send(m);
          resolve();
        })().catch(reject);
      });
    });
    const link = await app.dial(hub.id, { timeoutMs: 20_000 });
    await pause(LATE_LISTENER_MS);
    const received = firstMessages(link, EXPECTED.length);
    await sent;
    expect(await received).toEqual({ label: 'from-acceptor', messages: EXPECTED });
  }, TEST_TIMEOUT_MS);
});
