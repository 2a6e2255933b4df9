/**
 * `npm run check-config [-- --env production] [--config wrangler.toml] [--secrets FILE]`: checks
 * the signaling worker's configuration before it is deployed, with the worker's own parser
 * (`loadConfig` in worker/config.ts), so a bad value fails here, naming the variable, instead of
 * the deployed worker answering `/healthz` with a bare 500.
 *
 * Vars come from wrangler.toml (`[vars]`, or `[env.<name>.vars]`; wrangler does not inherit vars
 * into an environment). Secrets (`TURN_SECRETS`, `JWKS`) live in Cloudflare, not here: they are
 * checked when given (process environment, or a dotenv file with --secrets such as .dev.vars)
 * and otherwise listed as "not checked here". For the top-level (development) environment,
 * `JWT_ISSUER` and `JWKS` are what `npm start` writes to .dev.vars, so they may be absent too.
 * A named environment must also: not enable HS256 (`DEV_HS256_SECRET`), list at least one relay,
 * and no longer carry the template's example.com values. Values are never printed.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, type WorkerVars } from '../worker/config.js';

/** Worker vars that are secrets: put with `wrangler secret put`, never in wrangler.toml. */
export const SECRET_VARS = ['TURN_SECRETS', 'JWKS', 'DEV_HS256_SECRET'] as const;

/** Stand-ins for values that cannot be known here, shaped so the parser accepts them. */
const PLACEHOLDERS: Partial<Record<keyof WorkerVars, string>> = {
  TURN_SECRETS: 'placeholder-turn-secret-not-checked',
  JWKS: JSON.stringify({ keys: [{ kty: 'EC', crv: 'P-256', kid: 'placeholder', x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU', y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0' }] }),
  JWT_ISSUER: 'placeholder-issuer',
};

/** The domains of the template's sample values (RFC 2606): a deployment must replace them. */
const EXAMPLE_DOMAIN_RE = /(^|[./"'@])example\.(com|net|org)\b/i;

export interface CheckResult {
  readonly ok: boolean;
  /** One line per finding; never contains a value. */
  readonly lines: string[];
}

/** A minimal dotenv reader (KEY=value, KEY="value", KEY='value', # comments), as wrangler reads .dev.vars. */
export function parseDotenv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) continue;
    let v = m[2]!;
    if ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'"))) v = v.slice(1, -1);
    out[m[1]!] = v;
  }
  return out;
}

/**
 * Checks one environment's vars (plus the secrets given) with the worker's parser.
 * @example
 * checkWorkerConfig({ vars: { JWT_ISSUER: 'https://id.example' }, secrets: {}, env: 'production' })
 */
export function checkWorkerConfig(o: { vars: Record<string, unknown>; secrets: Record<string, string | undefined>; env: string | null }): CheckResult {
  const lines: string[] = [];
  let ok = true;
  const fail = (line: string): void => {
    ok = false;
    lines.push(line);
  };
  const vars: Record<string, string> = {};
  for (const [k, v] of Object.entries(o.vars)) {
    if (typeof v !== 'string') fail(`${k}: must be a string in wrangler.toml (quote it: ${k} = "...")`);
    else vars[k] = v;
  }
  for (const s of SECRET_VARS) if (vars[s] !== undefined && s !== 'JWKS') fail(`${s}: is a secret and must not be in wrangler.toml: remove it and run wrangler secret put ${s}`);
  const named = o.env !== null;
  if (named && (vars['DEV_HS256_SECRET'] !== undefined || o.secrets['DEV_HS256_SECRET'])) fail('DEV_HS256_SECRET: enables HS256 for local development only; never set it in a deployed environment');
  const merged: Record<string, string> = { ...vars };
  for (const s of SECRET_VARS) if (o.secrets[s] !== undefined && o.secrets[s] !== '') merged[s] = o.secrets[s]!;
  const unchecked: string[] = [];
  const stand = (k: keyof WorkerVars): void => {
    if (merged[k] === undefined || merged[k] === '') {
      merged[k] = PLACEHOLDERS[k]!;
      unchecked.push(k);
    }
  };
  stand('TURN_SECRETS');
  if (!merged['JWKS_URL']) stand('JWKS');
  if (!named) stand('JWT_ISSUER');
  try {
    const config = loadConfig(merged as WorkerVars);
    if (named && config.relays.length === 0) fail('RELAYS: empty: endpoints whose NAT blocks direct paths would get no relay; list your relays');
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    fail(e.message);
  }
  if (named) {
    for (const [k, v] of Object.entries(vars)) if (EXAMPLE_DOMAIN_RE.test(v)) fail(`${k}: still the template's example.com value: set your deployment's own`);
  }
  if (unchecked.length > 0) {
    lines.push(`not checked here: ${unchecked.join(', ')} (${named ? 'secrets: set them with wrangler secret put' : 'npm start writes them to .dev.vars'}; export them or pass --secrets FILE to check them)`);
  }
  return { ok, lines };
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { env: { type: 'string', short: 'e' }, config: { type: 'string', short: 'c' }, secrets: { type: 'string' } },
    strict: true,
  });
  const configPath = resolve(values.config ?? 'wrangler.toml');
  // Wrangler's own reader, so the file is understood exactly as `wrangler deploy` understands it.
  const { unstable_readConfig } = await import('wrangler');
  const cfg = unstable_readConfig({ config: configPath, ...(values.env ? { env: values.env } : {}) }, { hideWarnings: true });
  const secrets: Record<string, string | undefined> = {};
  for (const s of SECRET_VARS) secrets[s] = process.env[s];
  if (values.secrets) Object.assign(secrets, parseDotenv(readFileSync(values.secrets, 'utf8')));
  const r = checkWorkerConfig({ vars: (cfg.vars ?? {}) as Record<string, unknown>, secrets, env: values.env ?? null });
  const where = `${configPath}${values.env ? ` [env.${values.env}]` : ''}`;
  for (const l of r.lines) process.stderr.write(`check-config: ${l}\n`);
  process.stderr.write(`check-config: ${where}: ${r.ok ? 'ok' : 'FAILED: fix the lines above before deploying'}\n`);
  return r.ok ? 0 : 1;
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (e: unknown) => {
      process.stderr.write(`check-config: ${(e as Error).message.split('\n')[0]}\n`);
      process.exitCode = 2;
    },
  );
}
