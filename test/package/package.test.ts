/**
 * The package as a consumer gets it: `npm pack` (which builds dist/js through `prepack`), then
 * `npm install <tarball>` into an empty folder from the local npm cache, and from there:
 * - plain Node imports `homelink/client`, `homelink/browser`, `homelink/protocol`;
 * - the installed `homelink` bin runs the built JavaScript (no tsx, no TypeScript sources);
 * - a consumer's TypeScript compiles against the packed .d.ts with non-strict options;
 * - examples/hello.mjs, the README's example, runs as written against the local stack
 *   (`npm start`), with credentials from the installed `homelink token --json`, and with the
 *   signaling URL exactly as `npm start` prints it.
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, startStack, type RunningStack } from '../cli/support.js';

/** Bound on one npm/tsc/node child; packing builds dist/js with tsc (about 10 s idle, more on a loaded machine). */
const CHILD_TIMEOUT_MS = 240_000;

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** npm, npx and `#!/usr/bin/env node` bins run on the Node running this test, whatever else PATH holds. */
const SAME_NODE_PATH = `${dirname(process.execPath)}${delimiter}${process.env['PATH'] ?? ''}`;

/** Runs a command to completion (bounded), never throwing on a non-zero exit. */
function run(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { cwd: opts.cwd, env: { ...process.env, PATH: SAME_NODE_PATH, ...opts.env }, timeout: opts.timeoutMs ?? CHILD_TIMEOUT_MS, maxBuffer: 16 << 20, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Runs `node <args>` as a separate process; stdout is captured to a file for `--json > x.json` style use. */
function node(args: string[], cwd: string, env?: NodeJS.ProcessEnv, timeoutMs?: number): Promise<Run> {
  return run(process.execPath, args, { cwd, ...(env ? { env } : {}), ...(timeoutMs ? { timeoutMs } : {}) });
}

const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
/** The exact @types/node the repository pins: in the local npm cache after `npm ci`. */
const TYPES_NODE = `@types/node@${(await import('../../package.json', { with: { type: 'json' } })).default.devDependencies['@types/node']}`;

describe('the packed package in an empty folder', () => {
  let work: string;
  let consumer: string;
  let tarball: string;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'homelink-pkg-'));
    const packed = await run('npm', ['pack', '--pack-destination', work, '--json'], { cwd: ROOT });
    expect(packed.code, packed.stderr).toBe(0);
    const [info] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
    tarball = join(work, info!.filename);
    // What ships: built JS and .d.ts, the bin; no TypeScript sources, no worker, relay or dev tooling.
    const paths = info!.files.map((f) => f.path);
    expect(paths).toContain('cli/bin.mjs');
    expect(paths).toContain('dist/js/client/index.js');
    expect(paths).toContain('dist/js/client/index.d.ts');
    expect(paths.filter((p) => p.endsWith('.ts') && !p.endsWith('.d.ts'))).toEqual([]);
    expect(paths.filter((p) => p.startsWith('dist/js/relay') || p.startsWith('worker/') || p.endsWith('.map'))).toEqual([]);

    consumer = join(work, 'consumer');
    await mkdir(consumer);
    await writeFile(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
    // From the local cache (`npm ci` filled it); the registry is asked only for what it lacks.
    const inst = await run('npm', ['install', tarball, TYPES_NODE, '--prefer-offline', '--no-audit', '--no-fund'], { cwd: consumer });
    expect(inst.code, inst.stderr).toBe(0);
  });
  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('installs only the runtime dependencies: no wrangler, miniflare, hono, tsx or typescript', async () => {
    const top = await readdir(join(consumer, 'node_modules'));
    for (const dev of ['wrangler', 'miniflare', 'hono', 'tsx', 'typescript', 'vitest', 'esbuild']) expect(top, dev).not.toContain(dev);
    for (const dep of ['homelink', 'jose', 'werift', 'ws']) expect(top, dep).toContain(dep);
  });

  it('imports every entry point with plain Node', async () => {
    const r = await node(
      [
        '--input-type=module',
        '-e',
        `const c = await import('homelink/client'); const b = await import('homelink/browser');
         const p = await import('homelink/protocol'); const s = await import('homelink/protocol/stun');
         console.log(JSON.stringify({ c: typeof c.Endpoint.connect, b: typeof b.Endpoint.connect, p: typeof p.parsePresenceClientMessage, s: typeof s.decodeStun }));`,
      ],
      consumer,
    );
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ c: 'function', b: 'function', p: 'function', s: 'function' });
    // Internals stay internal: only the exports map is reachable.
    const deep = await node(['--input-type=module', '-e', `await import('homelink/dist/js/client/link.js')`], consumer);
    expect(deep.code).not.toBe(0);
    expect(deep.stderr).toContain('ERR_PACKAGE_PATH_NOT_EXPORTED');
  });

  it('compiles a consumer with non-strict options against the packed .d.ts', async () => {
    await writeFile(
      join(consumer, 'consumer.ts'),
      `import { Endpoint, LinkError, generateDeviceKey, type Link, type LinkPath, type Trust } from 'homelink/client';
import { Endpoint as BrowserEndpoint } from 'homelink/browser';
import { parsePresenceClientMessage, type PresenceClientMessage } from 'homelink/protocol';
import { decodeStun } from 'homelink/protocol/stun';

export async function hello(signalingUrl: string, token: string, certificate: string, trust: Trust): Promise<LinkPath | null> {
  const { privateKey } = await generateDeviceKey();
  const ep = await Endpoint.connect({ signalingUrl, token, identity: { certificate, privateKey }, trust });
  try {
    const link: Link = await ep.dial('hub-1', { timeoutMs: 10_000 });
    const ch = await link.channel('control');
    ch.on('message', (m) => console.log(typeof m === 'string' ? m : m.byteLength));
    await ch.send('hi');
    return link.path;
  } catch (e) {
    if (e instanceof LinkError) console.log(e.code);
    return null;
  } finally {
    ep.close();
  }
}
export const browserConnect = BrowserEndpoint.connect;
export const parsed: PresenceClientMessage | null = parsePresenceClientMessage as never;
export const stun = decodeStun(new Uint8Array(20));
`,
    );
    // Non-strict on purpose (strict unset); "types" as \`tsc --init\` writes it: werift's transitive
    // @types/dom-webcodecs 0.1.13 clashes with TypeScript 5.9's own DOM lib when every @types
    // folder is included (see the test below).
    await writeFile(join(consumer, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'nodenext', noEmit: true, types: ['node'] }, files: ['consumer.ts'] }));
    const r = await node([tsc, '-p', 'tsconfig.json'], consumer);
    expect(r.stdout + r.stderr).toBe('');
    expect(r.code).toBe(0);
    // The same file with the older node10 resolution (typesVersions) and under strict.
    const node10 = await node([tsc, '--noEmit', '--module', 'commonjs', '--moduleResolution', 'node10', '--target', 'es2022', '--types', 'node', 'consumer.ts'], consumer);
    expect(node10.stdout + node10.stderr).toBe('');
    const strict = await node([tsc, '--noEmit', '--module', 'nodenext', '--types', 'node', '--strict', 'consumer.ts'], consumer);
    expect(strict.stdout + strict.stderr).toBe('');
  });

  it('has no type error of its own even when every @types folder is included', async () => {
    await writeFile(join(consumer, 'tsconfig.all-types.json'), JSON.stringify({ compilerOptions: { module: 'nodenext', noEmit: true }, files: ['consumer.ts'] }));
    const r = await node([tsc, '-p', 'tsconfig.all-types.json'], consumer);
    const ours = r.stdout.split('\n').filter((l) => l.includes('homelink/') || l.startsWith('consumer.ts'));
    expect(ours).toEqual([]);
  });

  it('runs the installed bin from built JavaScript outside the repository', async () => {
    const bin = join(consumer, 'node_modules', '.bin', 'homelink');
    const help = await run(bin, ['--help'], { cwd: consumer });
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('usage: homelink <command>');
    const version = await run(bin, ['--version'], { cwd: consumer });
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toMatch(/^homelink \d+\.\d+\.\d+/);
    // npx resolves the local bin the same way a user types it.
    const npx = await run('npx', ['--no-install', 'homelink', '--version'], { cwd: consumer });
    expect(npx.stdout).toBe(version.stdout);
  });

  describe('with the local stack running', () => {
    let st: RunningStack;
    beforeAll(async () => {
      st = await startStack();
    });
    afterAll(async () => {
      await st?.dispose();
    });

    it('runs the README example (examples/hello.mjs) as written', async () => {
      await copyFile(join(ROOT, 'examples', 'hello.mjs'), join(consumer, 'hello.mjs'));
      const bin = join(consumer, 'node_modules', 'homelink', 'cli', 'bin.mjs');
      for (const id of ['hub-1', 'app-1']) {
        // `npx homelink token --sub <id> --json > <id>.json`, outside the checkout: --dir names the stack's folder.
        const t = await node([bin, 'token', '--sub', id, '--json', '--dir', st.dir], consumer);
        expect(t.code, t.stderr).toBe(0);
        await writeFile(join(consumer, `${id}.json`), t.stdout);
      }
      // The signaling URL exactly as `npm start` printed it.
      const printed = /signaling\s+(ws:\/\/\S+)/.exec(st.output())?.[1];
      expect(printed).toBeDefined();
      const r = await node(['hello.mjs', printed!, 'hub-1.json', 'app-1.json'], consumer, undefined, 120_000);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/app-1 linked to hub-1: (direct|relay) path/);
      expect(r.stdout).toContain('hub-1 got: hello from app-1');
      expect(r.stdout).toContain('app-1 got: hello back, app-1');
    });
  });
});
