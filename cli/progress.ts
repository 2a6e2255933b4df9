/**
 * A one-line progress bar for file transfers: bytes, rate, time left. Redrawn in place on a
 * terminal (at most every `REDRAW_MS`); on a pipe or file, a plain line every `LOG_EVERY_MS` so
 * logs stay readable. `formatDuration` is portable; `formatBytes` lives with the file protocol
 * (protocol/channels.ts, shared with the demo page); `Progress` draws on a Node stream.
 */
import { formatBytes } from '../protocol/channels.js';

export { formatBytes };

/** Redraw interval on a terminal: smooth enough to look alive, cheap at any rate. */
export const REDRAW_MS = 100;
/** Line interval when stderr is not a terminal. */
export const LOG_EVERY_MS = 2_000;
/** Rate is averaged over this window, so one stall does not make the ETA jump around. */
const RATE_WINDOW_MS = 3_000;
const BAR_WIDTH = 24;

/** `1:05` / `1:02:03` style durations. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--:--';
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

/**
 * Renders the line for a state; pure, for tests and for the browser page's wording.
 * @example renderProgress({ done: 512, total: 1024, bytesPerSecond: 256 }) // "[############............]  50%  512 B / 1.0 KiB  256 B/s  0:02 left"
 */
export function renderProgress(s: { done: number; total: number; bytesPerSecond: number }): string {
  const frac = s.total > 0 ? Math.min(1, s.done / s.total) : 1;
  const filled = Math.round(frac * BAR_WIDTH);
  const eta = s.bytesPerSecond > 0 ? (s.total - s.done) / s.bytesPerSecond : Infinity;
  return `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}] ${String(Math.floor(frac * 100)).padStart(3)}%  ${formatBytes(s.done)} / ${formatBytes(s.total)}  ${formatBytes(s.bytesPerSecond)}/s  ${formatDuration(eta)} left`;
}

/** Tracks a transfer and draws its progress on `out` (stderr by default). */
export class Progress {
  private done = 0;
  private lastDraw = 0;
  private readonly samples: Array<[number, number]> = [];
  private readonly started = performance.now();
  private readonly tty: boolean;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
    /** Bytes already present (a resumed transfer); not counted in the rate. */
    private readonly startAt = 0,
  ) {
    this.tty = out.isTTY === true;
    this.done = startAt;
    this.samples.push([this.started, startAt]);
  }

  private rate(now: number): number {
    while (this.samples.length > 2 && now - this.samples[0]![0] > RATE_WINDOW_MS) this.samples.shift();
    const [t0, b0] = this.samples[0]!;
    return now > t0 ? ((this.done - b0) * 1000) / (now - t0) : 0;
  }

  /** Adds `n` transferred bytes and redraws when due. */
  add(n: number): void {
    this.done += n;
    const now = performance.now();
    this.samples.push([now, this.done]);
    if (now - this.lastDraw >= (this.tty ? REDRAW_MS : LOG_EVERY_MS)) {
      this.lastDraw = now;
      this.draw(now);
    }
  }

  private draw(now: number): void {
    const line = `${this.label} ${renderProgress({ done: this.done, total: this.total, bytesPerSecond: this.rate(now) })}`;
    this.out.write(this.tty ? `\r${line}\x1b[K` : `${line}\n`);
  }

  /** Draws the final line with the average rate, ending the in-place line. */
  finish(): { seconds: number; bytesPerSecond: number } {
    const seconds = (performance.now() - this.started) / 1000;
    const bytesPerSecond = seconds > 0 ? (this.done - this.startAt) / seconds : 0;
    const line = `${this.label} ${renderProgress({ done: this.done, total: this.total, bytesPerSecond })} in ${formatDuration(seconds)}`;
    this.out.write(this.tty ? `\r${line}\x1b[K\n` : `${line}\n`);
    return { seconds, bytesPerSecond };
  }

  /** Ends the in-place line without the summary (before an error message). */
  abort(): void {
    if (this.tty) this.out.write('\n');
  }
}
