/**
 * `homelink`: the command line (the package's `bin`).
 *
 *   homelink token     --sub <id> [--home <home>]...     dev access token and identity certificate
 *   homelink listen    [--as <id>]                       accept one link; stdin -> peer, peer -> stdout
 *   homelink dial      <peer> [--as <id>]                dial a peer; stdin -> peer, peer -> stdout
 *   homelink send      <peer> <file> [--as <id>]         send a file (progress, SHA-256 check)
 *   homelink receive   [--as <id>] [--out <dir>]         receive one file
 *   homelink netcheck  [--json]                          NAT, relays, signaling: what works from here
 *   homelink ping      <peer> [--count N]                RTT and path over a link, probe by probe
 *
 * Settings come from flags, then HOMELINK_* variables, then a profile file (cli/config.ts).
 * Every failure is one line on stderr saying what to do, with exit code 1 (2 for bad usage).
 * Node only.
 */
import { createRequire } from 'node:module';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { withSettings } from './config.js';
import { devDir } from './stack.js';
import { UsageError } from './credentials.js';
import { StackError } from './stack.js';
import { suggest } from './suggest.js';

/** A command: its help text, its flags and what it does. */
export interface Command {
  readonly summary: string;
  readonly usage: string;
  readonly options: NonNullable<ParseArgsConfig['options']>;
  readonly run: (values: Record<string, unknown>, positionals: string[]) => Promise<number>;
}

/** Flags every endpoint command shares (see cli/credentials.ts). */
export const ENDPOINT_OPTIONS = {
  as: { type: 'string' },
  home: { type: 'string', multiple: true },
  dir: { type: 'string' },
  signaling: { type: 'string' },
  token: { type: 'string' },
  'identity-cert': { type: 'string' },
  'identity-key': { type: 'string' },
  'trust-jwks': { type: 'string' },
  'trust-issuer': { type: 'string' },
  relay: { type: 'boolean' },
  timeout: { type: 'string' },
} as const;

export const ENDPOINT_HELP = `Identity (development, the default): the running \`npm start\` stack mints a token and
identity certificate for --as <id> (home home-1 unless --home). Run outside the checkout, pass
--dir <checkout>/.dev.
  --home ID            home id(s) in the dev token (repeatable; default home-1)
  --dir PATH           the local stack's folder (default .dev, or HOMELINK_DEV_DIR)
Identity (explicit, for a real deployment):
  --signaling URL      ws(s)://host of the signaling service
  --token T|@FILE      access token, or a file holding it
  --identity-cert FILE identity certificate (JWT)
  --identity-key FILE  the device's private key (JWK)
  --trust-jwks FILE    issuer public keys peers' certificates are checked with
  --trust-issuer ISS   their issuer
Each of these can come from HOMELINK_<FLAG> (HOMELINK_SIGNALING, HOMELINK_IDENTITY_CERT, ...) or
a profile: --profile NAME (HOMELINK_PROFILE) in --config FILE (HOMELINK_CONFIG, default
~/.config/homelink/config.json), a JSON file {"profiles": {"NAME": {"signaling": ..., ...}}}.
Flags win over variables, variables over the profile.
Link:
  --relay              force the path through the relay (iceTransportPolicy relay)
  --timeout SECONDS    give up dialing after this long (default 30)`;

const commands: Record<string, () => Promise<Command>> = {
  token: async () => (await import('./token.js')).tokenCommand,
  netcheck: async () => (await import('./netcheck-command.js')).netcheckCommand,
  listen: async () => (await import('./link-commands.js')).listenCommand,
  dial: async () => (await import('./link-commands.js')).dialCommand,
  send: async () => (await import('./file-commands.js')).sendCommand,
  receive: async () => (await import('./file-commands.js')).receiveCommand,
  ping: async () => (await import('./ping-command.js')).pingCommand,
};

const SUMMARIES: Record<string, string> = {
  token: 'print a development access token and identity certificate',
  listen: 'wait for a peer to dial; stdin goes to the peer, the peer to stdout',
  dial: 'dial a peer; stdin goes to the peer, the peer to stdout',
  send: 'send a file to a peer (progress bar, SHA-256 check)',
  receive: 'receive one file from a peer',
  netcheck: 'check NAT type, relays and signaling from this network',
  ping: 'measure round-trip time and path to a peer over a link',
};

const MAIN_HELP = `homelink: direct, encrypted links between smart-home endpoints

usage: homelink <command> [options]      (homelink <command> --help for its options)

commands:
${Object.entries(SUMMARIES)
  .map(([k, v]) => `  ${k.padEnd(9)} ${v}`)
  .join('\n')}

  --version  print the version

Start the local stack first with \`npm start\`; then, in two terminals:
  homelink listen            (as hub-1)
  homelink dial hub-1        (as app-1)
Against a deployment: a profile (--profile, ~/.config/homelink/config.json) or HOMELINK_* variables;
see homelink listen --help.`;

/** Options every command takes besides its own. */
const GLOBAL_OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  config: { type: 'string' },
  profile: { type: 'string' },
} as const;

/**
 * The package's version. Read through the package's own name (its `exports` lists
 * `./package.json`), which resolves the same from the sources and from dist/js/cli.
 */
export function packageVersion(): string {
  return (createRequire(import.meta.url)('homelink/package.json') as { version: string }).version;
}

/** Runs the CLI with `argv` (without node and script); returns the exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--version' || name === '-V' || name === 'version') {
    process.stdout.write(`homelink ${packageVersion()} (node ${process.versions.node})\n`);
    return 0;
  }
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' ? rest[0] : undefined;
    if (topic && commands[topic]) return runCli([topic, '--help']);
    process.stdout.write(`${MAIN_HELP}\n`);
    return name === undefined ? 2 : 0;
  }
  const load = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (!load) {
    const near = suggest(name, Object.keys(commands));
    process.stderr.write(`homelink: unknown command '${name}'${near ? `: did you mean 'homelink ${near}'?` : ': run homelink --help for the list'}\n`);
    return 2;
  }
  const cmd = await load();
  const options = { ...cmd.options, ...GLOBAL_OPTIONS };
  let values: Record<string, unknown>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: rest, options, allowPositionals: true, strict: true }) as {
      values: Record<string, unknown>;
      positionals: string[];
    });
  } catch (e) {
    process.stderr.write(`homelink ${name}: ${explainParseError(e as Error, Object.keys(options))}: run homelink ${name} --help\n`);
    return 2;
  }
  if (values['help']) {
    process.stdout.write(`${cmd.summary}\n\nusage: ${cmd.usage}\n`);
    return 0;
  }
  try {
    values = await withSettings(values, cmd.options);
    return await cmd.run(values, positionals);
  } catch (e) {
    process.stderr.write(`homelink ${name}: ${describeError(e)}\n`);
    return e instanceof UsageError ? 2 : 1;
  }
}

/**
 * One line for a flag parsing error, with the nearest known flag for an unknown one. Node's
 * messages quote the flag: "Unknown option '--singaling'. To specify a positional ...".
 */
export function explainParseError(e: Error, known: readonly string[]): string {
  const first = e.message.split('\n')[0]!;
  const unknown = /^Unknown option '(-{1,2})([^']*)'/.exec(first);
  if (!unknown) return first.replace(/\.$/, '');
  const near = suggest(unknown[2]!, known);
  return `unknown option ${unknown[1]}${unknown[2]}${near ? `: did you mean --${near}?` : ''}`;
}

/** One line for any error: typed errors carry advice; anything else its name and message. */
export function describeError(e: unknown): string {
  if (e instanceof UsageError || e instanceof StackError || ['TransferError', 'TokenProblem', 'ReplacedError'].includes((e as Error)?.name)) return (e as Error).message;
  const err = e as { name?: string; code?: string; message?: string; reason?: string };
  if (err?.name === 'LinkError') {
    const advice: Record<string, string> = {
      PeerOffline: 'the peer is offline, unknown, or not in one of your homes: check its id and that it is listening',
      Rejected: `the peer refused${err.reason ? ` (${err.reason})` : ''}`,
      Unauthorized: 'the signaling service or the peer refused the credentials: get a fresh token (homelink token) from a trusted issuer',
      Timeout: 'no answer in time: check the peer is listening, or raise --timeout; homelink netcheck shows what works from here',
      IdentityMismatch: 'the peer could not prove its identity (possible interception): do not trust this path',
      NoPath: 'no network path (direct or relay) worked: run homelink netcheck',
      Aborted: 'cancelled',
      Closed: 'the link closed',
      Protocol: 'the service or peer broke the protocol: check both run the same version',
    };
    // The library's own message is safe to show (LinkError never carries secrets) and says which step failed.
    const detail = err.message && !['PeerOffline', 'Rejected', 'Aborted'].includes(err.code ?? '') ? ` (${err.message})` : '';
    return `${advice[err.code ?? ''] ?? err.message ?? 'link error'}${detail} [${err.code}]`;
  }
  if (err?.code === 'ECONNREFUSED') return `connection refused (${err.message}): is \`npm start\` running?`;
  if (err?.message && (err.name === 'Error' || err.name === undefined)) return err.message;
  return `${err?.name ?? 'Error'}: ${err?.message ?? String(e)}`;
}

export { devDir };
