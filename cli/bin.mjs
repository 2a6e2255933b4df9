#!/usr/bin/env node
// The `homelink` command: loads the TypeScript CLI through tsx (a development dependency; the
// CLI is a development and diagnostics tool of this repository).
import { register } from 'tsx/esm/api';

register();
const { runCli } = await import('./main.ts');
const code = await runCli(process.argv.slice(2));
// Exit now: a closed link's WebRTC stack may keep timers alive for a while, and a command is done
// once it returned. Writes to stdout/stderr on pipes and files are synchronous on Linux; on a
// TTY, wait for them to flush first.
process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
