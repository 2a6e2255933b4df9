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
    // Each file starts workerd of its own (own port, own storage folder), and the suites mostly
    // wait out real deadlines (ack, stale, grace): six files at a time take ~37 s instead of
    // ~150 s one by one, on 2 cores. Group 0 runs before every other project (group 1 in
    // ../../vitest.config.ts, one file at a time), so the NAT lab never shares the machine with it.
    maxWorkers: 6,
    sequence: { groupOrder: 0 },
  },
});
