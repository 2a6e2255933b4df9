/**
 * The description of a running local stack that `npm start` writes to `<dir>/stack.json`, so the
 * CLI, the demo page server and tests find the signaling URL, the relay and the dev issuer
 * without flags. Node only (reads files).
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';

/** Default folder of the local stack's state (git-ignored): issuer key, TLS cert, worker state. */
export const DEFAULT_DEV_DIR = '.dev';
/** File name of the stack description inside the dev folder. */
export const STACK_FILE = 'stack.json';

/** One relay as the CLI needs it: where to send STUN/TURN over each transport. */
export interface StackRelay {
  readonly host: string;
  readonly udpPort: number;
  readonly tcpPort: number;
  readonly tlsPort: number;
  /** PEM file of the self-signed development certificate (trust it for `turns:`). */
  readonly caFile?: string;
  /** A second address of the same relay, for RFC 5780-style NAT mapping tests. */
  readonly altHost?: string;
}

/** What `npm start` writes once every part answers. */
export interface Stack {
  readonly version: 1;
  /** pid of the `npm start` node process. */
  readonly pid: number;
  /** Process group ids of the children it started (each in its own group). */
  readonly childGroups: readonly number[];
  /** `ws://host:port`: base of `/v1/presence` and `/v1/rooms/...`. */
  readonly signalingUrl: string;
  /** `http://host:port` of the same worker. */
  readonly signalingHttpUrl: string;
  readonly relay: StackRelay;
  /** The demo page. */
  readonly webUrl: string;
  /** Folder of the dev issuer's signing key (for `createDevIssuer({ dir })`). */
  readonly issuerDir: string;
  /** The relay's metrics/health HTTP endpoint, when it has one. */
  readonly relayMetricsUrl?: string;
}

/** The stack file could not be found or read; `message` says what to do. */
export class StackError extends Error {
  override readonly name = 'StackError';
}

/** Resolves the dev folder: `--dir`, then `HOMELINK_DEV_DIR`, then `.dev` in the working directory. */
export function devDir(flag?: string): string {
  return resolve(flag ?? process.env['HOMELINK_DEV_DIR'] ?? DEFAULT_DEV_DIR);
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Reads and checks `<dir>/stack.json`.
 *
 * @throws StackError when no stack is running there or the file is not one of ours.
 * @example
 * const stack = await readStack(devDir());
 */
export async function readStack(dir: string): Promise<Stack> {
  const file = join(dir, STACK_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    throw new StackError(
      `no local stack found in ${dir}: run \`npm start\` in a homelink checkout first (outside it, add --dir <checkout>/.dev); for a real deployment use a profile (--profile) or --token with --signaling, --identity-cert, --identity-key, --trust-jwks and --trust-issuer`,
    );
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new StackError(`${file} is not valid JSON: stop and restart \`npm start\``);
  }
  if (
    !isObj(v) ||
    v['version'] !== 1 ||
    typeof v['signalingUrl'] !== 'string' ||
    typeof v['signalingHttpUrl'] !== 'string' ||
    typeof v['webUrl'] !== 'string' ||
    typeof v['issuerDir'] !== 'string' ||
    typeof v['pid'] !== 'number' ||
    !Array.isArray(v['childGroups']) ||
    !isObj(v['relay']) ||
    typeof v['relay']['host'] !== 'string'
  ) {
    throw new StackError(`${file} is not a stack description of this version: restart \`npm start\``);
  }
  return v as unknown as Stack;
}
