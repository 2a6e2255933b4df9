/**
 * CPU and memory of a process tree read from /proc, for the relay benchmarks: utime + stime of
 * every process whose ancestry reaches the root (/proc/<pid>/stat counts all of a process's
 * threads), and VmRSS. Linux only.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat's utime and stime. */
export const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
/** Microseconds per clock tick. */
export const TICK_US = 1e6 / CLK_TCK;

function statFields(pid: number | string): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** Pids of `rootPid` and all its descendants. */
export function processTree(rootPid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      parentOf.set(Number(d), Number(statFields(d)[1])); // field 4: ppid
    } catch {
      // process ended while scanning
    }
  }
  const out: number[] = [];
  for (const pid of parentOf.keys()) {
    for (let p: number | undefined = pid, hops = 0; p !== undefined && p > 1 && hops < 64; p = parentOf.get(p), hops++) {
      if (p === rootPid) {
        out.push(pid);
        break;
      }
    }
  }
  return out;
}

/** utime+stime in clock ticks of one process (all its threads); 0 if it is gone. */
export function cpuTicksOf(pid: number): number {
  try {
    const f = statFields(pid);
    return Number(f[11]) + Number(f[12]); // fields 14, 15: utime, stime
  } catch {
    return 0;
  }
}

/** utime+stime (clock ticks) of `rootPid` and all its descendants. */
export function cpuTicks(rootPid: number): number {
  let total = 0;
  for (const pid of processTree(rootPid)) total += cpuTicksOf(pid);
  return total;
}

/** Resident set size (bytes) of `rootPid` and its descendants. */
export function rssBytes(rootPid: number): number {
  let total = 0;
  for (const pid of processTree(rootPid)) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'latin1'));
      if (m) total += Number(m[1]) * 1024;
    } catch {
      // gone
    }
  }
  return total;
}
