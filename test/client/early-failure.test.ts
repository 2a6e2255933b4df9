/**
 * A node-datachannel connection that fails before it opens is dead for good (libdatachannel
 * closes it), so the link fails at once with EARLY_FAILURE instead of at the connect deadline,
 * and `Endpoint.dial` tries again, up to three times, within the same deadline.
 *
 * The failure itself is the one thing simulated here: on one CPU core libdatachannel 0.24.5 can
 * start the offerer's DTLS before it stored the answer's fingerprint and then refuse the peer's
 * certificate ("unknown CA"; 13 of 100 dials with both peers on one core, docs/BENCHMARKS.md),
 * which cannot be set off at will. The initiator's first backends report `failed` as libdatachannel
 * does right after the answer is applied; everything else is real (worker in workerd, native peers).
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { nodeBackend, type Endpoint } from '../../client/index.js';
import { LinkError } from '../../client/errors.js';
import { EARLY_FAILURE } from '../../client/session.js';
import { loadNodeDatachannel } from '../../client/webrtc/node-datachannel.js';
import type { BackendFactory } from '../../client/webrtc/backend.js';
import type { Link } from '../../client/link.js';
import { endpointFor, nextChannel, randomId } from './helpers.js';

const haveNative = (await loadNodeDatachannel()) !== null;
if (!haveNative) console.log('skipped: needs node-datachannel (optional dependency not installed): early-failure tests');

let sig: SignalingHandle;
const endpoints: Endpoint[] = [];
const track = <T extends Endpoint>(e: T): T => (endpoints.push(e), e);

beforeAll(async () => {
  sig = await startSignaling({ offlineWaitMs: 500 });
});
afterAll(async () => {
  await sig?.close();
});
const unhandled: unknown[] = [];
const onUnhandled = (e: unknown): void => void unhandled.push(e);
beforeEach(() => {
  unhandled.length = 0;
  process.on('unhandledRejection', onUnhandled);
});
afterEach(async () => {
  await Promise.all(endpoints.splice(0).map((e) => e.close()));
  // Rejections are reported after a turn of the event loop.
  await new Promise((r) => setTimeout(r, 50));
  process.off('unhandledRejection', onUnhandled);
  expect(unhandled.map(String), 'unhandled rejections').toEqual([]);
});

/** The first `n` backends this factory makes fail (state `failed`) once their answer is applied. */
function failingFirst(n: number, inner: BackendFactory): { factory: BackendFactory; made: () => number } {
  let made = 0;
  const factory: BackendFactory = async (o) => {
    const b = await inner(o);
    if (made++ >= n) return b;
    const acceptAnswer = b.acceptAnswer.bind(b);
    b.acceptAnswer = async (sdp) => {
      await acceptAnswer(sdp);
      setImmediate(() => b.onState?.('failed'));
    };
    return b;
  };
  return { factory, made: () => made };
}

async function endpoints2(failures: number) {
  const native = (await nodeBackend('node-datachannel')).factory;
  const f = failingFirst(failures, native);
  const home = randomId('home');
  const hub = track(await endpointFor(sig, randomId('hub'), [home], { backend: native }));
  const app = track(await endpointFor(sig, randomId('app'), [home], { backend: f.factory }));
  let requests = 0;
  // As the README's hub does: accept() not awaited, links taken from `link`. The hub's end of a
  // failed attempt fails too; that must not surface as an unhandled rejection.
  hub.on('request', (r) => {
    requests++;
    void r.accept();
  });
  return { hub, app, made: f.made, requests: () => requests };
}

describe.skipIf(!haveNative)('native connection that fails before it opens', () => {
  it('the dial tries again and opens a working link; the peer saw one request per attempt', async () => {
    // One simulated failure, so the real race (above) still has a retry left if it strikes the
    // second attempt: under CI's load it did, with two simulated failures and none left.
    const { hub, app, made, requests } = await endpoints2(1);
    // The hub's end of a failed attempt may open before the dialer gives it up (the failure is
    // the dialer's): the peer of the returned link is the hub link of the same session.
    const hubLinks: Link[] = [];
    hub.on('link', (l) => hubLinks.push(l));
    const t0 = performance.now();
    const link = await app.dial(hub.id, { timeoutMs: 15_000 });
    const ms = performance.now() - t0;
    const deadline = Date.now() + 5_000;
    while (!hubLinks.some((l) => l.sessionId === link.sessionId) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const peer = hubLinks.find((l) => l.sessionId === link.sessionId)!;
    expect(peer).toBeDefined();
    // 2 attempts; more when libdatachannel's own race failed the second one too.
    expect(made()).toBeGreaterThanOrEqual(2);
    expect(requests()).toBe(made());
    expect(ms).toBeLessThan(10_000); // not the connect deadline (20 s by default)
    const incoming = nextChannel(peer);
    const ch = await link.channel('after-retry');
    const rx = await incoming;
    const got = new Promise<string>((r) => rx.on('message', (m) => r(String(m))));
    await ch.send('hello');
    expect(await got).toBe('hello');
  });

  it('after four early failures the dial fails with NoPath at once, not at its deadline', async () => {
    const { hub, app, made } = await endpoints2(4);
    const t0 = performance.now();
    const err = await app.dial(hub.id, { timeoutMs: 15_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LinkError);
    expect((err as LinkError).code).toBe('NoPath');
    expect((err as LinkError).message).toBe(EARLY_FAILURE);
    expect(made()).toBe(4);
    expect(performance.now() - t0).toBeLessThan(10_000);
  });
});
