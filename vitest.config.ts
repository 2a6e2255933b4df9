import { defineConfig } from 'vitest/config';

// Wrangler/miniflare must never phone home (no network here, and users' CI may have none).
process.env.WRANGLER_SEND_METRICS = 'false';
process.env.CLOUDFLARE_CF_FETCH_ENABLED = 'false';
process.env.WRANGLER_HIDE_BANNER = 'true';

/**
 * One project per part, each runnable alone (`npm run test:<name>`); `npm test` runs them all.
 * The worker project drives the Worker in workerd (see test/worker/vitest.config.ts).
 *
 * Scheduling: group 0 (protocol, worker) runs first, several files at a time: they are light and
 * mostly wait on deadlines. Group 1 runs after it, one file at a time: the client, NAT lab and
 * browser suites run real peers and NATs whose timing suffers when they share 2 cores. (vitest
 * wants one worker count per group, hence `maxWorkers` on both group 0 projects.)
 */
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'protocol', sequence: { groupOrder: 0 }, maxWorkers: 6, include: ['test/protocol/**/*.test.ts'] } },
      'test/worker/vitest.config.ts',
      { test: { name: 'relay', sequence: { groupOrder: 1 }, include: ['test/relay/**/*.test.ts'], testTimeout: 60_000, hookTimeout: 60_000, fileParallelism: false } },
      { test: { name: 'client', sequence: { groupOrder: 1 }, include: ['test/client/**/*.test.ts'], testTimeout: 120_000, hookTimeout: 60_000, fileParallelism: false } },
      { test: { name: 'cli', sequence: { groupOrder: 1 }, include: ['test/cli/**/*.test.ts'], testTimeout: 180_000, hookTimeout: 120_000, fileParallelism: false } },
      { test: { name: 'package', sequence: { groupOrder: 1 }, include: ['test/package/**/*.test.ts'], testTimeout: 300_000, hookTimeout: 300_000, fileParallelism: false } },
      { test: { name: 'browser', sequence: { groupOrder: 1 }, include: ['test/browser/**/*.test.ts'], testTimeout: 180_000, hookTimeout: 120_000, fileParallelism: false } },
      { test: { name: 'natlab', sequence: { groupOrder: 1 }, include: ['test/natlab/**/*.test.ts'], globalSetup: ['test/natlab/global-setup.ts'], testTimeout: 600_000, hookTimeout: 120_000, fileParallelism: false } },
    ],
  },
});
