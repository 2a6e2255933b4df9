/**
 * Relay benchmark, side by side in one run (issue 3, docs/BENCHMARKS.md):
 * the same load generator (bench/relay/loadgen.ts) against
 *
 *   - bare:     a bare Node dgram ChannelData forwarder (the ceiling for any dgram relay),
 *   - ours-1:   our relay (relay/main.ts), one worker process, on the native data path
 *               (`--data-path native`: relay/native/udp.c; build it first with npm install),
 *   - ours-2:   our relay, two worker processes, native data path,
 *   - dgram-1/2: our relay on node:dgram (`--data-path node`), one and two worker processes,
 *   - base-1/2: our relay as an earlier commit had it (`--baseline DIR`, a checkout), for
 *               before/after figures interleaved in one run,
 *   - coturn:   Debian's turnserver, started here on loopback with REST auth,
 *
 * at 100-byte and 1,200-byte payloads, reporting the relay's CPU time per
 * relayed packet (utime+stime from /proc/<pid>/stat of all its processes and
 * threads, over the measured window), packets/s, Mbps and round-trip p50/p99;
 * then memory per idle allocation at 10,000 allocations (RSS delta / count).
 *
 * Run by hand (not part of npm test), on an otherwise idle machine if you can:
 *
 *   node --import tsx bench/relay/run.ts [--relays bare,ours-1,ours-2,coturn] [--measure-ms 5000]
 *        [--generators 2] [--allocations 32] [--window 8] [--idle-allocations 10000] [--skip-memory] [--skip-load]
 *        [--baseline DIR]
 *
 * The load comes from `--generators` processes (bench/relay/loadgen-proc.ts), the allocations
 * split between them. ours-2 serves every client on one advertised port (SO_REUSEPORT); the
 * relay's CPU is read per process, so the busiest worker's CPU per relayed packet gives the
 * packets/s the relay would reach with a core of its own per worker ("capacity"), the figure
 * that shows scaling on a machine whose cores the generator shares.
 *
 * `--worker-cpu F` (root, cgroup v1 `cpu` controller) caps each process of our relay (and of
 * `bare`) at F of one core while it is measured: each gets a cgroup of its own with a CFS quota
 * of F x 10 ms per 10 ms period. That stands in for "a core per worker" on a machine whose cores
 * the generators need: at F = 0.25 two workers need half a core and leave the rest to the
 * generators, so the measured packets/s of ours-2 against ours-1 is the scaling itself, not the
 * generators' limit. coturn (threads of one process) is left uncapped.
 *
 * Every child process is started here and stopped here (SIGTERM, then SIGKILL
 * after a bound); all traffic stays on 127.0.0.1.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { mkdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeBindingRequest, readBindingResponse } from '../../protocol/stun/index.js';
import { allocateMany, closeAll, type LoadResult, type LoadTarget } from './loadgen.js';
import type { GeneratorJob, GeneratorMessage } from './loadgen-proc.js';
import { CLK_TCK, TICK_US, cpuTicksOf, processTree, rssBytes } from './proc.js';

type RelayName = 'bare' | 'ours-1' | 'ours-2' | 'dgram-1' | 'dgram-2' | 'base-1' | 'base-2' | 'coturn';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
}
const RELAYS = arg('relays', 'bare,ours-1,ours-2,coturn').split(',') as RelayName[];
const MEASURE_MS = Number(arg('measure-ms', '5000'));
/** One second of warm-up lets V8 optimise the hot path and the kernel settle socket buffers. */
const WARMUP_MS = Number(arg('warmup-ms', '1500'));
/** Allocations in all (split over the generators): enough distinct 5-tuples for the kernel's hash to spread them. */
const ALLOCATIONS = Number(arg('allocations', '32'));
/** Generator processes: one Node process cannot load a relay as hard as it can relay. */
const GENERATORS = Number(arg('generators', '2'));
const WINDOW = Number(arg('window', '8'));
const IDLE_ALLOCATIONS = Number(arg('idle-allocations', '10000'));
const SKIP_MEMORY = process.argv.includes('--skip-memory');
/**
 * A checkout of an earlier commit (with node_modules reachable from it): `base-1` / `base-2` run
 * its relay/main.ts, so a change is measured before/after, interleaved, in one run on the same
 * load. Make one with `git archive <commit> | tar -x -C DIR && ln -s $PWD/node_modules DIR/`.
 */
const BASELINE_DIR = arg('baseline', '');
const SKIP_LOAD = process.argv.includes('--skip-load');
/** A CPU quota per relay process, as a fraction of one core (0: none). */
const WORKER_CPU = Number(arg('worker-cpu', '0'));
const CGROUP_CPU = '/sys/fs/cgroup/cpu';
const CFS_PERIOD_US = 10_000;

/** The undo of each capProcesses still in force, for Ctrl-C (the bench's children end on the same signal). */
const capsInForce = new Set<() => void>();
process.once('SIGINT', () => {
  for (const undo of capsInForce) {
    try {
      undo();
    } catch {
      // left for the next run's operator: an empty homelink-bench-* cgroup
    }
  }
  process.exit(130);
});

/** Puts each pid in a cgroup of its own capped at WORKER_CPU of a core; returns the undo. */
function capProcesses(pids: number[]): () => void {
  const dirs: string[] = [];
  const undo = (): void => {
    for (const d of dirs.splice(0)) {
      for (const pid of readFileSync(join(d, 'cgroup.procs'), 'latin1').split('\n').filter(Boolean)) {
        try {
          writeFileSync(join(CGROUP_CPU, 'cgroup.procs'), pid);
        } catch {
          // gone already
        }
      }
      rmdirSync(d);
    }
    capsInForce.delete(undo);
  };
  capsInForce.add(undo);
  try {
    for (const pid of pids) {
      const d = join(CGROUP_CPU, `homelink-bench-${process.pid}-${pid}`);
      mkdirSync(d);
      dirs.push(d);
      writeFileSync(join(d, 'cpu.cfs_period_us'), String(CFS_PERIOD_US));
      writeFileSync(join(d, 'cpu.cfs_quota_us'), String(Math.round(WORKER_CPU * CFS_PERIOD_US)));
      writeFileSync(join(d, 'cgroup.procs'), String(pid));
    }
  } catch (e) {
    undo();
    throw new Error(`--worker-cpu needs root and ${CGROUP_CPU} (cgroup v1 cpu controller): ${(e as Error).message}`);
  }
  return undo;
}
const PAYLOADS = [100, 1200];
const HOST = '127.0.0.1';
/**
 * The echo peer's address: not the relay's own. A peer on the relay's address is what two
 * allocations of one relay are to each other (hairpin), which relays treat apart (ours keeps those
 * channels in its core), so a peer there would not measure the common case.
 */
const PEER_HOST = '127.0.0.3';
const SECRET = randomBytes(24).toString('base64url');
/** Relay port range: wide enough for 10,000 allocations plus slack (NATLAB: narrow ranges hit 508). */
const RELAY_PORT_MIN = 40000;
const RELAY_PORT_MAX = 52999;
/** Bounded waits for child processes. */
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;

const PAGE_CPU_US = TICK_US;

async function freePort(kind: 'tcp' | 'udp'): Promise<number> {
  if (kind === 'udp') {
    const s = createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, HOST, r));
    const p = s.address().port;
    await new Promise<void>((r) => s.close(r));
    return p;
  }
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, HOST, r));
  const p = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return p;
}

async function canBind(kind: 'tcp' | 'udp', port: number): Promise<boolean> {
  try {
    if (kind === 'udp') {
      const s = createSocket('udp4');
      await new Promise<void>((ok, bad) => {
        s.once('error', bad);
        s.bind(port, HOST, () => ok());
      });
      await new Promise<void>((r) => s.close(r));
    } else {
      const srv = createServer();
      await new Promise<void>((ok, bad) => {
        srv.once('error', bad);
        srv.listen(port, HOST, ok);
      });
      await new Promise<void>((r) => srv.close(() => r()));
    }
    return true;
  } catch {
    return false;
  }
}

/** A port free for TCP whose next `count` ports are free for UDP (STUN/TURN listens on both). */
async function freeDualPort(count = 1): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const p = await freePort('udp');
    if (p + count > 65535 || !(await canBind('tcp', p))) continue;
    let ok = true;
    for (let k = 1; k < count && ok; k++) ok = await canBind('udp', p + k);
    if (ok) return p;
  }
  throw new Error('no free port for UDP and TCP');
}

interface Child {
  proc: ChildProcess;
  output: () => string;
}

function start(cmd: string, args: string[], cwd?: string, env: Record<string, string> = {}): Child {
  const proc = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_ENV: 'production', ...env } });
  let out = '';
  const keep = (d: Buffer): void => {
    out = (out + d.toString()).slice(-8192);
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  return { proc, output: () => out };
}

async function stop(c: Child): Promise<void> {
  if (c.proc.exitCode !== null || c.proc.signalCode !== null) return;
  const done = new Promise<void>((r) => c.proc.once('exit', () => r()));
  c.proc.kill('SIGTERM');
  const t = setTimeout(() => c.proc.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await done;
  clearTimeout(t);
}

async function waitForLine(c: Child, re: RegExp): Promise<RegExpExecArray> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const m = re.exec(c.output());
    if (m) return m;
    if (c.proc.exitCode !== null) throw new Error(`child exited early: ${c.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`child not ready: ${c.output()}`);
}

/** Waits until a STUN Binding request to host:port is answered (bounded). */
async function waitForStun(c: Child, port: number): Promise<void> {
  const sock = createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, HOST, r));
  const tid = new Uint8Array(randomBytes(12));
  const req = encodeBindingRequest(tid);
  try {
    const deadline = Date.now() + START_TIMEOUT_MS;
    let answered = false;
    sock.on('message', (m) => {
      if (readBindingResponse(new Uint8Array(m), tid)?.ok) answered = true;
    });
    while (!answered && Date.now() < deadline) {
      if (c.proc.exitCode !== null) throw new Error(`relay exited: ${c.output()}`);
      sock.send(req, port, HOST);
      await new Promise((r) => setTimeout(r, 100));
    }
    if (!answered) throw new Error(`relay on ${port} never answered Binding: ${c.output()}`);
  } finally {
    sock.close();
  }
}

interface RunningRelay {
  name: RelayName;
  child: Child;
  target: LoadTarget;
}

async function startRelay(name: RelayName, echoPort: number): Promise<RunningRelay> {
  const peer = { host: PEER_HOST, port: echoPort };
  if (name === 'bare') {
    const child = start(process.execPath, ['--import', 'tsx', 'bench/relay/forwarder.ts', String(echoPort)], undefined, { FORWARDER_PEER_HOST: PEER_HOST });
    const m = await waitForLine(child, /port=(\d+)/);
    return { name, child, target: { host: HOST, port: Number(m[1]), mode: 'raw', peer } };
  }
  const workers = name.endsWith('-2') ? 2 : 1;
  const baseline = name === 'base-1' || name === 'base-2';
  if (baseline && !BASELINE_DIR) throw new Error(`${name} needs --baseline DIR`);
  // Every worker of ours shares the one port (SO_REUSEPORT).
  const port = await freeDualPort(1);
  if (name === 'coturn') {
    const dir = join(tmpdir(), `r2-coturn-${process.pid}`);
    const child = start('turnserver', [
      '-n', // no configuration file from the system
      '--no-cli',
      '--no-tls',
      '--no-dtls',
      `--listening-ip=${HOST}`,
      `--listening-port=${port}`,
      `--relay-ip=${HOST}`,
      `--min-port=${RELAY_PORT_MIN}`,
      `--max-port=${RELAY_PORT_MAX}`,
      '--use-auth-secret',
      `--static-auth-secret=${SECRET}`,
      '--realm=bench.homelink',
      '--allow-loopback-peers',
      '--no-stdout-log',
      `--log-file=${dir}-log`,
      `--pidfile=${dir}.pid`,
      `--userdb=${dir}.db`,
    ]);
    await waitForStun(child, port);
    return { name, child, target: { host: HOST, port, mode: 'turn', secret: SECRET, peer } };
  }
  const child = start(process.execPath, [
    '--import',
    'tsx',
    ...(process.env.R2_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.R2_CPU_PROF}`] : []),
    'relay/main.ts',
    '--secret',
    SECRET,
    '--listen-host',
    HOST,
    '--relay-host',
    HOST,
    '--udp-port',
    String(port),
    '--tcp-port',
    String(port),
    '--relay-port-min',
    String(RELAY_PORT_MIN),
    '--relay-port-max',
    String(RELAY_PORT_MAX),
    '--max-allocations',
    String(Math.max(IDLE_ALLOCATIONS * 2, 1000)),
    '--max-allocations-per-user',
    '10',
    '--allow-loopback',
    '--metrics-port',
    String(await freePort('tcp')),
    '--workers',
    String(workers),
    '--log-level',
    'warn',
    '--drain-ms',
    '0', // nothing to drain in a benchmark; lets --cpu-prof write its profile on SIGTERM
    // A baseline checkout runs with its own defaults (older ones have no such option).
    ...(baseline ? [] : ['--data-path', name.startsWith('dgram') ? 'node' : 'native']),
  ], baseline ? BASELINE_DIR : undefined);
  await waitForStun(child, port);
  return { name, child, target: { host: HOST, port, mode: 'turn', secret: SECRET, peer } };
}

interface Row {
  relay: RelayName;
  payload: number;
  cpuUsPerPacket: number;
  /** Share of the relay's CPU per process (primary first), for the workers' split. */
  cpuShares: number[];
  /** Packets/s if the busiest relay process had a core to itself: packets / its CPU seconds. */
  capacity: number;
  result: LoadResult;
}

/** Starts the generator processes on `target`; resolves once all hold their allocations. */
async function startGenerators(target: LoadTarget, payload: number): Promise<ChildProcess[]> {
  const gens: ChildProcess[] = [];
  const ready: Promise<void>[] = [];
  for (let g = 0; g < GENERATORS; g++) {
    const per = Math.floor(ALLOCATIONS / GENERATORS) + (g < ALLOCATIONS % GENERATORS ? 1 : 0);
    const job: GeneratorJob = {
      target, allocations: per, window: WINDOW, payload, warmupMs: WARMUP_MS, measureMs: MEASURE_MS,
      // Own client address per generator and payload: allocations outlive sockets (437 otherwise).
      prefix: `load-${payload}-${g}`, clientHost: `127.0.${10 + PAYLOADS.indexOf(payload)}.${10 + g}`,
    };
    const child = fork('bench/relay/loadgen-proc.ts', [JSON.stringify(job)], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    gens.push(child);
    ready.push(
      new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`generator ${g} not ready`)), START_TIMEOUT_MS * 2);
        child.on('message', (m: GeneratorMessage) => {
          if (m.type === 'ready') {
            clearTimeout(t);
            resolve();
          } else if (m.type === 'failed') {
            clearTimeout(t);
            reject(new Error(`generator ${g}: ${m.message}`));
          }
        });
        child.once('exit', () => reject(new Error(`generator ${g} exited`)));
      }),
    );
  }
  try {
    await Promise.all(ready);
  } catch (e) {
    for (const c of gens) c.kill('SIGKILL');
    throw e;
  }
  return gens;
}

async function measure(r: RunningRelay, payload: number): Promise<Row> {
  const gens = await startGenerators(r.target, payload);
  const results = gens.map(
    (c) =>
      new Promise<LoadResult>((resolve, reject) => {
        c.on('message', (m: GeneratorMessage) => {
          if (m.type === 'result') resolve(m.result);
          else if (m.type === 'failed') reject(new Error(m.message));
        });
        c.once('exit', () => reject(new Error('generator exited without a result')));
      }),
  );
  let uncap = (): void => undefined;
  try {
    const pids = processTree(r.child.proc.pid!).sort((a, b) => a - b);
    if (WORKER_CPU > 0 && r.name !== 'coturn') uncap = capProcesses(pids);
    for (const c of gens) c.send('go');
    await new Promise((res) => setTimeout(res, WARMUP_MS));
    const t0 = pids.map(cpuTicksOf);
    await new Promise((res) => setTimeout(res, MEASURE_MS));
    const cpuUs = pids.map((p, i) => (cpuTicksOf(p) - t0[i]!) * PAGE_CPU_US);
    const parts = await Promise.all(results);
    const relayedPackets = parts.reduce((n, p) => n + p.relayedPackets, 0);
    const seconds = Math.max(...parts.map((p) => p.seconds));
    const median = (xs: number[]): number => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const result: LoadResult = {
      roundTrips: parts.reduce((n, p) => n + p.roundTrips, 0),
      relayedPackets,
      lost: parts.reduce((n, p) => n + p.lost, 0),
      seconds,
      packetsPerSecond: relayedPackets / seconds,
      mbps: (relayedPackets * payload * 8) / seconds / 1e6,
      rttP50Us: median(parts.map((p) => p.rttP50Us)),
      rttP99Us: Math.max(...parts.map((p) => p.rttP99Us)),
    };
    const total = cpuUs.reduce((a, b) => a + b, 0);
    const busiest = Math.max(...cpuUs);
    return {
      relay: r.name,
      payload,
      cpuUsPerPacket: total / Math.max(1, relayedPackets),
      cpuShares: cpuUs.map((u) => u / Math.max(1, total)),
      // The measured window is MEASURE_MS of the generators' clock; packets over the busiest's CPU time.
      capacity: busiest > 0 ? relayedPackets / (busiest / 1e6) : Number.NaN,
      result,
    };
  } finally {
    uncap();
    for (const c of gens) if (c.exitCode === null) c.kill('SIGKILL');
  }
}

async function idleMemory(r: RunningRelay): Promise<{ count: number; bytesPerAllocation: number; rssBefore: number; rssAfter: number }> {
  const pid = r.child.proc.pid!;
  // One allocation first, so lazily created structures are not charged to the 10,000.
  const warm = await allocateMany(r.target, 1, false, 'warm', '127.0.0.3');
  await new Promise((res) => setTimeout(res, 1000));
  const rssBefore = rssBytes(pid);
  const allocs = await allocateMany(r.target, IDLE_ALLOCATIONS, false, 'idle', '127.0.0.4');
  await new Promise((res) => setTimeout(res, 2000));
  const rssAfter = rssBytes(pid);
  closeAll(allocs);
  closeAll(warm);
  return { count: IDLE_ALLOCATIONS, bytesPerAllocation: (rssAfter - rssBefore) / IDLE_ALLOCATIONS, rssBefore, rssAfter };
}

const fmt = (n: number, d = 1): string => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');

async function main(): Promise<void> {
  const echo = start(process.execPath, ['--import', 'tsx', 'bench/relay/echo.ts', '0', PEER_HOST]);
  const rows: Row[] = [];
  const memory: Record<string, unknown> = {};
  const errors: string[] = [];
  try {
    const echoPort = Number((await waitForLine(echo, /port=(\d+)/))[1]);
    for (const name of RELAYS) {
      let r: RunningRelay | undefined;
      try {
        r = await startRelay(name, echoPort);
        for (const payload of SKIP_LOAD ? [] : PAYLOADS) {
          const row = await measure(r, payload);
          rows.push(row);
          process.stderr.write(`${name} ${payload} B: ${fmt(row.cpuUsPerPacket, 2)} us/pkt, ${fmt(row.result.packetsPerSecond, 0)} pkt/s\n`);
        }
        if (!SKIP_MEMORY && (name === 'ours-1' || name === 'dgram-1' || name === 'coturn')) {
          memory[name] = await idleMemory(r);
          process.stderr.write(`${name} memory: ${JSON.stringify(memory[name])}\n`);
        }
      } catch (e) {
        errors.push(`${name}: ${(e as Error).message.slice(0, 600)}`);
      } finally {
        if (r) await stop(r.child);
      }
    }
  } finally {
    await stop(echo);
    for (const suffix of ['-log', '.pid', '.db']) rmSync(join(tmpdir(), `r2-coturn-${process.pid}${suffix}`), { force: true });
  }

  const base = new Map(rows.filter((r) => r.relay === 'bare').map((r) => [r.payload, r.cpuUsPerPacket]));
  const coturn = new Map(rows.filter((r) => r.relay === 'coturn').map((r) => [r.payload, r.cpuUsPerPacket]));
  const ratio = (v: number, b: number | undefined): string => (b ? fmt(v / b, 2) + 'x' : 'n/a');
  const lines = [
    `| relay | payload | CPU µs / relayed packet | vs bare | vs coturn | relayed packets/s | capacity packets/s (busiest process on its own core) | CPU split per process | Mbps | RTT p50 µs | RTT p99 µs | lost |`,
    `|---|---|---|---|---|---|---|---|---|---|---|---|`,
    ...rows.map((r) =>
      `| ${r.relay} | ${r.payload} B | ${fmt(r.cpuUsPerPacket, 2)} | ${ratio(r.cpuUsPerPacket, base.get(r.payload))} | ${ratio(r.cpuUsPerPacket, coturn.get(r.payload))} | ${fmt(r.result.packetsPerSecond, 0)} | ${r.relay === 'coturn' ? 'n/a (threads)' : fmt(r.capacity, 0)} | ${r.cpuShares.map((x) => fmt(x * 100, 0) + '%').join(' / ')} | ${fmt(r.result.mbps, 1)} | ${fmt(r.result.rttP50Us, 0)} | ${fmt(r.result.rttP99Us, 0)} | ${r.result.lost} |`,
    ),
  ];
  console.log(lines.join('\n'));
  // Relays may be listed more than once (--relays ours-1,ours-2,ours-1,ours-2) to interleave runs on a
  // noisy machine; the summary takes medians.
  const med = (xs: number[]): number => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! : Number.NaN);
  const pick = (relay: RelayName, payload: number, f: (r: Row) => number): number => med(rows.filter((r) => r.relay === relay && r.payload === payload).map(f));
  for (const payload of PAYLOADS) {
    const cap1 = pick('ours-1', payload, (r) => r.capacity);
    const cap2 = pick('ours-2', payload, (r) => r.capacity);
    const pps1 = pick('ours-1', payload, (r) => r.result.packetsPerSecond);
    const pps2 = pick('ours-2', payload, (r) => r.result.packetsPerSecond);
    const cpu1 = pick('ours-1', payload, (r) => r.cpuUsPerPacket);
    const cpu2 = pick('ours-2', payload, (r) => r.cpuUsPerPacket);
    const cot = pick('coturn', payload, (r) => r.cpuUsPerPacket);
    const n = rows.filter((r) => r.relay === 'ours-2' && r.payload === payload).length;
    const d1 = pick('dgram-1', payload, (r) => r.cpuUsPerPacket);
    const d2 = pick('dgram-2', payload, (r) => r.cpuUsPerPacket);
    const dcap1 = pick('dgram-1', payload, (r) => r.capacity);
    if (Number.isFinite(d1) || Number.isFinite(d2)) {
      const nd = rows.filter((r) => r.relay === 'dgram-1' && r.payload === payload).length;
      console.log(
        `\n${payload} B native vs node:dgram (medians; ${nd} dgram-1 run(s)): CPU µs/packet` +
          (Number.isFinite(d1) ? ` ours-1 ${fmt(cpu1, 2)} vs dgram-1 ${fmt(d1, 2)} (${fmt(cpu1 / d1, 3)}x), capacity ${fmt(cap1 / dcap1, 2)}x` : '') +
          (Number.isFinite(d2) ? `, ours-2 ${fmt(cpu2, 2)} vs dgram-2 ${fmt(d2, 2)} (${fmt(cpu2 / d2, 3)}x)` : '') +
          (Number.isFinite(cot) && Number.isFinite(d1) ? `; dgram-1 / coturn ${fmt(d1 / cot, 2)}x` : ''),
      );
    }
    const b1 = pick('base-1', payload, (r) => r.cpuUsPerPacket);
    const b2 = pick('base-2', payload, (r) => r.cpuUsPerPacket);
    if (Number.isFinite(b1) || Number.isFinite(b2)) {
      const nb = rows.filter((r) => r.relay === 'base-1' && r.payload === payload).length;
      console.log(
        `\n${payload} B before/after (medians; ${nb} base-1 run(s)): CPU µs/packet` +
          (Number.isFinite(b1) ? ` ours-1 ${fmt(cpu1, 2)} vs base-1 ${fmt(b1, 2)} (${fmt(cpu1 / b1, 3)}x)` : '') +
          (Number.isFinite(b2) ? ` ours-2 ${fmt(cpu2, 2)} vs base-2 ${fmt(b2, 2)} (${fmt(cpu2 / b2, 3)}x)` : '') +
          (Number.isFinite(cot) && Number.isFinite(b1) ? `; base-1 / coturn ${fmt(b1 / cot, 2)}x` : ''),
      );
    }
    if (Number.isFinite(cap1) && Number.isFinite(cap2)) {
      console.log(
        `\n${payload} B (medians of ${n} run(s)): ours-2 / ours-1 capacity ${fmt(cap2 / cap1, 2)}x, measured packets/s ${fmt(pps2 / pps1, 2)}x (generators share the cores); ` +
          `CPU µs/packet ours-1 ${fmt(cpu1, 2)}, ours-2 ${fmt(cpu2, 2)}${Number.isFinite(cot) ? `, coturn ${fmt(cot, 2)}: ours-1 / coturn ${fmt(cpu1 / cot, 2)}x, ours-2 / coturn ${fmt(cpu2 / cot, 2)}x` : ''}`,
      );
    }
  }
  for (const [name, m] of Object.entries(memory)) {
    const v = m as { count: number; bytesPerAllocation: number; rssBefore: number; rssAfter: number };
    console.log(`\n${name}: ${v.count} idle allocations, RSS ${fmt(v.rssBefore / 2 ** 20)} -> ${fmt(v.rssAfter / 2 ** 20)} MiB, ${fmt(v.bytesPerAllocation, 0)} bytes per allocation`);
  }
  console.log(`\nsettings: ${GENERATORS} generator processes, ${ALLOCATIONS} allocations x ${WINDOW} in flight, warm-up ${WARMUP_MS} ms, measured ${MEASURE_MS} ms, CLK_TCK ${CLK_TCK}, load ${readFileSync('/proc/loadavg', 'latin1').trim()}${WORKER_CPU > 0 ? `, each relay process capped at ${WORKER_CPU} of a core (coturn uncapped)` : ''}`);
  if (errors.length) {
    console.log(`\nerrors:\n${errors.join('\n')}`);
    process.exitCode = 1;
  }
}

await main();
