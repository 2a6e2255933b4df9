/**
 * bench/connect/wan.ts: dial time when the signaling service is far away and the two endpoints
 * are near each other (a phone and a hub in one home, the service at the edge): the common
 * smart-home case, where the dial is mostly signaling round trips. Early join (protocol/messages.ts
 * CAP_EARLY_JOIN) on both sides against off on both sides, alternated, in the same process.
 *
 * Every signaling socket goes through a proxy on loopback that models the path to the service:
 * each byte takes `oneWayMs` each way, and a new connection first pays two round trips (TCP and
 * TLS handshakes) before its first byte moves. The endpoints' own path (ICE, DTLS) is loopback.
 *
 *   npx tsx bench/connect/wan.ts [dials=10] [oneWayMs=25] [backend=werift|node-datachannel]
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { BackendName } from '../../client/index.js';
import { median, ourPairWith, quantile, startStack, type Stack } from './stack.js';

const N = Number(process.argv[2] ?? 10);
const ONE_WAY_MS = Number(process.argv[3] ?? 25);
const BACKEND = (process.argv[4] ?? 'werift') as BackendName;

/** A TCP proxy to `port` whose connections take `oneWayMs` each way, after a handshake of 4 × oneWayMs. */
function farProxy(port: number, oneWayMs: number): Promise<{ url: string; server: Server }> {
  const server = createServer((down: Socket) => {
    down.setNoDelay(true);
    const up = createConnection({ port, host: '127.0.0.1' });
    up.setNoDelay(true);
    const handshakeDone = Date.now() + 4 * oneWayMs;
    // Each chunk leaves `oneWayMs` after it arrived (never before the handshake is done); timers
    // of one duration fire in order, so the byte stream keeps its order.
    const pipe = (from: Socket, to: Socket, first: boolean): void => {
      from.on('data', (chunk) => {
        const at = Math.max(Date.now() + oneWayMs, first ? handshakeDone + oneWayMs : 0);
        setTimeout(() => to.writable && to.write(chunk), at - Date.now());
      });
      from.on('end', () => setTimeout(() => to.end(), oneWayMs));
      from.on('error', () => to.destroy());
      from.on('close', () => setTimeout(() => to.destroy(), oneWayMs));
    };
    pipe(down, up, true);
    pipe(up, down, false);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const { port: p } = server.address() as { port: number };
      resolve({ url: `http://127.0.0.1:${p}`, server });
    }),
  );
}

async function main(): Promise<void> {
  const stack = await startStack();
  const far = await farProxy(Number(new URL(stack.sig.url).port), ONE_WAY_MS);
  const farStack: Stack = { ...stack, sig: { ...stack.sig, url: far.url } };
  const results: Record<'early' | 'classic', number[]> = { early: [], classic: [] };
  try {
    const pairs = {
      early: await ourPairWith(farStack, 'direct', { app: { webrtcBackend: BACKEND }, hub: { webrtcBackend: BACKEND } }),
      classic: await ourPairWith(farStack, 'direct', { app: { webrtcBackend: BACKEND, earlyJoin: false }, hub: { webrtcBackend: BACKEND, earlyJoin: false } }),
    };
    for (let i = 0; i < N + 1; i++) {
      for (const mode of i % 2 === 0 ? (['early', 'classic'] as const) : (['classic', 'early'] as const)) {
        const t0 = performance.now();
        const { link, peer } = await pairs[mode].dial();
        const ms = performance.now() - t0;
        if (i > 0) results[mode].push(ms); // the first round warms up
        process.stderr.write(`${mode}: ${ms.toFixed(0)} ms\n`);
        const peerClosed = new Promise<void>((r) => peer.once('close', () => r()));
        await link.close();
        await peerClosed;
      }
    }
    pairs.early.close();
    pairs.classic.close();
  } finally {
    far.server.close();
    await stack.close();
  }
  const row = (name: string, ms: number[]): string => `| ${name} | ${median(ms).toFixed(0)} | ${quantile(ms, 0.9).toFixed(0)} | ${(median(ms) / (2 * ONE_WAY_MS)).toFixed(1)} |`;
  console.log(`\n${N} dials each on ${BACKEND}, alternated; signaling ${ONE_WAY_MS} ms each way (RTT ${2 * ONE_WAY_MS} ms), new connections 2 RTT more; endpoints on loopback\n`);
  console.log('| both sides | median dial (ms) | p90 (ms) | median in signaling RTTs |');
  console.log('|---|---:|---:|---:|');
  console.log(row('early join off (before)', results.classic));
  console.log(row('early join (default)', results.early));
  console.log(`\nearly / off median ratio: ${(median(results.early) / median(results.classic)).toFixed(2)}`);
}

void main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
