#!/usr/bin/env node
// The `homelink` command: loads the TypeScript CLI through tsx (a development dependency; the
// CLI is a development and diagnostics tool of this repository).
import { register } from 'tsx/esm/api';

register();
const { runCli } = await import('./main.ts');
process.exitCode = await runCli(process.argv.slice(2));
