/**
 * Test support for the user-facing suites (cli, browser): runs the real local stack with
 * `npm start` on free ports in a temporary folder, and runs CLI commands as real processes.
 * Everything started here is stopped by process group, and the folder is removed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Stack } from '../../cli/stack.js';
import { freePort } from '../support/ports.js';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** `npm start` is ready in a few seconds; the first run creates keys, a certificate and a worker bundle. */
export const STACK_READY_TIMEOUT_MS = 90_000;
/** Bound on a clean stop after SIGINT (children get 5 s each, in parallel). */
export const STACK_STOP_TIMEOUT_MS = 20_000;
const READY_LINE = 'Ctrl-C stops everything.';

/** Ports outside the ephemeral range (test/support/ports.ts says why). */
export { freePort } from '../support/ports.js';

export interface StackPorts {
  readonly signaling: number;
  readonly relay: number;
  readonly relayTls: number;
  readonly metrics: number;
  readonly web: number;
}

/** A running `npm start`. */
export interface RunningStack {
  readonly dir: string;
  readonly ports: StackPorts;
  readonly proc: ChildProcess;
  /** What `npm start` printed on stdout (and stderr) so far. */
  output(): string;
  readonly stack: Stack;
  /** SIGINT to the process group (as Ctrl-C in a terminal), bounded wait; false if it did not exit in time. */
  interrupt(): Promise<boolean>;
  /** Interrupts if still running, kills what is left, and removes the folder. */
  dispose(): Promise<void>;
}

export function startArgs(dir: string, p: StackPorts): string[] {
  return [
    'start', '--', '--dir', dir,
    '--signaling-port', String(p.signaling), '--relay-port', String(p.relay), '--relay-tls-port', String(p.relayTls),
    '--metrics-port', String(p.metrics), '--web-port', String(p.web),
  ];
}

const quietEnv = (): NodeJS.ProcessEnv => ({
  ...process.env,
  WRANGLER_SEND_METRICS: 'false',
  CLOUDFLARE_CF_FETCH_ENABLED: 'false',
  WRANGLER_HIDE_BANNER: 'true',
});

/** The last lines of each child's log, for a start-up failure's message. */
async function childLogTails(logDir: string, lines = 30): Promise<string> {
  let names: string[];
  try {
    names = await readdir(logDir);
  } catch {
    return '';
  }
  let text = '';
  for (const name of names) {
    const body = await readFile(join(logDir, name), 'utf8').catch(() => '');
    text += `\n--- ${name} (last ${lines} lines)\n${body.split('\n').slice(-lines).join('\n')}`;
  }
  return text;
}

/** Runs `npm start` in a fresh folder (or `opts.dir`) on free ports and waits until it printed its ready line. */
export async function startStack(opts: { dir?: string } = {}): Promise<RunningStack> {
  try {
    return await startStackOnce(opts);
  } catch (e) {
    // A port taken between the probe and npm start's own check, or between that check and
    // workerd's bind (another test's socket took the number meanwhile): once more on fresh
    // ports. Any other start-up failure stands.
    if (opts.dir !== undefined || !PORT_CLASH.test((e as Error).message)) throw e;
    return startStackOnce(opts);
  }
}

/**
 * What scripts/start.ts says when a port it was given is taken, and what wrangler logs when
 * workerd then fails to bind one (the error message carries the children's log tails).
 */
const PORT_CLASH = /is in use by another program|could not reserve a debugger port|Address already in use/;

async function startStackOnce(opts: { dir?: string }): Promise<RunningStack> {
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'homelink-stack-')));
  const ports: StackPorts = { signaling: await freePort(), relay: await freePort(), relayTls: await freePort(), metrics: await freePort(), web: await freePort() };
  // Its own process group, like a terminal's foreground job, so SIGINT reaches npm, tsx and the script.
  const proc = spawn('npm', startArgs(dir, ports), { cwd: ROOT, env: quietEnv(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  let exitCode: number | null | undefined;
  // npm re-raises SIGINT after its script ended, so the code is null and the signal SIGINT.
  const exited = new Promise<true>((resolve) => proc.once('exit', (code) => ((exitCode = code), resolve(true))));

  const interrupt = async (): Promise<boolean> => {
    if (exitCode !== undefined) return true;
    try {
      process.kill(-proc.pid!, 'SIGINT');
    } catch {
      // already gone
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const t = new Promise<false>((r) => (timer = setTimeout(() => r(false), STACK_STOP_TIMEOUT_MS)));
    const r = await Promise.race([exited, t]);
    clearTimeout(timer);
    return r;
  };
  const dispose = async (): Promise<void> => {
    await interrupt();
    // Whatever survived (a failed test), by group: npm's, and the children the script recorded.
    let groups: number[] = [];
    try {
      groups = (JSON.parse(await readFile(join(dir, 'start.lock'), 'utf8')) as { childGroups: number[] }).childGroups;
    } catch {
      // clean stop removed the lock
    }
    for (const g of [proc.pid!, ...groups]) {
      try {
        process.kill(-g, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await rm(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + STACK_READY_TIMEOUT_MS;
  while (!out.includes(READY_LINE)) {
    if (exitCode !== undefined || Date.now() > deadline) {
      // The children's logs go with the stack's folder: keep their tails in the error.
      const logs = await childLogTails(join(dir, 'logs'));
      await dispose();
      throw new Error(`npm start did not become ready (exit ${String(exitCode)}):\n${out}${logs}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const stack = JSON.parse(await readFile(join(dir, 'stack.json'), 'utf8')) as Stack;
  return { dir, ports, proc, output: () => out, stack, interrupt, dispose };
}

/** Result of a finished CLI run. */
export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A CLI process that may still run. */
export interface CliProcess {
  readonly proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves when `text` appeared on stderr (where the CLI reports progress). */
  waitForStderr(text: string | RegExp, timeoutMs?: number): Promise<void>;
  /** Resolves with the result once the process exited (killing it at the deadline). */
  done(timeoutMs?: number): Promise<CliResult>;
  kill(): void;
}

/** Default bound on one CLI command in tests. */
export const CLI_TIMEOUT_MS = 60_000;

/** Starts `homelink <args>` (cli/bin.mjs) as a real process. */
export function spawnCli(args: string[], opts: { stdin?: string | 'keep-open'; cwd?: string } = {}): CliProcess {
  const proc = spawn(process.execPath, [join(ROOT, 'cli', 'bin.mjs'), ...args], {
    cwd: opts.cwd ?? ROOT,
    env: quietEnv(),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  if (opts.stdin !== 'keep-open') proc.stdin!.end(opts.stdin ?? '');
  let code: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (c) => resolve((code = c))));
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    async waitForStderr(text, timeoutMs = CLI_TIMEOUT_MS) {
      const deadline = Date.now() + timeoutMs;
      const hit = (): boolean => (typeof text === 'string' ? err.includes(text) : text.test(err));
      while (!hit()) {
        if (code !== undefined) throw new Error(`homelink ${args[0]} exited (${String(code)}) before printing ${String(text)}:\n${err}`);
        if (Date.now() > deadline) throw new Error(`homelink ${args[0]} did not print ${String(text)}:\n${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async done(timeoutMs = CLI_TIMEOUT_MS) {
      const t = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
      const c = await exited;
      clearTimeout(t);
      return { code: c, stdout: out, stderr: err };
    },
    kill() {
      if (code === undefined) proc.kill('SIGKILL');
    },
  };
}

/** Runs `homelink <args>` to completion. */
export function runCli(args: string[], opts: { stdin?: string; cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return spawnCli(args, opts).done(opts.timeoutMs);
}

/** True when the process (or, for a negative id, the process group) no longer exists. */
export function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
