/**
 * Runs wrangler with the environment every run here needs, without a POSIX shell prefix (so
 * `npm run build` works the same from cmd.exe or PowerShell):
 * WRANGLER_SEND_METRICS=false, CLOUDFLARE_CF_FETCH_ENABLED=false and WRANGLER_HIDE_BANNER=true
 * keep it from reaching the network for metrics, `Request.cf` data or update checks.
 *
 *   tsx scripts/wrangler.ts build [--env NAME]   check-config, then `wrangler deploy --dry-run --outdir dist`
 *   tsx scripts/wrangler.ts <wrangler args...>   any wrangler command (dev, tail, deploy, ...)
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export const QUIET_WRANGLER_ENV = {
  WRANGLER_SEND_METRICS: 'false',
  CLOUDFLARE_CF_FETCH_ENABLED: 'false',
  WRANGLER_HIDE_BANNER: 'true',
} as const;

const require = createRequire(import.meta.url);
const root = join(dirname(import.meta.filename), '..');

function run(args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...QUIET_WRANGLER_ENV } });
    // Ctrl-C reaches the child through the terminal's process group; wait for its exit.
    p.once('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}

const wranglerBin = join(dirname(require.resolve('wrangler/package.json')), 'bin', 'wrangler.js');
const tsxCli = join(dirname(require.resolve('tsx/package.json')), 'dist', 'cli.mjs');

const [cmd, ...rest] = process.argv.slice(2);
let code: number;
if (cmd === 'build') {
  const envIdx = rest.findIndex((a) => a === '--env' || a === '-e');
  const envArgs = envIdx >= 0 && rest[envIdx + 1] ? ['--env', rest[envIdx + 1]!] : [];
  code = await run([tsxCli, join(root, 'scripts', 'check-config.ts'), ...envArgs]);
  if (code === 0) code = await run([wranglerBin, 'deploy', '--dry-run', '--outdir', 'dist', ...rest]);
} else {
  code = await run([wranglerBin, ...(cmd ? [cmd] : []), ...rest]);
}
process.exitCode = code;
