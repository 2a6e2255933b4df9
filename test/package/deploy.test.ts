/**
 * Deploy checks: `npm run check-config` runs the worker's own config parser over wrangler.toml
 * (and given secrets) and fails, naming the variable, on what would make a deployed worker
 * answer /healthz with a 500; the shipped [env.production] template is refused until its
 * example values are replaced; `npm run build` needs no POSIX shell prefix.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkWorkerConfig, parseDotenv } from '../../scripts/check-config.js';
import { ROOT } from '../cli/support.js';
import pkg from '../../package.json' with { type: 'json' };

const GOOD = {
  JWT_ISSUER: 'https://id.homelink.test',
  JWT_AUDIENCE: 'homelink-signaling',
  JWKS_URL: 'https://id.homelink.test/jwks.json',
  RELAYS: '[{"id":"r1","region":"eu","lat":50,"lon":8,"host":"relay.homelink.test","udpPort":3478,"tcpPort":3478,"tlsPort":443}]',
};

function checkConfig(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'), join(ROOT, 'scripts', 'check-config.ts'), ...args], { cwd: ROOT, env: { ...process.env, ...env }, timeout: 120_000 }, (err, _out, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
    );
  });
}

describe('check-config', () => {
  it('accepts a complete production config and lists the secrets it could not see', () => {
    const r = checkWorkerConfig({ vars: GOOD, secrets: {}, env: 'production' });
    expect(r.ok, r.lines.join('\n')).toBe(true);
    expect(r.lines.join('\n')).toContain('not checked here: TURN_SECRETS');
    expect(checkWorkerConfig({ vars: GOOD, secrets: { TURN_SECRETS: 'a-real-secret-of-enough-length' }, env: 'production' }).lines).toEqual([]);
  });

  it.each([
    ['no issuer', { ...GOOD, JWT_ISSUER: undefined }, 'JWT_ISSUER'],
    ['relays not JSON', { ...GOOD, RELAYS: '[{' }, 'RELAYS'],
    ['no relays', { ...GOOD, RELAYS: '[]' }, 'RELAYS: empty'],
    ['plain-http JWKS', { ...GOOD, JWKS_URL: 'http://id.homelink.test/jwks.json' }, 'JWKS_URL'],
    ['bad number', { ...GOOD, SESSION_TTL_SECONDS: 'ten' }, 'SESSION_TTL_SECONDS'],
    ['HS256 in production', { ...GOOD, DEV_HS256_SECRET: 'x'.repeat(40) }, 'DEV_HS256_SECRET'],
    ['a secret in the file', { ...GOOD, TURN_SECRETS: 'in-the-toml-file-secret' }, 'TURN_SECRETS: is a secret'],
    ['template values', { ...GOOD, JWT_ISSUER: 'https://id.example.com' }, "JWT_ISSUER: still the template's example.com value"],
  ])('refuses %s, naming the variable and never its value', (_what, vars, expected) => {
    const clean = Object.fromEntries(Object.entries(vars).filter(([, v]) => v !== undefined));
    const r = checkWorkerConfig({ vars: clean, secrets: {}, env: 'production' });
    expect(r.ok).toBe(false);
    const text = r.lines.join('\n');
    expect(text).toContain(expected);
    for (const v of Object.values(clean)) if (v && v.length > 8) expect(text).not.toContain(v);
  });

  it('checks secrets when given, without printing them', () => {
    const r = checkWorkerConfig({ vars: GOOD, secrets: { TURN_SECRETS: 'short' }, env: 'production' });
    expect(r.ok).toBe(false);
    expect(r.lines.join('\n')).toContain('TURN_SECRETS');
    expect(r.lines.join('\n')).not.toContain('short');
    expect(parseDotenv('# c\nA=1\nB="two"\nC=\'3\'\nnot a line\n')).toEqual({ A: '1', B: 'two', C: '3' });
  });

  describe('on wrangler.toml files', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'homelink-deploy-'));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('passes the development config, refuses the shipped production template, passes it once filled in', async () => {
      expect((await checkConfig([])).code).toBe(0);
      const template = await checkConfig(['--env', 'production']);
      expect(template.code).toBe(1);
      expect(template.stderr).toContain("JWT_ISSUER: still the template's example.com value");
      // The same file with the example values replaced (the worker's entry path made absolute for the copy).
      const toml = (await readFile(join(ROOT, 'wrangler.toml'), 'utf8'))
        .replace('main = "worker/index.ts"', `main = "${join(ROOT, 'worker', 'index.ts')}"`)
        .replace(/example\.com/g, 'homelink.test');
      await writeFile(join(dir, 'wrangler.toml'), toml);
      const filled = await checkConfig(['--config', join(dir, 'wrangler.toml'), '--env', 'production'], { TURN_SECRETS: 'a-real-secret-of-enough-length' });
      expect(filled.stderr).toContain('[env.production]: ok');
      expect(filled.code).toBe(0);
      const [head, prod] = toml.split('[env.production.vars]') as [string, string];
      await writeFile(join(dir, 'wrangler.toml'), `${head}[env.production.vars]${prod.replace('SESSION_TTL_SECONDS = "600"', 'SESSION_TTL_SECONDS = "-5"')}`);
      const broken = await checkConfig(['--config', join(dir, 'wrangler.toml'), '--env', 'production']);
      expect(broken.code).toBe(1);
      expect(broken.stderr).toContain('SESSION_TTL_SECONDS');
    });
  });

  it('npm scripts need no POSIX shell prefix', () => {
    for (const [name, script] of Object.entries(pkg.scripts)) expect(script, name).not.toMatch(/^[A-Z_]+=\S+ /);
    expect(pkg.scripts.build).toContain('scripts/wrangler.ts build');
  });
});
