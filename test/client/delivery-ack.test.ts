/**
 * Confirmed delivery from the library's side (issue 9 item 1), against the real worker in workerd
 * and real werift peers on loopback:
 * - a hub `Endpoint` declares the ack capability and sends the receipt by itself, so a request it
 *   takes longer than the ack deadline to accept still becomes a link (without the receipt the
 *   service would take its socket for dead and fail the dial);
 * - `Endpoint.dial` to a target whose socket swallowed the request rejects with the typed
 *   `PeerOffline` error, long before its own timeout.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LinkError, type Endpoint } from '../../client/index.js';
import { CAPS_PARAM, CAP_DELIVERY_ACK } from '../../protocol/messages.js';
import { DELIVERY_ACK_MS } from '../../worker/presence-rules.js';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { connect } from '../worker/helpers.js';
import { endpointFor, nextLink, randomId } from './helpers.js';

/** Far beyond the ack deadline: a `Timeout` here would mean the receipt rule did not act. */
const DIAL_TIMEOUT_MS = 40_000;

let sig: SignalingHandle;
const endpoints: Endpoint[] = [];
const track = <T extends Endpoint>(e: T): T => (endpoints.push(e), e);

beforeAll(async () => {
  sig = await startSignaling({ requestTimeoutMs: 60_000 });
});
afterAll(async () => {
  await sig?.close();
});
afterEach(async () => {
  await Promise.all(endpoints.splice(0).map((e) => e.close()));
});

describe('confirmed delivery through Endpoint', () => {
  it('a hub that accepts after the ack deadline still links: its receipt kept the request alive', async () => {
    const home = randomId('home');
    const hub = track(await endpointFor(sig, randomId('hub'), [home]));
    const app = track(await endpointFor(sig, randomId('app'), [home]));
    let wentOffline = false;
    hub.on('offline', () => (wentOffline = true));
    const accepted = nextLink(hub);
    hub.on('request', (req) => {
      setTimeout(() => void req.accept().catch(() => undefined), DELIVERY_ACK_MS + 1500);
    });
    const link = await app.dial(hub.id, { timeoutMs: DIAL_TIMEOUT_MS });
    expect(link.peer).toBe(hub.id);
    expect((await accepted).peer).toBe(app.id);
    expect(wentOffline).toBe(false);
    link.close();
  });

  it('a dial to a target whose socket swallowed the request rejects with PeerOffline, not Timeout', async () => {
    const home = randomId('home');
    const hubId = randomId('hub');
    // A target that declared acks, then went silent: its path died after the upgrade.
    const dead = await connect(sig.url, `/v1/presence?${CAPS_PARAM}=${CAP_DELIVERY_ACK}`, await sig.issuer.accessToken({ sub: hubId, homes: [home] }));
    try {
      await dead.next('hello');
      const app = track(await endpointFor(sig, randomId('app'), [home]));
      const startedAt = Date.now();
      const err = await app.dial(hubId, { timeoutMs: DIAL_TIMEOUT_MS }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LinkError);
      expect((err as LinkError).code).toBe('PeerOffline');
      expect(Date.now() - startedAt).toBeLessThan(DIAL_TIMEOUT_MS);
      expect((await dead.next('request')).from).toBe(app.id);
      expect(await dead.closed()).toBe(1001);
      expect(app.links).toHaveLength(0);
    } finally {
      dead.close();
    }
  });
});
