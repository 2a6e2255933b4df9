#!/usr/bin/env node
// The `homelink` command (the package's `bin`).
// - Installed from the package: runs the built JavaScript in dist/js (no TypeScript tooling needed).
// - In a repository checkout (cli/main.ts beside this file): runs the sources through tsx, a
//   development dependency, so an edit is live without a build and a stale dist/ is never used.
import { existsSync } from 'node:fs';

let runCli;
if (existsSync(new URL('./main.ts', import.meta.url))) {
  const { register } = await import('tsx/esm/api');
  register();
  ({ runCli } = await import('./main.ts'));
} else {
  ({ runCli } = await import('../dist/js/cli/main.js'));
}
const code = await runCli(process.argv.slice(2));
// Exit with the command's code once its output is flushed. Commands await their links' and
// endpoint's close() before returning, so byes have left and TURN allocations are released by
// now. Writes to stdout/stderr on pipes and files are synchronous on Linux; on a TTY, wait for
// them to flush first.
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
