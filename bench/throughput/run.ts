/**
 * bench/throughput: MB/s of one reliable, ordered data channel, direct and relayed through our
 * relay, for our stack (`link.channel()` + `Channel.send()` backpressure) against bare werift
 * peers (the same 16 KiB messages, the same 1 MiB / 256 KiB buffer marks, driven by hand) in the
 * same run. Run by hand:
 *
 * The homelink rows run on both Node backends (werift, node-datachannel) in the same run.
 *
 *   npx tsx bench/throughput/run.ts [MiB=32] [rounds=3] [--backends werift,node-datachannel] [--no-bare]
 *                                    [--relay-process] [--msg-kib 16]
 *
 * `--relay-process` adds relayed cases through our relay as operators run it: `relay/main.ts` in
 * its own process (not on this process's event loop), once with its default per-allocation
 * bandwidth cap and once with the cap off; their CPU column adds the relay process's CPU (/proc),
 * and the relay's bandwidth drops are printed. `--msg-kib` sets the message size of the homelink
 * cases (bare werift keeps 16 KiB). `--sctp recvBufferSize=N,sendBufferSize=N,...` hands
 * node-datachannel's `setSctpSettings` those values before any connection exists (an experiment
 * knob: the library itself does not set them).
 *
 * `--resume-ab` adds `homelink node-datachannel, direct, resume off`: the same pair with the
 * backend's `certificate()` hidden, so the link cannot rebuild and its channels neither hold
 * copies nor ack (the hot path as it was before rebuilds). Against `homelink node-datachannel,
 * direct` in the same rounds it prices the resume protocol (client/channel.ts).
 *
 * `--relay-relay` (with `--relay-process`) replaces the relay-process cases by node-datachannel
 * links on a relay-to-relay path: each endpoint on its own loopback address, announcing relayed
 * candidates only (`relayedOnly`, test/client/relay-helpers.ts), so only the pair between the two
 * allocations can connect and every packet crosses the relay process twice, as between two
 * endpoints that can each reach only the relay. `--baseline DIR` adds a relay process with its
 * cap off run from another checkout (an earlier commit's relay, `node_modules` linked in), for
 * before/after in one run.
 *
 * `--relay-one` (with `--relay-process`, root and iptables) adds node-datachannel links relayed on
 * one side only, the pair ICE picks when one endpoint sits behind a NAT that only its relay gets
 * through (and the NAT lab's symmetric-symmetric cells pick in most dials: prflx to relay): the
 * acceptor on 127.0.0.3 announces relayed candidates only, the dialer on 127.0.0.2 announces all
 * of its own, and two iptables rules drop loopback packets between those two addresses for the
 * bench's life (removed on exit), so the one pair that connects is the dialer's host socket to
 * the acceptor's allocation: every packet crosses the relay once, one TURN client on the way.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { barePair, median, ourPair, ourPairWith, received, signalingFor, startRelayProcess, startStack, type RelayProcess, type Stack } from '../connect/stack.js';
import { nodeBackend } from '../../client/index.js';
import type { BackendFactory } from '../../client/webrtc/backend.js';
import type { SignalingHandle } from '../../test/support/signaling.js';
import { loadNodeDatachannel } from '../../client/webrtc/node-datachannel.js';
import { DEFAULT_HIGH_WATER_MARK, DEFAULT_LOW_WATER_MARK } from '../../client/channel.js';
import type { RTCDataChannel } from 'werift';
import { createNodeDatachannelBackend } from '../../client/webrtc/node-datachannel.js';
import { RELAYED_ONLY_HOSTS, relayedOnly } from '../../test/client/relay-helpers.js';

const argv = process.argv.slice(2);
const flag = (name: string): string | undefined => (argv.includes(`--${name}`) ? argv[argv.indexOf(`--${name}`) + 1] : undefined);
/** Flags that take no value: a number after one of them is positional. */
const BOOLEAN_FLAGS = new Set(['--no-bare', '--relay-process', '--resume-ab', '--relay-relay', '--relay-one']);
const positional = argv.filter((a, i) => /^\d+$/.test(a) && !(i > 0 && argv[i - 1]!.startsWith('--') && !BOOLEAN_FLAGS.has(argv[i - 1]!)));
const MIB = Number(positional[0] ?? 32);
const ROUNDS = Number(positional[1] ?? 3);
const TOTAL = MIB * 1024 * 1024;
const CHUNK = randomBytes(16 * 1024);
const MSG = randomBytes(Number(flag('msg-kib') ?? 16) * 1024);
const BACKENDS = (flag('backends') ?? 'werift,node-datachannel').split(',') as Array<'werift' | 'node-datachannel'>;
const BARE = !argv.includes('--no-bare');
const RELAY_PROCESS = argv.includes('--relay-process');
const RESUME_AB = argv.includes('--resume-ab');
const RELAY_RELAY = argv.includes('--relay-relay');
const RELAY_ONE = argv.includes('--relay-one');

/** The `--relay-one` rules: loopback packets between the two endpoints' addresses are dropped. */
const ONE_SIDED_RULES = [
  ['-s', RELAYED_ONLY_HOSTS.offerer, '-d', RELAYED_ONLY_HOSTS.answerer],
  ['-s', RELAYED_ONLY_HOSTS.answerer, '-d', RELAYED_ONLY_HOSTS.offerer],
].map((r) => ['OUTPUT', '-o', 'lo', ...r, '-m', 'comment', '--comment', `homelink-bench-${process.pid}`, '-j', 'DROP']);
function iptables(op: '-I' | '-D', rule: string[]): void {
  const r = spawnSync('iptables', ['-w', op, ...rule], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`iptables ${op} failed: ${(r.stderr || r.error?.message || '').trim()}`);
}
const BASELINE = flag('baseline');

/** node-datachannel whose certificate the link cannot see: no rebuilds, so no resume protocol. */
async function withoutResume(): Promise<BackendFactory> {
  const f = (await nodeBackend('node-datachannel')).factory;
  return async (o) => {
    const b = await f(o);
    b.certificate = () => null;
    return b;
  };
}
/** The relay processes' relay port ranges: clear of the in-process relay (44000-44999) and the client tests. */
const PROC_PORTS = [{ portMin: 48000, portMax: 48299 }, { portMin: 48300, portMax: 48599 }, { portMin: 48600, portMax: 48999 }];

/** Bare werift: send with bufferedAmount backpressure, resolve when the receiver has everything. */
async function bareRun(tx: RTCDataChannel, rx: RTCDataChannel): Promise<{ mbps: number; cpu: number }> {
  let got = 0;
  const done = new Promise<void>((r) => {
    const sub = rx.onMessage.subscribe((m) => {
      got += typeof m === 'string' ? m.length : m.byteLength;
      if (got >= TOTAL) {
        sub.unSubscribe();
        r();
      }
    });
  });
  tx.bufferedAmountLowThreshold = DEFAULT_LOW_WATER_MARK;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let sent = 0; sent < TOTAL; sent += CHUNK.length) {
    tx.send(CHUNK);
    if (tx.bufferedAmount > DEFAULT_HIGH_WATER_MARK) await new Promise<void>((r) => tx.bufferedAmountLow.once(() => r()));
  }
  await done;
  return { mbps: TOTAL / 1e6 / ((performance.now() - t0) / 1000), cpu: cpuMsPerMiB(c0) };
}

/** CPU of this process (both peers, and the in-process relay when relayed) per MiB moved: steadier than MB/s on a shared machine. */
function cpuMsPerMiB(c0: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(c0);
  return (d.user + d.system) / 1000 / MIB;
}

async function main(): Promise<void> {
  const sctp = flag('sctp');
  if (sctp) {
    const ndc = (await loadNodeDatachannel()) as unknown as { setSctpSettings(s: Record<string, number>): void } | null;
    const settings = Object.fromEntries(sctp.split(',').map((kv) => [kv.split('=')[0]!, Number(kv.split('=')[1])]));
    ndc?.setSctpSettings(settings);
    process.stderr.write(`sctp settings: ${JSON.stringify(settings)}\n`);
  }
  const stack = await startStack();
  const results: Record<string, number[]> = {};
  const cpu: Record<string, number[]> = {};
  const drops: Record<string, string[]> = {};
  const relayCpu: Record<string, number[]> = {};
  const paths: Record<string, string[]> = {};
  const failures: Record<string, number> = {};
  const add = (k: string, v: { mbps: number; cpu: number }): void => {
    (results[k] ??= []).push(v.mbps);
    (cpu[k] ??= []).push(v.cpu);
    process.stderr.write(`${k}: ${v.mbps.toFixed(2)} MB/s, ${v.cpu.toFixed(0)} ms CPU/MiB\n`);
  };
  // Relay processes (default cap, cap off), each with its own signaling service naming it.
  const procs: Array<{ name: string; relay: RelayProcess; sig: SignalingHandle }> = [];
  const rulesIn: string[][] = [];
  // Ctrl-C: the finally below removes the iptables rules (the default would exit past it).
  process.once('SIGINT', () => {
    for (const rule of rulesIn.splice(0)) iptables('-D', rule);
    process.exit(130);
  });
  try {
    if (RELAY_PROCESS) {
      const specs: Array<{ name: string; bw?: number; cwd?: string }> = [
        { name: 'relay process, default cap' },
        { name: 'relay process, cap off', bw: 0 },
        ...(BASELINE ? [{ name: 'baseline relay process, cap off', bw: 0, cwd: BASELINE }] : []),
      ];
      for (const [i, spec] of specs.entries()) {
        const relay = await startRelayProcess({ ...PROC_PORTS[i]!, ...(spec.bw !== undefined ? { bandwidth: spec.bw } : {}), ...(spec.cwd ? { cwd: spec.cwd } : {}) });
        try {
          procs.push({ name: spec.name, relay, sig: await signalingFor(relay.entry) });
        } catch (e) {
          await relay.close(); // no signaling service for it: stop the child before giving up
          throw e;
        }
      }
    }
    const noResume = RESUME_AB ? await withoutResume() : null;
    const relayRelay = RELAY_RELAY ? relayedOnly((o) => createNodeDatachannelBackend(o)) : null;
    const relayOne = RELAY_ONE ? relayedOnly((o) => createNodeDatachannelBackend(o)) : null;
    if (relayOne) {
      if (process.getuid?.() !== 0) throw new Error('--relay-one needs root (iptables rules on loopback)');
      for (const rule of ONE_SIDED_RULES) {
        iptables('-I', rule);
        rulesIn.push(rule);
      }
    }
    const homelinkRun = async (label: string, st: Stack, mode: 'direct' | 'relay', backend: 'werift' | 'node-datachannel', proc?: RelayProcess, factory?: BackendFactory): Promise<void> => {
      // A run that fails (no link within the deadline, a link closed mid-run) is counted and
      // printed, and the bench goes on: the table says how many of each case failed.
      try {
        await homelinkOnce(label, st, mode, backend, proc, factory);
      } catch (e) {
        failures[label] = (failures[label] ?? 0) + 1;
        process.stderr.write(`${label}: run failed: ${(e as Error).message}\n`);
      }
    };
    const homelinkOnce = async (label: string, st: Stack, mode: 'direct' | 'relay', backend: 'werift' | 'node-datachannel', proc?: RelayProcess, factory?: BackendFactory): Promise<void> => {
      const pair =
        factory === relayOne && relayOne
          ? await ourPairWith(st, 'direct', {
              hub: { backend: relayOne, hostAddresses: [RELAYED_ONLY_HOSTS.answerer] },
              app: { backend: (o) => createNodeDatachannelBackend(o), hostAddresses: [RELAYED_ONLY_HOSTS.offerer] },
            })
          : factory === relayRelay && relayRelay
          ? await ourPairWith(st, 'direct', {
              hub: { backend: relayRelay, hostAddresses: [RELAYED_ONLY_HOSTS.answerer] },
              app: { backend: relayRelay, hostAddresses: [RELAYED_ONLY_HOSTS.offerer] },
            })
          : factory
            ? await ourPairWith(st, mode, { hub: { backend: factory }, app: { backend: factory } })
            : await ourPair(st, mode, undefined, backend);
      try {
        const { link, peer } = await pair.dial();
        // A link that ends or stalls mid-run says why (the bench then fails on `send`).
        let finished = false;
        link.on('close', (reason) => finished || process.stderr.write(`${label}: link closed mid-run: ${JSON.stringify(reason)}\n`));
        link.on('interrupted', () => process.stderr.write(`${label}: link interrupted\n`));
        peer.on('close', (reason) => finished || process.stderr.write(`${label}: peer link closed mid-run: ${JSON.stringify(reason)}\n`));
        const incoming = new Promise<import('../../client/channel.js').Channel>((res) => peer.once('channel', res));
        const ch = await link.channel('bulk');
        const rx = await incoming;
        const done = received(rx, TOTAL);
        const d0 = proc ? await proc.drops() : {};
        const r0 = proc?.cpuMs() ?? 0;
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        for (let sent = 0; sent < TOTAL; sent += MSG.length) await ch.send(MSG);
        await done;
        const mbps = TOTAL / 1e6 / ((performance.now() - t0) / 1000);
        const cpu = cpuMsPerMiB(c0) + (proc ? (proc.cpuMs() - r0) / MIB : 0);
        add(label, { mbps, cpu });
        // Which pair carried it: libjuice may leave the relay for a peer-reflexive host pair on
        // loopback even under the relay policy, so every run names its ends (relay ports 44000-48999).
        const p = link.path;
        const end = (a: string | undefined): string => (a && Number(a.split(':').pop()) >= 44000 && Number(a.split(':').pop()) <= 48999 ? 'relay' : 'host');
        // kind from client/path.ts (it knows the relayed candidates); ends by port are a hint only,
        // as an ephemeral host port can fall in those ranges too.
        (paths[label] ??= []).push(p ? (p.kind === 'direct' ? 'direct' : `relay (${end(p.local)}-${end(p.remote)})`) : '?');
        if (proc) {
          const d1 = await proc.drops();
          const diff = Object.entries(d1).map(([k, v]) => [k, v - (d0[k] ?? 0)] as const).filter(([, v]) => v > 0);
          (drops[label] ??= []).push(diff.map(([k, v]) => `${k} ${v}`).join(', ') || 'none');
          (relayCpu[label] ??= []).push((proc.cpuMs() - r0) / MIB);
        }
        finished = true;
      } finally {
        pair.close();
      }
    };
    for (let r = 0; r < ROUNDS; r++) {
      for (const mode of ['direct', 'relay'] as const) {
        if (BARE) {
          const bare = await barePair(stack, mode);
          add(`bare werift, ${mode}`, await bareRun(bare.ca, bare.cb));
          await bare.close();
        }
        for (const backend of BACKENDS) await homelinkRun(`homelink ${backend}, ${mode}`, stack, mode, backend);
        if (noResume && mode === 'direct') await homelinkRun('homelink node-datachannel, direct, resume off', stack, mode, 'node-datachannel', undefined, noResume);
      }
      for (const p of procs) {
        if (relayOne) await homelinkRun(`homelink node-datachannel, relay one side, ${p.name}`, { ...stack, sig: p.sig }, 'relay', 'node-datachannel', p.relay, relayOne);
        if (relayRelay) await homelinkRun(`homelink node-datachannel, relay-to-relay, ${p.name}`, { ...stack, sig: p.sig }, 'relay', 'node-datachannel', p.relay, relayRelay);
        else if (!relayOne) for (const backend of BACKENDS) await homelinkRun(`homelink ${backend}, ${p.name}`, { ...stack, sig: p.sig }, 'relay', backend, p.relay);
      }
    }
  } finally {
    for (const rule of rulesIn.splice(0)) iptables('-D', rule);
    for (const p of procs) {
      await p.sig.close();
      await p.relay.close();
    }
    await stack.close();
  }
  const m = (k: string): number => median(results[k]!);
  const c = (k: string): number => median(cpu[k]!);
  console.log(`throughput, ${MIB} MiB per run, median of ${ROUNDS} rounds (cases interleaved within each round), homelink messages ${MSG.length / 1024} KiB`);
  console.log('| case | MB/s (each round) | relayed / direct (same backend) | CPU ms per MiB (this process + relay process) | relay process CPU ms per MiB | relay drops per run | path per run (relay: local-remote ends by port) |');
  console.log('|---|---|---|---|---|---|---|');
  for (const k of Object.keys(results)) {
    const b = k.replace(/, (relay.*)$/, ', direct');
    const ratio = k !== b && results[b] ? (m(k) / m(b)).toFixed(2) : '';
    const rounds = results[k]!.map((x) => x.toFixed(1)).join(', ');
    const failed = failures[k] ? `, ${failures[k]} failed` : '';
    console.log(`| ${k} | ${m(k).toFixed(2)} (${rounds}${failed}) | ${ratio} | ${c(k).toFixed(0)} | ${relayCpu[k] ? median(relayCpu[k]).toFixed(0) : ''} | ${drops[k]?.join('; ') ?? ''} | ${paths[k]?.join(', ') ?? ''} |`);
  }  for (const [k, n] of Object.entries(failures)) if (!results[k]) console.log(`| ${k} | all ${n} runs failed | | | | | |`);

}

void main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
