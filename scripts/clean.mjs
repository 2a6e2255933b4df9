// Removes build output folders before a build, so files of deleted modules never ship
// (`node scripts/clean.mjs dist/js`). Plain Node, no shell: works the same on every platform.
import { rmSync } from 'node:fs';
import { resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
for (const arg of process.argv.slice(2)) {
  const target = resolve(root, arg);
  // Only folders inside this repository's dist/ are ever removed.
  if (!target.startsWith(resolve(root, 'dist'))) throw new Error(`clean: refusing to remove ${arg} (only dist/...)`);
  rmSync(target, { recursive: true, force: true });
}
