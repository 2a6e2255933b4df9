/**
 * Runs the real signaling Worker (worker/index.ts, bundled with esbuild the way wrangler does:
 * workerd/worker/browser export conditions) in workerd through Miniflare, from Node, trusting a
 * fresh in-memory development issuer. For suites and benchmarks that need a live service.
 *
 * @example
 * const sig = await startSignaling({ relays: [relay], turnSecret });
 * try {
 *   const token = await sig.issuer.accessToken({ sub: 'app-1', homes: ['home-1'] });
 *   const ws = new WebSocket(sig.url.replace('http', 'ws') + '/v1/presence', wsProtocols(token));
 * } finally {
 *   await sig.close();
 * }
 */
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { convertV4MiniflareOptions, Miniflare } from 'miniflare';
import { createDevIssuer, devWorkerVars, type DevIssuer } from '../../dev/issuer.js';
import type { RelayEntry } from '../../worker/config.js';

// Miniflare must never phone home (TOOLCHAIN.md).
process.env.WRANGLER_SEND_METRICS = 'false';
process.env.CLOUDFLARE_CF_FETCH_ENABLED = 'false';
process.env.WRANGLER_HIDE_BANNER = 'true';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** Same as wrangler.toml (workerd 1.20261117 accepts dates up to 2026-11-24). */
export const COMPATIBILITY_DATE = '2026-11-17';
/** Same as wrangler.toml (test/worker/compression.test.ts checks both). */
export const COMPATIBILITY_FLAGS = ['no_web_socket_compression'];
/** Tests need no relay to talk to; a placeholder secret of the required length. */
export const DEFAULT_TEST_TURN_SECRET = 'homelink-test-turn-secret-0123456789';
/** Suites want fast verdicts: an offline target is declared after 1 s instead of the 3 s default. */
export const DEFAULT_TEST_OFFLINE_WAIT_MS = 1000;

export interface StartSignalingOptions {
  /** Relays handed out in ICE servers; none when absent. */
  relays?: RelayEntry[];
  turnSecret?: string;
  offlineWaitMs?: number;
  requestTimeoutMs?: number;
  sessionTtlSeconds?: number;
  /** How long an empty or ended room lingers before deletion (worker default 15 s). */
  roomGraceMs?: number;
  turnTtlSeconds?: number;
  /** Listen address; 127.0.0.1 by default. */
  host?: string;
  /** Listen port; 0 (any free port) by default. */
  port?: number;
  /** `request.cf` every request carries; `{}` (no location, so relays come in config order) by default. */
  cf?: Record<string, unknown>;
  /** An issuer to trust instead of a fresh in-memory one. */
  issuer?: DevIssuer;
  /** Extra or overriding worker vars (e.g. DEV_HS256_SECRET, PRESENCE_STALE_MS). */
  vars?: Record<string, string>;
  /**
   * Receives each line of workerd's structured logs (the worker's console output and its uncaught
   * exceptions) instead of the terminal; for suites that assert on the service's logs.
   */
  onOutput?: (line: string) => void;
  /** Worker code to run instead of this tree's bundle (bench/signaling: an earlier commit's). */
  bundle?: string;
  /** Opens workerd's inspector (DevTools protocol) on a free loopback port: `inspectorUrl()`. */
  inspector?: boolean;
}

export interface SignalingHandle {
  /** `http://127.0.0.1:PORT`; WebSocket URLs are the same with `ws:`. */
  url: string;
  issuer: DevIssuer;
  /**
   * Stops workerd and starts it again on the same port with the same Durable Object storage:
   * every object is re-created from storage and every socket is dropped.
   */
  restart(): Promise<void>;
  /** The runtime inspector's base URL (`ws://127.0.0.1:PORT`); only with `inspector: true`. */
  inspectorUrl(): Promise<URL>;
  /** The folder of the Durable Objects' storage (one SQLite file per object under `do/`). */
  readonly storagePath: string;
  close(): Promise<void>;
}

/**
 * Durable Object storage goes to tmpfs when the machine has one: every object is a SQLite file,
 * and on a disk-backed /tmp their commits made the service several times slower.
 */
async function storageDir(): Promise<string> {
  try {
    return await mkdtemp(join('/dev/shm', 'homelink-signaling-'));
  } catch {
    return mkdtemp(join(tmpdir(), 'homelink-signaling-'));
  }
}

/** Storage folders of handles not yet closed, removed at exit if a caller forgot `close()`. */
const openDirs = new Set<string>();
let exitHook = false;
function removeAtExit(dir: string): void {
  openDirs.add(dir);
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    for (const d of openDirs) rmSync(d, { recursive: true, force: true });
  });
}

/**
 * Hands each line of one of the runtime's structured log records (console output and uncaught
 * errors alike) to `onOutput`.
 */
function forwardLog(message: string, onLine: (line: string) => void): void {
  for (const l of message.split('\n')) if (l !== '') onLine(l);
}

let bundle: Promise<string> | null = null;

/** Bundles worker/index.ts once per process. */
export function bundleWorker(): Promise<string> {
  bundle ??= bundleWorkerAt(ROOT);
  return bundle;
}

/**
 * Bundles `<root>/worker/index.ts` (a checkout of any commit), resolving packages from this
 * tree's node_modules.
 */
export function bundleWorkerAt(root: string): Promise<string> {
  return build({
    entryPoints: [join(root, 'worker/index.ts')],
    nodePaths: [join(ROOT, 'node_modules')],
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    conditions: ['workerd', 'worker', 'browser'],
    mainFields: ['module', 'main'],
    external: ['cloudflare:*'],
    write: false,
    logLevel: 'silent',
  }).then((r) => r.outputFiles[0]!.text);
}

/**
 * The Worker as it was at git commit `ref` (its worker/ and protocol/), bundled like this tree's:
 * what the benches' `--before` runs against.
 */
export async function bundleWorkerAtCommit(ref: string): Promise<string> {
  if (!/^[\w./-]{1,100}$/.test(ref)) throw new Error('a commit or branch name, please');
  const dir = await mkdtemp(join(tmpdir(), 'homelink-bench-ref-'));
  try {
    const tar = execFileSync('git', ['archive', ref, 'worker', 'protocol'], { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 });
    execFileSync('tar', ['-x', '-C', dir], { input: tar });
    return await bundleWorkerAt(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** What the worker prints per billable unit with `DEBUG_TRACE_EVENTS` (worker/socket-object.ts `meter`). */
const METER_RE = /^homelink-meter (worker|presence|room) (\w+) (\d+)$/;
/** And per event of an object (`trace`): `wake`, `alarm`, `ticket`, ... */
const TRACE_RE = /^homelink-trace (presence|room) (\w+)$/;

/** The meters' units, with the names the benches print them under. */
export const METER_UNITS = [
  ['requests (upgrades, RPC calls, alarms)', 'request'],
  ['incoming WebSocket messages', 'message'],
  ['storage rows written', 'write'],
  ['storage rows read', 'read'],
  ['alarms set or moved', 'alarm_set'],
] as const;

/**
 * Sums the worker's meter lines by `<object>.<unit>` (`room.write`, `presence.request`, ...) and
 * counts its trace lines by `<object>.<event>` (`room.alarm`): give `onOutput` to
 * `startSignaling` along with `vars: { DEBUG_TRACE_EVENTS: '1' }`.
 *
 * @example
 * const meters = new Meters();
 * const sig = await startSignaling({ vars: { DEBUG_TRACE_EVENTS: '1' }, onOutput: meters.onOutput });
 * meters.count('room.write'); // rows the rooms wrote so far
 */
export class Meters {
  readonly counts: Record<string, number> = {};
  private readonly events: Record<string, number> = {};
  readonly onOutput = (line: string): void => {
    const m = METER_RE.exec(line);
    if (m) this.counts[`${m[1]}.${m[2]}`] = this.count(`${m[1]}.${m[2]}`) + Number(m[3]);
    const t = TRACE_RE.exec(line);
    if (t) this.events[`${t[1]}.${t[2]}`] = this.traced(`${t[1]}.${t[2]}`) + 1;
  };
  count(key: string): number {
    return this.counts[key] ?? 0;
  }
  /** Trace lines seen for `<object>.<event>`, e.g. `room.alarm` (each alarm invocation). */
  traced(key: string): number {
    return this.events[key] ?? 0;
  }
  /**
   * The lines come through the runtime's output pipe: waits until `probe` holds (5 s at most),
   * then `extraMs` more for lines still in flight.
   */
  async settle(probe: () => boolean, extraMs = 300): Promise<void> {
    const end = Date.now() + 5000;
    while (!probe() && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, extraMs));
  }
  /** Forgets what was counted so far. */
  reset(): void {
    for (const o of [this.counts, this.events]) for (const key of Object.keys(o)) delete o[key];
  }
}

/** Starts the worker in workerd; always `close()` it (in a `finally` or `afterAll`). */
export async function startSignaling(opts: StartSignalingOptions = {}): Promise<SignalingHandle> {
  const issuer = opts.issuer ?? (await createDevIssuer());
  const code = opts.bundle ?? (await bundleWorker());
  const persist = await storageDir();
  removeAtExit(persist);
  const bindings = {
    ...devWorkerVars(issuer, {
      turnSecret: opts.turnSecret ?? DEFAULT_TEST_TURN_SECRET,
      relays: opts.relays ?? [],
      offlineWaitMs: opts.offlineWaitMs ?? DEFAULT_TEST_OFFLINE_WAIT_MS,
      ...(opts.requestTimeoutMs !== undefined ? { requestTimeoutMs: opts.requestTimeoutMs } : {}),
      ...(opts.sessionTtlSeconds !== undefined ? { sessionTtlSeconds: opts.sessionTtlSeconds } : {}),
      ...(opts.turnTtlSeconds !== undefined ? { turnTtlSeconds: opts.turnTtlSeconds } : {}),
    }),
    ...(opts.roomGraceMs !== undefined ? { ROOM_GRACE_MS: String(opts.roomGraceMs) } : {}),
    ...opts.vars,
  };
  const host = opts.host ?? '127.0.0.1';
  const make = (port: number): Miniflare =>
    new Miniflare(
      convertV4MiniflareOptions({
        modules: [{ type: 'ESModule', path: 'index.mjs', contents: code }],
        compatibilityDate: COMPATIBILITY_DATE,
        compatibilityFlags: COMPATIBILITY_FLAGS,
        durableObjects: {
          PRESENCE: { className: 'Presence', useSQLite: true },
          ROOM: { className: 'Room', useSQLite: true },
        },
        resourcePersistencePath: persist,
        bindings,
        host,
        port,
        cf: opts.cf ?? {},
        ...(opts.inspector ? { inspectorPort: 0 } : {}),
        // `verbose`: without it this workerd keeps uncaught exceptions out of the structured logs.
        ...(opts.onOutput ? { verbose: true, handleStructuredLogs: (log: { message: string }) => forwardLog(log.message, opts.onOutput!) } : {}),
      }),
    );
  let mf = make(opts.port ?? 0);
  let url: URL;
  try {
    url = await mf.ready;
  } catch (e) {
    await mf.dispose().catch(() => undefined);
    await rm(persist, { recursive: true, force: true });
    openDirs.delete(persist);
    throw e;
  }
  const port = Number(url.port);
  let closed = false;
  return {
    url: `http://${host}:${port}`,
    issuer,
    storagePath: persist,
    async restart() {
      await mf.dispose();
      mf = make(port);
      await mf.ready;
    },
    inspectorUrl() {
      return mf.getInspectorURL();
    },
    async close() {
      if (closed) return;
      closed = true;
      try {
        await mf.dispose();
      } finally {
        await rm(persist, { recursive: true, force: true });
        openDirs.delete(persist);
      }
    },
  };
}
