/**
 * Runs once per `vitest` run, in the main process, for the natlab project: prints the single
 * skip line when the lab cannot run here (the test files then skip silently, so the line
 * appears exactly once), and removes namespaces left by lab runs whose process died.
 */
import { removeStaleNamespaces } from './lab.js';
import { labAvailable, SKIP_LINE } from './support.js';

export default function setup(): void {
  if (!labAvailable()) {
    process.stdout.write(SKIP_LINE + '\n');
    return;
  }
  removeStaleNamespaces();
}
