/**
 * Writes the browser bundles to a folder, for app developers who serve their own page:
 *
 *   npx tsx web/build.ts [--out dist/web]
 *
 *   homelink.js   the client library for browsers (client/browser.ts: Endpoint with the native
 *                 RTCPeerConnection and WebSocket), one minified ES module
 *   app.js        the demo page's script, and index.html, as `npm start` serves them
 *
 * Node only (runs esbuild).
 */
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { APP_ENTRY, bundleBrowserApp, LIBRARY_ENTRY } from './bundle.js';

const { values } = parseArgs({ options: { out: { type: 'string' } } });
const out = resolve(values.out ?? 'dist/web');
await mkdir(out, { recursive: true });
const library = await bundleBrowserApp(LIBRARY_ENTRY, { minify: true });
await writeFile(join(out, 'homelink.js'), library);
await writeFile(join(out, 'app.js'), await bundleBrowserApp(APP_ENTRY, { minify: true }));
await copyFile(fileURLToPath(new URL('./index.html', import.meta.url)), join(out, 'index.html'));
process.stdout.write(`wrote ${out}/homelink.js (${Math.round(library.length / 1024)} KiB), app.js, index.html\n`);
