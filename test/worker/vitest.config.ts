import { defineConfig } from 'vitest/config';
// Placeholder until the worker suite lands; replaced by the workerd pool config.
export default defineConfig({ test: { name: 'worker', include: ['test/worker/**/*.test.ts'], passWithNoTests: true } });
