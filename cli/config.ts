/**
 * Settings that would otherwise be six flags on every command: a profile file and environment
 * variables. For each setting the first of these wins:
 *
 *   1. the command-line flag (`--signaling URL`);
 *   2. the environment (`HOMELINK_SIGNALING`; `HOMELINK_HOME` takes a comma-separated list);
 *   3. the profile (`--profile NAME`, else `HOMELINK_PROFILE`, else the file's `defaultProfile`)
 *      in the config file (`--config FILE`, else `HOMELINK_CONFIG`, else
 *      `$XDG_CONFIG_HOME/homelink/config.json`, i.e. `~/.config/homelink/config.json`);
 *   4. the command's own default (the local `npm start` stack).
 *
 * The file is JSON, its keys are the flags' names, and relative paths in it are relative to the
 * file itself, so a profile folder can be moved as a whole:
 *
 *   { "defaultProfile": "home",
 *     "profiles": { "home": { "signaling": "wss://signal.example.com", "token": "@token.jwt",
 *       "identity-cert": "device.cert", "identity-key": "device.jwk.json",
 *       "trust-jwks": "issuer.jwks.json", "trust-issuer": "https://issuer.example.com", "as": "hub-7" } } }
 *
 * A file holding a token or TURN password inline must be private to its owner (like ssh keys);
 * errors name the file and the key, never a value. Node only.
 */
import { readFile, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { UsageError } from './credentials.js';
import { suggest } from './suggest.js';

/** What a setting holds, and whether it names a file (resolved against the config file's folder). */
interface SettingSpec {
  readonly kind: 'string' | 'list';
  readonly path?: true;
  /** Holds a secret when given inline (the file must then be private). */
  readonly secret?: true;
}

/** Every setting a profile or the environment may give, by flag name. */
export const SETTINGS: Readonly<Record<string, SettingSpec>> = {
  signaling: { kind: 'string' },
  token: { kind: 'string', secret: true },
  'identity-cert': { kind: 'string', path: true },
  'identity-key': { kind: 'string', path: true },
  'trust-jwks': { kind: 'string', path: true },
  'trust-issuer': { kind: 'string' },
  as: { kind: 'string' },
  home: { kind: 'list' },
  timeout: { kind: 'string' },
  dir: { kind: 'string', path: true },
  'relay-host': { kind: 'string' },
  'relay-port': { kind: 'string' },
  'relay-tls-port': { kind: 'string' },
  'relay-alt': { kind: 'string' },
  ca: { kind: 'string', path: true },
  'turn-user': { kind: 'string' },
  'turn-pass': { kind: 'string', secret: true },
};

/** `identity-cert` -> `HOMELINK_IDENTITY_CERT`. */
export const envName = (setting: string): string => `HOMELINK_${setting.toUpperCase().replace(/-/g, '_')}`;

/** The default config file: `$XDG_CONFIG_HOME/homelink/config.json` (XDG Base Directory spec). */
export function defaultConfigFile(env: NodeJS.ProcessEnv = process.env): string {
  const base = env['XDG_CONFIG_HOME'] && isAbsolute(env['XDG_CONFIG_HOME']) ? env['XDG_CONFIG_HOME'] : join(homedir(), '.config');
  return join(base, 'homelink', 'config.json');
}

/** Largest config file read: a handful of profiles is a few KiB. */
const MAX_CONFIG_BYTES = 256 * 1024;

type Values = Record<string, unknown>;
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Reads and checks one profile of the config file; null when no file exists at the default path. */
export async function loadProfile(opts: { file?: string; profile?: string; env?: NodeJS.ProcessEnv }): Promise<{ file: string; name: string; values: Values } | null> {
  const env = opts.env ?? process.env;
  const explicit = opts.file ?? env['HOMELINK_CONFIG'];
  const file = resolve(explicit ?? defaultConfigFile(env));
  let text: string;
  let mode: number;
  try {
    const st = await stat(file);
    if (st.size > MAX_CONFIG_BYTES) throw new UsageError(`config file ${file} is larger than ${MAX_CONFIG_BYTES} bytes: is it the right file?`);
    mode = st.mode;
    text = await readFile(file, 'utf8');
  } catch (e) {
    if (e instanceof UsageError) throw e;
    if (explicit === undefined && opts.profile === undefined && env['HOMELINK_PROFILE'] === undefined) return null;
    throw new UsageError(`cannot read config file ${file}: check the path (--config or HOMELINK_CONFIG)`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new UsageError(`config file ${file} is not JSON`);
  }
  if (!isObj(doc) || !isObj(doc['profiles'])) throw new UsageError(`config file ${file} must be {"profiles": {"<name>": {...}}}`);
  for (const k of Object.keys(doc)) {
    if (k !== 'profiles' && k !== 'defaultProfile') throw new UsageError(`config file ${file}: unknown key "${k}" (expected profiles, defaultProfile)`);
  }
  const profiles = doc['profiles'];
  const name = opts.profile ?? env['HOMELINK_PROFILE'] ?? (typeof doc['defaultProfile'] === 'string' ? doc['defaultProfile'] : undefined);
  if (name === undefined) {
    const names = Object.keys(profiles);
    if (names.length !== 1) throw new UsageError(`config file ${file} has ${names.length} profiles and no defaultProfile: pass --profile (${names.join(', ')})`);
    return { file, name: names[0]!, values: checkProfile(file, names[0]!, profiles[names[0]!], mode) };
  }
  if (!Object.hasOwn(profiles, name)) {
    const near = suggest(name, Object.keys(profiles));
    throw new UsageError(`config file ${file} has no profile "${name}"${near ? `: did you mean "${near}"?` : ` (it has: ${Object.keys(profiles).join(', ') || 'none'})`}`);
  }
  return { file, name, values: checkProfile(file, name, profiles[name], mode) };
}

function checkProfile(file: string, name: string, p: unknown, mode: number): Values {
  if (!isObj(p)) throw new UsageError(`config file ${file}: profile "${name}" must be an object`);
  const out: Values = {};
  for (const [key, value] of Object.entries(p)) {
    const spec = SETTINGS[key];
    if (!spec) {
      const near = suggest(key, Object.keys(SETTINGS));
      throw new UsageError(`config file ${file}: profile "${name}" has unknown key "${key}"${near ? `: did you mean "${near}"?` : ''}`);
    }
    if (spec.kind === 'list') {
      const list = typeof value === 'string' ? [value] : value;
      if (!Array.isArray(list) || list.some((x) => typeof x !== 'string')) throw new UsageError(`config file ${file}: "${key}" in profile "${name}" must be a string or a list of strings`);
      out[key] = list;
      continue;
    }
    if (typeof value !== 'string' && typeof value !== 'number') throw new UsageError(`config file ${file}: "${key}" in profile "${name}" must be a string`);
    let s = String(value);
    // An inline secret in a file others can read is a leaked secret: refuse it, as ssh refuses such keys.
    if (spec.secret && !s.startsWith('@') && (mode & 0o077) !== 0) {
      throw new UsageError(`config file ${file} holds "${key}" inline and others can read it: chmod 600 ${file}, or put the value in a private file and write "@file"`);
    }
    if (spec.path) s = resolve(dirname(file), s);
    else if (key === 'token' && s.startsWith('@')) s = `@${resolve(dirname(file), s.slice(1))}`;
    out[key] = s;
  }
  return out;
}

/** The settings the environment gives (`HOMELINK_<FLAG>`), for the options a command has. */
export function fromEnv(options: Readonly<Record<string, unknown>>, env: NodeJS.ProcessEnv = process.env): Values {
  const out: Values = {};
  for (const [key, spec] of Object.entries(SETTINGS)) {
    if (!(key in options)) continue;
    const raw = env[envName(key)];
    if (raw === undefined || raw === '') continue;
    out[key] = spec.kind === 'list' ? raw.split(',').map((s) => s.trim()).filter(Boolean) : raw;
  }
  // HOMELINK_DEV_DIR is the stack's folder (older name); HOMELINK_DIR wins when both are set.
  if ('dir' in options && out['dir'] === undefined && env['HOMELINK_DEV_DIR']) out['dir'] = env['HOMELINK_DEV_DIR'];
  return out;
}

/**
 * Fills in what the flags left unset from the environment, then the profile, for the options the
 * command declares. `--config` and `--profile` are consumed here.
 */
export async function withSettings(flags: Values, options: Readonly<Record<string, unknown>>, env: NodeJS.ProcessEnv = process.env): Promise<Values> {
  const profile = await loadProfile({
    ...(typeof flags['config'] === 'string' ? { file: flags['config'] } : {}),
    ...(typeof flags['profile'] === 'string' ? { profile: flags['profile'] } : {}),
    env,
  });
  const out: Values = {};
  for (const [k, v] of Object.entries(profile?.values ?? {})) if (k in options) out[k] = v;
  Object.assign(out, fromEnv(options, env));
  for (const [k, v] of Object.entries(flags)) if (v !== undefined && k !== 'config' && k !== 'profile') out[k] = v;
  return out;
}
