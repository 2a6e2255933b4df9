/**
 * `npm start`: the whole local stack on 127.0.0.1.
 *
 *   signaling  `wrangler dev` (workerd), trusting the development issuer
 *   relay      STUN/TURN over UDP and TCP, and TLS with a self-signed development certificate
 *   issuer     ES256 key created on first run under <dir>/issuer
 *   demo page  web/, with a dev-credentials endpoint
 *
 * State lives in a git-ignored folder (default `.dev/`): the issuer key, the TURN secret, the TLS
 * certificate, the worker's Durable Object state, logs, a lock file and `stack.json` (read by the
 * CLI). Every child runs in its own process group; Ctrl-C (SIGINT) or SIGTERM stops each group,
 * waits a bounded time, then kills what is left, so nothing is orphaned. A second `npm start` on
 * the same folder, or on ports already taken, says so and exits 1.
 *
 *   npm start -- [--signaling-port 8787] [--relay-port 3478] [--relay-tls-port 5349]
 *                [--web-port 8080] [--metrics-port 9464] [--dir .dev] [--verbose]
 *
 * Each flag also reads an environment variable (HOMELINK_SIGNALING_PORT, ...; see `--help`).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, readFileSync, type WriteStream } from 'node:fs';
import { mkdir, readFile, rm, writeFile, open } from 'node:fs/promises';
import dgram from 'node:dgram';
import net from 'node:net';
import { join, resolve, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { createDevIssuer, devWorkerVars } from '../dev/issuer.js';
import { STACK_FILE, type Stack } from '../cli/stack.js';
import { encodeBindingRequest, readBindingResponse } from '../protocol/stun/binding.js';
import { startWebServer, type WebServer } from '../web/server.js';

// ---- Defaults (named, with reasons) --------------------------------------------------------

/** Loopback only: the dev stack trusts a key on disk and serves dev credentials. */
export const HOST = '127.0.0.1';
/** wrangler's own default, so docs and muscle memory agree. */
export const DEFAULT_SIGNALING_PORT = 8787;
/** The IANA STUN/TURN port (RFC 8489 §6.1), UDP and TCP. */
export const DEFAULT_RELAY_PORT = 3478;
/** The IANA STUN/TURN-over-TLS port (RFC 8489 §6.2.2); production uses 443 as well. */
export const DEFAULT_RELAY_TLS_PORT = 5349;
export const DEFAULT_WEB_PORT = 8080;
/** The relay's own default metrics port (relay/config.ts). */
export const DEFAULT_METRICS_PORT = 9478;
/** workerd is ready in about 1.5 s here; the first run also bundles, so allow generously. */
export const READY_TIMEOUT_MS = 60_000;
/** After SIGTERM a child gets this long to exit before SIGKILL (the relay drains; workerd is quick). */
export const STOP_GRACE_MS = 5_000;
/** Home id every dev token shares, so any two dev endpoints may reach each other. */
export const DEV_HOME = 'home-1';

const root = fileURLToPath(new URL('..', import.meta.url));
const execFileP = promisify(execFile);

const HELP = `npm start -- [options]   the whole homelink stack on ${HOST}

  --signaling-port N   signaling worker (wrangler dev)   env HOMELINK_SIGNALING_PORT  default ${DEFAULT_SIGNALING_PORT}
  --relay-port N       relay STUN/TURN, UDP and TCP      env HOMELINK_RELAY_PORT      default ${DEFAULT_RELAY_PORT}
  --relay-tls-port N   relay TURN over TLS               env HOMELINK_RELAY_TLS_PORT  default ${DEFAULT_RELAY_TLS_PORT}
  --metrics-port N     relay /metrics and /health        env HOMELINK_METRICS_PORT    default ${DEFAULT_METRICS_PORT}
  --web-port N         demo page                         env HOMELINK_WEB_PORT        default ${DEFAULT_WEB_PORT}
  --dir PATH           state folder (git-ignored)        env HOMELINK_DEV_DIR         default .dev
  --verbose            copy the children's logs to this terminal (they always go to <dir>/logs/)
  -h, --help           this text`;

/** A start-up failure the user can act on: printed as one line, exit code 1. */
class StartError extends Error {
  override readonly name = 'StartError';
}

interface Options {
  readonly signalingPort: number;
  readonly relayPort: number;
  readonly relayTlsPort: number;
  readonly metricsPort: number;
  readonly webPort: number;
  readonly dir: string;
  readonly verbose: boolean;
}

function portOption(flag: string | undefined, env: string, def: number, name: string): number {
  const raw = flag ?? process.env[env];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new StartError(`--${name} (or ${env}) must be a port number 1-65535`);
  return n;
}

function parseOptions(argv: string[]): Options | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        'signaling-port': { type: 'string' },
        'relay-port': { type: 'string' },
        'relay-tls-port': { type: 'string' },
        'metrics-port': { type: 'string' },
        'web-port': { type: 'string' },
        dir: { type: 'string' },
        verbose: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (e) {
    throw new StartError(`${(e as Error).message} (see npm start -- --help)`);
  }
  if (values.help) return 'help';
  const o: Options = {
    signalingPort: portOption(values['signaling-port'], 'HOMELINK_SIGNALING_PORT', DEFAULT_SIGNALING_PORT, 'signaling-port'),
    relayPort: portOption(values['relay-port'], 'HOMELINK_RELAY_PORT', DEFAULT_RELAY_PORT, 'relay-port'),
    relayTlsPort: portOption(values['relay-tls-port'], 'HOMELINK_RELAY_TLS_PORT', DEFAULT_RELAY_TLS_PORT, 'relay-tls-port'),
    metricsPort: portOption(values['metrics-port'], 'HOMELINK_METRICS_PORT', DEFAULT_METRICS_PORT, 'metrics-port'),
    webPort: portOption(values['web-port'], 'HOMELINK_WEB_PORT', DEFAULT_WEB_PORT, 'web-port'),
    dir: resolve(values.dir ?? process.env['HOMELINK_DEV_DIR'] ?? join(root, '.dev')),
    verbose: values.verbose ?? false,
  };
  const tcp = [o.signalingPort, o.relayPort, o.relayTlsPort, o.metricsPort, o.webPort];
  if (new Set(tcp).size !== tcp.length) throw new StartError('the signaling, relay, relay TLS, metrics and web ports must all differ');
  return o;
}

// ---- Single instance -------------------------------------------------------------------------

interface LockInfo {
  readonly pid: number;
  readonly ports: Record<string, number>;
  readonly childGroups: number[];
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

const lockPath = (o: Options): string => join(o.dir, 'start.lock');

/**
 * Takes the lock file (`wx`: atomic create). A lock whose pid is alive means another stack runs
 * on this folder; a stale one (its process died without cleaning up) is removed, and any child
 * group it recorded that is still there is stopped, so a crash never leaves a half stack behind.
 */
async function takeLock(o: Options): Promise<void> {
  const file = lockPath(o);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(file, 'wx', 0o600);
      const info: LockInfo = {
        pid: process.pid,
        ports: { signaling: o.signalingPort, relay: o.relayPort, relayTls: o.relayTlsPort, metrics: o.metricsPort, web: o.webPort },
        childGroups: [],
      };
      await fh.writeFile(JSON.stringify(info));
      await fh.close();
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let info: LockInfo | null = null;
    try {
      info = JSON.parse(readFileSync(file, 'utf8')) as LockInfo;
    } catch {
      info = null; // half-written or foreign: treat as stale
    }
    if (info && typeof info.pid === 'number' && info.pid !== process.pid && alive(info.pid)) {
      const p = info.ports ?? {};
      throw new StartError(
        `homelink is already running from ${o.dir} (pid ${info.pid}; signaling http://${HOST}:${p['signaling']}, demo http://${HOST}:${p['web']}/): ` +
          `stop it with Ctrl-C in its terminal (or kill ${info.pid}), or start another with a different --dir and ports`,
      );
    }
    for (const g of info?.childGroups ?? []) if (isOurChild(g)) killGroup(g, 'SIGKILL');
    await rm(file, { force: true });
  }
  throw new StartError(`could not take the lock ${file}: remove it if no homelink is running`);
}

/** True when process `pid` still runs one of the commands this script starts (not a reused pid). */
function isOurChild(pid: number): boolean {
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmd.includes('wrangler') || cmd.includes(join('relay', 'main.ts'));
  } catch {
    return false; // gone (or no /proc): nothing to stop
  }
}

async function updateLockGroups(o: Options, groups: number[]): Promise<void> {
  const info = JSON.parse(await readFile(lockPath(o), 'utf8')) as LockInfo;
  await writeFile(lockPath(o), JSON.stringify({ ...info, childGroups: groups }));
}

function checkTcpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host: HOST, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

function checkUdpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.once('error', () => {
      s.close();
      resolve(false);
    });
    s.bind({ port, address: HOST, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

async function checkPorts(o: Options, inspectorPort: number): Promise<void> {
  const wanted: [string, number, 'tcp' | 'udp'][] = [
    ['signaling-port', o.signalingPort, 'tcp'],
    ['relay-port', o.relayPort, 'tcp'],
    ['relay-port', o.relayPort, 'udp'],
    ['relay-tls-port', o.relayTlsPort, 'tcp'],
    ['metrics-port', o.metricsPort, 'tcp'],
    ['web-port', o.webPort, 'tcp'],
  ];
  for (const [name, port, proto] of wanted) {
    const free = proto === 'tcp' ? await checkTcpFree(port) : await checkUdpFree(port);
    if (!free) {
      throw new StartError(
        `${proto.toUpperCase()} port ${port} on ${HOST} (--${name}) is in use by another program: stop it, or choose another port with --${name}`,
      );
    }
  }
  if (!(await checkTcpFree(inspectorPort))) throw new StartError(`could not reserve a debugger port for wrangler (${inspectorPort}); try again`);
}

/** A free TCP port on loopback, for wrangler's inspector (its default 9229 clashes with others). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, HOST, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

// ---- First-run material --------------------------------------------------------------------

/** The TURN REST shared secret, random on first run and kept so restarts accept old credentials. */
async function turnSecret(dir: string): Promise<string> {
  const file = join(dir, 'turn-secret');
  try {
    const s = (await readFile(file, 'utf8')).trim();
    if (s.length >= 16) return s;
  } catch {
    // first run
  }
  const s = randomBytes(32).toString('base64url');
  await writeFile(file, `${s}\n`, { mode: 0o600 });
  return s;
}

/** A self-signed ECDSA P-256 certificate for localhost / 127.0.0.1, created once with openssl. */
async function devCertificate(dir: string): Promise<{ cert: string; key: string }> {
  const tlsDir = join(dir, 'tls');
  const cert = join(tlsDir, 'cert.pem');
  const key = join(tlsDir, 'key.pem');
  if (existsSync(cert) && existsSync(key)) return { cert, key };
  await mkdir(tlsDir, { recursive: true, mode: 0o700 });
  try {
    await execFileP('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      // 825 days: the longest validity Apple platforms accept for a TLS server certificate.
      '-days', '825',
      '-subj', '/CN=localhost/O=homelink development',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1',
      '-keyout', key, '-out', cert,
    ]);
  } catch (e) {
    throw new StartError(`could not create the development TLS certificate with openssl (${(e as Error).message.split('\n')[0]}): install openssl`);
  }
  return { cert, key };
}

// ---- Children --------------------------------------------------------------------------------

interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly log: WriteStream;
  exited: boolean;
}

function killGroup(pgid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pgid, sig);
  } catch {
    // already gone
  }
}

const groupAlive = (pgid: number): boolean => {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

function startChild(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, logDir: string, verbose: boolean): Child {
  const log = createWriteStream(join(logDir, `${name}.log`), { flags: 'a' });
  // detached: its own process group, so Ctrl-C reaches us only and we stop it (and everything it
  // spawned, e.g. workerd under wrangler) as a group.
  const proc = spawn(cmd, args, { cwd: root, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const child: Child = { name, proc, log, exited: false };
  for (const stream of [proc.stdout, proc.stderr]) {
    stream?.on('data', (d: Buffer) => {
      log.write(d);
      if (verbose) {
        for (const line of d.toString('utf8').split('\n')) if (line.trim()) process.stderr.write(`[${name}] ${line}\n`);
      }
    });
  }
  proc.on('exit', () => {
    child.exited = true;
  });
  return child;
}

async function stopChild(c: Child): Promise<void> {
  const pgid = c.proc.pid;
  if (pgid === undefined) return;
  killGroup(pgid, 'SIGTERM');
  const deadline = Date.now() + STOP_GRACE_MS;
  while (Date.now() < deadline && (groupAlive(pgid) || !c.exited)) await sleep(50);
  if (groupAlive(pgid)) killGroup(pgid, 'SIGKILL');
  // Bounded wait for the kernel to reap the group after SIGKILL.
  for (let i = 0; i < 40 && groupAlive(pgid); i++) await sleep(25);
  c.log.end();
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until `check` resolves true, a child exits, or the deadline passes. */
async function waitReady(what: string, check: () => Promise<boolean>, child: Child | null, logFile: string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child?.exited) throw new StartError(`the ${what} exited during start-up: see ${logFile}`);
    if (await check().catch(() => false)) return;
    await sleep(150);
  }
  throw new StartError(`the ${what} did not become ready within ${READY_TIMEOUT_MS / 1000} s: see ${logFile}`);
}

async function httpAnswers(url: string): Promise<boolean> {
  const ac = new AbortController();
  const t = setTimeout(() => ac.abort(), 1000);
  try {
    await fetch(url, { signal: ac.signal });
    return true;
  } finally {
    clearTimeout(t);
  }
}

/** One STUN Binding request over UDP (RFC 8489 §6.1); true when a success response comes back. */
export function stunAnswers(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const tid = new Uint8Array(randomBytes(12));
    const req = encodeBindingRequest(tid);
    const done = (v: boolean): void => {
      clearTimeout(t);
      s.close();
      resolve(v);
    };
    const t = setTimeout(() => done(false), timeoutMs);
    s.on('error', () => done(false));
    s.on('message', (m) => {
      if (readBindingResponse(new Uint8Array(m.buffer, m.byteOffset, m.length), tid)?.ok) done(true);
    });
    s.send(req, port, host);
  });
}

/** Single-quoted dotenv lines: wrangler's parser keeps them literally (JSON has no `'`). */
function envFile(vars: Record<string, string>): string {
  return Object.entries(vars)
    .map(([k, v]) => {
      if (v.includes("'") || v.includes('\n')) throw new StartError(`worker var ${k} cannot be written to an env file`);
      return `${k}='${v}'`;
    })
    .join('\n') + '\n';
}

// ---- Main ------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const parsed = parseOptions(process.argv.slice(2));
  if (parsed === 'help') {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const o = parsed;
  await mkdir(o.dir, { recursive: true, mode: 0o700 });
  await takeLock(o);

  const children: Child[] = [];
  let web: WebServer | null = null;
  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      await Promise.all(children.map(stopChild));
      await web?.close();
      await rm(join(o.dir, STACK_FILE), { force: true });
      await rm(lockPath(o), { force: true });
    })());

  let exitCode = 0;
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((r) => (resolveStopped = r));
  const onSignal = (sig: NodeJS.Signals): void => {
    // tsx forwards the terminal's SIGINT as well, so the same Ctrl-C can arrive twice.
    if (stopping) return;
    process.stderr.write(`\n${sig}: stopping homelink ...\n`);
    void stop().then(resolveStopped);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  // Last resort if this process dies of a bug: never leave a child group behind.
  process.on('exit', () => {
    for (const c of children) if (!c.exited && c.proc.pid !== undefined) killGroup(c.proc.pid, 'SIGKILL');
  });

  try {
    const inspectorPort = await freePort();
    await checkPorts(o, inspectorPort);
    const logDir = join(o.dir, 'logs');
    await mkdir(logDir, { recursive: true });
    const issuerDir = join(o.dir, 'issuer');
    const issuer = await createDevIssuer({ dir: issuerDir });
    const secret = await turnSecret(o.dir);
    const tlsFiles = await devCertificate(o.dir);
    const vars = devWorkerVars(issuer, {
      turnSecret: secret,
      relays: [
        { id: 'local', region: 'local', lat: 0, lon: 0, host: HOST, udpPort: o.relayPort, tcpPort: o.relayPort, tlsPort: o.relayTlsPort },
      ],
    });
    const workerEnv = join(o.dir, 'worker.env');
    await writeFile(workerEnv, envFile(vars), { mode: 0o600 });

    const quiet: NodeJS.ProcessEnv = {
      ...process.env,
      WRANGLER_SEND_METRICS: 'false',
      CLOUDFLARE_CF_FETCH_ENABLED: 'false',
      WRANGLER_HIDE_BANNER: 'true',
    };
    const wrangler = join(root, 'node_modules', '.bin', 'wrangler');
    const signaling = startChild(
      'signaling',
      wrangler,
      [
        'dev', '--ip', HOST, '--port', String(o.signalingPort), '--inspector-port', String(inspectorPort),
        '--persist-to', join(o.dir, 'wrangler-state'), '--env-file', workerEnv, '--show-interactive-dev-session=false',
      ],
      quiet,
      logDir,
      o.verbose,
    );
    children.push(signaling);

    const relayArgs = [
      '--listen-host', HOST,
      '--relay-host', HOST,
      '--udp-port', String(o.relayPort),
      '--tcp-port', String(o.relayPort),
      '--tls-port', String(o.relayTlsPort),
      '--tls-cert', tlsFiles.cert,
      '--tls-key', tlsFiles.key,
      '--metrics-port', String(o.metricsPort),
      // Loopback peers are refused by default (they would expose the relay host); every peer of the local stack is on loopback.
      '--allow-loopback',
      // A local stack has nothing to drain for long: Ctrl-C should feel immediate.
      '--drain-ms', '500',
    ];
    const relay = startChild(
      'relay',
      process.execPath,
      ['--import', 'tsx', join(root, 'relay', 'main.ts'), ...relayArgs],
      // The secret goes by environment, not argv, so it never shows in `ps`.
      { ...quiet, RELAY_SECRETS: secret },
      logDir,
      o.verbose,
    );
    children.push(relay);
    await updateLockGroups(o, children.map((c) => c.proc.pid!).filter((p) => p !== undefined));

    const signalingHttp = `http://${HOST}:${o.signalingPort}`;
    web = await startWebServer({ host: HOST, port: o.webPort, signalingUrl: `ws://${HOST}:${o.signalingPort}`, issuer, defaultHome: DEV_HOME });

    await Promise.all([
      waitReady('signaling worker', () => httpAnswers(`${signalingHttp}/`), signaling, join(logDir, 'signaling.log')),
      waitReady('relay', () => stunAnswers(HOST, o.relayPort), relay, join(logDir, 'relay.log')),
    ]);

    const stack: Stack = {
      version: 1,
      pid: process.pid,
      childGroups: children.map((c) => c.proc.pid!),
      signalingUrl: `ws://${HOST}:${o.signalingPort}`,
      signalingHttpUrl: signalingHttp,
      relay: { host: HOST, udpPort: o.relayPort, tcpPort: o.relayPort, tlsPort: o.relayTlsPort, caFile: tlsFiles.cert },
      webUrl: web.url,
      issuerDir,
      relayMetricsUrl: `http://${HOST}:${o.metricsPort}/metrics`,
    };
    await writeFile(join(o.dir, STACK_FILE), JSON.stringify(stack, null, 2));

    const shown = (p: string): string => {
      const r = relative(process.cwd(), p);
      return r && !r.startsWith('..') ? r : p;
    };
    const dirFlag = o.dir === resolve(root, '.dev') ? '' : ` --dir ${shown(o.dir)}`;
    process.stdout.write(
      [
        `homelink is running on ${HOST} (state in ${shown(o.dir)}/, logs in ${shown(logDir)}/)`,
        `  signaling  ws://${HOST}:${o.signalingPort}/v1/presence`,
        `  relay      stun:${HOST}:${o.relayPort}  turn:${HOST}:${o.relayPort}?transport=tcp  turns:${HOST}:${o.relayTlsPort}  metrics ${stack.relayMetricsUrl}`,
        `  demo page  ${web.url}`,
        `Try it, in two terminals:`,
        `  npx homelink listen --as hub-1${dirFlag}`,
        `  npx homelink dial hub-1 --as app-1${dirFlag}`,
        `Tokens and identity certificates: npx homelink token --sub app-1 --home ${DEV_HOME}${dirFlag}   Diagnose: npx homelink netcheck${dirFlag}`,
        `Ctrl-C stops everything.`,
        '',
      ].join('\n'),
    );

    // Stay up until a signal, or until a child dies (then stop the rest and say which).
    const died = new Promise<Child>((resolveDied) => {
      for (const c of children) c.proc.once('exit', () => resolveDied(c));
    });
    const first = await Promise.race([stopped.then(() => null), died]);
    if (first !== null && !stopping) {
      process.stderr.write(`homelink: the ${first.name} stopped unexpectedly (see ${join(logDir, `${first.name}.log`)}); stopping the rest\n`);
      exitCode = 1;
    }
  } catch (e) {
    process.stderr.write(`homelink: ${e instanceof StartError ? e.message : `${(e as Error).name}: ${(e as Error).message}`}\n`);
    exitCode = 1;
  }
  await stop();
  // A signal during start-up may have run stop() before the last child was started.
  await Promise.all(children.map(stopChild));
  return exitCode;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`homelink: ${e instanceof StartError ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
