#!/usr/bin/env node
/**
 * Builds the relay's native UDP data path (relay/native/udp.c, Linux) into
 * relay/native/build/homelink-udp.node with the system C compiler ($CC, else cc) and the
 * Node-API headers of the node-api-headers package. Node-API is ABI-stable, so one build serves
 * every Node version from 22.12 on.
 *
 *   node scripts/build-relay-native.mjs             build; fails when it cannot
 *   node scripts/build-relay-native.mjs --optional  (npm's prepare step) prints one line and exits 0
 *                                                   when there is no compiler or not Linux: the relay
 *                                                   then runs on node:dgram (RELAY_DATA_PATH=auto)
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, renameSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const optional = process.argv.includes('--optional');
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'relay', 'native', 'build', 'homelink-udp.node');

function giveUp(why) {
  if (optional) {
    console.log(`relay native data path: not built (${why}); the relay uses node:dgram`);
    process.exit(0);
  }
  console.error(`relay native data path: ${why}`);
  process.exit(1);
}

// `npm pack` / `npm publish` run prepare too; the package they make has no relay in it.
if (optional && (process.env.npm_command === 'pack' || process.env.npm_command === 'publish')) process.exit(0);
if (process.platform !== 'linux') giveUp(`needs Linux (recvmmsg, sendmmsg, epoll), this is ${process.platform}`);
let include;
try {
  include = join(dirname(createRequire(import.meta.url).resolve('node-api-headers/package.json')), 'include');
} catch {
  giveUp('needs the node-api-headers package (npm install)');
}
const cc = process.env.CC || 'cc';
if (spawnSync(cc, ['--version'], { stdio: 'ignore' }).status !== 0) giveUp(`needs a C compiler (${cc}; Debian: apt-get install gcc libc6-dev)`);
mkdirSync(dirname(out), { recursive: true });
const tmp = `${out}.${process.pid}.tmp`;
const r = spawnSync(
  cc,
  ['-O2', '-g0', '-Wall', '-Wextra', '-Werror', '-std=gnu11', '-shared', '-fPIC', '-pthread', '-fvisibility=hidden', '-I', include, '-o', tmp, join(root, 'relay', 'native', 'udp.c')],
  { stdio: 'inherit' },
);
if (r.status !== 0) giveUp(`${cc} failed (exit ${r.status})`);
renameSync(tmp, out);
console.log(`relay native data path: built ${out.slice(root.length + 1)}`);
