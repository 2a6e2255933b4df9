// The client suite on the node-datachannel backend (`npm run test:client:native`). A script rather
// than `HOMELINK_BACKEND=... vitest` so the npm script needs no POSIX shell (Windows users run it too).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const vitest = fileURLToPath(new URL('../node_modules/vitest/vitest.mjs', import.meta.url));
const r = spawnSync(process.execPath, [vitest, 'run', '--project', 'client', ...process.argv.slice(2)], {
  stdio: 'inherit',
  env: { ...process.env, HOMELINK_BACKEND: 'node-datachannel' },
});
process.exit(r.status ?? 1);
