import { defineConfig } from 'vitest/config';

/**
 * The worker suites run in Node and drive the real Worker bundle in workerd through Miniflare
 * (test/support/signaling.ts) with real `ws` clients, so they can also restart workerd to prove
 * that rooms and presence records survive object re-creation.
 */
export default defineConfig({
  test: {
    name: 'worker',
    // Relative to this folder, the project's root.
    include: ['**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});
