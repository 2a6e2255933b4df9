/**
 * Structured log lines: one JSON object per line with time, level and event.
 * Callers pass fields that never hold secrets (the core's log actions carry
 * ids, addresses and reasons only).
 */

/** A log sink. */
export type LogFn = (level: 'info' | 'warn', event: string, fields?: Readonly<Record<string, string | number | boolean>>) => void;

/** A logger writing JSON lines to `out` at or above `level`. */
export function jsonLogger(level: 'info' | 'warn' | 'silent', out: (line: string) => void = (l) => process.stdout.write(l)): LogFn {
  if (level === 'silent') return () => {};
  return (lvl, event, fields) => {
    if (level === 'warn' && lvl === 'info') return;
    out(JSON.stringify({ t: new Date().toISOString(), level: lvl, event, pid: process.pid, ...fields }) + '\n');
  };
}
