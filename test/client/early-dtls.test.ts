/**
 * Early DTLS through the real worker in workerd: two werift endpoints say in their identity
 * signals that their connections keep DTLS records that arrive before their handshake starts
 * (`earlyDtls`), so the DTLS client (the acceptor, which answers) sends its first flight as soon
 * as its ICE connects instead of after werift's fixed 100 ms wait, and no flight is lost. A peer
 * that does not say so (an older build) still gets the wait.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { Endpoint } from '../../client/index.js';
import { createWeriftBackend } from '../../client/webrtc/werift.js';
import type { BackendFactory, PeerBackend } from '../../client/webrtc/backend.js';
import { dtlsLog, endpointFor, nextLink, randomId } from './helpers.js';

let sig: SignalingHandle;
const endpoints: Endpoint[] = [];
beforeAll(async () => {
  sig = await startSignaling({ relays: [] });
});
afterAll(async () => {
  await sig?.close();
});
afterEach(async () => {
  await Promise.all(endpoints.splice(0).map((e) => e.close()));
});

/**
 * werift backends whose DTLS is logged from the moment it exists (after the description that
 * creates it); `olderBuild`: the backend does not say it keeps early records.
 */
function logged(olderBuild = false): { factory: BackendFactory; logs: Array<ReturnType<typeof dtlsLog>> } {
  const logs: Array<ReturnType<typeof dtlsLog>> = [];
  const factory: BackendFactory = async (o) => {
    const b: PeerBackend = await createWeriftBackend(o);
    if (olderBuild) Object.defineProperty(b, 'holdsEarlyDtls', { value: undefined });
    const acceptOffer = b.acceptOffer.bind(b);
    b.acceptOffer = async (sdp) => {
      const answer = await acceptOffer(sdp);
      logs.push(dtlsLog(b));
      return answer;
    };
    return b;
  };
  return { factory, logs };
}

describe('early DTLS between werift endpoints', () => {
  for (const olderDialer of [false, true]) {
    it(olderDialer ? 'a dialer that does not say it keeps early records: the acceptor keeps werift\'s wait' : 'both say so: the acceptor\'s ClientHello leaves before werift\'s own call, and no flight goes twice', async () => {
      const home = randomId('home');
      const hubSide = logged();
      const hub = await endpointFor(sig, randomId('hub'), [home], { backend: hubSide.factory });
      const app = await endpointFor(sig, randomId('app'), [home], { backend: logged(olderDialer).factory });
      endpoints.push(hub, app);
      hub.on('request', (r) => void r.accept());
      const accepted = nextLink(hub);
      const link = await app.dial(hub.id, { timeoutMs: 20_000 });
      await accepted;
      expect(link.isOpen).toBe(true);
      const [log] = hubSide.logs;
      const hello = log!.sent.find((r) => r.type === 1);
      expect(hello).toBeDefined();
      if (olderDialer) {
        expect(log!.weriftConnectAt()).not.toBeNull();
        expect(hello!.at).toBeGreaterThan(log!.weriftConnectAt()!);
      } else {
        expect(hello!.at).toBeLessThan(log!.weriftConnectAt() ?? Infinity);
      }
      expect(log!.repeated()).toEqual([]);
    });
  }
});
