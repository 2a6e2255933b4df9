/**
 * What the NAT lab suites share: whether the lab can run here, and bounded waits on the
 * output of lab processes.
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LabProcess } from './lab.js';

/** The one line printed when the lab cannot run (issue 5). */
export const SKIP_LINE = 'skipped: NAT lab needs root and iptables/nft';

function has(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: 5_000 });
    return true;
  } catch {
    return false;
  }
}

let cached: boolean | undefined;

/**
 * True when we are root and `ip` and `nft` work (the rule sets are nftables; `iptables`
 * 1.8 here is itself the nf_tables backend). NATLAB_UNAVAILABLE=1 simulates a machine
 * without them (to test the skip path). The skip line itself is printed once by
 * global-setup.ts.
 */
export function labAvailable(): boolean {
  cached ??= process.env['NATLAB_UNAVAILABLE'] !== '1' && process.getuid?.() === 0 && has('ip', ['-V']) && has('nft', ['--version']);
  return cached;
}

export class WaitTimeout extends Error {
  override readonly name = 'WaitTimeout';
}

/** Resolves with the first output line matching `re`, or rejects after `timeoutMs` or on exit. */
export function waitForLine(
  proc: LabProcess,
  re: RegExp,
  timeoutMs: number,
  what: string,
  stream: 'stdout' | 'stderr' = 'stdout',
): Promise<string> {
  const source = stream === 'stdout' ? proc.child.stdout : proc.child.stderr;
  return new Promise((resolve, reject) => {
    const check = (): boolean => {
      const line = proc[stream]().split('\n').find((l) => re.test(l));
      if (line !== undefined) {
        finish();
        resolve(line);
        return true;
      }
      return false;
    };
    const onData = (): void => void check();
    const onExit = (): void => {
      if (!check()) {
        finish();
        reject(new WaitTimeout(`${what}: exited before ready; stderr: ${proc.stderr().slice(-2000)}`));
      }
    };
    const timer = setTimeout(() => {
      finish();
      reject(new WaitTimeout(`${what}: not ready within ${timeoutMs} ms; stderr: ${proc.stderr().slice(-2000)}`));
    }, timeoutMs);
    const finish = (): void => {
      clearTimeout(timer);
      source?.off('data', onData);
      proc.child.off('exit', onExit);
    };
    source?.on('data', onData);
    proc.child.once('exit', onExit);
    check();
  });
}

/** `node --import tsx <script>` arguments, resolved from the repository root. */
export function tsxArgs(script: string, ...args: string[]): string[] {
  return ['--import', 'tsx', script, ...args];
}

/** Calls `cb` for every complete stdout line the process writes from now on. */
export function onLines(proc: LabProcess, cb: (line: string) => void): void {
  let buf = '';
  proc.child.stdout?.on('data', (d: string | Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      cb(line);
    }
  });
}

/**
 * With NATLAB_DEBUG=<dir>, writes the stderr of a failed cell's endpoint processes there
 * (developer aid; CI leaves it unset).
 */
export function dumpOnFailure(cellId: string, procs: Record<string, LabProcess>, failed: boolean): void {
  const dir = process.env['NATLAB_DEBUG'];
  if (!dir || !failed) return;
  for (const [name, p] of Object.entries(procs)) writeFileSync(join(dir, `${cellId}.${name}.log`), p.stderr() + '\n--- stdout\n' + p.stdout());
}

/**
 * NATLAB_NDC_LOG=<dir> (developer aid, endpoint processes on node-datachannel): libdatachannel's
 * own log at Debug level in `<dir>/<name>.log`. It slows libdatachannel's threads enough to hide
 * some races, so a failure that vanishes with it on is worth noting.
 */
export async function nativeDebugLog(name: string): Promise<void> {
  const dir = process.env['NATLAB_NDC_LOG'];
  if (!dir) return;
  const ndc = (await import('node-datachannel')) as unknown as { initLogger(level: string, cb: (level: string, message: string) => void): void };
  ndc.initLogger('Debug', (level, message) => appendFileSync(join(dir, `${name}.log`), `${Date.now()} ${level} ${message}\n`));
}
