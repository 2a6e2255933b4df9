/**
 * Kept for callers of the old script path: `homelink token` (cli/token.ts) is the one token
 * command, and `npm run token` runs it. Here `--dir` keeps its old meaning, the dev issuer's key
 * folder (default .dev/issuer), so it becomes `--issuer-dir`.
 *
 *   npx tsx scripts/token.ts --sub app-1 --home home-1 [--identity-key device.jwk.json] [--dir .dev/issuer]
 */
import { runCli } from '../cli/main.js';

const args = process.argv.slice(2).map((a) => (a === '--dir' ? '--issuer-dir' : a.startsWith('--dir=') ? `--issuer-dir=${a.slice(6)}` : a));
if (!args.includes('--issuer-dir') && !args.some((a) => a.startsWith('--issuer-dir='))) args.push('--issuer-dir', '.dev/issuer');
// The old script printed a certificate only for a given --identity-key.
if (!args.some((a) => a === '--identity-key' || a.startsWith('--identity-key='))) args.push('--no-identity');
process.exitCode = await runCli(['token', ...args]);
