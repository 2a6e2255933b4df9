/**
 * The cgroup CPU quota helper (cpu-cgroup.ts) on both cgroup versions, as far as it can be
 * checked without a kernel: what is written for a limit and how `cpu.stat` is read (v1 counts
 * throttled time in ns, v2 in µs). The real v1 group on this machine is exercised by
 * starvation.test.ts, which asserts the quota throttled the endpoints.
 */
import { describe, expect, it } from 'vitest';
import { CpuGroup, parseCpuStat } from './cpu-cgroup.js';

describe('cgroup CPU quota', () => {
  it('writes the period then the quota on v1, one cpu.max line on v2, never a quota under 1 ms', () => {
    expect(Object.entries(CpuGroup.limitFiles(1, 0.05))).toEqual([
      ['cpu.cfs_period_us', '100000'],
      ['cpu.cfs_quota_us', '5000'],
    ]);
    expect(CpuGroup.limitFiles(2, 0.05)).toEqual({ 'cpu.max': '5000 100000' });
    expect(CpuGroup.limitFiles(2, 0.0001)).toEqual({ 'cpu.max': '1000 100000' });
    expect(CpuGroup.limitFiles(1, 2, 50_000)['cpu.cfs_quota_us']).toBe('100000');
  });

  it('reads throttling from a v1 cpu.stat (ns) and a v2 cpu.stat (µs) alike', () => {
    const v1 = 'nr_periods 190\nnr_throttled 188\nthrottled_time 25300000000\nnr_bursts 0\nburst_time 0\n';
    expect(parseCpuStat(v1, 1)).toEqual({ nrPeriods: 190, nrThrottled: 188, throttledMs: 25_300 });
    const v2 = 'usage_usec 812345\nuser_usec 700000\nsystem_usec 112345\nnr_periods 190\nnr_throttled 188\nthrottled_usec 25300000\nnr_bursts 0\nburst_usec 0\n';
    expect(parseCpuStat(v2, 2)).toEqual({ nrPeriods: 190, nrThrottled: 188, throttledMs: 25_300 });
    expect(parseCpuStat('', 2)).toEqual({ nrPeriods: 0, nrThrottled: 0, throttledMs: 0 });
    expect(parseCpuStat('nr_periods x\ngarbage line here\nnr_throttled 3', 1)).toEqual({ nrPeriods: 0, nrThrottled: 3, throttledMs: 0 });
  });
});
