/**
 * The merge that keeps docs/NATLAB.md whole when a suite rewrites its figures (report-section.ts):
 * a pure function of the old text, checked here without namespaces. A full matrix run used to
 * keep only marked sections and drop hand-written ones (Lifecycle).
 */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hasSection, MATRIX_SECTION, mergeMatrixReport, replaceSection } from './report-section.js';

const section = (name: string, body: string): string => `<!-- section:${name} -->\n${body}\n<!-- /section:${name} -->\n`;
const HAND = '## Lifecycle: silent mapping loss and peer Ctrl-C\n\nWritten by hand; **figures** | a | b |\n';

describe('docs/NATLAB.md sections', () => {
  it('replaces only the named section; text before, between and after, and other sections, stay byte for byte', () => {
    const before = `# Title\n\nintro by hand\n\n${section('alpha', 'old alpha')}\nbetween, by hand\n\n${section('beta', 'beta body')}\n${HAND}`;
    const after = replaceSection(before, 'alpha', 'new alpha\n\nwith $& and $1 kept literally');
    expect(after).toBe(before.replace('old alpha', () => 'new alpha\n\nwith $& and $1 kept literally'));
    // Idempotent: the same figures twice give the same file.
    expect(replaceSection(after, 'alpha', 'new alpha\n\nwith $& and $1 kept literally')).toBe(after);
  });

  it('adds a missing section at the end (or the start), never touching what is there', () => {
    expect(replaceSection(HAND, 'gamma', 'g')).toBe(`${HAND.trimEnd()}\n\n${section('gamma', 'g')}`);
    expect(replaceSection(HAND, 'gamma', 'g', 'start')).toBe(`${section('gamma', 'g')}\n${HAND}`);
    expect(replaceSection('', 'gamma', 'g')).toBe(section('gamma', 'g'));
  });

  it('a matrix rerun of the real report replaces the matrix and keeps every other section and the hand-written Lifecycle text', () => {
    const doc = readFileSync('docs/NATLAB.md', 'utf8');
    expect(hasSection(doc, MATRIX_SECTION), 'the report marks the matrix section').toBe(true);
    const rendered = '# NAT lab: connectivity matrix\n\nA fresh run: 41 of 41.\n';
    const merged = mergeMatrixReport(doc, rendered);
    const matrixEnd = '<!-- /section:matrix -->\n';
    // Everything after the matrix section is exactly what was there.
    expect(merged.slice(merged.indexOf(matrixEnd) + matrixEnd.length)).toBe(doc.slice(doc.indexOf(matrixEnd) + matrixEnd.length));
    expect(merged.startsWith(section(MATRIX_SECTION, rendered.trimEnd()))).toBe(true);
    for (const kept of ['## Lifecycle: silent mapping loss and peer Ctrl-C', '<!-- section:network-change -->', '<!-- section:relay-to-direct -->']) {
      expect(merged, kept).toContain(kept);
    }
    expect(merged).not.toContain('## Relay capture'); // the old matrix body is gone
    expect(mergeMatrixReport(merged, rendered)).toBe(merged);
  });

  it('a report from before the matrix markers: its unmarked head (the old matrix output) is replaced, sections and text after them kept', () => {
    const legacy = `# NAT lab: connectivity matrix\n\nold table\n\n${section('network-change', 'roaming figures')}\n${HAND}`;
    expect(mergeMatrixReport(legacy, '# NAT lab: connectivity matrix\n\nnew table')).toBe(
      `${section(MATRIX_SECTION, '# NAT lab: connectivity matrix\n\nnew table')}\n${section('network-change', 'roaming figures')}\n${HAND}`,
    );
    // No file yet: the matrix alone.
    expect(mergeMatrixReport('', 'm')).toBe(section(MATRIX_SECTION, 'm'));
  });

  it('any hand-written text around the sections survives any number of rewrites (property)', () => {
    // Hand-written text never contains a section marker.
    const prose = fc.string({ maxLength: 200 }).filter((s) => !s.includes('<!--'));
    fc.assert(
      fc.property(prose, prose, prose, fc.array(fc.constantFrom('matrix', 'starvation', 'network-change'), { maxLength: 6 }), (head, middle, tail, rewrites) => {
        let doc = `${section('matrix', 'm0')}${head}\n${section('starvation', 's0')}${middle}\n${section('network-change', 'n0')}${tail}`;
        for (const [i, name] of rewrites.entries()) doc = name === 'matrix' ? mergeMatrixReport(doc, `m${i + 1}`) : replaceSection(doc, name, `${name}-${i + 1}`);
        for (const text of [head, middle, tail]) expect(doc).toContain(text);
        for (const name of ['matrix', 'starvation', 'network-change']) expect(doc.split(`<!-- section:${name} -->`)).toHaveLength(2);
      }),
      { numRuns: 200 },
    );
  });

  it('refuses a section name that is not lower-case words joined by dashes', () => {
    expect(() => replaceSection('', 'a)|(b', 'x')).toThrow(/section name/);
    expect(() => hasSection('', 'Matrix')).toThrow(/section name/);
  });
});
