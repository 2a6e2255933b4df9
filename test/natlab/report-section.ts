/**
 * Generated sections of docs/NATLAB.md. Each suite that writes figures there owns one section,
 * kept between `<!-- section:<name> -->` and `<!-- /section:<name> -->`: the matrix
 * (matrix.test.ts, section `matrix`, the top of the file), the network-change and upgrade
 * scenarios, starvation. A run replaces only its own section; everything outside it, other
 * suites' sections and hand-written text alike (the Lifecycle section), stays byte for byte.
 *
 * The merge is a pure function of the old text (`replaceSection`, `mergeMatrixReport`, tested in
 * report-section.test.ts); `writeSection` is the file-system driver.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';

/** The matrix's own section: the generated report that opens docs/NATLAB.md. */
export const MATRIX_SECTION = 'matrix';
/** Section names: lower-case words joined by dashes, so a name never needs escaping in a pattern. */
const NAME_RE = /^[a-z]+(?:-[a-z]+)*$/;

function checkName(name: string): void {
  if (!NAME_RE.test(name)) throw new Error(`section name must be lower-case words joined by dashes: ${JSON.stringify(name)}`);
}

function blockRe(name: string): RegExp {
  return new RegExp(`<!-- section:${name} -->\\n[\\s\\S]*?<!-- /section:${name} -->\\n?`);
}

function block(name: string, markdown: string): string {
  return `<!-- section:${name} -->\n${markdown.trimEnd()}\n<!-- /section:${name} -->\n`;
}

/** True when `text` holds section `name`. */
export function hasSection(text: string, name: string): boolean {
  checkName(name);
  return blockRe(name).test(text);
}

/**
 * `text` with section `name` replaced by `markdown`; everything else unchanged. Where `text` has
 * no such section it is added: after everything (`at: 'end'`, the default), or before it
 * (`at: 'start'`).
 */
export function replaceSection(text: string, name: string, markdown: string, at: 'start' | 'end' = 'end'): string {
  checkName(name);
  const re = blockRe(name);
  if (re.test(text)) return text.replace(re, () => block(name, markdown));
  if (text.trim() === '') return block(name, markdown);
  return at === 'start' ? `${block(name, markdown)}\n${text.replace(/^\n+/, '')}` : `${text.trimEnd()}\n\n${block(name, markdown)}`;
}

/**
 * The report after a matrix run: `rendered` as the matrix section of `previous`, the rest of
 * `previous` kept. A report written before the matrix had markers began with the matrix's
 * output and had nothing else before the first other section: that part is what gets replaced.
 */
export function mergeMatrixReport(previous: string, rendered: string): string {
  if (hasSection(previous, MATRIX_SECTION)) return replaceSection(previous, MATRIX_SECTION, rendered);
  const first = previous.search(/<!-- section:[a-z-]+ -->/);
  return replaceSection(first < 0 ? '' : previous.slice(first), MATRIX_SECTION, rendered, 'start');
}

/** Replaces (or appends) section `name` of `file`. */
export function writeSection(file: string, name: string, markdown: string): void {
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  writeFileSync(file, replaceSection(text, name, markdown));
}

/** The machine's load when the figures were taken (1, 5 and 15 minute averages), for the report. */
export function loadText(): string {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(', ');
}
