/**
 * Sections of docs/NATLAB.md written by scenario suites other than the matrix (roaming.test.ts,
 * upgrade.test.ts). Each lives between `<!-- section:<name> -->` and `<!-- /section:<name> -->`;
 * a suite replaces only its own, and the matrix keeps them when it rewrites the file.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';

const BLOCK = /<!-- section:([a-z-]+) -->\n[\s\S]*?<!-- \/section:\1 -->\n/g;

function block(name: string, markdown: string): string {
  return `<!-- section:${name} -->\n${markdown.trimEnd()}\n<!-- /section:${name} -->\n`;
}

/** Replaces (or appends) section `name` of `file`. */
export function writeSection(file: string, name: string, markdown: string): void {
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const re = new RegExp(`<!-- section:${name} -->\\n[\\s\\S]*?<!-- /section:${name} -->\\n`);
  const next = re.test(text) ? text.replace(re, () => block(name, markdown)) : `${text.trimEnd()}\n\n${block(name, markdown)}`;
  writeFileSync(file, next);
}

/** The sections of `previous` appended to a freshly rendered report, so a rewrite keeps them. */
export function keepSections(rendered: string, previous: string): string {
  const sections = previous.match(BLOCK) ?? [];
  return sections.length === 0 ? rendered : `${rendered.trimEnd()}\n\n${sections.join('\n')}`;
}

/** The machine's load when the figures were taken (1, 5 and 15 minute averages), for the report. */
export function loadText(): string {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(', ');
}
