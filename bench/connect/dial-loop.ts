/**
 * bench/connect/dial-loop.ts: direct homelink dials on loopback for one backend, and how long the
 * event loop of the dialer's process was held during them. Per dial: the time until `dial()`
 * resolves (the dialer's link open: DTLS up, the peer's identity verified) and, with the hub in
 * this process, until the hub's link is open too; and the sum of the loop's stalls over 2 ms (a
 * 1 ms timer that came late). Made to compare trees A/B (`git archive` a baseline, run this script
 * in both, alternated).
 *
 *   npx tsx bench/connect/dial-loop.ts [dials=40] [node-datachannel|werift] [--procs]
 *
 * Default: both endpoints and the relay in this process (the shape of bench/connect/run.ts).
 * `--procs`: the deployment's shape on one machine: the relay in its own process
 * (`relay/main.ts`), the hub in its own (bench/connect/hub-child.ts), the app here.
 */
import { fork } from 'node:child_process';
import type { BackendName } from '../../client/index.js';
import type { Endpoint } from '../../client/index.js';
import { endpointFor, nextLink } from '../../test/client/helpers.js';
import { ourPair, signalingFor, startRelayProcess, startStack, type RelayProcess } from './stack.js';
import type { SignalingHandle } from '../../test/support/signaling.js';

const args = process.argv.slice(2);
const N = Number(args.find((a) => /^\d+$/.test(a)) ?? 40);
const backend = (args.find((a) => a === 'werift' || a === 'node-datachannel') ?? 'node-datachannel') as BackendName;
const procs = args.includes('--procs');

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

interface Shape {
  /** Resolves with [ms to the dialer's open, ms to both open or NaN]. */
  dial(): Promise<[number, number]>;
  close(): Promise<void>;
}

async function inProcess(): Promise<Shape> {
  const stack = await startStack();
  const pair = await ourPair(stack, 'direct', undefined, backend);
  return {
    async dial() {
      const t0 = performance.now();
      const accepted = nextLink(pair.hub);
      const link = await pair.app.dial(pair.hub.id, { timeoutMs: 20_000 });
      const mine = performance.now() - t0;
      const peer = await accepted;
      const both = performance.now() - t0;
      await Promise.all([link.close(), peer.close()]);
      return [mine, both];
    },
    async close() {
      pair.close();
      await stack.close();
    },
  };
}

async function separate(): Promise<Shape> {
  const relay: RelayProcess = await startRelayProcess({ portMin: 45000, portMax: 45999 });
  const sig: SignalingHandle = await signalingFor(relay.entry);
  const home = 'bench-home-procs';
  const child = fork(new URL('./hub-child.ts', import.meta.url).pathname, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const hubId = await new Promise<string>((resolve, reject) => {
    child.once('exit', (c) => reject(new Error(`hub child exited ${c}`)));
    child.on('message', (m: { publicJwk?: import('jose').JWK; ready?: string }) => {
      if (m.ready) return resolve(m.ready);
      if (!m.publicJwk) return;
      const jwk = m.publicJwk;
      void (async () => {
        child.send({
          signalingUrl: sig.url,
          token: await sig.issuer.accessToken({ sub: 'bench-hub-procs', homes: [home] }),
          certificate: await sig.issuer.identityCertificate({ sub: 'bench-hub-procs', publicJwk: jwk }),
          issuer: sig.issuer.issuer,
          jwks: sig.issuer.publicJwks,
          backend,
        });
      })();
    });
  });
  const app: Endpoint = await endpointFor(sig, 'bench-app-procs', [home], { webrtcBackend: backend });
  return {
    async dial() {
      const t0 = performance.now();
      const link = await app.dial(hubId, { timeoutMs: 20_000 });
      const mine = performance.now() - t0;
      await link.close();
      return [mine, NaN];
    },
    async close() {
      app.close();
      child.disconnect();
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
      await sig.close();
      await relay.close();
    },
  };
}

async function main(): Promise<void> {
  const shape = procs ? await separate() : await inProcess();
  let stalled = 0;
  let last = performance.now();
  const iv = setInterval(() => {
    const now = performance.now();
    if (now - last > 2) stalled += now - last - 1;
    last = now;
  }, 1);
  const mine: number[] = [];
  const both: number[] = [];
  const stalls: number[] = [];
  try {
    for (let i = 0; i < N + 3; i++) {
      stalled = 0;
      const [m, b] = await shape.dial();
      if (i >= 3) {
        mine.push(m);
        both.push(b);
        stalls.push(stalled);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    clearInterval(iv);
    await shape.close();
  }
  const f = (xs: number[]) => `median ${pct(xs, 50).toFixed(1)} ms, p90 ${pct(xs, 90).toFixed(1)} ms`;
  console.log(
    `${backend} direct, ${procs ? 'hub and relay in their own processes' : 'one process'}, ${N} dials: dialer's link open ${f(mine)}` +
      (procs ? '' : `; both open ${f(both)}`) +
      `; this process's loop stalls per dial ${f(stalls)}`,
  );
}

void main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
