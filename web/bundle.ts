/**
 * Builds the browser bundle: `web/app.ts` and the client library with the native
 * `RTCPeerConnection` backend, as one ES module. Node-only code must not reach it: the build
 * targets the browser platform and fails on any `node:` import, so a werift import or a
 * `Buffer` slipping into the browser path breaks the build instead of the page.
 * Node only (runs esbuild).
 */
import { build, type Plugin } from 'esbuild';
import { fileURLToPath } from 'node:url';

/** Entry of the demo page's script. */
export const APP_ENTRY = fileURLToPath(new URL('./app.ts', import.meta.url));
/** Entry of the library-only bundle (for app developers who bring their own page). */
export const LIBRARY_ENTRY = fileURLToPath(new URL('../client/browser.ts', import.meta.url));

/** Refuses `node:*` and Node built-ins (and werift) so they can never reach the browser bundle. */
const noNode: Plugin = {
  name: 'homelink-no-node',
  setup(b) {
    const builtins = /^(node:.*|fs|path|os|net|tls|dgram|crypto|child_process|http|https|stream|buffer|werift)(\/.*)?$/;
    b.onResolve({ filter: builtins }, (args) => ({
      errors: [{ text: `${args.path} is Node-only and must not reach the browser bundle (imported from ${args.importer})` }],
    }));
  },
};

/**
 * Bundles `entry` for browsers and returns the JavaScript text.
 *
 * @example
 * const js = await bundleBrowserApp();
 */
export async function bundleBrowserApp(entry: string = APP_ENTRY, opts: { minify?: boolean } = {}): Promise<string> {
  const r = await build({
    entryPoints: [entry],
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'browser',
    target: ['chrome120', 'firefox120', 'safari17'],
    minify: opts.minify ?? false,
    // Inline maps for the dev server (debuggable), none in a minified build.
    sourcemap: opts.minify ? false : 'inline',
    logLevel: 'silent',
    plugins: [noNode],
  });
  const out = r.outputFiles[0];
  if (!out) throw new Error('esbuild produced no output');
  return out.text;
}
