/**
 * Relay benchmark, side by side in one run (issue 3, docs/BENCHMARKS.md):
 * the same load generator (bench/relay/loadgen.ts) against
 *
 *   - bare:     a bare Node dgram ChannelData forwarder (the ceiling for any dgram relay),
 *   - ours-1:   our relay (relay/main.ts), one worker process,
 *   - ours-2:   our relay, two worker processes,
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
 *        [--allocations 8] [--window 8] [--idle-allocations 10000] [--skip-memory] [--skip-load]
 *
 * Every child process is started here and stopped here (SIGTERM, then SIGKILL
 * after a bound); all traffic stays on 127.0.0.1.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeBindingRequest, readBindingResponse } from '../../protocol/stun/index.js';
import { allocateMany, closeAll, runLoad, type LoadResult, type LoadTarget } from './loadgen.js';

type RelayName = 'bare' | 'ours-1' | 'ours-2' | 'coturn';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
}
const RELAYS = arg('relays', 'bare,ours-1,ours-2,coturn').split(',') as RelayName[];
const MEASURE_MS = Number(arg('measure-ms', '5000'));
/** One second of warm-up lets V8 optimise the hot path and the kernel settle socket buffers. */
const WARMUP_MS = Number(arg('warmup-ms', '1500'));
const ALLOCATIONS = Number(arg('allocations', '8'));
const WINDOW = Number(arg('window', '8'));
const IDLE_ALLOCATIONS = Number(arg('idle-allocations', '10000'));
const SKIP_MEMORY = process.argv.includes('--skip-memory');
const SKIP_LOAD = process.argv.includes('--skip-load');
const PAYLOADS = [100, 1200];
const HOST = '127.0.0.1';
const SECRET = randomBytes(24).toString('base64url');
/** Relay port range: wide enough for 10,000 allocations plus slack (NATLAB: narrow ranges hit 508). */
const RELAY_PORT_MIN = 40000;
const RELAY_PORT_MAX = 52999;
/** Bounded waits for child processes. */
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
const PAGE_CPU_US = 1e6 / CLK_TCK;

/** utime+stime (clock ticks) of `pid` and all its descendants; /proc/<pid>/stat covers every thread. */
function cpuTicks(rootPid: number): number {
  const parentOf = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'latin1');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parentOf.set(Number(d), Number(f[1])); // field 4: ppid
      ticks.set(Number(d), Number(f[11]) + Number(f[12])); // fields 14, 15: utime, stime
    } catch {
      // process ended while scanning
    }
  }
  let total = 0;
  for (const [pid, t] of ticks) {
    for (let p: number | undefined = pid, hops = 0; p !== undefined && p > 1 && hops < 64; p = parentOf.get(p), hops++) {
      if (p === rootPid) {
        total += t;
        break;
      }
    }
  }
  return total;
}

/** Resident set size (bytes) of `pid` and its descendants. */
function rssBytes(rootPid: number): number {
  let total = 0;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const pid = Number(d);
      let p = pid;
      let mine = false;
      for (let hops = 0; hops < 64 && p > 1; hops++) {
        if (p === rootPid) {
          mine = true;
          break;
        }
        const stat = readFileSync(`/proc/${p}/stat`, 'latin1');
        p = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      }
      if (!mine) continue;
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
      if (m) total += Number(m[1]) * 1024;
    } catch {
      // gone
    }
  }
  return total;
}

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

/** A port free for TCP whose next `count` ports are free for UDP (STUN/TURN listens on both; worker i on port + i). */
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

function start(cmd: string, args: string[]): Child {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_ENV: 'production' } });
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
  const peer = { host: HOST, port: echoPort };
  if (name === 'bare') {
    const child = start(process.execPath, ['--import', 'tsx', 'bench/relay/forwarder.ts', String(echoPort)]);
    const m = await waitForLine(child, /port=(\d+)/);
    return { name, child, target: { host: HOST, port: Number(m[1]), mode: 'raw', peer } };
  }
  const workers = name === 'ours-2' ? 2 : 1;
  // Our relay's worker i listens for UDP on port + i (relay/node/workers.ts), so pick a free run of ports.
  const port = await freeDualPort(workers);
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
  ]);
  const ports = Array.from({ length: workers }, (_, i) => port + i);
  for (const p of ports) await waitForStun(child, p);
  return { name, child, target: { host: HOST, port, ports, mode: 'turn', secret: SECRET, peer } };
}

interface Row {
  relay: RelayName;
  payload: number;
  cpuUsPerPacket: number;
  result: LoadResult;
}

async function measure(r: RunningRelay, payload: number): Promise<Row> {
  const allocs = await allocateMany(r.target, ALLOCATIONS, true, `load-${payload}`, `127.0.0.${10 + PAYLOADS.indexOf(payload)}`);
  let t0 = 0;
  let t1 = 0;
  const pid = r.child.proc.pid!;
  try {
    const result = await runLoad(r.target, allocs, {
      allocations: ALLOCATIONS,
      window: WINDOW,
      payload,
      warmupMs: WARMUP_MS,
      measureMs: MEASURE_MS,
      onWindow: (edge) => {
        if (edge === 'start') t0 = cpuTicks(pid);
        else t1 = cpuTicks(pid);
      },
    });
    const cpuUs = (t1 - t0) * PAGE_CPU_US;
    return { relay: r.name, payload, cpuUsPerPacket: cpuUs / Math.max(1, result.relayedPackets), result };
  } finally {
    closeAll(allocs);
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
  const echo = start(process.execPath, ['--import', 'tsx', 'bench/relay/echo.ts']);
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
        if (!SKIP_MEMORY && (name === 'ours-1' || name === 'coturn')) {
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
  const lines = [
    `| relay | payload | CPU µs / relayed packet | vs bare | relayed packets/s | Mbps (payload, both ways) | RTT p50 µs | RTT p99 µs | lost |`,
    `|---|---|---|---|---|---|---|---|---|`,
    ...rows.map((r) => {
      const b = base.get(r.payload);
      return `| ${r.relay} | ${r.payload} B | ${fmt(r.cpuUsPerPacket, 2)} | ${b ? fmt(r.cpuUsPerPacket / b, 2) + 'x' : 'n/a'} | ${fmt(r.result.packetsPerSecond, 0)} | ${fmt(r.result.mbps, 1)} | ${fmt(r.result.rttP50Us, 0)} | ${fmt(r.result.rttP99Us, 0)} | ${r.result.lost} |`;
    }),
  ];
  console.log(lines.join('\n'));
  for (const [name, m] of Object.entries(memory)) {
    const v = m as { count: number; bytesPerAllocation: number; rssBefore: number; rssAfter: number };
    console.log(`\n${name}: ${v.count} idle allocations, RSS ${fmt(v.rssBefore / 2 ** 20)} -> ${fmt(v.rssAfter / 2 ** 20)} MiB, ${fmt(v.bytesPerAllocation, 0)} bytes per allocation`);
  }
  console.log(`\nsettings: ${ALLOCATIONS} allocations x ${WINDOW} in flight, warm-up ${WARMUP_MS} ms, measured ${MEASURE_MS} ms, CLK_TCK ${CLK_TCK}, load ${readFileSync('/proc/loadavg', 'latin1').trim()}`);
  if (errors.length) {
    console.log(`\nerrors:\n${errors.join('\n')}`);
    process.exitCode = 1;
  }
}

await main();
