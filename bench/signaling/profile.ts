/**
 * Where workerd's CPU goes, for bench/signaling/run.ts:
 *
 * - per isolate, with V8's sampling profiler over workerd's inspector (DevTools protocol,
 *   `Profiler.*`): the busy time of our Worker's isolate (`core:user:`, the Worker and both
 *   Durable Object classes: what Cloudflare bills as CPU, JS plus the runtime work done on the
 *   isolate's behalf, e.g. JSON, crypto, serialization) apart from Miniflare's own isolates
 *   (`core:entry`, the proxy every request passes through locally, and the others it adds);
 * - per thread, from /proc/<pid>/task/<tid>/stat: which workerd threads spend the CPU the
 *   whole-process figure counts.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';

/**
 * Sampling period asked for (µs). calibrate.ts: at 100-1000 µs the Worker isolate's estimate is
 * 85-100 % of /proc for a pure-JS burn; at 100 µs the profiler itself added ~50 % to workerd's
 * CPU in the signaling run, at 1000 µs far less, so the longer period. An isolate that is mostly
 * waiting (Miniflare's entry) is overstated at long periods: the bench reports it only as part of
 * the remainder (whole process minus the Worker's isolate).
 */
const SAMPLING_INTERVAL_US = 1000;
/** Every inspector call is bounded. */
const CALL_TIMEOUT_MS = 30_000;

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** One DevTools protocol session with one isolate. */
class Session {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (d) => {
      const m = JSON.parse(d.toString()) as { id?: number; result?: unknown; error?: { message: string } };
      if (m.id === undefined) return;
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.error) p.reject(new Error(m.error.message));
      else p.resolve(m.result);
    });
  }
  static open(url: string): Promise<Session> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.once('open', () => resolve(new Session(ws)));
      ws.once('error', reject);
    });
  }
  call<T>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ id, method, params }));
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${method} timed out`));
      }, CALL_TIMEOUT_MS);
      this.pending.set(id, {
        resolve: (v) => (clearTimeout(t), resolve(v as T)),
        reject: (e) => (clearTimeout(t), reject(e)),
      });
    });
  }
  close(): void {
    this.ws.close();
  }
}

/** Busy time of one isolate over a profile, in ms, with the self time of its hottest functions. */
export interface IsolateCpu {
  readonly isolate: string;
  /** Time of samples that were not `(idle)`: JS, GC and `(program)` (native work on the isolate). */
  readonly busyMs: number;
  /**
   * Not-idle samples times the typical sampling period (the median delta of those samples). V8 samples on
   * a wall-clock timer, so a thread descheduled on a loaded machine stretches `busyMs` (one
   * sample's delta covers the wait) but not the sample count: on a busy machine this is the
   * closer estimate of CPU time. The real period is longer than the one asked for, hence the
   * median rather than SAMPLING_INTERVAL_US.
   */
  readonly sampledMs: number;
  readonly gcMs: number;
  readonly programMs: number;
  /** Self time by function (`name url:line`), descending, by sample count (as `sampledMs`). */
  readonly top: ReadonlyArray<{ readonly fn: string; readonly ms: number }>;
}

function summarise(isolate: string, p: Profile): IsolateCpu {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let busy = 0;
  let gc = 0;
  let program = 0;
  let count = 0;
  const busyDeltas: number[] = [];
  for (let i = 0; i < p.samples.length; i++) {
    // timeDeltas[i] is the time since the previous sample: it belongs to sample i's frame.
    const dt = (p.timeDeltas[i] ?? 0) / 1000;
    const n = byId.get(p.samples[i]!);
    if (!n) continue;
    const name = n.callFrame.functionName;
    if (name === '(idle)') continue;
    busy += dt;
    count++;
    busyDeltas.push(dt);
    if (name === '(garbage collector)') gc += dt;
    if (name === '(program)') program += dt;
    const file = n.callFrame.url.split('/').pop() ?? '';
    const key = `${name || '(anonymous)'} ${file}:${n.callFrame.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + 1);
  }
  busyDeltas.sort((a, b) => a - b);
  const period = busyDeltas.length > 0 ? busyDeltas[Math.floor(busyDeltas.length / 2)]! : SAMPLING_INTERVAL_US / 1000;
  const top = [...self.entries()].sort((a, b) => b[1] - a[1]).map(([fn, n]) => ({ fn, ms: n * period }));
  return { isolate, busyMs: busy, sampledMs: count * period, gcMs: gc, programMs: program, top };
}

/**
 * Profiles every isolate workerd's inspector lists at `base` (`ws://127.0.0.1:PORT`) while
 * `run` runs. The profiler's own cost falls on the sampled thread, so a profiled run is slower;
 * the timed runs are made without it.
 */
export async function profileIsolates(base: URL, run: () => Promise<void>): Promise<IsolateCpu[]> {
  const res = await fetch(`http://${base.host}/json`);
  const targets = (await res.json()) as Array<{ id: string; webSocketDebuggerUrl: string }>;
  const sessions = await Promise.all(targets.map(async (t) => ({ id: t.id, s: await Session.open(t.webSocketDebuggerUrl) })));
  try {
    for (const { s } of sessions) {
      await s.call('Profiler.enable');
      await s.call('Profiler.setSamplingInterval', { interval: SAMPLING_INTERVAL_US });
      await s.call('Profiler.start');
    }
    await run();
    const out: IsolateCpu[] = [];
    for (const { id, s } of sessions) {
      const { profile } = await s.call<{ profile: Profile }>('Profiler.stop');
      // HOMELINK_PROFILE_DUMP=<dir>: the raw profiles too (open in Chrome's DevTools), for
      // inclusive times and callers that the self-time list does not show.
      const dump = process.env['HOMELINK_PROFILE_DUMP'];
      if (dump) writeFileSync(join(dump, `${id.replace(/[^\w.-]/g, '_')}-${Date.now()}.cpuprofile`), JSON.stringify(profile));
      out.push(summarise(id, profile));
    }
    return out;
  } finally {
    for (const { s } of sessions) s.close();
  }
}

/** Clock ticks per second in /proc stat files (USER_HZ, 100 on Linux). */
const USER_HZ = 100;

/** A /proc stat line's command name, and its fields after it (state ppid ... utime(14) stime(15) at [11], [12]). */
function readStat(path: string): { comm: string; f: string[] } | null {
  let stat: string;
  try {
    stat = readFileSync(path, 'utf8');
  } catch {
    return null; // the process or thread ended
  }
  const close = stat.lastIndexOf(')');
  return { comm: stat.slice(stat.indexOf('(') + 1, close), f: stat.slice(close + 2).split(' ') };
}

const cpuMs = (f: string[]): number => ((Number(f[11]) + Number(f[12])) * 1000) / USER_HZ;

/** Process ids of this script's children named `name`, or `pid` alone when given and so named. */
function childPids(name: string, pid?: number): string[] {
  return readdirSync('/proc').filter((p) => {
    if (!/^\d+$/.test(p)) return false;
    const st = readStat(`/proc/${p}/stat`);
    return st !== null && st.comm === name && (pid !== undefined ? Number(p) === pid : Number(st.f[1]) === process.pid);
  });
}

/** CPU time (ms) of this script's child processes named `name` (utime + stime; `pid` picks one process instead). */
export function childCpuMs(name: string, pid?: number): number {
  let ms = 0;
  for (const p of childPids(name, pid)) {
    const st = readStat(`/proc/${p}/stat`);
    if (st) ms += cpuMs(st.f);
  }
  return ms;
}

/** CPU ms so far of each thread of the `workerd` children of this process, by thread name and tid. */
export function workerdThreadsMs(): Map<string, number> {
  const out = new Map<string, number>();
  for (const pid of childPids('workerd')) {
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tids) {
      const st = readStat(`/proc/${pid}/task/${tid}/stat`);
      if (st) out.set(`${st.comm}#${tid}`, cpuMs(st.f));
    }
  }
  return out;
}

/** Per-thread CPU between two `workerdThreadsMs` readings, per exchange. */
export function threadDelta(a: Map<string, number>, b: Map<string, number>, n: number): Array<{ thread: string; ms: number }> {
  return [...b.entries()].map(([thread, ms]) => ({ thread, ms: (ms - (a.get(thread) ?? 0)) / n })).sort((x, y) => y.ms - x.ms);
}
