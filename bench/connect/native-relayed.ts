/**
 * bench/connect/native-relayed.ts: homelink dials (signaling worker, identity, our relay) on
 * node-datachannel over a relay-to-relay path on loopback, with the native offerer's
 * reflexive-check ordering off (the order before the fix) and on, interleaved in one run, and
 * native direct dials as the reference. The relayed path: each endpoint has its own loopback
 * address and announces relayed candidates only (`relayedOnly`, test/client/relay-helpers.ts),
 * so host-socket checks to the peer's relayed address are dropped by the relay (no permission
 * for that address) and only relay-to-relay can connect. Every dial's path is printed.
 *
 *   flock /tmp/bench.lock npx tsx bench/connect/native-relayed.ts [dials per case and round=10] [rounds=2]
 */
import { createNodeDatachannelBackend } from '../../client/webrtc/node-datachannel.js';
import { RELAYED_ONLY_HOSTS, relayedOnly } from '../../test/client/relay-helpers.js';
import { median, ourPairWith, quantile, startStack, type OurPair } from './stack.js';

const N = Number(process.argv[2] ?? 10);
const ROUNDS = Number(process.argv[3] ?? 2);
/** A dial this slow waited for a DTLS retransmission (OpenSSL's first one is 1 s after the ClientHello). */
const STALL_MS = 900;

async function main(): Promise<void> {
  const stack = await startStack();
  const cases: Array<{ name: string; make: () => Promise<OurPair> }> = [
    {
      name: 'node-datachannel, direct (loopback)',
      make: () => ourPairWith(stack, 'direct', { hub: { webrtcBackend: 'node-datachannel' }, app: { webrtcBackend: 'node-datachannel' } }),
    },
    ...[false, true].map((order) => {
      const backend = relayedOnly((o) => createNodeDatachannelBackend(o, { orderReflexiveChecks: order }));
      return {
        name: `node-datachannel, relay-to-relay, reflexive-check order ${order ? 'on (after)' : 'off (before)'}`,
        make: () =>
          ourPairWith(stack, 'direct', {
            hub: { backend, hostAddresses: [RELAYED_ONLY_HOSTS.answerer] },
            app: { backend, hostAddresses: [RELAYED_ONLY_HOSTS.offerer] },
          }),
      };
    }),
  ];
  const rows = new Map<string, { ms: number[]; paths: Record<string, number> }>();
  try {
    for (let r = 0; r < ROUNDS; r++) {
      for (const c of cases) {
        const pair = await c.make();
        const row = rows.get(c.name) ?? { ms: [], paths: {} };
        rows.set(c.name, row);
        for (let i = 0; i <= N; i++) {
          const t0 = performance.now();
          const { link } = await pair.dial();
          const ms = performance.now() - t0;
          // The first dial of each pair warms the endpoints (JIT, certificates) and is not counted.
          if (i > 0) {
            row.ms.push(ms);
            const p = link.path;
            const k = p ? `${p.kind} ${p.local.startsWith('127.0.0.1:') ? 'relay' : 'host'}-${p.remote.startsWith('127.0.0.1:') ? 'relay' : 'host'}` : '?';
            row.paths[k] = (row.paths[k] ?? 0) + 1;
          }
          process.stderr.write(`${c.name}: ${ms.toFixed(0)} ms\n`);
          await link.close();
        }
        pair.close();
      }
    }
  } finally {
    await stack.close();
  }
  console.log(`homelink dials on node-datachannel, ${N} dials per case per round, ${ROUNDS} rounds (cases interleaved), after 1 warm-up dial per pair`);
  console.log('| case | p50 ms | p95 ms | dials > 900 ms | paths (app local-remote) |');
  console.log('|---|---|---|---|---|');
  for (const [name, v] of rows) {
    const paths = Object.entries(v.paths).map(([k, n]) => `${k} x${n}`).join(', ');
    console.log(`| ${name} | ${median(v.ms).toFixed(0)} | ${quantile(v.ms, 0.95).toFixed(0)} | ${v.ms.filter((x) => x > STALL_MS).length}/${v.ms.length} | ${paths} |`);
  }
}

void main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
