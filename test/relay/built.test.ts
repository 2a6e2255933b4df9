/**
 * The relay runs in production from built JavaScript with plain `node`, no TypeScript loader
 * (issue 10 item 1): the relay's part of `npm run build:js` (tsconfig.build.json, narrowed to
 * the relay's entry points) is compiled into a temporary folder that holds no node_modules, so
 * nothing there could load tsx, and started with 2 workers; both workers report the same UDP
 * port, and a STUN Binding request on it is answered over UDP and TCP. Where the native data path
 * is built, its addon is put where the built relay looks for it beside itself
 * (js/relay/native/build), and both workers must report that they run on it.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StreamEndpoint } from './helpers/sockets.js';
import { restClient, StunClass, StunMethod } from './helpers/turn-client.js';
import { loadNativeUdp } from '../../relay/node/native-udp.js';

const ROOT = resolve(import.meta.dirname, '../..');
const SECRET = 'built-relay-secret';
/** Compiling on a loaded 2-core machine takes 10-30 s. */
const BUILD_TIMEOUT_MS = 240_000;
const START_TIMEOUT_MS = 30_000;

let dir: string;
let relay: ChildProcess | undefined;
let out = '';

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'relay-built-'));
  // tsconfig.build.json as `npm run build:js` uses it, limited to what the relay loads.
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      extends: join(ROOT, 'tsconfig.build.json'),
      // typeRoots: type packages are looked up from the config's folder, which is outside the repository here.
      compilerOptions: { outDir: join(dir, 'js'), rootDir: ROOT, declaration: false, declarationMap: false, typeRoots: [join(ROOT, 'node_modules/@types')] },
      include: [],
      files: [join(ROOT, 'relay/main.ts'), join(ROOT, 'relay/node/worker-entry.ts')],
    }),
  );
  execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(dir, 'tsconfig.json')], { stdio: 'pipe', timeout: BUILD_TIMEOUT_MS });
  // dist/js sits under the repository's package.json ("type": "module"); give the copy the same.
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module' }));
  const native = loadNativeUdp();
  if (native.addon) {
    mkdirSync(join(dir, 'js/relay/native/build'), { recursive: true });
    copyFileSync(native.path!, join(dir, 'js/relay/native/build/homelink-udp.node'));
  }
}, BUILD_TIMEOUT_MS + 10_000);

afterAll(async () => {
  if (relay && relay.exitCode === null) {
    const exited = new Promise((r) => relay!.once('exit', r));
    relay.kill('SIGTERM');
    const t = setTimeout(() => relay!.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Waits until stdout holds `count` relay_listening lines (one per worker), bounded. */
async function listening(count: number): Promise<Array<{ worker: number; udp: string; tcp: string }>> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const lines = out
      .split('\n')
      .filter((l) => l.includes('"relay_listening"'))
      .map((l) => JSON.parse(l) as { worker: number; udp: string; tcp: string });
    if (lines.length >= count) return lines;
    if (relay?.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`relay did not start: ${out.slice(-2000)}`);
}

async function udpBinding(port: number): Promise<number> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const c = restClient(SECRET, 'built-probe');
  try {
    return await new Promise<number>((resolveCls, reject) => {
      const req = c.request(StunMethod.Binding, [], false).bytes;
      const timer = setInterval(() => sock.send(req, port, '127.0.0.1'), 250);
      const give = setTimeout(() => {
        clearInterval(timer);
        reject(new Error('no Binding response over UDP'));
      }, 10_000);
      sock.once('message', (m) => {
        clearInterval(timer);
        clearTimeout(give);
        resolveCls(c.read(m).cls);
      });
      sock.send(req, port, '127.0.0.1');
    });
  } finally {
    sock.close();
  }
}

describe('relay from built JavaScript', () => {
  it('compiles to js/relay/main.js and js/relay/node/worker-entry.js, with no node_modules beside them', () => {
    expect(existsSync(join(dir, 'js/relay/main.js'))).toBe(true);
    expect(existsSync(join(dir, 'js/relay/node/worker-entry.js'))).toBe(true);
    expect(existsSync(join(dir, 'node_modules'))).toBe(false);
  });

  it('runs with plain node and 2 workers, and answers Binding on the one port', async () => {
    const env = { ...process.env };
    delete env.NODE_OPTIONS; // nothing may slip a loader in
    relay = spawn(
      process.execPath,
      [
        'js/relay/main.js',
        '--secret', SECRET, '--listen-host', '127.0.0.1', '--relay-host', '127.0.0.1',
        '--udp-port', '0', '--tcp-port', '0', '--metrics-port', 'off', '--workers', '2',
        '--relay-port-min', '47200', '--relay-port-max', '47299', '--drain-ms', '0', '--log-level', 'info',
      ],
      { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    relay.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    relay.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const workers = await listening(2);
    expect(workers.map((w) => w.worker).sort()).toEqual([0, 1]);
    const paths = out
      .split('\n')
      .filter((l) => l.includes('"relay_data_path"'))
      .map((l) => (JSON.parse(l) as { path: string }).path);
    expect(paths).toEqual(loadNativeUdp().addon ? ['native', 'native'] : ['node', 'node']);
    // One advertised port: both workers listen on the same UDP and TCP ports.
    expect(workers[0]!.udp).toBe(workers[1]!.udp);
    expect(workers[0]!.tcp).toBe(workers[1]!.tcp);
    const udpPort = Number(workers[0]!.udp.split(':').at(-1));
    const tcpPort = Number(workers[0]!.tcp.split(':').at(-1));
    expect(await udpBinding(udpPort)).toBe(StunClass.SuccessResponse);
    const s = await StreamEndpoint.connect(tcpPort);
    try {
      const c = restClient(SECRET, 'built-probe-tcp');
      s.send(c.request(StunMethod.Binding, [], false).bytes);
      expect(c.read(await s.next(10_000)).cls).toBe(StunClass.SuccessResponse);
    } finally {
      s.close();
    }
  });

  it('prints help naming the built entry point', () => {
    const help = execFileSync(process.execPath, ['js/relay/main.js', '--help'], { cwd: dir }).toString();
    expect(help).toMatch(/^Usage: node dist\/js\/relay\/main\.js /);
    expect(help).not.toMatch(/^Usage: tsx/);
  });
});
