/**
 * One process of the relay benchmark's load generator (bench/relay/run.ts forks as many as it
 * is told): makes its own allocations (own client address, so their 5-tuples differ from the
 * other processes'), says `ready` over IPC, runs the closed loop of loadgen.ts on `go`, and
 * sends its result back. Several of them load a relay harder than one Node process can.
 *
 *   (forked only) argv[2] = JSON { target, allocations, window, payload, warmupMs, measureMs, prefix, clientHost }
 */
import { allocateMany, closeAll, runLoad, type LoadResult, type LoadTarget } from './loadgen.js';

export interface GeneratorJob {
  target: LoadTarget;
  allocations: number;
  window: number;
  payload: number;
  warmupMs: number;
  measureMs: number;
  prefix: string;
  clientHost: string;
}

export type GeneratorMessage = { type: 'ready' } | { type: 'result'; result: LoadResult } | { type: 'failed'; message: string };

const job = JSON.parse(process.argv[2]!) as GeneratorJob;
const send = (m: GeneratorMessage): void => void process.send?.(m);

try {
  const allocs = await allocateMany(job.target, job.allocations, true, job.prefix, job.clientHost);
  send({ type: 'ready' });
  await new Promise<void>((resolve) => process.once('message', () => resolve()));
  const result = await runLoad(job.target, allocs, {
    allocations: job.allocations,
    window: job.window,
    payload: job.payload,
    warmupMs: job.warmupMs,
    measureMs: job.measureMs,
  });
  closeAll(allocs);
  send({ type: 'result', result });
} catch (e) {
  send({ type: 'failed', message: (e as Error).message });
}
process.disconnect?.();
