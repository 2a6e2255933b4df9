/**
 * A CPU quota for lab processes: a child cgroup of our own with a CFS bandwidth limit, so a
 * scenario can starve chosen processes (the endpoints) in a controlled, bounded way while the
 * rest of the machine (relay, signaling, the test runner) runs as usual.
 *
 * Both cgroup versions are supported, since this machine has v1 and others have v2:
 *  - v1: the `cpu` hierarchy (`/sys/fs/cgroup/cpu`), limit in `cpu.cfs_period_us` and
 *    `cpu.cfs_quota_us`, throttling in `cpu.stat` (`nr_throttled`, `throttled_time` in ns);
 *  - v2: the unified hierarchy whose root hands the `cpu` controller to its children, limit in
 *    `cpu.max` (`<quota> <period>`), throttling in `cpu.stat` (`nr_throttled`, `throttled_usec`).
 * In both, the kernel lets the group's tasks run `quota` microseconds per `period`, summed over
 * all their threads (Documentation/scheduler/sched-bwc.rst), then parks them until the next period.
 *
 * Groups are named `homelink-natlab-<runId>-<k>`; `remove()` moves any task still inside back to
 * the parent and deletes the group, and `removeStaleCpuGroups()` deletes groups of lab runs whose
 * process is gone. Only groups of that naming scheme are ever touched.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The line a suite prints when no cgroup CPU controller can be used here. */
export const CGROUP_SKIP_LINE = 'skipped: needs a cgroup cpu controller';
const GROUP_PREFIX = 'homelink-natlab-';
const GROUP_RE = /^homelink-natlab-hl(\d+)x[0-9a-f]+-\d+$/;
/** v1's `cpu` hierarchy where distributions mount it. */
const V1_ROOT = '/sys/fs/cgroup/cpu';

interface Hierarchy {
  readonly version: 1 | 2;
  readonly root: string;
}

/** Mount points of cgroup2 file systems, from /proc/self/mounts. */
function cgroup2Mounts(): string[] {
  try {
    return readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' '))
      .filter((f) => f[2] === 'cgroup2' && f[1])
      .map((f) => f[1]!);
  } catch {
    return [];
  }
}

/**
 * A v2 hierarchy whose root already hands `cpu` to its children (`cgroup.subtree_control`; systemd
 * enables it on v2 machines). We do not enable it ourselves: that would change the machine's
 * configuration for every other cgroup, beyond the one group a test may create and remove.
 */
function findV2(): Hierarchy | null {
  for (const root of cgroup2Mounts()) {
    try {
      if (readFileSync(join(root, 'cgroup.subtree_control'), 'utf8').split(/\s+/).includes('cpu')) return { version: 2, root };
    } catch {
      // unreadable here: try the next
    }
  }
  return null;
}

let cached: Hierarchy | null | undefined;

function hierarchy(): Hierarchy | null {
  if (cached !== undefined) return cached;
  cached = existsSync(join(V1_ROOT, 'cpu.cfs_quota_us')) ? { version: 1, root: V1_ROOT } : findV2();
  // A group we cannot create (not root, read-only mount) is as good as no controller.
  if (cached) {
    const probe = join(cached.root, `${GROUP_PREFIX}probe-${process.pid}`);
    try {
      mkdirSync(probe);
      rmdirSync(probe);
    } catch {
      cached = null;
    }
  }
  return cached;
}

/** True when a CPU-limited cgroup can be made here (root, and a v1 `cpu` or v2 `cpu` controller). */
export function cpuCgroupAvailable(): boolean {
  return process.env['NATLAB_NO_CGROUP'] !== '1' && hierarchy() !== null;
}

/** The cgroup version in use, for the report. */
export function cpuCgroupVersion(): 1 | 2 | null {
  return hierarchy()?.version ?? null;
}

export interface CpuThrottling {
  /** Periods in which the group used up its quota and was parked. */
  readonly nrThrottled: number;
  /** Total time its tasks spent parked, in ms. */
  readonly throttledMs: number;
  /** Periods that have elapsed with tasks runnable. */
  readonly nrPeriods: number;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function tasksOf(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Moves every task of `dir` to the hierarchy root, then deletes `dir` (a cgroup with tasks cannot be removed). */
function drainAndRemove(root: string, dir: string): void {
  for (const pid of tasksOf(dir)) {
    try {
      writeFileSync(join(root, 'cgroup.procs'), String(pid));
    } catch {
      // exited meanwhile
    }
  }
  try {
    rmdirSync(dir);
  } catch {
    // already gone
  }
}

let counter = 0;
/** The kernel refuses a CFS quota under 1 ms (sched-bwc.rst). */
const MIN_QUOTA_US = 1_000;

/**
 * Reads a `cpu.stat` file: v1 counts throttled time in ns (`throttled_time`), v2 in µs
 * (`throttled_usec`); both have `nr_periods` and `nr_throttled`. Unknown lines are ignored.
 */
export function parseCpuStat(text: string, version: 1 | 2): CpuThrottling {
  const stat = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [k, v, ...rest] = line.trim().split(/\s+/);
    if (k && v !== undefined && rest.length === 0 && /^\d+$/.test(v)) stat.set(k, Number(v));
  }
  const throttledMs = version === 1 ? (stat.get('throttled_time') ?? 0) / 1e6 : (stat.get('throttled_usec') ?? 0) / 1e3;
  return { nrThrottled: stat.get('nr_throttled') ?? 0, throttledMs, nrPeriods: stat.get('nr_periods') ?? 0 };
}

/**
 * One CPU-limited cgroup.
 *
 * @example
 * const g = CpuGroup.create(lab.runId);
 * try {
 *   g.add(proc.child.pid!);
 *   g.limit(0.1); // a tenth of one CPU for everything in the group
 *   // ... work ...
 *   g.unlimit();
 * } finally {
 *   g.remove();
 * }
 */
export class CpuGroup {
  private constructor(
    private readonly h: Hierarchy,
    readonly dir: string,
  ) {}

  static create(runId: string): CpuGroup {
    const h = hierarchy();
    if (!h) throw new Error(CGROUP_SKIP_LINE);
    const dir = join(h.root, `${GROUP_PREFIX}${runId}-${counter++}`);
    mkdirSync(dir);
    return new CpuGroup(h, dir);
  }

  /** Moves a process (all its threads; children it forks later start inside) into the group. */
  add(pid: number): void {
    writeFileSync(join(this.dir, 'cgroup.procs'), String(pid));
  }

  /** Lets the group's tasks use `cpus` CPUs' worth of time (0.1 = 10 ms per 100 ms), measured per `periodUs`. */
  limit(cpus: number, periodUs = 100_000): void {
    // v1: the period first, so the quota is checked against the period it belongs to.
    for (const [file, value] of Object.entries(CpuGroup.limitFiles(this.h.version, cpus, periodUs))) writeFileSync(join(this.dir, file), value);
  }

  /** Removes the limit. */
  unlimit(): void {
    if (this.h.version === 1) writeFileSync(join(this.dir, 'cpu.cfs_quota_us'), '-1');
    else writeFileSync(join(this.dir, 'cpu.max'), 'max');
  }

  /** The group's throttling counters so far. */
  throttling(): CpuThrottling {
    return parseCpuStat(readFileSync(join(this.dir, 'cpu.stat'), 'utf8'), this.h.version);
  }

  /** The CFS limit file(s) as written for `cpus` (exposed for the unit test of both versions). */
  static limitFiles(version: 1 | 2, cpus: number, periodUs = 100_000): Record<string, string> {
    const quota = String(Math.max(MIN_QUOTA_US, Math.round(cpus * periodUs)));
    return version === 1 ? { 'cpu.cfs_period_us': String(periodUs), 'cpu.cfs_quota_us': quota } : { 'cpu.max': `${quota} ${periodUs}` };
  }

  /** Moves what is left back to the root and deletes the group. Idempotent. */
  remove(): void {
    drainAndRemove(this.h.root, this.dir);
  }
}

/** Deletes our groups whose lab run (the pid in the name) is gone. */
export function removeStaleCpuGroups(): string[] {
  const h = hierarchy();
  if (!h) return [];
  const removed: string[] = [];
  for (const name of readdirSync(h.root)) {
    const m = GROUP_RE.exec(name);
    if (!m || pidAlive(Number(m[1]))) continue;
    drainAndRemove(h.root, join(h.root, name));
    removed.push(name);
  }
  return removed;
}
