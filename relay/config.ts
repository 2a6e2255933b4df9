/**
 * The relay's one typed configuration, built from (lowest to highest priority)
 * named defaults, an optional JSON file (`--config path` / RELAY_CONFIG),
 * environment variables (RELAY_*) and command-line flags, and validated once
 * at start-up: a bad value throws a {@link ConfigError} naming the field.
 *
 * Every option: one row in {@link OPTIONS} with its flag, env name and default.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { ConfigError } from './policy.js';
import {
  BANDWIDTH_BURST_BYTES,
  BANDWIDTH_BYTES_PER_SECOND,
  DEFAULT_ALLOCATION_LIFETIME_S,
  MAX_ALLOCATIONS,
  MAX_ALLOCATIONS_PER_USERNAME,
  MAX_ALLOCATION_LIFETIME_S,
  MAX_CHANNELS_PER_ALLOCATION,
  MAX_PERMISSIONS_PER_ALLOCATION,
  MAX_STREAM_BUFFER_BYTES,
  MAX_STREAMS_PER_IP,
  NONCE_LIFETIME_S,
  STREAM_HANDSHAKE_TIMEOUT_MS,
  STREAM_IDLE_TIMEOUT_MS,
} from './turn/defaults.js';

export { ConfigError };

/** The validated relay configuration. */
export interface RelayConfig {
  /** REALM sent in challenges (RFC 8489 §14.9). */
  readonly realm: string;
  /** Shared secrets for TURN REST credentials; the first is current, the others still accepted (rotation). */
  readonly secrets: readonly string[];
  /** SOFTWARE attribute value; empty for none. */
  readonly software: string;
  /** Address the client-facing UDP/TCP/TLS listeners bind. */
  readonly listenHost: string;
  /** UDP listener port (0: any free port). */
  readonly udpPort: number;
  /** TCP listener port (0: any free port; null: no TCP). */
  readonly tcpPort: number | null;
  /** TLS listener port (0: any free port); TLS runs only when `tlsCert` and `tlsKey` are set. */
  readonly tlsPort: number;
  /** PEM certificate chain and key paths for TURN over TLS. */
  readonly tlsCert: string | null;
  readonly tlsKey: string | null;
  /**
   * Address relay (peer-facing) sockets bind. A wildcard (0.0.0.0 or ::) serves both families;
   * a specific address serves its own family only, unless `relayHost6` adds IPv6.
   */
  readonly relayHost: string;
  /** Address IPv6 relay sockets bind when `relayHost` is a specific IPv4 address (null: no IPv6 relaying then). */
  readonly relayHost6: string | null;
  /** Addresses advertised in XOR-RELAYED-ADDRESS: at most one IPv4 and one IPv6. */
  readonly advertisedAddresses: readonly string[];
  /** Relay port range, inclusive; split between workers. */
  readonly relayPortMin: number;
  readonly relayPortMax: number;
  readonly defaultLifetimeS: number;
  readonly maxLifetimeS: number;
  readonly nonceLifetimeS: number;
  readonly maxAllocations: number;
  readonly maxAllocationsPerUsername: number;
  readonly maxPermissionsPerAllocation: number;
  readonly maxChannelsPerAllocation: number;
  /** Per-allocation cap, both directions, bytes/s; 0 for none. */
  readonly bandwidthBytesPerSecond: number;
  readonly bandwidthBurstBytes: number;
  /** Bytes buffered per TCP/TLS connection, in and out. */
  readonly maxStreamBufferBytes: number;
  /** A TLS connection that has not finished its handshake this long after accept is closed. */
  readonly streamHandshakeTimeoutMs: number;
  /** A TCP/TLS connection without an allocation that sends no whole frame for this long is closed. */
  readonly streamIdleTimeoutMs: number;
  /** Open TCP/TLS connections per source IPv4 address or IPv6 /64; the next one is closed at accept. */
  readonly maxStreamsPerIp: number;
  /** CIDRs peers may be in although the default policy denies them (a lab's ranges). */
  readonly allow: readonly string[];
  /** Lets loopback peers through: tests only. */
  readonly allowLoopback: boolean;
  /** Metrics/health HTTP listener; `metricsPort` null disables it, 0 picks a free port. */
  readonly metricsHost: string;
  readonly metricsPort: number | null;
  /** How long a graceful shutdown waits for allocations to end before closing them. */
  readonly shutdownDrainMs: number;
  /** Relay processes (one per core for throughput). */
  readonly workers: number;
  /**
   * UDP data path: 'native' forwards channel traffic in the native addon (relay/native/udp.c,
   * Linux, built by npm install where a C compiler exists) and fails to start without it; 'node'
   * uses node:dgram; 'auto' the addon when it loads, else node:dgram.
   */
  readonly dataPath: 'auto' | 'native' | 'node';
  /** Log lines at or above this level go to stdout as JSON. */
  readonly logLevel: 'info' | 'warn' | 'silent';
}

type Kind = 'string' | 'int' | 'intOrNull' | 'bool' | 'list' | 'level';

interface Option {
  readonly key: keyof RelayConfig;
  readonly flag: string;
  readonly env: string;
  readonly kind: Kind;
  readonly def: unknown;
  /** Why this default. */
  readonly why: string;
}

/** Every option with its flag, environment variable, default and the reason for the default. */
export const OPTIONS: readonly Option[] = [
  { key: 'realm', flag: 'realm', env: 'RELAY_REALM', kind: 'string', def: 'homelink', why: 'clients echo whatever realm we send; a stable product name keeps keys stable across relays' },
  { key: 'secrets', flag: 'secret', env: 'RELAY_SECRETS', kind: 'list', def: [], why: 'no default: a relay without a secret would accept no one (required)' },
  { key: 'software', flag: 'software', env: 'RELAY_SOFTWARE', kind: 'string', def: 'homelink-relay', why: 'names the server in responses for debugging, without a version that would help attackers' },
  { key: 'listenHost', flag: 'listen-host', env: 'RELAY_LISTEN_HOST', kind: 'string', def: '0.0.0.0', why: 'a relay exists to be reached from outside; bind everything unless told otherwise' },
  { key: 'udpPort', flag: 'udp-port', env: 'RELAY_UDP_PORT', kind: 'int', def: 3478, why: 'IANA port for STUN/TURN (RFC 8489 §18.1)' },
  { key: 'tcpPort', flag: 'tcp-port', env: 'RELAY_TCP_PORT', kind: 'intOrNull', def: 3478, why: 'IANA port for STUN/TURN over TCP; networks blocking UDP still get through' },
  { key: 'tlsPort', flag: 'tls-port', env: 'RELAY_TLS_PORT', kind: 'int', def: 5349, why: 'IANA port for STUN/TURN over TLS (turns:); operators behind 443-only firewalls set 443' },
  { key: 'tlsCert', flag: 'tls-cert', env: 'RELAY_TLS_CERT', kind: 'string', def: null, why: 'no default certificate: TLS runs only with a real one' },
  { key: 'tlsKey', flag: 'tls-key', env: 'RELAY_TLS_KEY', kind: 'string', def: null, why: 'goes with tls-cert' },
  { key: 'relayHost', flag: 'relay-host', env: 'RELAY_RELAY_HOST', kind: 'string', def: '0.0.0.0', why: 'peer-facing sockets on every interface, like the listeners' },
  { key: 'relayHost6', flag: 'relay-host6', env: 'RELAY_RELAY_HOST6', kind: 'string', def: null, why: 'a relay bound to one IPv4 address must not open IPv6 sockets on every address; IPv6 needs its own address' },
  { key: 'advertisedAddresses', flag: 'advertise', env: 'RELAY_ADVERTISE', kind: 'list', def: [], why: 'defaults to relay-host when that is a concrete address; behind 1:1 NAT (cloud) the public IP must be given' },
  { key: 'relayPortMin', flag: 'relay-port-min', env: 'RELAY_PORT_MIN', kind: 'int', def: 49152, why: 'RFC 8656 §7.2: relay ports from the dynamic range 49152-65535' },
  { key: 'relayPortMax', flag: 'relay-port-max', env: 'RELAY_PORT_MAX', kind: 'int', def: 65535, why: 'top of the dynamic range' },
  { key: 'defaultLifetimeS', flag: 'lifetime-default', env: 'RELAY_LIFETIME_DEFAULT', kind: 'int', def: DEFAULT_ALLOCATION_LIFETIME_S, why: 'RFC 8656 default allocation lifetime' },
  { key: 'maxLifetimeS', flag: 'lifetime-max', env: 'RELAY_LIFETIME_MAX', kind: 'int', def: MAX_ALLOCATION_LIFETIME_S, why: 'RFC 8656 recommended maximum' },
  { key: 'nonceLifetimeS', flag: 'nonce-lifetime', env: 'RELAY_NONCE_LIFETIME', kind: 'int', def: NONCE_LIFETIME_S, why: 'see relay/turn/defaults.ts' },
  { key: 'maxAllocations', flag: 'max-allocations', env: 'RELAY_MAX_ALLOCATIONS', kind: 'int', def: MAX_ALLOCATIONS, why: 'see relay/turn/defaults.ts' },
  { key: 'maxAllocationsPerUsername', flag: 'max-allocations-per-user', env: 'RELAY_MAX_ALLOCATIONS_PER_USER', kind: 'int', def: MAX_ALLOCATIONS_PER_USERNAME, why: 'see relay/turn/defaults.ts' },
  { key: 'maxPermissionsPerAllocation', flag: 'max-permissions', env: 'RELAY_MAX_PERMISSIONS', kind: 'int', def: MAX_PERMISSIONS_PER_ALLOCATION, why: 'see relay/turn/defaults.ts' },
  { key: 'maxChannelsPerAllocation', flag: 'max-channels', env: 'RELAY_MAX_CHANNELS', kind: 'int', def: MAX_CHANNELS_PER_ALLOCATION, why: 'see relay/turn/defaults.ts' },
  { key: 'bandwidthBytesPerSecond', flag: 'bandwidth', env: 'RELAY_BANDWIDTH', kind: 'int', def: BANDWIDTH_BYTES_PER_SECOND, why: 'see relay/turn/defaults.ts' },
  { key: 'bandwidthBurstBytes', flag: 'bandwidth-burst', env: 'RELAY_BANDWIDTH_BURST', kind: 'int', def: BANDWIDTH_BURST_BYTES, why: 'see relay/turn/defaults.ts' },
  { key: 'maxStreamBufferBytes', flag: 'max-stream-buffer', env: 'RELAY_MAX_STREAM_BUFFER', kind: 'int', def: MAX_STREAM_BUFFER_BYTES, why: 'see relay/turn/defaults.ts' },
  { key: 'streamHandshakeTimeoutMs', flag: 'stream-handshake-timeout-ms', env: 'RELAY_STREAM_HANDSHAKE_TIMEOUT_MS', kind: 'int', def: STREAM_HANDSHAKE_TIMEOUT_MS, why: 'see relay/turn/defaults.ts' },
  { key: 'streamIdleTimeoutMs', flag: 'stream-idle-timeout-ms', env: 'RELAY_STREAM_IDLE_TIMEOUT_MS', kind: 'int', def: STREAM_IDLE_TIMEOUT_MS, why: 'see relay/turn/defaults.ts' },
  { key: 'maxStreamsPerIp', flag: 'max-streams-per-ip', env: 'RELAY_MAX_STREAMS_PER_IP', kind: 'int', def: MAX_STREAMS_PER_IP, why: 'see relay/turn/defaults.ts' },
  { key: 'allow', flag: 'allow', env: 'RELAY_ALLOW', kind: 'list', def: [], why: 'the default policy is closed; a lab opens its own ranges' },
  { key: 'allowLoopback', flag: 'allow-loopback', env: 'RELAY_ALLOW_LOOPBACK', kind: 'bool', def: false, why: 'loopback peers would expose the relay host itself; tests only' },
  { key: 'metricsHost', flag: 'metrics-host', env: 'RELAY_METRICS_HOST', kind: 'string', def: '127.0.0.1', why: 'metrics are for the operator, not the internet' },
  { key: 'metricsPort', flag: 'metrics-port', env: 'RELAY_METRICS_PORT', kind: 'intOrNull', def: 9478, why: 'a fixed port for scrapers, next to 3478 in spirit and clear of Prometheus 9090' },
  { key: 'shutdownDrainMs', flag: 'drain-ms', env: 'RELAY_DRAIN_MS', kind: 'int', def: 25_000, why: 'under the 30 s most supervisors (systemd, Kubernetes) wait before SIGKILL' },
  { key: 'workers', flag: 'workers', env: 'RELAY_WORKERS', kind: 'int', def: 1, why: 'one process unless asked: the operator knows how many cores the relay may have' },
  { key: 'dataPath', flag: 'data-path', env: 'RELAY_DATA_PATH', kind: 'string', def: 'auto', why: 'auto, native or node: the native addon forwards channel traffic at about a third of node:dgram\'s CPU per packet (docs/BENCHMARKS.md); node:dgram where it is not built' },
  { key: 'logLevel', flag: 'log-level', env: 'RELAY_LOG_LEVEL', kind: 'level', def: 'info', why: 'allocation events are few and useful; packets are never logged' },
];

const byFlag = new Map(OPTIONS.map((o) => [o.flag, o]));
const byKey = new Map(OPTIONS.map((o) => [o.key as string, o]));

function convert(o: Option, raw: unknown, source: string): unknown {
  const fail = (what: string): never => {
    throw new ConfigError(o.key, `${o.key} (${source}): ${what}`);
  };
  switch (o.kind) {
    case 'string':
      if (raw === null) return null;
      if (typeof raw !== 'string') fail('expected a string');
      return raw;
    case 'int':
    case 'intOrNull': {
      if (raw === null || raw === 'off' || raw === 'none') return o.kind === 'intOrNull' ? null : fail('expected an integer');
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^-?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(n)) fail('expected an integer');
      return n;
    }
    case 'bool':
      if (typeof raw === 'boolean') return raw;
      if (raw === 'true' || raw === '1' || raw === '') return true;
      if (raw === 'false' || raw === '0') return false;
      return fail('expected true or false');
    case 'list':
      if (Array.isArray(raw) && raw.every((x) => typeof x === 'string')) return raw.map((s) => s.trim()).filter(Boolean);
      if (typeof raw === 'string') return raw.split(',').map((s) => s.trim()).filter(Boolean);
      return fail('expected a list of strings');
    case 'level':
      if (raw === 'info' || raw === 'warn' || raw === 'silent') return raw;
      return fail('expected info, warn or silent');
  }
}

/**
 * Builds and validates a configuration from defaults and `overrides` (already typed values).
 * @example const config = relayConfig({ secrets: ['s3cret'], listenHost: '127.0.0.1', udpPort: 0 });
 */
export function relayConfig(overrides: Partial<Record<keyof RelayConfig, unknown>> = {}): RelayConfig {
  const out: Record<string, unknown> = {};
  for (const o of OPTIONS) out[o.key] = o.def;
  for (const [k, v] of Object.entries(overrides)) {
    const o = byKey.get(k);
    if (!o) throw new ConfigError(k, `${k}: unknown option`);
    if (v !== undefined) out[k] = convert(o, v, 'value');
  }
  return validate(out as unknown as RelayConfig);
}

/**
 * Builds the configuration from command-line flags (`--flag value`, `--flag=value`,
 * repeatable for lists, `--allow-loopback` alone for true), environment variables
 * and an optional JSON file (`--config` or RELAY_CONFIG). Flags win over env, env over the file.
 * @example relayConfigFromArgs(['--secret', 'x', '--udp-port', '3478'], process.env)
 */
export function relayConfigFromArgs(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): RelayConfig {
  const values: Record<string, unknown> = {};
  // Flags first, to find --config.
  const flags: Array<[Option, string]> = [];
  let configPath = env.RELAY_CONFIG;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('--')) throw new ConfigError('argv', `unexpected argument "${arg.slice(0, 40)}"`);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    let value: string | undefined = eq === -1 ? undefined : arg.slice(eq + 1);
    if (name === 'config') {
      configPath = value ?? argv[++i];
      continue;
    }
    const o = byFlag.get(name);
    if (!o) throw new ConfigError(name, `unknown flag --${name}`);
    if (value === undefined) {
      const next = argv[i + 1];
      if (o.kind === 'bool' && (next === undefined || next.startsWith('--'))) value = 'true';
      else if (next === undefined) throw new ConfigError(o.key, `--${name} needs a value`);
      else value = argv[++i]!;
    }
    flags.push([o, value]);
  }
  if (configPath) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(configPath, 'utf8'));
    } catch (e) {
      throw new ConfigError('config', `config file could not be read as JSON: ${(e as Error).message.slice(0, 200)}`, { cause: e });
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError('config', 'config file must hold a JSON object');
    for (const [k, v] of Object.entries(parsed)) {
      const o = byKey.get(k);
      if (!o) throw new ConfigError(k, `${k}: unknown option in the config file`);
      values[k] = convert(o, v, 'config file');
    }
  }
  for (const o of OPTIONS) {
    const v = env[o.env];
    if (v !== undefined && v !== '') values[o.key] = convert(o, v, o.env);
  }
  const lists = new Map<string, string[]>();
  for (const [o, v] of flags) {
    if (o.kind === 'list') {
      const acc = lists.get(o.key) ?? [];
      acc.push(...(convert(o, v, `--${o.flag}`) as string[]));
      lists.set(o.key, acc);
      values[o.key] = acc;
    } else {
      values[o.key] = convert(o, v, `--${o.flag}`);
    }
  }
  return relayConfig(values as Partial<Record<keyof RelayConfig, unknown>>);
}

function validate(c: RelayConfig): RelayConfig {
  const fail = (field: keyof RelayConfig, msg: string): never => {
    throw new ConfigError(field, `${field}: ${msg}`);
  };
  const port = (field: keyof RelayConfig, v: number | null, allowZero = true) => {
    if (v === null) return;
    if (!Number.isInteger(v) || v < (allowZero ? 0 : 1) || v > 65535) fail(field, 'must be a port number 0-65535');
  };
  const positive = (field: keyof RelayConfig, min = 1) => {
    const v = c[field] as number;
    if (!Number.isInteger(v) || v < min) fail(field, `must be an integer >= ${min}`);
  };
  if (!c.realm || c.realm.length > 127 || /["\\]/.test(c.realm)) fail('realm', 'must be 1-127 characters without quotes or backslashes');
  if (c.secrets.length === 0) fail('secrets', 'at least one secret is required (RELAY_SECRETS or --secret)');
  c.secrets.forEach((s, i) => {
    // The message names the position, never the secret.
    if (s.length < 8) throw new ConfigError('secrets', `secrets[${i}]: must be at least 8 characters`);
  });
  if (c.software.length > 127) fail('software', 'must be at most 127 characters');
  for (const f of ['listenHost', 'relayHost', 'metricsHost'] as const) if (!isIP(c[f])) fail(f, 'must be an IP address');
  if (c.relayHost6 !== null) {
    if (isIP(c.relayHost6) !== 6) fail('relayHost6', 'must be an IPv6 address');
    if (isIP(c.relayHost) !== 4 || c.relayHost === '0.0.0.0') fail('relayHost6', 'only goes with a specific IPv4 relayHost (a wildcard or IPv6 relayHost already covers IPv6)');
  }
  port('udpPort', c.udpPort);
  port('tcpPort', c.tcpPort);
  port('tlsPort', c.tlsPort);
  port('metricsPort', c.metricsPort);
  if ((c.tlsCert === null) !== (c.tlsKey === null)) fail(c.tlsCert === null ? 'tlsCert' : 'tlsKey', 'tls-cert and tls-key go together');
  port('relayPortMin', c.relayPortMin, false);
  port('relayPortMax', c.relayPortMax, false);
  if (c.relayPortMin > c.relayPortMax) fail('relayPortMin', 'must not exceed relayPortMax');
  positive('workers');
  if (c.dataPath !== 'auto' && c.dataPath !== 'native' && c.dataPath !== 'node') fail('dataPath', 'expected auto, native or node');
  if (c.workers > 64) fail('workers', 'at most 64');
  if (c.relayPortMax - c.relayPortMin + 1 < c.workers) fail('relayPortMax', 'the relay port range must give every worker at least one port');
  let advertised = [...c.advertisedAddresses];
  for (const a of advertised) if (!isIP(a)) fail('advertisedAddresses', `"${a.slice(0, 45)}" is not an IP address`);
  if (advertised.length === 0) {
    if (c.relayHost === '0.0.0.0' || c.relayHost === '::') fail('advertisedAddresses', 'required when relay-host is a wildcard address (the public IP clients reach)');
    advertised = c.relayHost6 === null ? [c.relayHost] : [c.relayHost, c.relayHost6];
  }
  if (advertised.filter((a) => isIP(a) === 4).length > 1 || advertised.filter((a) => isIP(a) === 6).length > 1) {
    fail('advertisedAddresses', 'at most one IPv4 and one IPv6 address');
  }
  const binds = relayBindAddresses(c);
  for (const family of [4, 6] as const) {
    if (advertised.some((a) => isIP(a) === family) && binds[family] === null) {
      fail('advertisedAddresses', `an IPv${family} address is advertised but relay sockets have no IPv${family} address to bind (${family === 6 ? 'set relayHost6, or' : 'use'} a wildcard relayHost)`);
    }
  }
  positive('defaultLifetimeS', 60);
  positive('maxLifetimeS', 60);
  if (c.maxLifetimeS < c.defaultLifetimeS) fail('maxLifetimeS', 'must be at least defaultLifetimeS');
  positive('nonceLifetimeS', 30);
  positive('maxAllocations');
  positive('maxAllocationsPerUsername');
  positive('maxPermissionsPerAllocation');
  positive('maxChannelsPerAllocation');
  positive('bandwidthBytesPerSecond', 0);
  positive('bandwidthBurstBytes', 1500);
  positive('maxStreamBufferBytes', 65_540);
  positive('streamHandshakeTimeoutMs', 100);
  positive('streamIdleTimeoutMs', 100);
  positive('maxStreamsPerIp');
  positive('shutdownDrainMs', 0);
  return Object.freeze({ ...c, advertisedAddresses: Object.freeze(advertised), secrets: Object.freeze([...c.secrets]), allow: Object.freeze([...c.allow]) });
}

/**
 * The addresses relay sockets bind, per family (null: that family is not relayed). A wildcard
 * relayHost covers both families on the wildcard; a specific one covers its own family only, so
 * a relay told to use one address never opens sockets on every address of the other family.
 */
export function relayBindAddresses(c: Pick<RelayConfig, 'relayHost' | 'relayHost6'>): { 4: string | null; 6: string | null } {
  if (c.relayHost === '0.0.0.0' || c.relayHost === '::') return { 4: '0.0.0.0', 6: '::' };
  if (isIP(c.relayHost) === 6) return { 4: null, 6: c.relayHost };
  return { 4: c.relayHost, 6: c.relayHost6 };
}

/** Help text for the CLI: every flag, its env variable and default. */
export function configHelp(): string {
  const lines = OPTIONS.map((o) => {
    const def = o.key === 'secrets' ? '(required)' : JSON.stringify(o.def);
    return `  --${o.flag.padEnd(26)} ${o.env.padEnd(32)} default ${def}`;
  });
  return [
    'Usage: node dist/js/relay/main.js [--config file.json] [flags]',
    '       (built by `npm run build:js`; from the sources in development: npx tsx relay/main.ts ...)',
    '',
    '  flag                         env                              ',
    ...lines,
  ].join('\n');
}
