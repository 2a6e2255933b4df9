import { defineConfig } from 'vitest/config';

// Wrangler/miniflare must never phone home (no network here, and users' CI may have none).
process.env.WRANGLER_SEND_METRICS = 'false';
process.env.CLOUDFLARE_CF_FETCH_ENABLED = 'false';
process.env.WRANGLER_HIDE_BANNER = 'true';

/**
 * One project per part, each runnable alone (`npm run test:<name>`); `npm test` runs them all.
 * The worker project runs inside workerd (see test/worker/vitest.config.ts).
 */
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'protocol', include: ['test/protocol/**/*.test.ts'] } },
      'test/worker/vitest.config.ts',
      { test: { name: 'relay', include: ['test/relay/**/*.test.ts'], testTimeout: 60_000, hookTimeout: 60_000 } },
      { test: { name: 'client', include: ['test/client/**/*.test.ts'], testTimeout: 120_000, hookTimeout: 60_000, fileParallelism: false } },
      { test: { name: 'cli', include: ['test/cli/**/*.test.ts'], testTimeout: 180_000, hookTimeout: 120_000, fileParallelism: false } },
      { test: { name: 'package', include: ['test/package/**/*.test.ts'], testTimeout: 300_000, hookTimeout: 300_000, fileParallelism: false } },
      { test: { name: 'browser', include: ['test/browser/**/*.test.ts'], testTimeout: 180_000, hookTimeout: 120_000, fileParallelism: false } },
      { test: { name: 'natlab', include: ['test/natlab/**/*.test.ts'], globalSetup: ['test/natlab/global-setup.ts'], testTimeout: 600_000, hookTimeout: 120_000, fileParallelism: false } },
    ],
  },
});
