#!/usr/bin/env node
// The `homelink` command: loads the TypeScript CLI through tsx (a development dependency; the
// CLI is a development and diagnostics tool of this repository).
import { register } from 'tsx/esm/api';

register();
const { runCli } = await import('./main.ts');
const code = await runCli(process.argv.slice(2));
// Exit with the command's code once its output is flushed. Commands await their links' and
// endpoint's close() before returning, so byes have left and TURN allocations are released by
// now. Writes to stdout/stderr on pipes and files are synchronous on Linux; on a TTY, wait for
// them to flush first.
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
